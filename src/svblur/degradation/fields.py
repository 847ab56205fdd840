"""Spatially variant blur: kernel fields, their generators, and applying them.

A kernel field holds one normalized ``k x k`` kernel per pixel, flattened row-major
into the channel axis: ``kernels[b, i * k + j, y, x]`` is tap ``(i, j)`` of pixel
``(y, x)``'s kernel, shape ``(B, k*k, H, W)`` (the generators here return one image's
``(k*k, H, W)``; stack them for a batch). ``k`` is odd. Applying a field is a
per-pixel cross-correlation of the input padded by ``r = k // 2``, as ``F.conv2d`` and
``cv2.filter2D`` compute for a single kernel::

    out[b, c, y, x] = sum_{i, j} kernels[b, i * k + j, y, x] * xpad[b, c, y + i, x + j]

Memory: a field is ``k*k`` floats per pixel (441 for ``k = 21``, 1.8 GB in float32 for
a 1024 x 1024 image); applying it allocates no ``k*k``-fold temporary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, TypeVar

import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

# iter_patch_rows lives in svblur.ops.patches; re-exported here under its old path.
from svblur.ops.patches import (
    DEFAULT_CHUNK_BYTES,
    Padding,
    check_image,
    check_kernel_size,
    iter_patch_rows,
    pad_image,
    row_chunks,
)

from .kernels import gaussian_kernel, linear_motion_kernel, motion_kernel

__all__ = [
    "DEFAULT_FOCUS_QUANTILE",
    "MM_PER_M",
    "apply_kernel",
    "apply_kernel_field",
    "depth_gaussian_field",
    "depth_sigma",
    "field_from_kernel",
    "focus_at_quantile",
    "gaussian_field",
    "iter_patch_rows",
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


# --------------------------------------------------------------------------- applying fields
class _KernelField(torch.autograd.Function):
    """Per-pixel correlation of a padded input, tap by tap, with a matching backward.

    Each of the ``k*k`` taps is one fused multiply-add of an ``(B, C, rows, W)`` shifted
    view of the padded input with one kernel plane, so no patch tensor is built: extra
    memory is the output in the forward pass and the input/kernel gradients in the
    backward pass. Autograd through the same loop of views would materialize a
    padded-size gradient per tap, hence the explicit adjoint.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        xpad: torch.Tensor,
        kernels: torch.Tensor,
        k: int,
        chunks: list[slice],
    ) -> torch.Tensor:
        ctx.save_for_backward(xpad, kernels)
        ctx.k, ctx.chunks = k, chunks
        batch, channels = xpad.shape[:2]
        height, width = kernels.shape[-2:]
        out = xpad.new_empty(batch, channels, height, width)
        for rows in chunks:
            acc = out[:, :, rows]
            for tap in range(k * k):
                i, j = divmod(tap, k)
                shifted = xpad[:, :, rows.start + i : rows.stop + i, j : j + width]
                weight = kernels[:, tap : tap + 1, rows]
                if tap == 0:
                    torch.mul(shifted, weight, out=acc)
                else:
                    acc.addcmul_(shifted, weight)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        xpad, kernels = ctx.saved_tensors
        k, chunks = ctx.k, ctx.chunks
        width = kernels.shape[-1]
        need_x, need_kernels = ctx.needs_input_grad[:2]
        grad_x = torch.zeros_like(xpad) if need_x else None
        grad_kernels = torch.empty_like(kernels) if need_kernels else None
        shared = kernels.shape[0] == 1 and xpad.shape[0] > 1  # one field for the whole batch
        for rows in chunks:
            g = grad[:, :, rows]
            for tap in range(k * k):
                i, j = divmod(tap, k)
                window = (slice(None), slice(None), slice(rows.start + i, rows.stop + i))
                window += (slice(j, j + width),)
                if grad_x is not None:
                    grad_x[window].addcmul_(g, kernels[:, tap : tap + 1, rows])
                if grad_kernels is not None:
                    product = (g * xpad[window]).sum(dim=1)
                    if shared:
                        product = product.sum(dim=0, keepdim=True)
                    grad_kernels[:, tap, rows] = product
        return grad_x, grad_kernels, None, None


