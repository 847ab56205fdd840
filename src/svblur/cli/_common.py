"""Shared plumbing of the entry points: where the configs are, one-line errors for bad
input, and the Hydra launcher. The jobs themselves are in :mod:`svblur.experiments.training`."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from hydra.errors import InstantiationException

from svblur.errors import InputError

log = logging.getLogger("svblur")

F = TypeVar("F", bound=Callable[..., Any])

#: Exceptions that mean "the user's input is wrong": reported in one line, no traceback.
INPUT_ERRORS: tuple[type[BaseException], ...] = (
    InputError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


#: Where Hydra finds svblur's configs: the ``conf`` folder shipped inside the package.
CONFIG_MODULE = "svblur.conf"
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"


def debug_requested(argv: list[str] | None = None) -> bool:
    """Whether tracebacks were asked for: ``HYDRA_FULL_ERROR=1`` or ``--debug``."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1" or "--debug" in (argv or [])


def input_error_message(error: BaseException) -> str | None:
    """The one-line message for a bad-input error, ``None`` for anything else (a bug).

    A config value that a constructor rejects (Hydra's ``InstantiationException`` around
    a ``ValueError``/``TypeError``) counts as bad input, named by its target.
    """
    if isinstance(error, INPUT_ERRORS):
        if isinstance(error, OSError) and error.filename and str(error.filename) not in str(error):
            message = f"{error.filename}: {error.strerror or error}"
        else:
            message = str(error)
    elif isinstance(error, InstantiationException) and isinstance(
        error.__cause__, (ValueError, TypeError)
    ):
        message = f"config error: {error.__cause__}"
    else:
        return None
    return " ".join(message.split())


def exit_on_input_error(prog: str, debug: bool | None = None) -> Callable[[F], F]:
    """Decorate a command's body: bad input ends it with one line on stderr and status 2.

    Tracebacks appear only when asked for (:func:`debug_requested`); other exceptions
    (bugs) keep theirs.
    """

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except Exception as error:
                message = input_error_message(error)
                if message is None or (debug if debug is not None else debug_requested()):
                    raise
                print(f"{prog}: error: {message}", file=sys.stderr)
                raise SystemExit(2) from None

        return wrapper  # type: ignore[return-value]

    return decorate


def ensure_tty_safe() -> None:
    """Rich progress bars need a terminal size; give one when output is piped (CI)."""
    if not sys.stdout.isatty():
        os.environ.setdefault("COLUMNS", "120")


def run_hydra_app(hydra_main: Any) -> None:
    """Run a ``@hydra.main(config_path=CONFIG_PATH)`` function.

    The folder the command was started from is appended to ``sys.path`` (as ``python -m``
    does), so that a ``_target_`` naming a module of the user's own project imports.
    """
    ensure_tty_safe()
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
    hydra_main()
