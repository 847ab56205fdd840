"""Convert the CMOS authors' released checkpoints to and from svblur's :class:`CMOS`.

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
from collections.abc import Mapping

import torch

__all__ = [
    "from_official_cmos",
    "official_to_svblur_key",
    "strip_prefixes",
    "svblur_to_official_key",
    "to_official_cmos",
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


def _expected_state(num_classes: int) -> dict[str, torch.Size]:
    from .cmos import CMOS

    with torch.device("meta"):
        model = CMOS(num_classes=num_classes)
    return {k: v.shape for k, v in model.state_dict().items()}


def _num_classes(state: Mapping[str, torch.Tensor], key: str) -> int:
    if key not in state:
        raise KeyError(f"cannot infer the number of classes: {key!r} missing")
    return int(state[key].shape[0])


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
    converted: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    for raw_key, value in state_dict.items():
        key = official_to_svblur_key(strip_prefixes(raw_key))
        if key in converted:
            raise KeyError(f"duplicate entry for {key!r}: {sources[key]!r} and {raw_key!r}")
        converted[key] = value
        sources[key] = raw_key
    expected = _expected_state(_num_classes(converted, "output_heads.seg.classifier.weight"))
    missing = sorted(set(expected) - set(converted))
    if missing:
        names = [svblur_to_official_key(k) for k in missing]
        raise KeyError(f"{len(missing)} released CMOS keys missing, e.g. {names[:5]}")
    for key, value in converted.items():
        if key not in expected:  # a well-formed name with no counterpart (e.g. GIA_m.7)
            raise KeyError(f"unknown key in the released CMOS state dict: {sources[key]!r}")
        if tuple(value.shape) != tuple(expected[key]):
            raise ValueError(
                f"{sources[key]}: shape {tuple(value.shape)}, expected {tuple(expected[key])}"
            )
    return converted


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
