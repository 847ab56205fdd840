"""ESRGAN-family weights in and out of svblur: RRDBNet generators, Real-ESRGAN's
discriminator and the released PBaSR-ESRGAN file (``svblur-convert``).

The kinds :func:`detect_esrgan_kind` recognises (:data:`ESRGAN_KINDS`):

- ``basicsr_rrdbnet``: BasicSR's ``RRDBNet`` (Real-ESRGAN's ``RealESRGAN_x4plus.pth`` and
  ``x2plus``, BasicSR's ESRGAN files), in ``params_ema``, ``params`` or a bare dict;
- ``esrgan_rrdbnet``: ESRGAN's own ``RRDBNet_arch.py`` (``RRDB_ESRGAN_x4.pth``);
- ``old_esrgan_rrdbnet``: ESRGAN's first releases, one ``nn.Sequential`` (``model.N``);
- ``svblur_rrdbnet``: svblur's :class:`~svblur.models.RRDBNet` (e.g. PBaSR's export);
- ``unet_discriminator``: Real-ESRGAN's ``UNetDiscriminatorSN`` (``RealESRGAN_x4plus_netD
  .pth``); its names are svblur's, spectral norm included (``weight_orig``, ``weight_u``,
  ``weight_v``);
- ``pbasr_esrgan``: the released PBaSR-ESRGAN file, a ``ParallelNet_ncb`` state dict:
  ``general_branch.*`` and ``defocus_branch.*`` (two BasicSR RRDBNets) and ``combinet.*``,
  the deployed network, their mean.

The RRDBNet layouts, for ``B`` blocks and ``S`` upsampling stages; each conv has a
``.weight`` and a ``.bias`` (svblur: BasicSR / Real-ESRGAN; ESRGAN; old ESRGAN):

- ``conv_first``: ``conv_first``; ``conv_first``; ``model.0``
- ``body.{i}.dense{j}.conv{k}``: ``body.{i}.rdb{j}.conv{k}``;
  ``RRDB_trunk.{i}.RDB{j}.conv{k}``; ``model.1.sub.{i}.RDB{j}.conv{k}.0``
- ``conv_body``: ``conv_body``; ``trunk_conv``; ``model.1.sub.{B}``
- ``conv_up{n}`` (n = 1 .. S): ``conv_up{n}``; ``upconv{n}``; ``model.{3n}``
- ``conv_hr``: ``conv_hr``; ``HRconv``; ``model.{3S+2}``
- ``conv_last``: ``conv_last``; ``conv_last``; ``model.{3S+4}``

The sizes (features, blocks, growth, scale) are read from the shapes. BasicSR's x2 and x1
models pixel-unshuffle their input (``conv_first`` takes 4 or 16 times the image's
channels, with the two stages of x4): they become ``RRDBNet(pixel_unshuffle=True)``.

A converted file is ``{"state_dict": ..., "svblur": record}`` (:meth:`ESRGANConversion.
checkpoint`): the record (:func:`~svblur.checkpoints.network_record`, kind ``gan_sr`` for a
generator) holds the network's config, so that :func:`~svblur.checkpoints.load_network`
and ``svblur-predict`` rebuild it. :func:`to_basicsr` writes a generator or a
discriminator back in BasicSR's layout (``params_ema`` / ``params``).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from svblur.errors import CheckpointError, InputError

from .convert import _shapes_of
from .loading import _average_branches
from .reading import read_state_dict
from .record import RECORD_KEY, network_record

__all__ = [
    "ESRGAN_KINDS",
    "ESRGANConversion",
    "convert_esrgan",
    "detect_esrgan_kind",
    "from_esrgan_rrdbnet",
    "select_network",
    "to_basicsr",
    "to_basicsr_rrdbnet",
]

#: The files :func:`detect_esrgan_kind` recognises, and what each is.
ESRGAN_KINDS: dict[str, str] = {
    "basicsr_rrdbnet": "BasicSR / Real-ESRGAN RRDBNet: conv_first, body.N.rdbJ, conv_up1/2, ...",
    "esrgan_rrdbnet": "ESRGAN RRDBNet: conv_first, RRDB_trunk.N.RDBJ, trunk_conv, upconv1/2, HRconv",
    "old_esrgan_rrdbnet": "old ESRGAN layout: model.0, model.1.sub.N.RDBJ.convK.0, model.3 ...",
    "svblur_rrdbnet": "svblur RRDBNet: conv_first, body.N.denseJ, conv_up1/2, ...",
    "unet_discriminator": "Real-ESRGAN UNetDiscriminatorSN (spectral norm)",
    "pbasr_esrgan": "released PBaSR-ESRGAN (ParallelNet_ncb: general_branch, defocus_branch, "
    "combinet)",
}

_SYSTEM = "svblur-convert"
_RRDBNET = "svblur.models.RRDBNet"
_DISCRIMINATOR = "svblur.models.UNetDiscriminatorSN"
_BRANCHES = ("general_branch", "defocus_branch")
# The tolerance of "combinet is the mean of the branches": the released code computes it
# in float32 as 0.5 * W_G + 0.5 * W_B.
_MEAN_RTOL, _MEAN_ATOL = 1e-5, 1e-6


@dataclass(frozen=True)
class _Layout:
    """Module names of one RRDBNet layout, as ``str.format`` templates: ``{i}`` block,
    ``{j}`` dense block, ``{k}`` conv, ``{blocks}`` number of blocks, ``{n}`` upsampling
    stage (from 1), ``{index}`` the position in the old layout's ``nn.Sequential``."""

    first: str
    block: str
    trunk: str
    up: str
    hr: str
    last: str


