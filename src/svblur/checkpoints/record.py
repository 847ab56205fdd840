"""The record a training system writes into its checkpoints, and reading a checkpoint's kind.

``checkpoint["svblur"]`` (:data:`RECORD_KEY`) holds the system's class name, its kind (see
:mod:`svblur.checkpoints.kinds`), how its network is built and the svblur version, so that
:func:`~svblur.checkpoints.load_network` rebuilds the network of any checkpoint svblur trains
without the training config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .kinds import legacy_system_kind, normalize_kind

__all__ = ["RECORD_KEY", "checkpoint_kind", "network_record"]

#: Key of the record a training system writes into its checkpoints.
RECORD_KEY = "svblur"


def network_record(
    system: str, net_config: Mapping[str, Any] | None, kind: str | None = None
) -> dict[str, Any]:
    """The record a training system stores under ``checkpoint["svblur"]``.

    Args:
        system: The LightningModule's class name (e.g. ``"BlurSemanticsTask"``).
        net_config: How its network is built: ``{"_target_": "pkg.Class", **kwargs}``,
            nested for sub-networks (Hydra's convention), with plain values only.
        kind: What the network computes (the system's ``kind``, one of
            :data:`~svblur.checkpoints.SYSTEM_KINDS`); ``None``: the kind svblur's systems
            had before they declared one, by ``system`` (``None`` for another name).
    """
    from svblur import __version__

    return {
        "system": system,
        "kind": normalize_kind(kind) if kind is not None else legacy_system_kind(system),
        "net": None if net_config is None else dict(net_config),
        "version": __version__,
    }


def checkpoint_kind(checkpoint: Mapping[str, Any]) -> str | None:
    """What a checkpoint's network computes: one of :data:`~svblur.checkpoints.SYSTEM_KINDS`.

    Read from the record the training systems write (older kinds renamed by
    :func:`~svblur.checkpoints.normalize_kind`; a record without a kind is read by its
    system's name); for checkpoints written before there was a
    record, from the saved hyper-parameters (stage 3 records ``estimator_ckpt``, the
    stage-1 system ``aux_weight``, stage 2 ``quantize_metrics``). ``None``: unknown (a plain
    state dict, a released file).
    """
    record = checkpoint.get(RECORD_KEY)
    if isinstance(record, Mapping):
        system = record.get("system")
        system = system if isinstance(system, str) else None
        if record.get("kind"):
            return normalize_kind(str(record["kind"]), system)
        legacy = legacy_system_kind(system) if system is not None else None
        if legacy is not None:
            return legacy
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, Mapping):
        return None
    if "estimator_ckpt" in hparams:
        return "blind_sr"
    if "aux_weight" in hparams:
        return "blur_semantics"
    if "quantize_metrics" in hparams:
        return "non_blind_sr"
    return None
