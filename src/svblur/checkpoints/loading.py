"""Loading weights strictly, and rebuilding the network of a checkpoint.

:func:`load_weights` loads an svblur state dict, a Lightning checkpoint or one of the
authors' released files (converted on the fly) into a network and names every key that does
not fit; :func:`load_network` rebuilds the network a checkpoint records
(:func:`~svblur.checkpoints.network_record`) and loads its weights, without the training
config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from svblur.errors import CheckpointError, CheckpointMismatchError

from .building import build_network
from .convert import (
    detect_official_kind,
    from_official_blind_sr,
    from_official_cmos,
    from_official_rrdb_sft,
)
from .kinds import kind_of_config
from .reading import read_checkpoint, read_state_dict
from .record import RECORD_KEY, checkpoint_kind

__all__ = ["LoadedNetwork", "check_fits", "load_network", "load_weights"]


def _class_names(module: nn.Module) -> set[str]:
    """The names of ``module``'s classes (its own and its bases): this package knows the
    networks by name only."""
    return {cls.__name__ for cls in type(module).__mro__}


def _select_prefix(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Drop a wrapper prefix such as Lightning's ``net.`` when that makes the keys fit."""
    if set(state) & expected:
        return state
    for prefix in ("net.", "model.", "estimator.", "sr.", "net.estimator.", "net.sr."):
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if sub and set(sub) & expected:
            return sub
    return state


def check_fits(module: nn.Module, state: Mapping[str, torch.Tensor], name: str) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state`` loads strictly into ``module``.

    Args:
        module: The model.
        state: Its candidate state dict.
        name: How to name the checkpoint in the message (usually its path).
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys, e.g. {missing[:8]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:8]}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches, e.g. {shapes[:8]}")
    raise CheckpointMismatchError(
        f"checkpoint {name} does not fit {type(module).__name__}: "
        + "; ".join(parts)
        + ". Was it saved from a different model or config (num_classes, num_blocks, "
        "prior_channels, seg_encoding, gia variant)?"
    )