_LAYOUTS: dict[str, _Layout] = {
    "svblur_rrdbnet": _Layout(
        "conv_first", "body.{i}.dense{j}.conv{k}", "conv_body", "conv_up{n}", "conv_hr", "conv_last"
    ),
    "basicsr_rrdbnet": _Layout(
        "conv_first", "body.{i}.rdb{j}.conv{k}", "conv_body", "conv_up{n}", "conv_hr", "conv_last"
    ),
    "esrgan_rrdbnet": _Layout(
        "conv_first",
        "RRDB_trunk.{i}.RDB{j}.conv{k}",
        "trunk_conv",
        "upconv{n}",
        "HRconv",
        "conv_last",
    ),
    "old_esrgan_rrdbnet": _Layout(
        "model.0",
        "model.1.sub.{i}.RDB{j}.conv{k}.0",
        "model.1.sub.{blocks}",
        "model.{index}",
        "model.{index}",
        "model.{index}",
    ),
}


def _pattern(template: str) -> str:
    """A regex for a layout template: ``{i}`` captured as group ``i``, other fields digits."""
    escaped = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)")
    return re.sub(r"\\\{\w+\\\}", r"\\d+", escaped)


def _generator_layout(keys: set[str]) -> str | None:
    """Which RRDBNet layout ``keys`` are in (``None``: none). ESRGAN's layout is told from
    the released RRDB-SFT's, which shares its block names, by the SFT layers it lacks."""
    for layout, names in _LAYOUTS.items():
        block = re.compile(_pattern(names.block) + r"\.")
        if f"{names.first}.weight" in keys and any(block.match(key) for key in keys):
            if layout == "esrgan_rrdbnet" and any(".SFT." in key for key in keys):
                continue
            return layout
    return None


