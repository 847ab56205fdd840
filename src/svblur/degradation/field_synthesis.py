"""Making kernel fields: constant, blended random Gaussians, depth-guided Gaussians and
region-wise motion, and the depth-to-blur arithmetic of the camera model.

Every generator returns one image's field ``(k*k, H, W)`` in the layout of
:mod:`svblur.degradation.fields` (which applies them): one normalized ``k x k`` kernel
per pixel, flattened row-major into the channel axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, TypeVar

import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

from svblur.ops.patches import check_kernel_size

from .kernels import gaussian_kernel, linear_motion_kernel, motion_kernel

__all__ = [
    "DEFAULT_FOCUS_QUANTILE",
    "MM_PER_M",
    "depth_gaussian_field",
    "depth_sigma",
    "field_from_kernel",
    "focus_at_quantile",
    "gaussian_field",
    "motion_field",
    "signed_defocus",
]

DepthModel = Literal["linear", "thin_lens", "camera"]
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor, float)

#: Millimetres per metre: depth maps are in mm, defocus in 1/m (dioptres).
MM_PER_M = 1000.0

#: Where the camera model focuses unless told otherwise: this quantile of the scene's depth
#: (:func:`focus_at_quantile`; the median). The degradation
#: (:class:`~svblur.degradation.GaussianFieldBlur`) and the depth input that passes the
#: focus on to a network (:class:`~svblur.models.GroundTruthDepth`) must use the same one.
DEFAULT_FOCUS_QUANTILE = 0.5

#: Pixels per chunk when depth_gaussian_field evaluates per-pixel kernels.
_PIXELS_PER_CHUNK = 1 << 15


def _as_numpy_2d(array: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"{name}: expected a non-empty 2-D (H, W) map, got shape {array.shape}")
    return array


def _blend(kernels: np.ndarray, weights: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Field ``sum_m weights[m] * kernels[m]``: ``(M, k, k)`` x ``(M, H, W)`` -> ``(k*k, H, W)``."""
    count, k, _ = kernels.shape
    basis = torch.from_numpy(kernels.reshape(count, k * k).T.astype(np.float32))
    weights = torch.as_tensor(weights, dtype=torch.float32)
    height, width = weights.shape[-2:]
    return (basis @ weights.reshape(count, height * width)).view(k * k, height, width)


