"""What a checkpoint's network computes: the kinds a training system declares.

Each training system declares its kind as the class attribute ``kind``; the record it
writes into its checkpoints (see :func:`~svblur.checkpoints.network_record`) stores it, and
prediction branches on it. The kinds:

``blur_semantics``
    Blur and/or semantic maps from an LR image (stage 1: CMOS, MANet, ...;
    ``BlurSemanticsTask``).
``kernel_estimation``
    Per-pixel blur kernels from an LR image (SSR stage 1; ``KernelEstimationTask``).
``kernel_regression``
    SR by space-variant kernel regression (SSR's SVKR; ``SVKRTask``).
``non_blind_sr``
    SR given the maps or kernel codes (stage 2: RRDB-SFT; ``NonBlindSRTask``,
    ``KernelCodeSRTask``).
``blind_sr``
    SR, and its maps, from the LR image alone (stage 3; ``BlindSRTask``,
    ``KernelBlindSRTask``, ArcSR's task).
``gan_sr``
    SR by a GAN-trained generator (``GANSRTask``, ``PBaSRTask``).
``diffusion_sr``
    SR by reverse diffusion (SSR stage 3, ``DiffusionSR.sample``; ``DiffusionSRTask``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "LEGACY_KINDS",
    "SR_KINDS",
    "SYSTEM_KINDS",
    "kind_of_config",
    "legacy_system_kind",
    "normalize_kind",
]

#: Every kind a training system may declare (see the module docstring).
SYSTEM_KINDS: tuple[str, ...] = (
    "blur_semantics",
    "kernel_estimation",
    "kernel_regression",
    "non_blind_sr",
    "blind_sr",
    "gan_sr",
    "diffusion_sr",
)

#: The kinds whose network's output is an SR image.
SR_KINDS: frozenset[str] = frozenset({"non_blind_sr", "blind_sr", "gan_sr", "diffusion_sr"})

#: Kinds stored by older checkpoints -> today's name.
LEGACY_KINDS: dict[str, str] = {"estimator": "blur_semantics"}

# Used only when a caller records no kind: what the systems were before they declared one.
_LEGACY_SYSTEM_KINDS = {
    "BlurSemanticsTask": "blur_semantics",
    "KernelEstimationTask": "kernel_estimation",
    "SVKRTask": "kernel_regression",
    "NonBlindSRTask": "non_blind_sr",
    "KernelCodeSRTask": "non_blind_sr",
    "BlindSRTask": "blind_sr",
    "KernelBlindSRTask": "blind_sr",
    "GANSRTask": "gan_sr",
    "PBaSRTask": "gan_sr",
    "DiffusionSRTask": "diffusion_sr",
}

# A network built from a config that records no kind, by its ``_target_`` class name.
_KIND_OF_NETWORK = {
    "DiffusionSR": "diffusion_sr",
    "BlindSR": "blind_sr",
    "RRDBNet": "blind_sr",
    "RRDBSFT": "non_blind_sr",
}


def normalize_kind(kind: str | None, system: str | None = None) -> str | None:
    """Today's name of a kind a checkpoint recorded (``"estimator"`` -> ``blur_semantics``).

    Args:
        kind: The recorded kind, or ``None``.
        system: The recorded system's class name; it tells the GAN systems' older records
            (kind ``blind_sr``) from the blind SR systems'.

    Returns:
        One of :data:`SYSTEM_KINDS` for a known kind, any other string unchanged, ``None``
        for ``None``.
    """
    if kind is None:
        return None
    # the GAN systems recorded "blind_sr" before they declared their kind
    if kind == "blind_sr" and _LEGACY_SYSTEM_KINDS.get(system or "") == "gan_sr":
        return "gan_sr"
    return LEGACY_KINDS.get(kind, kind)


def legacy_system_kind(system: str) -> str | None:
    """The kind of a system that declares none, by its class name (``None``: unknown)."""
    return _LEGACY_SYSTEM_KINDS.get(system)


def kind_of_config(config: Mapping[str, Any]) -> str:
    """The kind of the network a config builds, read from its ``_target_`` class name.

    For a network whose checkpoint records no kind: the SR networks by name, anything else
    counts as ``blur_semantics``.
    """
    target = config.get("_target_")
    name = target.rpartition(".")[2] if isinstance(target, str) else ""
    return _KIND_OF_NETWORK.get(name, "blur_semantics")
