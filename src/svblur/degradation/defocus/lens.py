"""Thin-lens defocus: cleaning depth maps, the per-pixel blur map and the aperture.

Units: depth, focus distance and focal length in millimetres. SYNDOF's camera model
(Lee et al., CVPR 2019); the arithmetic shared with the layer split and the reference
renderer lives in :mod:`svblur.degradation._camera`.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.ndimage as ndi
import torch

from .._camera import (
    apply_depth_shift,
    check_camera,
    coc_pixels,
    coc_to_sigma,
    f_number_for,
)

__all__ = ["Array", "defocus_sigma", "fill_invalid_depth", "solve_f_number"]

Array = np.ndarray | torch.Tensor


# --------------------------------------------------------------------------- inputs
def _to_numpy64(array: Array, name: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    try:
        return np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{name}: expected a numpy array or torch tensor, got {type(array)}"
        ) from error


def _check_depth(depth: np.ndarray) -> None:
    if depth.ndim != 2:
        raise ValueError(f"depth: expected a 2-D (H, W) depth map, got shape {depth.shape}")
    if depth.size == 0:
        raise ValueError("depth: empty depth map")


def _like(array: np.ndarray, reference: Array) -> Array:
    """Return ``array`` (float32) as the same kind (and device) as ``reference``."""
    if isinstance(reference, torch.Tensor):
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(reference.device)
    return np.ascontiguousarray(array, dtype=np.float32)


# --------------------------------------------------------------------------- depth
def _fill_invalid64(values: np.ndarray, max_depth: float | None) -> np.ndarray:
    """:func:`fill_invalid_depth` in float64 (no precision lost before the CoC)."""
    _check_depth(values)
    if max_depth is not None and not (math.isfinite(max_depth) and max_depth > 0):
        raise ValueError(f"max_depth: expected a positive finite value, got {max_depth!r}")
    far = np.isposinf(values)
    valid = np.isfinite(values) & (values > 0)
    if not valid.any():
        raise ValueError(
            "depth: no valid pixel (every value is NaN, inf, zero or negative); cannot fill"
        )
    filled = values.copy()
    far_value = float(max_depth) if max_depth is not None else float(values[valid].max())
    filled[far] = far_value
    if max_depth is not None:
        np.minimum(filled, far_value, out=filled, where=valid)
    missing = ~(valid | far)
    if missing.any():
        known = ~missing
        _, (rows, cols) = ndi.distance_transform_edt(~known, return_indices=True)
        filled[missing] = filled[rows[missing], cols[missing]]
    return filled


def fill_invalid_depth(depth: Array, *, max_depth: float | None = None) -> Array:
    """Replace unusable depth values.

    Policy:

    * NaN, ``-inf``, zero and negative depths are *missing*: each takes the value
      of its nearest valid pixel (Euclidean distance; ties resolved by SciPy's
      distance transform).
    * ``+inf`` means "infinitely far": it becomes the far clip, ``max_depth`` if
      given, else the largest finite valid depth of the map.
    * With ``max_depth``, every depth above it (e.g. MPI Sintel's ``1e11`` sky) is
      clipped to ``max_depth``.

    Args:
        depth: Depth map ``(H, W)``, numpy or torch.
        max_depth: Optional far clip in the depth's units; must be positive.

    Returns:
        Finite, positive depth of the same kind as the input (float32 for numpy,
        the input's float dtype and device for torch).

    Raises:
        ValueError: If ``depth`` is not 2-D, or no pixel is valid.
    """
    filled = _fill_invalid64(_to_numpy64(depth, "depth"), max_depth)
    if isinstance(depth, torch.Tensor):
        dtype = depth.dtype if depth.is_floating_point() else torch.float32
        return torch.from_numpy(filled).to(device=depth.device, dtype=dtype)
    return filled.astype(np.float32)


# --------------------------------------------------------------------------- camera
def defocus_sigma(
    depth: Array,
    image_width: int,
    focal_length_mm: float,
    focus_distance: float,
    f_number: float,
) -> Array:
    """Per-pixel Gaussian sigma of the thin-lens defocus (the ground-truth blur map).

    ``c = round_0.1(m (z_v / z_f) (f / N) |z - z_f| / (z + 1e-4))`` with
    ``m = image_width / 36`` and ``z_v = f z_f / (z_f - f + 1e-4)``; then
    ``sigma = (max(c, 1) - 1) / 4``. No depth shift is applied here (see
    :func:`~svblur.degradation.render_defocus`).

    Args:
        depth: Depth in mm, ``(H, W)``, finite and positive.
        image_width: Image width in pixels (sets pixels per mm on the sensor).
        focal_length_mm: Focal length ``f`` in mm.
        focus_distance: Focus distance ``z_f`` in mm, greater than ``f``.
        f_number: Aperture number ``N > 0``.

    Returns:
        Sigma map ``(H, W)`` float32: a numpy array for numpy input, a tensor on
        the input's device for torch input.

    Raises:
        ValueError: On a non-2-D or non-finite/non-positive depth, or bad camera.
    """
    values = _to_numpy64(depth, "depth")
    _check_depth(values)
    check_camera(image_width, focal_length_mm, focus_distance)
    if not (math.isfinite(f_number) and f_number > 0):
        raise ValueError(f"f_number: expected a positive finite value, got {f_number!r}")
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise ValueError("depth: expected finite positive depths; clean it with fill_invalid_depth")
    sigma = coc_to_sigma(coc_pixels(values, image_width, focal_length_mm, focus_distance, f_number))
    return _like(sigma, depth)


def solve_f_number(
    depth: Array,
    image_width: int,
    focal_length_mm: float,
    focus_distance: float,
    max_coc: float = 29.0,
    *,
    shift_depth: bool = True,
) -> float:
    """Aperture number ``N`` at which the scene's largest CoC equals ``max_coc``.

    This is the ``N`` that :func:`~svblur.degradation.render_defocus` uses when given
    ``f_number=None``: ``render_defocus(..., f_number=solve_f_number(depth, ...))``
    renders the same image and blur map, bit for bit. Like the renderer, it first
    applies SYNDOF's depth shift: if the nearest depth is closer than ``5 f``, the
    depths and the focus distance are moved so that the nearest is at ``5 f``. Then
    whichever of the nearest and the farthest depth has the larger CoC decides:
    ``N = f^2 / (z_f - f) * (m / max_coc) * |z - z_f| / z``.

    Args:
        depth: Depth in mm, ``(H, W)``, finite and positive (the renderer cleans its
            depth with :func:`fill_invalid_depth` first; pass the same clean depth).
        image_width: Image width in pixels.
        focal_length_mm: Focal length ``f`` in mm.
        focus_distance: Focus distance ``z_f`` in mm, greater than ``f``.
        max_coc: Target largest CoC in pixels, ``> 1``.
        shift_depth: Apply the depth shift (the renderer's aperture). ``False``
            solves on the depths as given, the aperture of the unshifted thin-lens
            model (:func:`defocus_sigma` applies no shift); it differs from the
            renderer's only on scenes nearer than ``5 f``.

    Returns:
        The f-number.

    Raises:
        ValueError: On bad inputs or when every depth equals the focus distance.
    """
    values = _to_numpy64(depth, "depth")
    _check_depth(values)
    check_camera(image_width, focal_length_mm, focus_distance)
    if not (math.isfinite(max_coc) and max_coc > 1):
        raise ValueError(f"max_coc: expected a finite value > 1, got {max_coc!r}")
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise ValueError("depth: expected finite positive depths; clean it with fill_invalid_depth")
    extremes = np.array([values.min(), values.max()])
    if shift_depth:
        # The same arithmetic as decompose_layers' shift of every pixel.
        extremes, focus_distance, _ = apply_depth_shift(extremes, focus_distance, focal_length_mm)
        check_camera(image_width, focal_length_mm, focus_distance)
    return f_number_for(
        float(extremes[0]),
        float(extremes[1]),
        image_width,
        focal_length_mm,
        focus_distance,
        max_coc,
    )