def _blocks_and_stages(layout: str, keys: set[str]) -> tuple[int, int]:
    """Number of blocks and of upsampling stages of an RRDBNet state dict in ``layout``."""
    names = _LAYOUTS[layout]
    block = re.compile(_pattern(names.block) + r"\.")
    blocks = 1 + max(int(m["i"]) for key in keys if (m := block.match(key)))
    if layout == "old_esrgan_rrdbnet":  # conv_last is model.{3S+4}
        top = [int(m[1]) for key in keys if (m := re.fullmatch(r"model\.(\d+)\.weight", key))]
        return blocks, max(0, (max(top, default=4) - 4) // 3)
    up = re.compile(_pattern(names.up) + r"\.weight")
    return blocks, sum(1 for key in keys if up.fullmatch(key))


def _layout_keys(layout: str, blocks: int, stages: int) -> dict[str, str]:
    """svblur's RRDBNet key -> the same tensor's key in ``layout``."""
    ours, theirs = _LAYOUTS["svblur_rrdbnet"], _LAYOUTS[layout]
    modules = [(ours.first, theirs.first)]
    for i, j, k in itertools.product(range(blocks), (1, 2, 3), range(1, 6)):
        modules.append((ours.block.format(i=i, j=j, k=k), theirs.block.format(i=i, j=j, k=k)))
    modules.append((ours.trunk, theirs.trunk.format(blocks=blocks)))
    for n in range(1, stages + 1):
        modules.append((ours.up.format(n=n), theirs.up.format(n=n, index=3 * n)))
    modules.append((ours.hr, theirs.hr.format(index=3 * stages + 2)))
    modules.append((ours.last, theirs.last.format(index=3 * stages + 4)))
    return {f"{o}.{p}": f"{t}.{p}" for o, t in modules for p in ("weight", "bias")}


def _check_keys(name: str, found: set[str], expected: set[str], what: str) -> None:
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        parts = [f"{len(missing)} keys missing, e.g. {missing[:4]}"] if missing else []
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:4]}")
        raise InputError(f"{name}: not a complete {what}: {'; '.join(parts)}")


def _check_shapes(
    name: str, state: Mapping[str, torch.Tensor], config: Mapping[str, Any], names: Mapping
) -> None:
    """Every tensor has the shape of the network ``config`` builds (``names``: the file's
    key of each svblur key, for the message)."""
    expected = _shapes_of(config)
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key]):
            raise InputError(
                f"{name}: {names.get(key, key)}: shape {tuple(value.shape)}, expected "
                f"{tuple(expected[key])} for {_describe(config)}"
            )


def _conv_weight(name: str, state: Mapping[str, torch.Tensor], key: str, theirs: str) -> torch.Size:
    if state[key].dim() != 4:
        raise InputError(
            f"{name}: {theirs}: expected a conv weight, got shape {tuple(state[key].shape)}"
        )
    return state[key].shape


def _describe(config: Mapping[str, Any]) -> str:
    """``RRDBNet(num_features=64, ...)`` for a network config."""
    args = ", ".join(f"{k}={v}" for k, v in config.items() if not k.startswith("_"))
    return f"{str(config['_target_']).rpartition('.')[2]}({args})"


