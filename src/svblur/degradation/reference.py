"""Straightforward per-layer transcription of SYNDOF's ``blur_by_depth.m``.

Slow on purpose: one full-image pass per depth layer in float64, the 2-D
``fspecial``-style kernel applied with symmetric (edge-repeating mirror) padding,
and every background fill solved exactly with a sparse direct solver, as MATLAB's
``regionfill`` does. It is the independent reference the fast renderer in
:mod:`svblur.degradation.defocus` is tested and benchmarked against.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.signal import fftconvolve

from ._camera import (
    MATLAB_EPS,
    SHIFT_FACTOR,
    check_camera,
    coc_pixels,
    coc_to_sigma,
    f_number_for,
)

__all__ = ["fspecial_gaussian", "imfilter_symmetric", "regionfill", "render_defocus_reference"]


def fspecial_gaussian(size: int, sigma: float) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', [size, size], sigma)`` cropped to its non-zero taps.

    Args:
        size: Square support.
        sigma: Standard deviation.

    Returns:
        Normalized 2-D kernel ``(k, k)``, float64.
    """
    half = (size - 1) / 2.0
    y, x = np.meshgrid(np.arange(-half, half + 1), np.arange(-half, half + 1), indexing="ij")
    kernel = np.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    kernel[kernel < MATLAB_EPS * kernel.max()] = 0.0
    if kernel.sum() != 0:
        kernel = kernel / kernel.sum()
    rows = np.flatnonzero(kernel.any(axis=1))
    cols = np.flatnonzero(kernel.any(axis=0))
    return kernel[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def imfilter_symmetric(array: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """MATLAB ``imfilter(array, kernel, 'same', 'conv', 'symmetric')`` on ``(H, W[, C])``.

    The padding is NumPy's ``'symmetric'`` (``c b a | a b c``), which is SciPy
    ``ndimage``'s ``mode='reflect'``, placed around MATLAB's kernel centre
    ``floor((k + 1) / 2)``.
    """
    pads = []
    for length in kernel.shape:
        centre = (length + 1) // 2
        pads.append((centre - 1, length - centre))
    if array.ndim == 3:
        pads.append((0, 0))
        kernel = kernel[:, :, None]
    padded = np.pad(array, pads, mode="symmetric")
    # 'valid' convolution with the kernel = MATLAB 'conv' at the chosen centre.
    axes = (0, 1)
    return fftconvolve(padded, kernel, mode="valid", axes=axes)


def regionfill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """MATLAB ``regionfill``: harmonic fill of ``mask`` from the 4-neighbour boundary.

    Each masked pixel satisfies ``deg u - sum(masked neighbours) = sum(known
    neighbours)`` with ``deg`` the number of in-image neighbours.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` float64.
        mask: ``(H, W)`` bool, pixels to fill.

    Returns:
        The filled copy of ``image``.
    """
    out = np.array(image, dtype=np.float64, copy=True)
    if not mask.any():
        return out
    height, width = mask.shape
    number = -np.ones((height, width), dtype=np.int64)
    unknown = np.flatnonzero(mask)
    number.flat[unknown] = np.arange(unknown.size)
    ys, xs = np.divmod(unknown, width)
    values = out.reshape(height, width, -1)
    rhs = np.zeros((unknown.size, values.shape[2]))
    degree = np.zeros(unknown.size)
    rows, cols = [np.arange(unknown.size)], [np.arange(unknown.size)]
    data_off = []
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        degree += inside
        neighbour = np.where(inside, number[ny.clip(0, height - 1), nx.clip(0, width - 1)], -1)
        linked = inside & (neighbour >= 0)
        rows.append(np.flatnonzero(linked))
        cols.append(neighbour[linked])
        data_off.append(-np.ones(int(linked.sum())))
        boundary = inside & (neighbour < 0)
        rhs[boundary] += values[ny[boundary], nx[boundary]]
    data = np.concatenate([degree, *data_off])
    system = sp.csc_matrix(
        (data, (np.concatenate(rows), np.concatenate(cols))), shape=(unknown.size,) * 2
    )
    solution = spla.splu(system).solve(rhs)
    values[ys, xs] = solution
    return values.reshape(out.shape)


def render_defocus_reference(
    image: np.ndarray,
    depth: np.ndarray,
    focal_length_mm: float,
    focus_distance: float,
    f_number: float | None = None,
    max_coc: float = 29.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Layered defocus exactly as ``blur_by_depth.m``, one layer at a time.

    Args:
        image: RGB ``(H, W, 3)`` in ``[0, 1]``.
        depth: Valid (finite, positive) depth in mm ``(H, W)``.
        focal_length_mm: Focal length in mm.
        focus_distance: Focus distance in mm (shifted with the depth if needed).
        f_number: Aperture number, ``None`` to solve it from ``max_coc``.
        max_coc: Largest CoC and kernel support in pixels.

    Returns:
        ``(blurred (H, W, 3) float64 clipped to [0, 1], sigma (H, W) float32)``.
    """
    image = np.asarray(image, dtype=np.float64)
    z = np.asarray(depth, dtype=np.float64)
    height, width = z.shape
    f = float(focal_length_mm)
    if z.min() < SHIFT_FACTOR * f:
        nearest = z.min()
        z = z - nearest + SHIFT_FACTOR * f
        focus_distance = focus_distance - nearest + SHIFT_FACTOR * f
    check_camera(width, f, focus_distance)
    unique_far = np.unique(z)[::-1]
    if f_number is None:
        f_number = f_number_for(unique_far[-1], unique_far[0], width, f, focus_distance, max_coc)
    cocs = coc_pixels(unique_far, width, f, focus_distance, f_number)

    # Merge runs of adjacent unique depths with equal CoC; relabel their pixels.
    layer_depths: list[float] = []
    layer_cocs: list[float] = []
    relabel = np.empty_like(unique_far)
    for k, (value, coc) in enumerate(zip(unique_far, cocs)):
        if k == 0 or coc != layer_cocs[-1]:
            layer_depths.append(float(value))
            layer_cocs.append(float(coc))
        relabel[k] = layer_depths[-1]
    order = np.argsort(unique_far)
    z_layers = relabel[order][np.searchsorted(unique_far[order], z)]

    count = len(layer_depths)
    in_focus = [k for k, c in enumerate(layer_cocs) if c <= 1]
    if in_focus:
        focus_index = in_focus[0]
    else:
        focus_index = sum(d > focus_distance for d in layer_depths) - 1

    merged = np.zeros((height, width, 3))
    merged_mask = np.zeros((height, width, 3))
    farther = np.zeros((height, width), dtype=bool)
    for i in range(count):
        mask = (z_layers == layer_depths[i]).astype(np.float64)
        colour = image * mask[:, :, None]
        coc = layer_cocs[i]
        kernel = fspecial_gaussian(int(round(max_coc)), (coc - 1) / 4.0) if coc > 1 else None
        if kernel is not None:
            blurred = imfilter_symmetric(np.concatenate([mask[:, :, None], colour], axis=2), kernel)
            mask_blurred, colour_blurred = blurred[:, :, 0], blurred[:, :, 1:]
        else:
            mask_blurred, colour_blurred = mask, colour
        mask_blurred = np.where(mask_blurred < 1e-4, 0.0, mask_blurred)

        if i > focus_index:
            if kernel is not None:
                reach = imfilter_symmetric(farther.astype(np.float64), kernel)
                reach[reach < 1e-3] = 0
                region = (reach != 0) & ~farther
            else:
                region = np.zeros_like(farther)
            scale = np.where(merged_mask == 0, 1.0, merged_mask)
            to_fill = np.where(farther[:, :, None], merged / scale, 0.0)
            filled = regionfill(
                np.concatenate([to_fill, farther[:, :, None].astype(float)], 2), region
            )
            merged = merged / scale
            merged_mask = merged_mask / scale
            merged[region] = filled[region][:, :3]
            merged_mask[region] = filled[region][:, 3:4]

        merged = (1 - mask_blurred[:, :, None]) * merged + colour_blurred
        merged_mask = (1 - mask_blurred[:, :, None]) * merged_mask + mask_blurred[:, :, None]
        farther |= mask.astype(bool)

    blurred_image = np.clip(merged / merged_mask, 0.0, 1.0)
    coc_map = np.zeros((height, width))
    for depth_value, coc in zip(layer_depths, layer_cocs):
        coc_map[z_layers == depth_value] = coc
    sigma = coc_to_sigma(coc_map).astype(np.float32)
    return blurred_image, sigma
