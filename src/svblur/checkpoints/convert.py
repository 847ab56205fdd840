"""Convert checkpoints of other formats to and from svblur's networks.

BasicSR / Real-ESRGAN ``RRDBNet`` files: :func:`from_basicsr_rrdbnet`. The CMOS authors'
released files: the rest of this module, described below.

The released stage-1 files (``CMOS_NYUv2_BSR.pth``, ``CMOS_Cityscapes_BSR.pth``) are plain
state dicts of the released ``CMOS`` module, usually with a ``cmos.`` prefix (and
``module.`` when saved from a multi-GPU wrapper). Every released key has exactly one
svblur key; the values are unchanged. Name map (released -> svblur):

==========================================  ==========================================
``backbone.*``                              ``backbone.*`` (timm HRNet keys)
``heads.{s}.refinement.{task}.{i}.*``       ``heads.{s}.{task}.{i}.*``
``heads.0.decoders.{task}.*``               ``aux_heads.{task}.*``
``GIA_m.{k}.*`` (stage 2, scale k + 1)      ``task_gia2.{k}.*``
``GIA_s.{k}.*`` / ``GIA_b.{k}.*``           ``scale_gia.seg.{k}.*`` / ``scale_gia.blur.{k}.*``
``GIA_l.{k}.*`` (stage 3)                   ``task_gia3.{k}.*``
``predict.{task}.last_layer.{0,1,3}.*``     ``output_heads.{task}.{fuse,bn,classifier}.*``
==========================================  ==========================================

and inside a GIA (``1`` = first input ``a`` = blur in task GIAs, ``2`` = ``b``):
``upsample_layer.{down_h,down_l,flow_make,conv_last}`` ->
``align.{reduce_src,reduce_ref,flow_conv,project}``; ``channel.c{1,2}`` ->
``channel.c_{a,b}``; ``channel.channel_att{1,2}.conv_bn_relu`` -> ``channel.embed_{a,b}``;
``channel.channel_att{1,2}.conv_1x1`` -> ``channel.squeeze_{a,b}``; ``channel.mlp{1,2}`` ->
``channel.mlp_{a,b}``; ``channel.smooth{1,2}`` -> ``channel.out_{a,b}``; ``spatial.s{1,2}``
-> ``spatial.s_{a,b}``; ``spatial.conv_first{1,2}`` -> ``spatial.embed_{a,b}``;
``spatial.conv{1,2}`` -> ``spatial.gate_{a,b}``; ``spatial.conv_after_window{1,2}`` ->
``spatial.window_embed_{a,b}``; ``spatial.conv_redu{1,2}`` -> ``spatial.reduce_{a,b}``;
``spatial.smooth{1,2}`` -> ``spatial.out_{a,b}``; and, crossed in the released code,
``smooth2`` -> ``fuse_a``, ``smooth1`` -> ``fuse_b``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from svblur.errors import InputError

from .building import build_network

__all__ = [
    "RELEASED_KINDS",
    "ReleasedConversion",
    "convert_released",
    "detect_official_kind",
    "from_basicsr_rrdbnet",
    "from_official_blind_sr",
    "from_official_cmos",
    "from_official_rrdb_sft",
    "official_to_svblur_key",
    "official_to_svblur_rrdb_sft_key",
    "strip_prefixes",
    "svblur_to_official_key",
    "svblur_to_official_rrdb_sft_key",
    "to_official_blind_sr",
    "to_official_cmos",
    "to_official_rrdb_sft",
]

_PREFIXES = ("module.", "cmos.")

# Inside one GIA: (released sub-prefix, svblur sub-prefix).
_GIA_PARTS: tuple[tuple[str, str], ...] = (
    ("upsample_layer.down_h", "align.reduce_src"),
    ("upsample_layer.down_l", "align.reduce_ref"),
    ("upsample_layer.flow_make", "align.flow_conv"),
    ("upsample_layer.conv_last", "align.project"),
    *(
        pair
        for i, x in (("1", "a"), ("2", "b"))
        for pair in (
            (f"channel.c{i}", f"channel.c_{x}"),
            (f"channel.channel_att{i}.conv_bn_relu", f"channel.embed_{x}"),
            (f"channel.channel_att{i}.conv_1x1", f"channel.squeeze_{x}"),
            (f"channel.mlp{i}", f"channel.mlp_{x}"),
            (f"channel.smooth{i}", f"channel.out_{x}"),
            (f"spatial.s{i}", f"spatial.s_{x}"),
            (f"spatial.conv_first{i}", f"spatial.embed_{x}"),
            (f"spatial.conv{i}", f"spatial.gate_{x}"),
            (f"spatial.conv_after_window{i}", f"spatial.window_embed_{x}"),
            (f"spatial.conv_redu{i}", f"spatial.reduce_{x}"),
            (f"spatial.smooth{i}", f"spatial.out_{x}"),
        )
    ),
    ("smooth2", "fuse_a"),
    ("smooth1", "fuse_b"),
)
_HEAD_LAYERS = (("0", "fuse"), ("1", "bn"), ("3", "classifier"))

# Top level: (released pattern, svblur template, svblur pattern, released template);
# a `rest` group carries the remainder of the key.
_TOP: tuple[tuple[str, str, str, str], ...] = (
    (r"backbone\.(?P<rest>.+)", "backbone.{rest}", r"backbone\.(?P<rest>.+)", "backbone.{rest}"),
    (
        r"heads\.(?P<s>\d+)\.refinement\.(?P<t>seg|blur)\.(?P<rest>.+)",
        "heads.{s}.{t}.{rest}",
        r"heads\.(?P<s>\d+)\.(?P<t>seg|blur)\.(?P<rest>.+)",
        "heads.{s}.refinement.{t}.{rest}",
    ),
    (
        r"heads\.0\.decoders\.(?P<t>seg|blur)\.(?P<rest>.+)",
        "aux_heads.{t}.{rest}",
        r"aux_heads\.(?P<t>seg|blur)\.(?P<rest>.+)",
        "heads.0.decoders.{t}.{rest}",
    ),
)
_GIA_TOP: tuple[tuple[str, str], ...] = (
    ("GIA_m", "task_gia2"),
    ("GIA_s", "scale_gia.seg"),
    ("GIA_b", "scale_gia.blur"),
    ("GIA_l", "task_gia3"),
)


def _map_part(rest: str, parts: tuple[tuple[str, str], ...], reverse: bool) -> str | None:
    for official, ours in parts:
        src, dst = (ours, official) if reverse else (official, ours)
        if rest == src or rest.startswith(src + "."):
            return dst + rest[len(src) :]
    return None


def _convert_key(key: str, reverse: bool) -> str | None:
    for off_pat, our_tpl, our_pat, off_tpl in _TOP:
        pattern, template = (our_pat, off_tpl) if reverse else (off_pat, our_tpl)
        match = re.fullmatch(pattern, key)
        if match:
            return template.format(**match.groupdict())
    for official, ours in _GIA_TOP:
        src, dst = (ours, official) if reverse else (official, ours)
        match = re.fullmatch(re.escape(src) + r"\.(?P<k>\d+)\.(?P<rest>.+)", key)
        if match:
            inner = _map_part(match["rest"], _GIA_PARTS, reverse)
            return None if inner is None else f"{dst}.{match['k']}.{inner}"
    src_head, dst_head = (
        (r"output_heads\.(?P<t>seg|blur)\.", "predict.{t}.last_layer.")
        if reverse
        else (r"predict\.(?P<t>seg|blur)\.last_layer\.", "output_heads.{t}.")
    )
    match = re.match(src_head, key)
    if match:
        inner = _map_part(key[match.end() :], tuple((o, s) for o, s in _HEAD_LAYERS), reverse)
        return None if inner is None else dst_head.format(t=match["t"]) + inner
    return None


def official_to_svblur_key(key: str) -> str:
    """Map one released key (without ``cmos.``/``module.`` prefix) to svblur's.

    Raises:
        KeyError: ``key`` is not a key of the released CMOS.
    """
    mapped = _convert_key(key, reverse=False)
    if mapped is None:
        raise KeyError(f"unknown key in the released CMOS state dict: {key!r}")
    return mapped


def svblur_to_official_key(key: str) -> str:
    """Map one svblur :class:`CMOS` key to the released name.

    Raises:
        KeyError: ``key`` has no released counterpart (e.g. an ablation-only layer).
    """
    mapped = _convert_key(key, reverse=True)
    if mapped is None:
        raise KeyError(f"svblur CMOS key without a released counterpart: {key!r}")
    return mapped


def strip_prefixes(key: str, prefixes: tuple[str, ...] = _PREFIXES) -> str:
    """Remove any leading ``module.`` / ``cmos.`` prefixes (in any order, repeated)."""
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                changed = True
    return key


def from_basicsr_rrdbnet(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BasicSR / Real-ESRGAN RRDBNet keys (``body.{i}.rdb{j}.``) -> svblur's ``dense{j}``.

    Other keys are kept, so an svblur state dict passes unchanged.
    """
    return {re.sub(r"\.rdb([123])\.", r".dense\1.", key): value for key, value in state.items()}