def from_esrgan_rrdbnet(
    state: Mapping[str, torch.Tensor], name: str = "the state dict"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An RRDBNet state dict in any layout of the table above -> svblur's, and its config.

    Args:
        state: The tensors (no wrapper, no ``module.`` prefix).
        name: How messages name the source (usually its path).

    Returns:
        The state dict of :class:`~svblur.models.RRDBNet` (same tensors, renamed; loads
        with ``strict=True``) and the network config ``{"_target_": ..., **sizes}`` read
        from the shapes.

    Raises:
        InputError: Not an RRDBNet, keys missing or unexpected for its layout, or a shape
            that does not fit; the message names the file and the key.
    """
    layout = _generator_layout(set(state))
    if layout is None:
        raise InputError(
            f"{name}: no RRDBNet keys (expected conv_first and body.N.rdbJ / "
            f"RRDB_trunk.N.RDBJ / model.1.sub.N.RDBJ, found e.g. {sorted(state)[:3]})"
        )
    blocks, stages = _blocks_and_stages(layout, set(state))
    ours_to_theirs = _layout_keys(layout, blocks, stages)
    theirs_to_ours = {theirs: ours for ours, theirs in ours_to_theirs.items()}
    _check_keys(name, set(state), set(theirs_to_ours), ESRGAN_KINDS[layout].split(":")[0])
    converted = {theirs_to_ours[key]: value for key, value in state.items()}
    first, growth, last = (
        _conv_weight(name, converted, key, ours_to_theirs[key])
        for key in ("conv_first.weight", "body.0.dense1.conv1.weight", "conv_last.weight")
    )
    out_channels = last[0]
    config: dict[str, Any] = {
        "_target_": _RRDBNET,
        "in_channels": int(first[1]),
        "out_channels": int(out_channels),
        "num_features": int(first[0]),
        "num_blocks": blocks,
        "growth_channels": int(growth[0]),
        "scale": 2**stages,
    }
    if stages == 2 and first[1] in (4 * out_channels, 16 * out_channels):  # BasicSR x2 / x1
        factor = 2 if first[1] == 4 * out_channels else 4
        config.update(in_channels=int(out_channels), scale=4 // factor, pixel_unshuffle=True)
    _check_shapes(name, converted, config, ours_to_theirs)
    return converted, config


def to_basicsr_rrdbnet(
    state: Mapping[str, torch.Tensor], name: str = "the state dict"
) -> dict[str, torch.Tensor]:
    """svblur's :class:`~svblur.models.RRDBNet` state dict -> BasicSR's key names.

    BasicSR's ``RRDBNet`` always has two upsampling stages (its x2 and x1 pixel-unshuffle
    the input): svblur's x4, and its x2 / x1 built with ``pixel_unshuffle=True``, fit.

    Raises:
        InputError: Not svblur's RRDBNet keys, or another number of upsampling stages.
    """
    if _generator_layout(set(state)) != "svblur_rrdbnet":
        raise InputError(f"{name}: expected svblur RRDBNet keys (conv_first, body.N.denseJ, ...)")
    blocks, stages = _blocks_and_stages("svblur_rrdbnet", set(state))
    if stages != 2:
        raise InputError(
            f"{name}: an RRDBNet with {stages} upsampling stage(s); BasicSR's RRDBNet has two "
            "(x4, or x2 / x1 with pixel_unshuffle=True), so this one has no BasicSR layout"
        )
    names = _layout_keys("basicsr_rrdbnet", blocks, stages)
    _check_keys(name, set(state), set(names), "svblur RRDBNet")
    return {names[key]: value for key, value in state.items()}


def _discriminator_keys() -> set[str]:
    plain = {f"conv{i}.{p}" for i in (0, 9) for p in ("weight", "bias")}
    normed = {f"conv{i}.{p}" for i in range(1, 9) for p in ("weight_orig", "weight_u", "weight_v")}
    return plain | normed


def _from_discriminator(
    state: Mapping[str, torch.Tensor], name: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Real-ESRGAN's UNetDiscriminatorSN -> svblur's (same names), checked, and its config."""
    what = "UNetDiscriminatorSN (conv0, conv1..8 with spectral norm, conv9)"
    _check_keys(name, set(state), _discriminator_keys(), what)
    first = _conv_weight(name, state, "conv0.weight", "conv0.weight")
    config = {
        "_target_": _DISCRIMINATOR,
        "in_channels": int(first[1]),
        "num_features": int(first[0]),
    }
    _check_shapes(name, state, config, {})
    return dict(state), config


def detect_esrgan_kind(state: Mapping[str, torch.Tensor]) -> str | None:
    """Which ESRGAN-family file ``state`` is: a key of :data:`ESRGAN_KINDS`, or ``None``."""
    keys = set(state)
    if all(any(key.startswith(f"{branch}.") for key in keys) for branch in _BRANCHES):
        return "pbasr_esrgan"
    if {"conv0.weight", "conv1.weight_orig", "conv9.weight"} <= keys:
        return "unet_discriminator"
    return _generator_layout(keys)


