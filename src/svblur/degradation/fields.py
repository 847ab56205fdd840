"""Spatially variant blur: the kernel-field layout and applying a field.

A kernel field holds one normalized ``k x k`` kernel per pixel, flattened row-major
into the channel axis: ``kernels[b, i * k + j, y, x]`` is tap ``(i, j)`` of pixel
``(y, x)``'s kernel, shape ``(B, k*k, H, W)`` (the generators, in
:mod:`svblur.degradation.field_synthesis` and re-exported here, return one image's
``(k*k, H, W)``; stack them for a batch). ``k`` is odd. Applying a field is a
per-pixel cross-correlation of the input padded by ``r = k // 2``, as ``F.conv2d`` and
``cv2.filter2D`` compute for a single kernel::

    out[b, c, y, x] = sum_{i, j} kernels[b, i * k + j, y, x] * xpad[b, c, y + i, x + j]

Memory: a field is ``k*k`` floats per pixel (441 for ``k = 21``, 1.8 GB in float32 for
a 1024 x 1024 image); applying it allocates no ``k*k``-fold temporary.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# iter_patch_rows lives in svblur.ops.patches, the field generators in
# svblur.degradation.field_synthesis; both re-exported here under their old path.
from svblur.ops.patches import (
    DEFAULT_CHUNK_BYTES,
    Padding,
    check_image,
    iter_patch_rows,
    pad_image,
    row_chunks,
)

from .field_synthesis import (
    DEFAULT_FOCUS_QUANTILE,
    MM_PER_M,
    depth_gaussian_field,
    depth_sigma,
    field_from_kernel,
    focus_at_quantile,
    gaussian_field,
    motion_field,
    signed_defocus,
)

__all__ = [
    "DEFAULT_FOCUS_QUANTILE",
    "MM_PER_M",
    "apply_kernel",
    "apply_kernel_field",
    "depth_gaussian_field",
    "depth_sigma",
    "field_from_kernel",
    "filter_image",
    "focus_at_quantile",
    "gaussian_field",
    "iter_patch_rows",
    "motion_field",
    "signed_defocus",
]


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


def filter_image(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The NumPy twin of :func:`apply_kernel` for one image: every channel of ``(H, W, C)``
    cross-correlated with ``kernel`` on its reflect-101 padding (``cv2.filter2D``).

    Args:
        image: Float32 or float64 image ``(H, W, C)`` (or ``(H, W)``).
        kernel: ``(k, k)`` kernel, ``k`` odd.

    Returns:
        The filtered image, same shape and dtype.
    """
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
