"""Reading checkpoint files safely and writing state dicts atomically.

Every file is read with ``torch.load(..., weights_only=True)``; a file that is missing, a
folder, truncated, not a checkpoint, or one that needs arbitrary pickled objects is answered
with a :class:`~svblur.errors.CheckpointError` that names the file (never with the advice to
load it unsafely).
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from svblur.errors import CheckpointError, CheckpointNotFoundError
from svblur.io import atomic_path

from .convert import strip_prefixes

__all__ = ["read_checkpoint", "read_state_dict", "save_state_dict"]

# What torch.load raises on a truncated or corrupt file, or on bytes that are no checkpoint.
_UNREADABLE = (
    RuntimeError,
    EOFError,
    KeyError,
    IndexError,
    ValueError,
    TypeError,
    AttributeError,
    OSError,
    struct.error,
)


def read_checkpoint(path: str | Path, *, mmap: bool = False) -> Any:
    """The object saved in a checkpoint file, loaded safely (``weights_only=True``).

    Args:
        path: The file.
        mmap: Map the file instead of reading it: tensors are read when used (for a few
            entries of a large checkpoint).

    Raises:
        CheckpointError: The file is missing, a folder, truncated or corrupt, not written
            by ``torch.save``, or holds objects that a safe load refuses.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(
            f"{path}: no such file (expected a checkpoint, .ckpt or .pth)"
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: is a folder, expected a checkpoint file (.ckpt or .pth)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):
            raise CheckpointError(
                f"{path}: holds Python objects other than tensors and plain containers; svblur "
                "reads checkpoints with weights_only=True and does not load it (expected a "
                "state dict or a Lightning checkpoint)"
            ) from None
        reason = "not a PyTorch checkpoint"
    except _UNREADABLE as error:
        reason = "empty" if path.stat().st_size == 0 else type(error).__name__
    raise CheckpointError(
        f"{path}: cannot be read as a PyTorch checkpoint ({reason}: truncated, corrupt, or "
        "another kind of file); expected a file written by torch.save"
    )


def read_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file or mapping, safely (``weights_only=True``).

    Accepts a plain state dict, a Lightning checkpoint (its ``state_dict``) or a dict with
    ``state_dict``/``params_ema``/``params``/``model`` entries (BasicSR files: the EMA
    weights first); ``module.`` prefixes are removed.

    Raises:
        CheckpointError: As :func:`read_checkpoint`, or no state dict of tensors inside.
    """
    obj = read_checkpoint(source) if isinstance(source, (str, Path)) else source
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "params_ema", "params", "model"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        name = source if isinstance(source, (str, Path)) else "the mapping"
        raise CheckpointError(
            f"{name}: holds no state dict of tensors (found {type(obj).__name__}); expected a "
            "state dict, a Lightning checkpoint or one of the authors' released files"
        )
    return {strip_prefixes(k, ("module.",)): v for k, v in obj.items()}


def save_state_dict(state_dict: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """``torch.save`` to a temporary name beside ``path``, then rename (never half-written)."""
    with atomic_path(path) as temp:
        torch.save(dict(state_dict), temp)