@dataclass(frozen=True)
class ESRGANConversion:
    """The result of :func:`convert_esrgan`.

    Attributes:
        kind: What the file was (a key of :data:`ESRGAN_KINDS`).
        network: ``"generator"``, ``"discriminator"`` or ``"branches"`` (PBaSR's two
            generators, ``general.*`` and ``blur.*`` as :class:`~svblur.systems.PBaSRTask`
            names them).
        state_dict: svblur's state dict.
        config: The config of the network (of each branch for ``"branches"``).
        notes: What the conversion checked or chose, one line each.
    """

    kind: str
    network: str
    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]
    notes: tuple[str, ...] = field(default=())

    def record(self) -> dict[str, Any]:
        """svblur's record of the converted network (kind ``gan_sr`` for generators).

        A discriminator's kind is ``discriminator``, which prediction refuses; the branches
        are recorded as a :class:`~svblur.systems.PBaSRTask`'s (``average_of``), so that
        :func:`~svblur.checkpoints.load_network` rebuilds their mean.
        """
        if self.network == "branches":
            record = network_record("PBaSRTask", self.config, "gan_sr")
            record["average_of"] = ["general.", "blur."]
        else:
            kind = "gan_sr" if self.network == "generator" else "discriminator"
            record = network_record(_SYSTEM, self.config, kind)
        record["converted_from"] = self.kind
        return record

    def checkpoint(self) -> dict[str, Any]:
        """What ``svblur-convert`` writes: ``{"state_dict": ..., "svblur": record}``."""
        return {"state_dict": dict(self.state_dict), RECORD_KEY: self.record()}