def _check_field(kernels: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Validate a field against ``image`` and return it as ``(B or 1, k*k, H, W)``."""
    batch, channels, height, width = image.shape
    expected = (
        f"kernels must be (B, k*k, H, W) or (k*k, H, W) with k odd, matching image "
        f"(B, C, H, W) = {tuple(image.shape)}"
    )
    if not isinstance(kernels, torch.Tensor):
        raise ValueError(f"{expected}; got a {type(kernels).__name__}, not a torch.Tensor")
    field = kernels.unsqueeze(0) if kernels.dim() == 3 else kernels
    taps = field.shape[1] if field.dim() == 4 else 0
    k = math.isqrt(taps)
    if (
        field.dim() != 4
        or field.shape[0] not in (1, batch)
        or field.shape[-2:] != (height, width)
        or k * k != taps
        or k % 2 != 1
    ):
        raise ValueError(f"{expected}; got {tuple(kernels.shape)}")
    if field.device != image.device:
        raise ValueError(f"kernels are on {field.device} but image is on {image.device}")
    return field


def apply_kernel_field(
    image: torch.Tensor,
    kernels: torch.Tensor,
    padding: Padding = "reflect",
    max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> torch.Tensor:
    """Blur each pixel with its own kernel (exact, differentiable, CPU or GPU).

    ``out[b, c, y, x] = sum_{i, j} kernels[b, i*k + j, y, x] * xpad[b, c, y + i, x + j]``
    where ``xpad`` is ``image`` padded by ``k // 2``: a cross-correlation, so a constant
    field equals :func:`apply_kernel` (and ``F.conv2d`` / ``cv2.filter2D``).

    Memory is bounded: the padded input is walked in the row chunks of
    :func:`iter_patch_rows`, but each chunk is contracted tap by tap from shifted views
    of the padded input, so the ``k*k``-fold patches are never materialized. Extra
    memory is the padded copy and the output (plus, for the backward pass, the input and
    kernel gradients); time is ``k*k`` fused multiply-adds over the image. The
    backward pass is explicit and first-order only (no double backward).

    Args:
        image: Input ``(B, C, H, W)``, any float dtype.
        kernels: Field ``(B, k*k, H, W)``, or ``(k*k, H, W)`` / ``(1, k*k, H, W)`` for
            one field shared by the batch, ``k`` odd; cast to ``image``'s dtype, must be
            on its device. The kernels need not be normalized.
        padding: ``"reflect"`` (``F.pad``'s reflect = OpenCV's ``BORDER_REFLECT_101``),
            ``"zeros"`` or ``"replicate"``.
        max_chunk_bytes: Sets the chunk height as in :func:`iter_patch_rows` (the bytes
            that chunk's patches would take); larger chunks mean fewer, larger operations.

    Returns:
        Blurred image ``(B, C, H, W)``, ``image``'s dtype.
    """
    check_image(image)
    field = _check_field(kernels, image).to(image.dtype)
    batch, channels, height, width = image.shape
    k = math.isqrt(field.shape[1])
    xpad = pad_image(image, k // 2, padding)
    bytes_per_row = batch * channels * k * k * width * image.element_size()
    chunks = list(row_chunks(height, bytes_per_row, max_chunk_bytes))
    return _KernelField.apply(xpad, field, k, chunks)


def apply_kernel(
    image: torch.Tensor, kernel: np.ndarray | torch.Tensor, padding: Padding = "reflect"
) -> torch.Tensor:
    """Blur with one kernel per image: depthwise ``F.conv2d`` on the padded input.

    Cross-correlation (the kernel is not flipped), the convention of
    :func:`apply_kernel_field`; with ``padding="reflect"`` this equals
    ``cv2.filter2D(..., borderType=cv2.BORDER_REFLECT_101)`` per channel.

    Args:
        image: Input ``(B, C, H, W)``, any float dtype.
        kernel: ``(k, k)`` for the whole batch or ``(B, k, k)`` one per image, ``k``
            odd; NumPy or torch, cast to ``image``'s dtype and device.
        padding: ``"reflect"``, ``"zeros"`` or ``"replicate"``.

    Returns:
        Blurred image ``(B, C, H, W)``.
    """
    check_image(image)
    batch, channels, height, width = image.shape
    weight = torch.as_tensor(kernel).to(device=image.device, dtype=image.dtype)
    if weight.dim() == 2:
        weight = weight.unsqueeze(0)
    if (
        weight.dim() != 3
        or weight.shape[0] not in (1, batch)
        or weight.shape[1] != weight.shape[2]
        or weight.shape[1] % 2 != 1
    ):
        raise ValueError(
            f"kernel must be (k, k) or (B, k, k) with k odd and B = {batch}; "
            f"got {tuple(weight.shape)}"
        )
    k = weight.shape[-1]
    xpad = pad_image(image, k // 2, padding)
    if weight.shape[0] == 1:
        filters = weight.expand(channels, k, k).unsqueeze(1)
        return F.conv2d(xpad, filters, groups=channels)
    filters = weight.unsqueeze(1).expand(batch, channels, k, k).reshape(batch * channels, 1, k, k)
    stacked = xpad.reshape(1, batch * channels, *xpad.shape[-2:])
    return F.conv2d(stacked, filters, groups=batch * channels).view(batch, channels, height, width)


# --------------------------------------------------------------------------- field generators
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
