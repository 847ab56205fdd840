"""Checkpoints: reading them safely, loading weights strictly, rebuilding their network.

Every file is read with ``torch.load(..., weights_only=True)``; a file that is missing,
truncated, not a checkpoint, or one that needs arbitrary pickled objects is answered with a
:class:`CheckpointError` that names the file (never with the advice to load it unsafely).

The training systems record in each checkpoint what they are and how their network is
built (``checkpoint["svblur"]``, see :func:`network_record`), so that
:func:`load_network` rebuilds the network of any checkpoint svblur trains without the
training config.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from svblur.errors import (
    CheckpointError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    InputError,
)
from svblur.io import atomic_path, read_checkpoint

from .convert import (
    detect_official_kind,
    from_official_blind_sr,
    from_official_cmos,
    from_official_rrdb_sft,
    strip_prefixes,
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

#: Key of the record a training system writes into its checkpoints.
RECORD_KEY = "svblur"

#: Kinds of network a checkpoint can hold, by what they compute from an LR image.
#: ``estimator``: blur and/or semantic maps (stage 1: CMOS, MANet, ...);
#: ``non_blind_sr``: SR given the maps (stage 2: RRDB-SFT); ``blind_sr``: SR and maps;
#: ``diffusion_sr``: SR by reverse diffusion (SSR stage 3, ``DiffusionSR.sample``).
_KIND_BY_SYSTEM = {
    "BlurSemanticsTask": "estimator",
    "NonBlindSRTask": "non_blind_sr",
    "BlindSRTask": "blind_sr",
    "KernelBlindSRTask": "blind_sr",
    "GANSRTask": "blind_sr",
    "PBaSRTask": "blind_sr",
    "DiffusionSRTask": "diffusion_sr",
}


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
    from .blind_sr import BlindSR
    from .cmos import CMOS
    from .rrdb_sft import RRDBSFT

    state = read_state_dict(source)
    expected = module.state_dict()
    kind = detect_official_kind(state)
    if kind is not None and not set(state) <= set(expected):
        cmos = {k: v for k, v in state.items() if k.startswith("cmos.")}
        rest = {k: v for k, v in state.items() if not k.startswith("cmos.")}
        if kind == "blind_sr" and isinstance(module, BlindSR):
            state = from_official_blind_sr(state)
        elif kind == "blind_sr" and isinstance(module, CMOS):
            state = from_official_cmos(cmos)
        elif kind == "blind_sr" and isinstance(module, RRDBSFT):
            state = from_official_rrdb_sft(rest)
        elif kind == "cmos":
            state = from_official_cmos(state)
        elif kind == "rrdb_sft":
            state = from_official_rrdb_sft(state)
    state = _select_prefix(state, set(expected))
    check_fits(module, state, str(source) if isinstance(source, (str, Path)) else "the state dict")
    module.load_state_dict(state, strict=True)
    return state


# ------------------------------------------------------------------ rebuilding networks


def network_record(system: str, net_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The record a training system stores under ``checkpoint["svblur"]``.

    Args:
        system: The LightningModule's class name (e.g. ``"BlurSemanticsTask"``).
        net_config: How its network is built: ``{"_target_": "pkg.Class", **kwargs}``,
            nested for sub-networks (Hydra's convention), with plain values only.
    """
    from svblur import __version__

    return {
        "system": system,
        "kind": _KIND_BY_SYSTEM.get(system),
        "net": None if net_config is None else dict(net_config),
        "version": __version__,
    }


def checkpoint_kind(checkpoint: Mapping[str, Any]) -> str | None:
    """What a checkpoint's network computes: ``estimator``, ``non_blind_sr``, ``blind_sr``.

    Read from the record the training systems write; for checkpoints written before there
    was one, from the saved hyper-parameters (stage 3 records ``estimator_ckpt``, the
    stage-1 system ``aux_weight``, stage 2 ``quantize_metrics``). ``None``: unknown (a
    plain state dict, a released file).
    """
    record = checkpoint.get(RECORD_KEY)
    if isinstance(record, Mapping) and record.get("kind"):
        return str(record["kind"])
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, Mapping):
        return None
    if "estimator_ckpt" in hparams:
        return "blind_sr"
    if "aux_weight" in hparams:
        return "estimator"
    if "quantize_metrics" in hparams:
        return "non_blind_sr"
    return None


def _without_downloads(config: Any) -> Any:
    """``config`` with every ``pretrained`` switched off: the checkpoint has the weights."""
    if isinstance(config, Mapping):
        return {
            k: (False if k == "pretrained" else _without_downloads(v)) for k, v in config.items()
        }
    if isinstance(config, list):
        return [_without_downloads(v) for v in config]
    return config


def build_network(config: Mapping[str, Any]) -> nn.Module:
    """Instantiate a network config ``{"_target_": "pkg.Class", **kwargs}`` without Hydra.

    Nested mappings with a ``_target_`` are built first (sub-networks); other keys starting
    with ``_`` are ignored. Only ``nn.Module`` classes are instantiated, so a config read
    from a checkpoint cannot call arbitrary functions.

    Raises:
        InputError: No ``_target_``, a target that does not import, or one that is not an
            ``nn.Module`` class.
    """

    def build(value: Any) -> Any:
        if isinstance(value, Mapping) and "_target_" in value:
            return build_network(value)
        if isinstance(value, list):
            return [build(v) for v in value]
        return value

    target = config.get("_target_")
    if not isinstance(target, str) or "." not in target:
        raise InputError(f"network config: expected '_target_: package.Class', got {target!r}")
    module_name, _, attribute = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise InputError(f"network config: cannot import _target_ {target!r} ({error})") from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise InputError(f"network config: _target_ {target!r} is not an nn.Module class")
    kwargs = {k: build(v) for k, v in config.items() if not k.startswith("_")}
    return cls(**kwargs)


@dataclass
class LoadedNetwork:
    """A network rebuilt from a checkpoint, in eval mode, with the checkpoint's weights.

    Attributes:
        net: The network.
        kind: ``estimator``, ``non_blind_sr`` or ``blind_sr`` (see :func:`checkpoint_kind`).
        config: The network config it was built from.
        recorded: Whether that config came from the checkpoint (else from the caller).
    """

    net: nn.Module
    kind: str
    config: dict[str, Any]
    recorded: bool


def _kind_of(net: nn.Module) -> str:
    from .blind_sr import BlindSR
    from .diffusion_sr import DiffusionSR
    from .rrdb_sft import RRDBSFT
    from .rrdbnet import RRDBNet

    if isinstance(net, DiffusionSR):
        return "diffusion_sr"
    if isinstance(net, (BlindSR, RRDBNet)):
        return "blind_sr"
    if isinstance(net, RRDBSFT):
        return "non_blind_sr"
    return "estimator"


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
    off (the checkpoint has the weights), so nothing is downloaded.

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
    kind = checkpoint_kind(checkpoint) or _kind_of(net)
    return LoadedNetwork(net=net.eval(), kind=kind, config=config, recorded=recorded)
