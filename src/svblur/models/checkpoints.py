"""Moved to :mod:`svblur.checkpoints`; this module re-exports its names for older code."""

from svblur.checkpoints import (
    RECORD_KEY,
    CheckpointError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    LoadedNetwork,
    build_network,
    check_fits,
    checkpoint_kind,
    load_network,
    load_weights,
    network_record,
    read_checkpoint,
    read_state_dict,
    save_state_dict,
)

__all__ = [
    "RECORD_KEY",
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "LoadedNetwork",
    "build_network",
    "check_fits",
    "checkpoint_kind",
    "load_network",
    "load_weights",
    "network_record",
    "read_checkpoint",
    "read_state_dict",
    "save_state_dict",
]
