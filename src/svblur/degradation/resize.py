"""MATLAB-compatible bicubic resizing (``imresize(x, scale)`` with default options).

The reference data sets (NYUv2-BSR, Cityscapes-BSR) made their x4 LR inputs with
MATLAB's ``imresize(hr, 1/4)``: bicubic kernel with ``a = -0.5``, antialiasing when
shrinking (the kernel is stretched by ``1/scale`` and scaled by ``scale``), and
symmetric (mirror, edge pixel repeated) index handling at the borders. This module
reproduces that algorithm: each axis is resized by a dense ``(out, in)`` weight
matrix built exactly as MATLAB's ``contributions`` routine builds its sparse one,
rows first, then columns (MATLAB resizes the dimension with the smaller scale first;
with one scale for both axes that is the row dimension).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TypeVar, overload

import numpy as np
import torch

__all__ = ["cubic_kernel", "imresize", "resize_weights"]

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def cubic_kernel(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``).

    Args:
        x: Sample positions relative to the kernel centre, any shape.

    Returns:
        Kernel values, same shape as ``x``.
    """
    absx = np.abs(x)
    absx2 = absx**2
    absx3 = absx**3
    inner = (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1)
    outer = (-0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0) * ((absx > 1) & (absx <= 2))
    return inner + outer


def output_length(in_length: int, scale: float) -> int:
    """Output length of one axis, ``ceil(in_length * scale)`` as MATLAB computes it."""
    return int(math.ceil(in_length * scale))


@lru_cache(maxsize=64)
def _weights_cached(in_length: int, scale: float, out_length: int) -> np.ndarray:
    kernel_width = 4.0
    if scale < 1:
        # Antialiasing: stretch the kernel so it acts as a low-pass filter.
        def kernel(x: np.ndarray) -> np.ndarray:
            return scale * cubic_kernel(scale * x)

        kernel_width = kernel_width / scale
    else:
        kernel = cubic_kernel

    # 1-based output coordinates mapped to input coordinates (MATLAB convention).
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)

    # Symmetric boundary: 1-based index k maps to aux[(k - 1) mod 2n].
    aux = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    idx0 = aux[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]

    matrix = np.zeros((out_length, in_length), dtype=np.float64)
    rows = np.repeat(np.arange(out_length), taps)
    np.add.at(matrix, (rows, idx0.ravel()), weights.ravel())
    matrix.setflags(write=False)
    return matrix


def resize_weights(in_length: int, scale: float, out_length: int | None = None) -> np.ndarray:
    """Dense resampling matrix of one axis (MATLAB ``imresize`` bicubic contributions).

    Args:
        in_length: Number of input samples along the axis.
        scale: Resize factor (``< 1`` shrinks, with antialiasing).
        out_length: Number of output samples; defaults to ``ceil(in_length * scale)``.

    Returns:
        Read-only float64 array of shape ``(out_length, in_length)`` whose rows sum to 1;
        ``out = matrix @ in`` resamples the axis.
    """
    if in_length < 1:
        raise ValueError(f"in_length must be >= 1, got {in_length}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if out_length is None:
        out_length = output_length(in_length, scale)
    return _weights_cached(int(in_length), float(scale), int(out_length))


@overload
def imresize(image: np.ndarray, scale: float) -> np.ndarray: ...
@overload
def imresize(image: torch.Tensor, scale: float) -> torch.Tensor: ...


def imresize(image: ArrayT, scale: float) -> ArrayT:
    """Resize like MATLAB's ``imresize(image, scale)`` (bicubic, antialiased).

    Args:
        image: A floating-point numpy array of shape ``(H, W)`` or ``(H, W, C)``, or a
            floating-point torch tensor of shape ``(..., H, W)`` (e.g. ``(3, H, W)`` or
            ``(B, 3, H, W)``).
        scale: Resize factor applied to both spatial axes, e.g. ``0.25`` for the x4 LR
            input.

    Returns:
        The resized image, same type, dtype (and device) as the input, with spatial size
        ``(ceil(H * scale), ceil(W * scale))``. Values are not clipped, so bicubic
        overshoot (as in MATLAB for float inputs) is kept.

    Raises:
        TypeError: If ``image`` is not floating point or not a numpy array / tensor.
        ValueError: If ``scale <= 0`` or the shape is not supported.
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if isinstance(image, torch.Tensor):
        if not image.is_floating_point():
            raise TypeError(f"imresize expects a floating-point tensor, got {image.dtype}")
        if image.dim() < 2:
            raise ValueError(f"imresize expects a tensor of shape (..., H, W), got {image.shape}")
        height, width = image.shape[-2:]
        rows = torch.tensor(resize_weights(height, scale), dtype=image.dtype, device=image.device)
        cols = torch.tensor(resize_weights(width, scale), dtype=image.dtype, device=image.device)
        return torch.matmul(torch.matmul(rows, image), cols.transpose(0, 1))
    if isinstance(image, np.ndarray):
        if not np.issubdtype(image.dtype, np.floating):
            raise TypeError(f"imresize expects a floating-point array, got {image.dtype}")
        if image.ndim not in (2, 3):
            raise ValueError(
                f"imresize expects an array of shape (H, W) or (H, W, C), got {image.shape}"
            )
        height, width = image.shape[:2]
        rows = resize_weights(height, scale)
        cols = resize_weights(width, scale)
        work = image.astype(np.float64, copy=False)
        out = np.tensordot(rows, work, axes=([1], [0]))  # (h, W[, C])
        out = np.moveaxis(np.tensordot(cols, out, axes=([1], [1])), 0, 1)  # (h, w[, C])
        return out.astype(image.dtype, copy=False)
    raise TypeError(f"imresize expects a numpy array or torch tensor, got {type(image).__name__}")
