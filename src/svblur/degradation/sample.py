"""What a blur stage of the sample pipeline takes and gives, and the keys of a sample.

A stage (:class:`Degradation`) degrades a sharp :class:`SceneInput` at HR resolution and
returns a :class:`Degraded` image with the per-pixel maps it knows, laid out as in
:data:`SAMPLE_KEYS` (:func:`maps_to_tensors` turns them into a sample's tensors). The
stages live in :mod:`svblur.degradation.defocus_blur` and
:mod:`svblur.degradation.field_blurs`; :mod:`svblur.degradation.pipeline` runs one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

__all__ = ["SAMPLE_KEYS", "Degradation", "Degraded", "SceneInput", "maps_to_tensors"]

#: Every key a sample (and so a batch) may carry, and what it holds. Shapes are per
#: sample; a batch adds the leading ``B``. ``H, W`` is the HR size, ``h, w = H/s, W/s``.
SAMPLE_KEYS: dict[str, str] = {
    "lr": "(3, h, w) float32 in [0, 1]: the network input, degraded and downsampled",
    "hr": "(3, H, W) float32 in [0, 1]: the sharp HR image, the SR target",
    "blur": (
        "(1, H, W) float32: Gaussian sigma per HR pixel in HR pixels (defocus, isotropic "
        "Gaussian fields; 0 = sharp)"
    ),
    "kernels": (
        "(k*k, H, W) float32: the kernel of every HR pixel, row-major, each summing to 1 "
        "(Gaussian and motion fields), applied as in svblur.degradation.apply_kernel_field"
    ),
    "blur_mask": "(1, H, W) float32 in {0, 1}: 1 = blurred (partial blur)",
    "depth": "(1, H, W) float32: depth in mm (where the source has it)",
    "seg": "(H, W) int64: class per HR pixel, 255 = ignore (where the source has it)",
}


@dataclass(frozen=True)
class SceneInput:
    """A sharp scene to degrade.

    Attributes:
        image: RGB ``(H, W, 3)`` float32 in ``[0, 1]``.
        depth: Depth ``(H, W)`` in mm (valid everywhere), or ``None``.
        seg: Labels ``(H, W)`` integer, or ``None``.
    """

    image: np.ndarray
    depth: np.ndarray | None = None
    seg: np.ndarray | None = None


@dataclass(frozen=True)
class Degraded:
    """The sharp HR image degraded at HR resolution, with what the degradation knows.

    Attributes:
        image: ``(H, W, 3)`` float32 (not clipped: a defocus render may exceed ``[0, 1]``
            by rounding, and the released data sets were made from the unclipped image).
        maps: Per-pixel maps in the layout of :data:`SAMPLE_KEYS` without the channel
            axis of one-channel maps: ``blur`` ``(H, W)``, ``kernels`` ``(k*k, H, W)``,
            ``blur_mask`` ``(H, W)``.
        meta: The draw (camera, kernels' parameters), JSON-serialisable.
    """

    image: np.ndarray
    maps: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)


class Degradation(Protocol):
    """A degradation of the sharp HR scene (the ``blur`` step of a pipeline)."""

    def __call__(
        self, scene: SceneInput, rng: np.random.Generator, *, invariant: bool = False
    ) -> Degraded: ...  # pragma: no cover


def maps_to_tensors(maps: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """A degradation's maps in the sample layout of :data:`SAMPLE_KEYS` (channel axes),
    copied (so that in-place edits of a batch never reach a cache)."""
    out = {}
    for key, value in maps.items():
        tensor = torch.from_numpy(np.array(value, np.float32, order="C"))
        out[key] = tensor if key == "kernels" else tensor[None]
    return out