def select_network(
    checkpoint: Mapping[str, Any], part: str = "generator", name: str = "the checkpoint"
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The tensors of one network of a checkpoint, and the config its record gives them.

    A checkpoint of svblur's GAN systems holds several networks: ``part="generator"``
    gives the evaluated generator (the mean of the branches its record names, e.g. PBaSR's
    ``general.`` and ``blur.``), ``part="discriminator"`` the ``discriminator.`` weights.
    Any other file (a state dict, ``params_ema`` / ``params``, a converted file) gives its
    tensors as they are.

    Raises:
        CheckpointError: No state dict of tensors, or no discriminator for
            ``part="discriminator"``.
    """
    if part not in ("generator", "discriminator"):
        raise InputError(f"part: expected 'generator' or 'discriminator', got {part!r}")
    try:
        state = read_state_dict(checkpoint)
    except CheckpointError:
        raise CheckpointError(
            f"{name}: holds no state dict of tensors; expected a state dict, BasicSR's "
            "params_ema / params, or a checkpoint of svblur"
        ) from None
    record = checkpoint.get(RECORD_KEY)
    record = record if isinstance(record, Mapping) else {}
    if part == "discriminator":
        prefix = "discriminator."
        found = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not found:
            raise CheckpointError(
                f"{name}: no 'discriminator.' weights; --part discriminator reads a checkpoint "
                "of a GAN system (GANSRTask, PBaSRTask)"
            )
        return found, None
    if record.get("average_of"):
        state = _average_branches(state, list(record["average_of"]), name)
    config = record.get("net")
    return state, dict(config) if isinstance(config, Mapping) else None


def _pbasr_esrgan(state: Mapping[str, torch.Tensor], name: str, branches: bool) -> ESRGANConversion:
    """The released ``ParallelNet_ncb`` file -> the deployed generator or both branches."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        prefix, _, rest = key.partition(".")
        if prefix not in (*_BRANCHES, "combinet"):
            raise InputError(
                f"{name}: unexpected key {key!r} in a PBaSR-ESRGAN file (expected "
                "general_branch.*, defocus_branch.* and combinet.*)"
            )
        parts.setdefault(prefix, {})[rest] = value
    general, config = from_esrgan_rrdbnet(parts["general_branch"], f"{name} (general_branch)")
    blur, blur_config = from_esrgan_rrdbnet(parts["defocus_branch"], f"{name} (defocus_branch)")
    if blur_config != config:
        raise InputError(
            f"{name}: the branches differ: general_branch is {_describe(config)}, "
            f"defocus_branch {_describe(blur_config)}"
        )
    mean = {k: (v.double() + blur[k].double()) / 2 for k, v in general.items()}
    notes = []
    combined = None
    if "combinet" in parts:
        combined, combined_config = from_esrgan_rrdbnet(parts["combinet"], f"{name} (combinet)")
        differences = {k: float((v.double() - mean[k]).abs().max()) for k, v in combined.items()}
        worst = max(differences, key=differences.__getitem__)
        close = combined_config == config and all(
            torch.allclose(v.double(), mean[k], rtol=_MEAN_RTOL, atol=_MEAN_ATOL)
            for k, v in combined.items()
        )
        if not close and not branches:
            raise InputError(
                f"{name}: combinet is not the mean of general_branch and defocus_branch "
                f"(largest difference {differences[worst]:.3g} at combinet.{worst}); convert "
                "with --branches to take the two branches (svblur deploys their mean)"
            )
        verdict = "equals" if close else "differs from (not used)"
        notes.append(
            f"combinet {verdict} (general_branch + defocus_branch) / 2 "
            f"(largest difference {differences[worst]:.1e})"
        )
    if branches:
        out = {**{f"general.{k}": v for k, v in general.items()}}
        out.update({f"blur.{k}": v for k, v in blur.items()})
        notes.append("general_branch -> general.*, defocus_branch -> blur.* (PBaSRTask's names)")
        return ESRGANConversion("pbasr_esrgan", "branches", out, config, tuple(notes))
    if combined is None:
        combined = {k: v.to(general[k].dtype) for k, v in mean.items()}
        notes.append("no combinet in the file: the deployed generator is the branches' mean")
    return ESRGANConversion("pbasr_esrgan", "generator", combined, config, tuple(notes))


def convert_esrgan(
    state: Mapping[str, torch.Tensor],
    name: str = "the state dict",
    *,
    branches: bool = False,
    config: Mapping[str, Any] | None = None,
) -> ESRGANConversion:
    """Convert any ESRGAN-family file (:data:`ESRGAN_KINDS`; the kind is detected).

    Args:
        state: The file's tensors (see :func:`select_network`).
        name: How messages name the source (usually its path).
        branches: Of a released PBaSR-ESRGAN file, keep both branches (for training)
            instead of the deployed generator; then ``combinet`` need not be their mean.
        config: The network config recorded with svblur weights; used where it builds a
            network the weights fit (it tells the options the shapes leave open).

    Raises:
        InputError: Not an ESRGAN-family file, ``branches`` for another file, keys or
            shapes that do not fit, or a released PBaSR ``combinet`` that is not the
            branches' mean (the message names the file and the key).
    """
    kind = detect_esrgan_kind(state)
    if kind is None:
        raise InputError(
            f"{name}: no ESRGAN-family keys (expected one of: {'; '.join(ESRGAN_KINDS.values())})"
        )
    if branches and kind != "pbasr_esrgan":
        raise InputError(
            f"{name}: --branches applies to the released PBaSR-ESRGAN file; this is {kind}"
        )
    if kind == "pbasr_esrgan":
        return _pbasr_esrgan(state, name, branches)
    if kind == "unet_discriminator":
        converted, found = _from_discriminator(state, name)
        return ESRGANConversion(kind, "discriminator", converted, found)
    converted, found = from_esrgan_rrdbnet(state, name)
    notes: tuple[str, ...] = ()
    if config is not None and str(config.get("_target_", "")).endswith(".RRDBNet"):
        recorded = {**found, **{k: v for k, v in config.items() if not k.startswith("_")}}
        if _shapes_of(recorded) == {k: v.shape for k, v in converted.items()}:
            found, notes = recorded, ("sizes from the file's svblur record",)
    return ESRGANConversion(kind, "generator", converted, found, notes)


def to_basicsr(conversion: ESRGANConversion, name: str = "the state dict") -> dict[str, Any]:
    """A converted network in BasicSR's layout, wrapped as BasicSR and Real-ESRGAN load it:
    ``{"params_ema": ...}`` for a generator, ``{"params": ...}`` for a discriminator.

    Raises:
        InputError: PBaSR's two branches (write one network), or a generator without
            BasicSR's two upsampling stages.
    """
    if conversion.network == "discriminator":
        return {"params": dict(conversion.state_dict)}
    if conversion.network == "branches":
        raise InputError(f"{name}: BasicSR's layout holds one network; convert without --branches")
    return {"params_ema": to_basicsr_rrdbnet(conversion.state_dict, name)}
