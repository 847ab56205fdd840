"""SYNDOF's split of a scene into depth layers: the depth shift, the aperture, the layers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .._camera import apply_depth_shift, check_camera, coc_pixels, coc_to_sigma, f_number_for

__all__ = ["DefocusLayers", "decompose_layers"]


@dataclass(frozen=True)
class DefocusLayers:
    """The scene split into SYNDOF's depth layers.

    Attributes:
        layer_map: Layer index per pixel, int64 ``(H, W)``; 0 is the farthest.
        coc: Rounded CoC per layer, float64 ``(L,)``.
        depth: Depth per layer (the largest of its merged run), float64 ``(L,)``.
        focus_index: Layers with index ``> focus_index`` get the background fill:
            the first layer with ``coc <= 1``, or (no such layer) the number of
            layers farther than the focus distance minus one.
        f_number: The aperture number used.
        focus_distance: The focus distance after any depth shift.
        shift: The amount added to every depth (0 when none).
    """

    layer_map: np.ndarray
    coc: np.ndarray
    depth: np.ndarray
    focus_index: int
    f_number: float
    focus_distance: float
    shift: float

    @property
    def sigma_map(self) -> np.ndarray:
        """Blur map ``(H, W)`` float32: each pixel's layer sigma."""
        return coc_to_sigma(self.coc).astype(np.float32)[self.layer_map]


def decompose_layers(
    depth: np.ndarray,
    image_width: int,
    focal_length_mm: float,
    focus_distance: float,
    f_number: float | None = None,
    max_coc: float = 29.0,
) -> DefocusLayers:
    """Depth shift, f-number and layer decomposition of SYNDOF.

    Args:
        depth: Valid depth in mm, ``(H, W)`` float.
        image_width: Image width in pixels.
        focal_length_mm: Focal length in mm.
        focus_distance: Focus distance in mm (before the shift).
        f_number: Aperture number, or ``None`` to solve it from ``max_coc``.
        max_coc: Largest CoC in pixels (kernel support).

    Returns:
        The :class:`DefocusLayers`.
    """
    f = float(focal_length_mm)
    z, focus_distance, shift = apply_depth_shift(depth, focus_distance, f)
    check_camera(image_width, f, focus_distance)
    # Sorted unique depths and each pixel's index among them (torch's is faster).
    unique_t, inverse_t = torch.unique(torch.from_numpy(z), sorted=True, return_inverse=True)
    unique, inverse = unique_t.numpy(), inverse_t.numpy()
    unique_far = unique[::-1]
    if f_number is None:
        f_number = f_number_for(
            float(unique[0]), float(unique[-1]), image_width, f, focus_distance, max_coc
        )
    elif not (math.isfinite(f_number) and f_number > 0):
        raise ValueError(f"f_number: expected a positive finite value, got {f_number!r}")
    cocs = coc_pixels(unique_far, image_width, f, focus_distance, f_number)
    starts = np.ones(len(cocs), dtype=bool)
    starts[1:] = cocs[1:] != cocs[:-1]
    run_of_unique_far = np.cumsum(starts) - 1
    layer_coc = cocs[starts]
    layer_depth = unique_far[starts]
    # Sorted ascending: unique index u is far-index (U - 1 - u).
    run_of_unique = run_of_unique_far[::-1]
    layer_map = run_of_unique[inverse.reshape(z.shape)].astype(np.int64)
    in_focus = np.flatnonzero(layer_coc <= 1)
    if in_focus.size:
        focus_index = int(in_focus[0])
    else:
        focus_index = int((layer_depth > focus_distance).sum()) - 1
    return DefocusLayers(
        layer_map=layer_map,
        coc=layer_coc,
        depth=layer_depth,
        focus_index=focus_index,
        f_number=float(f_number),
        focus_distance=float(focus_distance),
        shift=shift,
    )