def field_from_kernel(kernel: np.ndarray | torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Constant field: the same kernel at every pixel.

    Args:
        kernel: ``(k, k)`` NumPy or torch kernel.
        shape: ``(H, W)``.

    Returns:
        ``(k*k, H, W)`` float32 (a tensor's own float dtype is kept), a broadcast view
        that takes no memory per pixel; call ``.contiguous()`` for a writable copy.
    """
    weight = torch.as_tensor(kernel)
    if isinstance(kernel, np.ndarray) or not weight.is_floating_point():
        weight = weight.float()
    if weight.dim() != 2 or weight.shape[0] != weight.shape[1]:
        raise ValueError(f"kernel: expected a square (k, k) kernel, got {tuple(weight.shape)}")
    height, width = shape
    return weight.reshape(-1, 1, 1).expand(-1, int(height), int(width))


def gaussian_field(
    size: int,
    shape: tuple[int, int],
    rng: np.random.Generator,
    num_kernels: int = 4,
    sigma_range: tuple[float, float] = (0.2, 4.0),
    *,
    isotropic_prob: float = 0.0,
    correlation_length: float | None = None,
    sharpness: float = 2.0,
) -> torch.Tensor:
    """Smoothly varying anisotropic Gaussian blur (MANet's spatially variant kernels).

    ``num_kernels`` random Gaussians are blended per pixel with weights
    ``softmax_m(sharpness * n_m(y, x))``, where each ``n_m`` is unit-variance white
    noise on a coarse grid (node spacing ``correlation_length``) upsampled bicubically:
    the kernels change smoothly over about ``correlation_length`` pixels, and every
    pixel's kernel is a convex blend of normalized kernels, so it sums to 1.

    Each Gaussian draws (as MANet's ``random_anisotropic_gaussian_kernel``) ``sigma_x``
    uniformly from ``sigma_range``, ``sigma_y`` uniformly from ``[sigma_range[0],
    sigma_x]`` (or ``= sigma_x`` with probability ``isotropic_prob``) and ``theta``
    uniformly from ``[0, pi)``; see :func:`~svblur.degradation.kernels.gaussian_kernel`.

    Args:
        size: Odd kernel side ``k`` (21 in MANet).
        shape: Image ``(H, W)``.
        rng: Source of randomness.
        num_kernels: Number of Gaussians blended.
        sigma_range: ``(min, max)`` standard deviation in pixels.
        isotropic_prob: Probability that a Gaussian is isotropic.
        correlation_length: Spacing of the noise grid in pixels; ``None`` =
            ``max(H, W) / 2`` (three nodes along the longer side).
        sharpness: Scale of the noise before the softmax; larger values give larger
            regions dominated by one kernel and steeper transitions.

    Returns:
        Field ``(k*k, H, W)`` float32.
    """
    k = check_kernel_size(size)
    height, width = (int(v) for v in shape)
    if num_kernels < 1:
        raise ValueError(f"num_kernels: expected a positive integer, got {num_kernels!r}")
    low, high = (float(v) for v in sigma_range)
    if not 0 <= low <= high:
        raise ValueError(f"sigma_range: expected 0 <= min <= max, got {sigma_range!r}")
    sigma_x = rng.uniform(low, high, num_kernels)
    sigma_y = np.where(
        rng.uniform(size=num_kernels) < isotropic_prob,
        sigma_x,
        low + (sigma_x - low) * rng.uniform(size=num_kernels),
    )
    theta = rng.uniform(0.0, np.pi, num_kernels)
    kernels = gaussian_kernel(k, sigma_x, sigma_y, theta)  # (M, k, k)

    spacing = max(height, width) / 2.0 if correlation_length is None else correlation_length
    if not spacing > 0:
        raise ValueError(f"correlation_length: expected a positive value, got {spacing!r}")
    nodes = (
        max(2, math.ceil((height - 1) / spacing) + 1),
        max(2, math.ceil((width - 1) / spacing) + 1),
    )
    noise = torch.from_numpy(rng.standard_normal((num_kernels, *nodes))).float()
    smooth = F.interpolate(noise[None], size=(height, width), mode="bicubic", align_corners=True)
    weights = torch.softmax(sharpness * smooth[0], dim=0)
    return _blend(kernels, weights)


def signed_defocus(depth: ArrayT, focus_depth: ArrayT | float) -> ArrayT:
    """Signed defocus ``1 / z_f - 1 / z`` in 1/m (dioptres) of depth ``z`` and focus ``z_f``
    given in mm.

    Positive behind the focal plane, negative in front of it, 0 on it; it keeps the scale
    of the scene (doubling every depth halves it). A thin lens focused at ``z_f`` images a
    point at depth ``z`` with a circle of confusion of diameter ``D f / (z_f - f) * |z -
    z_f| / z``, proportional to ``|1 / z_f - 1 / z|`` for a fixed camera (aperture
    diameter ``D``, focal length ``f``).

    Args:
        depth: Depth in mm, positive (NumPy array, tensor or float).
        focus_depth: Focus distance in mm, positive; a tensor broadcast against ``depth``
            (e.g. ``(B, 1, 1, 1)`` for a batch of maps).

    Returns:
        Same type and shape as ``depth``.
    """
    return MM_PER_M / focus_depth - MM_PER_M / depth


def _focus_rank(count: int, quantile: float) -> int:
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"focus quantile: expected a value in [0, 1], got {quantile!r}")
    return int(math.floor(quantile * (count - 1)))


def focus_at_quantile(
    depth: np.ndarray | torch.Tensor, quantile: float = DEFAULT_FOCUS_QUANTILE
) -> float | torch.Tensor:
    """The focus distance of the camera model: the depth at ``quantile`` of the scene.

    The ``floor(quantile * (n - 1))``-th smallest of the ``n`` depths (NumPy's
    ``method="lower"``): always the depth of an actual pixel, so the focal plane is sharp,
    and the same value whether it is computed in float32 or float64, from a NumPy array or
    a tensor, or after a flip. The degradation and the network input compute it from the
    same depth map, which is how the focus is passed on (see
    :class:`~svblur.models.GroundTruthDepth`).

    Args:
        depth: A depth map: NumPy (any shape, all of it), or a tensor ``(B, ...)`` (one
            focus per leading index).
        quantile: In ``[0, 1]``: 0 the nearest depth, 0.5 the median, 1 the farthest.

    Returns:
        A float for a NumPy array, ``(B,)`` for a tensor.
    """
    if isinstance(depth, torch.Tensor):
        flat = depth.reshape(depth.shape[0], -1)
        rank = _focus_rank(flat.shape[1], quantile)
        return torch.kthvalue(flat, rank + 1, dim=1).values
    flat = np.asarray(depth).reshape(-1)
    rank = _focus_rank(flat.size, quantile)
    return float(np.partition(flat, rank)[rank])


def depth_sigma(
    depth: np.ndarray,
    focus_depth: float,
    sigma_max: float,
    *,
    sigma_min: float = 0.0,
    model: DepthModel = "linear",
    aperture: float | None = None,
) -> np.ndarray:
    """Blur width per pixel of :func:`depth_gaussian_field` (float64, see there).

    Args:
        depth: Depth ``(H, W)``.
        focus_depth: Depth of the focal plane.
        sigma_max: Largest sigma (``"linear"``, ``"thin_lens"``) or the cap (``"camera"``).
        sigma_min: Sigma at the focal plane.
        model: ``"linear"``, ``"thin_lens"`` or ``"camera"``.
        aperture: ``A`` of ``"camera"``, px * m.

    Returns:
        ``(H, W)`` sigma in pixels.
    """
    depth = np.asarray(depth, np.float64)
    if model == "camera":
        if aperture is None or not aperture >= 0:
            raise ValueError(f"aperture: model='camera' needs a value >= 0, got {aperture!r}")
        if (depth <= 0).any() or not focus_depth > 0:
            raise ValueError("depth, focus_depth: model='camera' needs positive depths in mm")
        defocus = np.abs(signed_defocus(depth, float(focus_depth)))
        return np.clip(float(aperture) * defocus, sigma_min, sigma_max)
    distance = np.abs(depth - focus_depth)
    if model == "linear":
        defocus = distance
    elif model == "thin_lens":
        if (depth <= 0).any():
            raise ValueError("depth: model='thin_lens' needs positive depths")
        # c(z) = m (z_v / z_f) A |z - z_f| / z: for a fixed camera, proportional to this
        defocus = distance / depth
    else:
        raise ValueError(f"model: expected 'linear', 'thin_lens' or 'camera', got {model!r}")
    peak = defocus.max()
    ratio = defocus / peak if peak > 0 else np.zeros_like(defocus)
    return sigma_min + (sigma_max - sigma_min) * ratio


def _draw(value: float | tuple[float, float], rng: np.random.Generator | None, name: str) -> float:
    if isinstance(value, Sequence):
        low, high = (float(v) for v in value)
        if low == high:
            return low
        if rng is None:
            raise ValueError(f"{name}: a (min, max) range needs an rng to draw from")
        return float(rng.uniform(low, high))
    return float(value)


def depth_gaussian_field(
    depth: np.ndarray | torch.Tensor,
    size: int,
    focus_depth: float,
    sigma_max: float,
    *,
    sigma_min: float = 0.0,
    model: DepthModel = "linear",
    aperture: float | None = None,
    aspect: float | tuple[float, float] = 1.0,
    theta: float | tuple[float, float] = 0.0,
    rng: np.random.Generator | None = None,
) -> torch.Tensor:
    """Depth-guided Gaussian blur: wider kernels farther from the focal plane (SSR).

    The blur width ``sigma`` of a pixel at depth ``z`` (:func:`depth_sigma`):

    - ``model="camera"``: a thin lens, ``sigma = clip(aperture * |1 / z_f - 1 / z|,
      sigma_min, sigma_max)`` with ``z`` and ``z_f = focus_depth`` in mm and the defocus
      in 1/m (:func:`signed_defocus`), so ``aperture`` is the blur in pixels per dioptre
      of defocus and ``sigma_max`` caps it (the kernel's support); sigma depends on the
      depths themselves, not on the scene's range;
    - ``model="linear"``: ``sigma = sigma_min + (sigma_max - sigma_min) * s / max s``,
      ``s = |z - focus_depth|``: the distance from the focal plane normalized by its
      largest value in the scene (any depth units, e.g. relative MiDaS-like depth), so
      the pixel farthest from focus gets ``sigma_max``;
    - ``model="thin_lens"``: as ``"linear"`` with ``s = |z - focus_depth| / z``,
      proportional to the thin-lens circle of confusion for a fixed camera (see
      :func:`svblur.degradation.defocus_sigma` for SYNDOF's full camera model); needs
      metric, positive depth.

    Each pixel's kernel is a Gaussian with ``sigma_x = sigma``, ``sigma_y = aspect *
    sigma`` and rotation ``theta`` (one ``aspect`` and ``theta`` for the whole image;
    a ``(min, max)`` pair is drawn uniformly with ``rng``, ``aspect`` first).

    Args:
        depth: Depth ``(H, W)``, NumPy or torch (mm for ``"camera"``).
        size: Odd kernel side ``k`` (SSR: 21).
        focus_depth: Depth of the focal plane (same units as ``depth``).
        sigma_max: Largest standard deviation in pixels, ``>= sigma_min``.
        sigma_min: Standard deviation at the focal plane (``0``: sharp).
        model: ``"camera"``, ``"linear"`` or ``"thin_lens"`` (see above).
        aperture: The camera's ``A`` in px * m (``"camera"`` only).
        aspect: ``sigma_y / sigma_x`` in ``(0, 1]``, or a ``(min, max)`` range.
        theta: Rotation in radians (as in ``gaussian_kernel``), or a ``(min, max)`` range.
        rng: Needed only when ``aspect`` or ``theta`` is a range.

    Returns:
        Field ``(k*k, H, W)`` float32.
    """
    k = check_kernel_size(size)
    depth = _as_numpy_2d(depth, "depth").astype(np.float64)
    if not np.isfinite(depth).all():
        raise ValueError("depth: contains NaN or inf; fill invalid depth first")
    if not 0 <= sigma_min <= sigma_max:
        raise ValueError(
            f"sigma_min, sigma_max: expected 0 <= sigma_min <= sigma_max, got {sigma_min}, {sigma_max}"
        )
    ratio = _draw(aspect, rng, "aspect")
    angle = _draw(theta, rng, "theta")
    if not 0 < ratio <= 1:
        raise ValueError(f"aspect: expected values in (0, 1], got {aspect!r}")
    sigma = depth_sigma(
        depth,
        float(focus_depth),
        float(sigma_max),
        sigma_min=float(sigma_min),
        model=model,
        aperture=aperture,
    )
    height, width = depth.shape
    flat_sigma = torch.from_numpy(sigma.reshape(-1)).float()
    field = torch.empty(k * k, height * width)
    for start in range(0, height * width, _PIXELS_PER_CHUNK):
        part = flat_sigma[start : start + _PIXELS_PER_CHUNK]
        kernels = gaussian_kernel(k, part, part * ratio, torch.full_like(part, angle))
        field[:, start : start + part.numel()] = kernels.reshape(-1, k * k).T
    return field.view(k * k, height, width)


def motion_field(
    regions: np.ndarray | torch.Tensor,
    size: int,
    rng: np.random.Generator,
    *,
    num_moving: int = 1,
    background: int | None = None,
    background_length: tuple[float, float] | None = None,
    object_length: tuple[float, float] | None = None,
    object_motion: Literal["linear", "shake"] = "linear",
    feather: float = 0.0,
    min_area: float = 0.01,
) -> torch.Tensor:
    """Region-wise motion blur: a background and moving objects blurred differently.

    ``regions`` labels the pixels (semantic segmentation, instance masks or depth-layer
    indices). The background label (the largest region unless given) gets a
    camera-shake kernel (:func:`~svblur.degradation.kernels.motion_kernel`). Up to
    ``num_moving`` other labels covering at least ``min_area`` of the image are chosen
    uniformly with ``rng`` as moving objects; each gets its own kernel, a straight
    motion in a uniformly random direction (``object_motion="linear"``) or another
    camera-shake path (``"shake"``). Every other label moves with the background.

    Assignment is hard (one kernel per region) unless ``feather > 0``: then the region
    masks are smoothed by a Gaussian of standard deviation ``feather`` pixels and
    renormalized, and pixels within about ``4 * feather`` of a boundary get a convex
    blend of the two sides' kernels (still normalized).

    Args:
        regions: Integer labels ``(H, W)``, NumPy or torch.
        size: Odd kernel side ``k``.
        rng: Source of randomness.
        num_moving: Largest number of moving regions.
        background: Label of the background; ``None`` = the label with most pixels.
        background_length: ``(min, max)`` camera-shake path length in pixels, drawn
            uniformly; ``None`` = ``(0, (k - 1) / 4)``.
        object_length: ``(min, max)`` object motion length in pixels; ``None`` =
            ``((k - 1) / 4, k - 1)``.
        object_motion: ``"linear"`` or ``"shake"``.
        feather: Standard deviation in pixels of the blend at region boundaries.
        min_area: Smallest fraction of the image a moving region must cover.

    Returns:
        Field ``(k*k, H, W)`` float32.
    """
    k = check_kernel_size(size)
    labels = _as_numpy_2d(regions, "regions")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"regions: expected integer labels, got dtype {labels.dtype}")
    if object_motion not in ("linear", "shake"):
        raise ValueError(f"object_motion: expected 'linear' or 'shake', got {object_motion!r}")
    if feather < 0:
        raise ValueError(f"feather: expected a value >= 0, got {feather!r}")
    values, counts = np.unique(labels, return_counts=True)
    if background is None:
        background = int(values[np.argmax(counts)])
    candidates = values[(values != background) & (counts >= min_area * labels.size)]
    moving = rng.choice(candidates, size=min(num_moving, candidates.size), replace=False)

    shake_range = (0.0, (k - 1) / 4) if background_length is None else background_length
    object_range = ((k - 1) / 4, k - 1) if object_length is None else object_length
    kernels = [motion_kernel(k, rng, length=rng.uniform(*shake_range))]
    for _ in moving:
        length = rng.uniform(*object_range)
        if object_motion == "linear":
            kernels.append(linear_motion_kernel(k, length, rng.uniform(0.0, 360.0)))
        else:
            kernels.append(motion_kernel(k, rng, length=length))

    objects = np.zeros((len(moving), *labels.shape), dtype=np.float32)
    for index, label in enumerate(moving):
        objects[index] = labels == label
    masks = np.concatenate([1.0 - objects.sum(axis=0, keepdims=True), objects])
    if feather > 0:
        masks = np.stack([ndi.gaussian_filter(m, feather, mode="reflect") for m in masks])
        masks /= masks.sum(axis=0, keepdims=True)
    return _blend(np.stack(kernels), masks)