def load_weights(
    module: nn.Module, source: str | Path | Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Load a checkpoint into a CMOS, RRDBSFT or BlindSR (or any module) strictly.

    ``source`` may be an svblur state dict, a Lightning checkpoint of an svblur system
    (``net.`` prefix; a stage-1/2 checkpoint also loads into the ``estimator``/``sr`` of a
    BlindSR), or one of the authors' released files (converted on the fly). Files are read
    with ``torch.load(..., weights_only=True)``.

    Returns:
        The state dict that was loaded.

    Raises:
        CheckpointError: The file cannot be read as a checkpoint.
        CheckpointMismatchError: Keys are missing or unexpected, or shapes differ; the
            message names them.
    """
    state = read_state_dict(source)
    expected = module.state_dict()
    kind = detect_official_kind(state)
    if kind is not None and not set(state) <= set(expected):
        cmos = {k: v for k, v in state.items() if k.startswith("cmos.")}
        rest = {k: v for k, v in state.items() if not k.startswith("cmos.")}
        classes = _class_names(module)
        if kind == "blind_sr" and "BlindSR" in classes:
            state = from_official_blind_sr(state)
        elif kind == "blind_sr" and "CMOS" in classes:
            state = from_official_cmos(cmos)
        elif kind == "blind_sr" and "RRDBSFT" in classes:
            state = from_official_rrdb_sft(rest)
        elif kind == "cmos":
            state = from_official_cmos(state)
        elif kind == "rrdb_sft":
            state = from_official_rrdb_sft(state)
    state = _select_prefix(state, set(expected))
    check_fits(module, state, str(source) if isinstance(source, (str, Path)) else "the state dict")
    module.load_state_dict(state, strict=True)
    return state


def _without_downloads(config: Any) -> Any:
    """``config`` with its ``pretrained`` entries switched off where they would fetch or read
    weights the checkpoint already has: ``True``, a hub name (``"timm"``, a hub id) or a
    weights file become ``False``. An existing local directory is kept: a network reads its
    frozen parts from there (:class:`~svblur.models.LatentDiffusionSR`'s Stable Diffusion
    folder), which never downloads."""
    if isinstance(config, Mapping):
        return {
            k: (_local_folder_or_off(v) if k == "pretrained" else _without_downloads(v))
            for k, v in config.items()
        }
    if isinstance(config, list):
        return [_without_downloads(v) for v in config]
    return config


def _local_folder_or_off(pretrained: Any) -> str | bool:
    """``pretrained`` if it names an existing local directory, else ``False``."""
    if isinstance(pretrained, (str, Path)) and str(pretrained) and Path(pretrained).is_dir():
        return str(pretrained)
    return False


@dataclass
class LoadedNetwork:
    """A network rebuilt from a checkpoint, in eval mode, with the checkpoint's weights.

    Attributes:
        net: The network.
        kind: What it computes, one of :data:`~svblur.checkpoints.SYSTEM_KINDS` (see
            :func:`~svblur.checkpoints.checkpoint_kind`).
        config: The network config it was built from.
        recorded: Whether that config came from the checkpoint (else from the caller).
    """

    net: nn.Module
    kind: str
    config: dict[str, Any]
    recorded: bool


def _average_branches(
    state: Mapping[str, torch.Tensor], prefixes: list[str], path: str | Path
) -> dict[str, torch.Tensor]:
    """The mean of the branches' state dicts (``general.*``, ``blur.*`` -> ``*``)."""
    parts = [
        {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        for prefix in prefixes
    ]
    if not parts[0] or any(part.keys() != parts[0].keys() for part in parts):
        raise CheckpointError(f"{path}: the branches {prefixes} are missing or differ")
    return {
        key: sum(part[key] for part in parts) / len(parts)
        if parts[0][key].is_floating_point()
        else parts[0][key]
        for key in parts[0]
    }


def load_network(
    path: str | Path,
    fallback_config: Mapping[str, Any]
    | Callable[[Mapping[str, torch.Tensor]], Mapping[str, Any]]
    | None = None,
) -> LoadedNetwork:
    """Rebuild the network of a checkpoint and load its weights.

    The network is built from the record the checkpoint carries (every checkpoint svblur's
    training systems write); for a file without one (a converted or released state dict, a
    checkpoint written before the record existed) from ``fallback_config``, except for the
    authors' released CMOS files, which need no config. ``pretrained`` switches are turned
    off (the checkpoint has the weights), so nothing is downloaded; only a ``pretrained``
    naming an existing local directory is kept (frozen parts a network reads from there).

    Args:
        path: The checkpoint.
        fallback_config: Network config used when the checkpoint records none, or a
            function of the checkpoint's state dict that returns one (e.g. to read the
            number of classes from it).

    Raises:
        CheckpointError: The file cannot be read, or holds no network svblur can rebuild.
        CheckpointMismatchError: The weights do not fit the network.
    """
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{path}: holds a {type(checkpoint).__name__}, expected a checkpoint")
    record = checkpoint.get(RECORD_KEY)
    config: Any = record.get("net") if isinstance(record, Mapping) else None
    recorded = config is not None
    state = read_state_dict(checkpoint)
    average_of = record.get("average_of") if isinstance(record, Mapping) else None
    if average_of:  # branches of one network (PBaSR): the inference network is their mean
        state = _average_branches(state, list(average_of), path)
    if config is None and detect_official_kind(state) == "cmos":
        classes = int(from_official_cmos(state)["output_heads.seg.classifier.weight"].shape[0])
        config = {"_target_": "svblur.models.CMOS", "num_classes": classes}
    if config is None:
        config = fallback_config(state) if callable(fallback_config) else fallback_config
    if config is None:
        raise CheckpointError(
            f"{path}: records no network and none was given; pass the model config it was "
            "trained with (e.g. model=cmos)"
        )
    config = _without_downloads(dict(config))
    net = build_network(config)
    try:
        load_weights(net, state)
    except CheckpointMismatchError as error:
        hint = "" if recorded else " (the checkpoint records no network: pass its model config)"
        raise CheckpointMismatchError(
            str(error).replace("the state dict", str(path)) + hint
        ) from None
    kind = checkpoint_kind(checkpoint) or kind_of_config(config)
    return LoadedNetwork(net=net.eval(), kind=kind, config=config, recorded=recorded)