def _shapes_of(config: Mapping[str, Any]) -> dict[str, torch.Size]:
    """The state dict shapes of the network ``config`` builds (on the meta device: no memory)."""
    with torch.device("meta"):
        model = build_network(config)
    return {k: v.shape for k, v in model.state_dict().items()}


def _expected_state(num_classes: int) -> dict[str, torch.Size]:
    return _shapes_of({"_target_": "svblur.models.CMOS", "num_classes": num_classes})


def _num_classes(state: Mapping[str, torch.Tensor], key: str) -> int:
    if key not in state:
        raise KeyError(f"cannot infer the number of classes: {key!r} missing")
    return int(state[key].shape[0])


@dataclass(frozen=True)
class _Family:
    """One released network: how its keys map to svblur's and which shapes it must have."""

    title: str
    prefixes: tuple[str, ...]
    to_svblur: Callable[[str], str]
    to_official: Callable[[str], str]
    expected: Callable[[Mapping[str, torch.Tensor]], Mapping[str, torch.Size]]


def _convert_family(
    state_dict: Mapping[str, torch.Tensor], family: _Family
) -> dict[str, torch.Tensor]:
    """Rename every released key of ``family`` and check the result against its shapes."""
    converted: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    for raw_key, value in state_dict.items():
        key = family.to_svblur(strip_prefixes(raw_key, family.prefixes))
        if key in converted:
            raise KeyError(f"duplicate entry for {key!r}: {sources[key]!r} and {raw_key!r}")
        converted[key] = value
        sources[key] = raw_key
    expected = family.expected(converted)
    missing = sorted(set(expected) - set(converted))
    if missing:
        names = [family.to_official(k) for k in missing]
        raise KeyError(f"{len(missing)} released {family.title} keys missing, e.g. {names[:5]}")
    for key, value in converted.items():
        if key not in expected:  # a well-formed name with no counterpart (e.g. GIA_m.7)
            raise KeyError(
                f"unknown key in the released {family.title} state dict: {sources[key]!r}"
            )
        if tuple(value.shape) != tuple(expected[key]):
            raise ValueError(
                f"{sources[key]}: shape {tuple(value.shape)}, expected {tuple(expected[key])}"
            )
    return converted


