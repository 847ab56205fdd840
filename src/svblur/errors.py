"""The errors that mean "this input is wrong", which the command-line tools report in one line.

Library functions raise :class:`InputError` (or a subclass) when a file, folder or config
value does not hold what was expected; the message names it and says what was expected.
The ``svblur-*`` commands print such messages as one line and exit with status 2; any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "InputError",
]


class InputError(ValueError):
    """A file, folder or config value does not hold what was expected (message names it)."""


class CheckpointError(InputError):
    """A file is not a usable checkpoint: missing, truncated, or not a checkpoint at all."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint does not fit the model it is loaded into (keys or shapes differ)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint file at the path (also a ``FileNotFoundError``)."""
