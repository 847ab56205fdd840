"""Thin-lens camera arithmetic shared by the fast and the reference renderers.

Every formula follows SYNDOF's ``blur_by_depth.m`` (Lee et al., CVPR 2019) step by
step in float64, so that the rounded circle of confusion (CoC) is bit-identical to
the reference generator's: ``z_v = f z_f / (z_f - f + 1e-4)``,
``c(z) = m (z_v / z_f) (f / N) |z - z_f| / (z + 1e-4)`` with ``m = width / 36``,
rounded to 0.1 px with halves away from zero, and ``sigma = (max(c, 1) - 1) / 4``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "EPSILON",
    "MATLAB_EPS",
    "SENSOR_WIDTH_MM",
    "SHIFT_FACTOR",
    "apply_depth_shift",
    "check_camera",
    "coc_pixels",
    "coc_to_sigma",
    "f_number_for",
    "gaussian_taps",
    "round_tenth",
    "symmetric_index",
]

#: The ``epsilon`` SYNDOF adds to denominators.
EPSILON = 1e-4
#: Full-frame sensor width in mm (``m = image_width / 36`` pixels per mm).
SENSOR_WIDTH_MM = 36.0
#: Depths are shifted so that the nearest one is at least ``SHIFT_FACTOR * f``.
SHIFT_FACTOR = 5.0
#: MATLAB's ``eps`` (double precision), the relative cut-off of ``fspecial``.
MATLAB_EPS = float(np.finfo(np.float64).eps)


def check_camera(image_width: int, focal_length_mm: float, focus_distance: float) -> None:
    """Validate camera arguments, raising ``ValueError`` naming the bad one."""
    if int(image_width) != image_width or image_width <= 0:
        raise ValueError(f"image_width: expected a positive integer, got {image_width!r}")
    if not math.isfinite(focal_length_mm) or focal_length_mm <= 0:
        raise ValueError(
            f"focal_length_mm: expected a positive finite value, got {focal_length_mm!r}"
        )
    if not math.isfinite(focus_distance) or focus_distance <= focal_length_mm:
        raise ValueError(
            f"focus_distance: expected a finite distance greater than the focal length "
            f"({focal_length_mm} mm), got {focus_distance!r}"
        )


def round_tenth(values: np.ndarray) -> np.ndarray:
    """Round to one decimal with halves away from zero (MATLAB ``int64(x * 10) / 10``)."""
    scaled = np.asarray(values, dtype=np.float64) * 10.0
    rounded = np.round(scaled)
    ties = np.abs(scaled - np.trunc(scaled)) == 0.5
    rounded = np.where(ties, np.trunc(scaled) + np.sign(scaled), rounded)
    return rounded / 10.0


def coc_pixels(
    depth: np.ndarray,
    image_width: int,
    focal_length_mm: float,
    focus_distance: float,
    f_number: float,
) -> np.ndarray:
    """Circle-of-confusion diameter in pixels, rounded to 0.1 px (float64).

    Args:
        depth: Depths in mm, any shape.
        image_width: Image width in pixels.
        focal_length_mm: Focal length ``f`` in mm.
        focus_distance: Focus distance ``z_f`` in mm.
        f_number: Aperture number ``N``.

    Returns:
        Rounded CoC per depth, float64, same shape as ``depth``.
    """
    f = float(focal_length_mm)
    z_f = float(focus_distance)
    z_view = (f * z_f) / (z_f - f + EPSILON)
    aperture = f / float(f_number)
    m_mmp = image_width / SENSOR_WIDTH_MM
    m_cc = z_view / z_f
    z = np.asarray(depth, dtype=np.float64)
    coc_real = aperture * (np.abs(z - z_f) / (z + EPSILON))
    return round_tenth(m_mmp * m_cc * coc_real)


def apply_depth_shift(
    depth: np.ndarray, focus_distance: float, focal_length_mm: float
) -> tuple[np.ndarray, float, float]:
    """SYNDOF's depth shift: a scene nearer than ``5 f`` is moved back to start at ``5 f``.

    Depths and the focus distance become ``(z - z_min) + 5 f`` (this order of
    operations, for bit-identical results wherever the shift is applied); a scene
    whose nearest depth is at least ``5 f`` is returned unchanged.

    Args:
        depth: Depths in mm, any shape (float64 is used).
        focus_distance: Focus distance ``z_f`` in mm.
        focal_length_mm: Focal length ``f`` in mm.

    Returns:
        ``(depth, focus_distance, shift)``: the shifted depths (float64, same shape),
        the shifted focus distance, and the amount added (0 when none).
    """
    z = np.asarray(depth, dtype=np.float64)
    near_limit = SHIFT_FACTOR * float(focal_length_mm)
    nearest = float(z.min())
    if nearest >= near_limit:
        return z, float(focus_distance), 0.0
    shifted_focus = (float(focus_distance) - nearest) + near_limit
    return (z - nearest) + near_limit, shifted_focus, near_limit - nearest


def coc_to_sigma(coc: np.ndarray) -> np.ndarray:
    """Gaussian sigma from CoC: ``(max(c, 1) - 1) / 4`` (float64)."""
    return (np.maximum(np.asarray(coc, dtype=np.float64), 1.0) - 1.0) / 4.0


def f_number_for(
    nearest: float,
    farthest: float,
    image_width: int,
    focal_length_mm: float,
    focus_distance: float,
    max_coc: float,
) -> float:
    """Aperture number making the larger of the extreme CoCs equal ``max_coc``.

    Compares the (rounded) CoC of the farthest and the nearest depth at ``N = 1``
    and solves ``N`` from the one that is larger (the farthest wins only when
    strictly larger), as SYNDOF does.
    """
    f = float(focal_length_mm)
    z_f = float(focus_distance)
    m_mmp = image_width / SENSOR_WIDTH_MM
    far_coc, near_coc = coc_pixels(np.array([farthest, nearest]), image_width, f, z_f, 1.0)
    z = farthest if far_coc > near_coc else nearest
    ratio = abs(z - z_f) / z
    if ratio == 0.0:
        raise ValueError(
            "depth: every depth equals the focus distance, so no f-number can reach max_coc"
        )
    return float((f**2 / (z_f - f)) * (m_mmp / float(max_coc)) * ratio)


def gaussian_taps(sigma: float, support: float) -> np.ndarray:
    """1-D factor of SYNDOF's per-layer Gaussian kernel (float64, sums to 1).

    ``fspecial('gaussian', [s, s], sigma)`` on an ``s = support`` square, with taps
    below ``eps * max`` set to zero, cropped to the non-zero taps and normalized.
    The 2-D kernel is the outer product of this vector with itself (the only
    difference from ``fspecial`` are corner taps below ``2.2e-16`` of the peak).

    Args:
        sigma: Gaussian standard deviation in pixels, ``> 0``.
        support: Kernel support ``s`` (``max_coc``); rounded to an integer.

    Returns:
        Odd- or even-length kernel, symmetric about its centre.
    """
    size = max(int(round(support)), 1)
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    taps = np.exp(-(offsets * offsets) / (2.0 * sigma * sigma))
    taps[taps < MATLAB_EPS * taps.max()] = 0.0
    nonzero = np.flatnonzero(taps)
    taps = taps[nonzero[0] : nonzero[-1] + 1]
    return taps / taps.sum()


def symmetric_index(start: int, stop: int, length: int) -> torch.Tensor:
    """Indices ``start..stop-1`` folded into ``[0, length)`` by symmetric reflection.

    MATLAB's ``'symmetric'`` padding (edge sample repeated: ``c b a | a b c | c b a``),
    i.e. NumPy's ``'symmetric'`` and SciPy ``ndimage``'s ``'reflect'``, for any pad
    width.
    """
    index = torch.arange(start, stop) % (2 * length)
    return torch.where(index < length, index, 2 * length - 1 - index)