_CMOS = _Family(
    title="CMOS",
    prefixes=_PREFIXES,
    to_svblur=official_to_svblur_key,
    to_official=svblur_to_official_key,
    expected=lambda state: _expected_state(
        _num_classes(state, "output_heads.seg.classifier.weight")
    ),
)


def from_official_cmos(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a released CMOS state dict for ``CMOS(num_classes=K)`` (``K`` from the file).

    Args:
        state_dict: The released state dict; keys may carry ``module.`` and/or ``cmos.``.

    Returns:
        A state dict that loads into ``svblur.models.cmos.CMOS(num_classes=K)`` with
        ``strict=True`` (same tensors, renamed).

    Raises:
        KeyError: An unknown key (named in the message), a duplicate after prefix stripping,
            or keys of the released architecture that are missing.
        ValueError: A tensor whose shape differs from the released architecture's.
    """
    return _convert_family(state_dict, _CMOS)


def to_official_cmos(
    state_dict: Mapping[str, torch.Tensor], prefix: str = ""
) -> dict[str, torch.Tensor]:
    """Inverse of :func:`from_official_cmos`: svblur's full CMOS -> released key names.

    Args:
        state_dict: State dict of ``CMOS(num_classes=K)`` with the default architecture.
        prefix: Prepended to every key (``"cmos."`` gives the layout of the released files).

    Raises:
        KeyError: A key without released counterpart (ablations, single task, ``aux=False``).
    """
    return {prefix + svblur_to_official_key(k): v for k, v in state_dict.items()}


# --------------------------------------------------------------------------------------
# RRDB-SFT (stage 2) and BlindSR (stage 3)
#
# Released RRDB-SFT -> svblur :class:`~svblur.models.RRDBSFT`:
#
# ==========================================  ==========================================
# ``blur_conv.*`` / ``seg_conv.*``            ``prior.blur_embed.*`` / ``prior.seg_embed.*``
# ``fuse.*`` (a GIA, names as above)          ``prior.fuse.*``
# ``conv_first.*``, ``trunk_conv.*``          same
# ``RRDB_trunk.{i}.SFT.mul_conv{1,2}.*``      ``trunk.{i}.sft.scale_conv{1,2}.*``
# ``RRDB_trunk.{i}.SFT.add_conv{1,2}.*``      ``trunk.{i}.sft.shift_conv{1,2}.*``
# ``RRDB_trunk.{i}.RDB{j}.conv{k}.*``         ``trunk.{i}.dense{j}.conv{k}.*``
# ``upsampler.0.*``                           ``upsample.conv.*``
# ==========================================  ==========================================
#
# A released stage-3 file (``BlindSR_*.pth``) holds the CMOS under ``cmos.`` and the
# RRDB-SFT keys without prefix; svblur's :class:`~svblur.models.BlindSR` holds them as
# ``estimator.*`` and ``sr.*``.
# --------------------------------------------------------------------------------------

_RRDB_TOP: tuple[tuple[str, str], ...] = (
    ("blur_conv", "prior.blur_embed"),
    ("seg_conv", "prior.seg_embed"),
    ("conv_first", "conv_first"),
    ("trunk_conv", "trunk_conv"),
    ("upsampler.0", "upsample.conv"),
)
_SFT_PARTS = (
    ("mul_conv1", "scale_conv1"),
    ("mul_conv2", "scale_conv2"),
    ("add_conv1", "shift_conv1"),
    ("add_conv2", "shift_conv2"),
)


def _convert_rrdb_key(key: str, reverse: bool) -> str | None:
    for official, ours in _RRDB_TOP:
        src, dst = (ours, official) if reverse else (official, ours)
        if key.startswith(src + "."):
            return dst + key[len(src) :]
    src, dst = ("prior.fuse.", "fuse.") if reverse else ("fuse.", "prior.fuse.")
    if key.startswith(src):
        inner = _map_part(key[len(src) :], _GIA_PARTS, reverse)
        return None if inner is None else dst + inner
    if reverse:
        match = re.fullmatch(r"trunk\.(?P<i>\d+)\.(?P<rest>.+)", key)
        if match is None:
            return None
        rest = match["rest"]
        dense = re.fullmatch(r"dense(?P<j>[123])\.(?P<rest>conv[1-5]\..+)", rest)
        if dense:
            return f"RRDB_trunk.{match['i']}.RDB{dense['j']}.{dense['rest']}"
        if rest.startswith("sft."):
            inner = _map_part(rest[4:], _SFT_PARTS, reverse=True)
            return None if inner is None else f"RRDB_trunk.{match['i']}.SFT.{inner}"
        return None
    match = re.fullmatch(r"RRDB_trunk\.(?P<i>\d+)\.(?P<rest>.+)", key)
    if match is None:
        return None
    rest = match["rest"]
    dense = re.fullmatch(r"RDB(?P<j>[123])\.(?P<rest>conv[1-5]\..+)", rest)
    if dense:
        return f"trunk.{match['i']}.dense{dense['j']}.{dense['rest']}"
    if rest.startswith("SFT."):
        inner = _map_part(rest[4:], _SFT_PARTS, reverse=False)
        return None if inner is None else f"trunk.{match['i']}.sft.{inner}"
    return None


def official_to_svblur_rrdb_sft_key(key: str) -> str:
    """Map one released RRDB-SFT key (no prefix) to svblur's :class:`RRDBSFT` key.

    Raises:
        KeyError: ``key`` is not a key of the released RRDB-SFT.
    """
    mapped = _convert_rrdb_key(key, reverse=False)
    if mapped is None:
        raise KeyError(f"unknown key in the released RRDB-SFT state dict: {key!r}")
    return mapped


def svblur_to_official_rrdb_sft_key(key: str) -> str:
    """Map one svblur :class:`RRDBSFT` key to the released name.

    Raises:
        KeyError: ``key`` has no released counterpart (e.g. ``seg_encoding="none"``).
    """
    mapped = _convert_rrdb_key(key, reverse=True)
    if mapped is None:
        raise KeyError(f"svblur RRDB-SFT key without a released counterpart: {key!r}")
    return mapped


def _rrdb_sft_kwargs(state: Mapping[str, torch.Tensor]) -> dict[str, object]:
    """Architecture of a converted RRDB-SFT state dict (read from its shapes)."""
    needed = ("prior.blur_embed.weight", "conv_first.weight", "trunk.0.dense1.conv1.weight")
    for key in needed:
        if key not in state:
            raise KeyError(f"cannot read the RRDB-SFT architecture: {key!r} missing")
    blocks = 1 + max(
        int(m["i"]) for k in state if (m := re.match(r"trunk\.(?P<i>\d+)\.", k)) is not None
    )
    seg_weight = state.get("prior.seg_embed.weight")
    seg_channels = None if seg_weight is None else int(seg_weight.shape[1])
    out_weight = state.get("upsample.conv.weight")
    conv_first = state["conv_first.weight"]
    out_channels = 3
    scale = 4
    if out_weight is not None:
        scale = int(round((out_weight.shape[0] / out_channels) ** 0.5))
    return {
        "in_channels": int(conv_first.shape[1]),
        "num_features": int(conv_first.shape[0]),
        "num_blocks": blocks,
        "growth_channels": int(state["trunk.0.dense1.conv1.weight"].shape[0]),
        "prior_channels": int(state["prior.blur_embed.weight"].shape[0]),
        "seg_encoding": "none"
        if seg_channels is None
        else ("index" if seg_channels == 1 else "onehot"),
        "num_classes": None if seg_channels in (None, 1) else seg_channels,
        "scale": scale,
    }


def _expected_rrdb_sft_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Size]:
    return _shapes_of({"_target_": "svblur.models.RRDBSFT", **_rrdb_sft_kwargs(state)})


_RRDB_SFT = _Family(
    title="RRDB-SFT",
    prefixes=("module.",),
    to_svblur=official_to_svblur_rrdb_sft_key,
    to_official=svblur_to_official_rrdb_sft_key,
    expected=_expected_rrdb_sft_state,
)


def from_official_rrdb_sft(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a released RRDB-SFT state dict for :class:`~svblur.models.RRDBSFT`.

    The architecture (prior channels, number of blocks, ...) is read from the shapes; the
    released files load into ``RRDBSFT(prior_channels=64)`` (all other arguments default).

    Args:
        state_dict: The released state dict; keys may carry ``module.``.

    Returns:
        A state dict that loads with ``strict=True`` (same tensors, renamed).

    Raises:
        KeyError: An unknown key (named), a duplicate, or missing keys of the architecture.
        ValueError: A tensor whose shape does not fit the architecture.
    """
    return _convert_family(state_dict, _RRDB_SFT)


def to_official_rrdb_sft(
    state_dict: Mapping[str, torch.Tensor], prefix: str = ""
) -> dict[str, torch.Tensor]:
    """Inverse of :func:`from_official_rrdb_sft`: svblur's RRDBSFT -> released key names."""
    return {prefix + svblur_to_official_rrdb_sft_key(k): v for k, v in state_dict.items()}


def _is_cmos_key(key: str) -> bool:
    return key.removeprefix("module.").startswith("cmos.")


def from_official_blind_sr(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a released stage-3 file (``cmos.*`` + RRDB-SFT keys) for :class:`BlindSR`.

    Returns:
        A state dict of ``BlindSR(CMOS(num_classes=K), RRDBSFT(prior_channels=64))`` with
        keys ``estimator.*`` and ``sr.*``; loads with ``strict=True``.

    Raises:
        KeyError / ValueError: As :func:`from_official_cmos` and :func:`from_official_rrdb_sft`,
            naming the offending key.
    """
    cmos = {k: v for k, v in state_dict.items() if _is_cmos_key(k)}
    rest = {k: v for k, v in state_dict.items() if not _is_cmos_key(k)}
    if not cmos:
        raise KeyError("no 'cmos.' keys: not a released stage-3 (BlindSR) file")
    if not rest:
        raise KeyError("no RRDB-SFT keys next to the 'cmos.' keys: not a stage-3 file")
    out = {f"estimator.{k}": v for k, v in from_official_cmos(cmos).items()}
    out.update({f"sr.{k}": v for k, v in from_official_rrdb_sft(rest).items()})
    return out


def to_official_blind_sr(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`from_official_blind_sr`."""
    est = {k[len("estimator.") :]: v for k, v in state_dict.items() if k.startswith("estimator.")}
    sr = {k[len("sr.") :]: v for k, v in state_dict.items() if k.startswith("sr.")}
    if len(est) + len(sr) != len(state_dict):
        odd = sorted(k for k in state_dict if not k.startswith(("estimator.", "sr.")))
        raise KeyError(f"BlindSR keys must start with 'estimator.' or 'sr.', got e.g. {odd[:5]}")
    return {**to_official_cmos(est, prefix="cmos."), **to_official_rrdb_sft(sr)}


def detect_official_kind(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Which released file ``state_dict`` looks like: ``cmos``, ``rrdb_sft`` or ``blind_sr``.

    Returns ``None`` for anything else (e.g. an svblur state dict). A stage-3 file is
    recognised by ``cmos.`` keys next to the RRDB-SFT's ``conv_first`` and ``RRDB_trunk``.
    """
    keys = [strip_prefixes(k, ("module.",)) for k in state_dict]
    has_cmos = any(k.startswith("cmos.") for k in keys) or any(
        k.startswith(("GIA_m.", "GIA_l.", "predict.")) or ".refinement." in k for k in keys
    )
    has_rrdb = "conv_first.weight" in keys and any(k.startswith("RRDB_trunk.") for k in keys)
    if has_cmos and has_rrdb:
        return "blind_sr"
    if has_rrdb:
        return "rrdb_sft"
    if has_cmos:
        return "cmos"
    return None


#: The released files :func:`convert_released` recognises, and what each loads into.
RELEASED_KINDS: dict[str, str] = {
    "cmos": "CMOS(num_classes=K)",
    "rrdb_sft": "RRDBSFT(prior_channels=64)",
    "blind_sr": "BlindSR(CMOS(num_classes=K), RRDBSFT(prior_channels=64))",
}


@dataclass(frozen=True)
class ReleasedConversion:
    """The result of :func:`convert_released`.

    Attributes:
        kind: What the converted state dict loads into (a key of :data:`RELEASED_KINDS`).
        detected: The kind of the released file (differs from ``kind`` when one network of
            a stage-3 file was selected).
        state_dict: svblur's state dict.
        left_out: Entries of the file not converted (the other network of a stage-3 file).
        prefixes: Wrapper prefixes that were removed (``module.``, ``cmos.``).
    """

    kind: str
    detected: str
    state_dict: dict[str, torch.Tensor]
    left_out: int
    prefixes: tuple[str, ...]


def convert_released(
    state_dict: Mapping[str, torch.Tensor], part: str = "all"
) -> ReleasedConversion:
    """Convert any of the authors' released files; the kind is detected from the keys.

    Args:
        state_dict: The tensors of a released ``CMOS_*.pth``, ``RRDB_SFT_*.pth`` or
            ``BlindSR_*.pth``.
        part: ``"all"``; or, of a stage-3 file, only ``"cmos"`` or ``"rrdb_sft"``.

    Raises:
        InputError: Not a released file of a known kind, or ``part`` does not apply.
        KeyError / ValueError: A key or shape that does not fit the detected architecture.
    """
    if part not in ("all", "cmos", "rrdb_sft"):
        raise InputError(f"part: expected 'all', 'cmos' or 'rrdb_sft', got {part!r}")
    detected = detect_official_kind(state_dict)
    if detected is None:
        raise InputError(
            f"no released CMOS / RRDB-SFT / BlindSR keys found (e.g. {sorted(state_dict)[:3]}); "
            "is it already an svblur state dict?"
        )
    kind = detected if part == "all" else part
    if detected != "blind_sr" and kind != detected:
        raise InputError(f"part={part!r} selects a network of a stage-3 file; this is {detected}")
    if kind == "cmos":
        entries = {k: v for k, v in state_dict.items() if _is_cmos_key(k)} or dict(state_dict)
    elif kind == "rrdb_sft":
        entries = {k: v for k, v in state_dict.items() if not _is_cmos_key(k)}
    else:
        entries = dict(state_dict)
    converters = {
        "cmos": from_official_cmos,
        "rrdb_sft": from_official_rrdb_sft,
        "blind_sr": from_official_blind_sr,
    }
    converted = converters[kind](entries)
    prefixes = sorted({k[: len(k) - len(strip_prefixes(k))] for k in entries} - {""})
    return ReleasedConversion(
        kind=kind,
        detected=detected,
        state_dict=converted,
        left_out=len(state_dict) - len(entries),
        prefixes=tuple(prefixes),
    )
