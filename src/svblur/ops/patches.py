"""Per-pixel ``k x k`` neighbourhoods: padding, row chunks of bounded size, gathering.

Used wherever an operator needs every pixel's neighbourhood without building the
whole ``k*k``-fold patch tensor at once: kernel fields
(:mod:`svblur.degradation.fields`) and kernel-guided convolutions
(:mod:`svblur.nn.arcsr`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "Padding",
    "check_image",
    "check_kernel_size",
    "iter_patch_rows",
    "pad_image",
    "row_chunks",
]

Padding = Literal["reflect", "zeros", "replicate"]

#: Default bound on the bytes of one row chunk's patches (see :func:`iter_patch_rows`).
DEFAULT_CHUNK_BYTES = 256 * 2**20

_PAD_MODES = {"reflect": "reflect", "zeros": "constant", "replicate": "replicate"}


def pad_image(x: torch.Tensor, radius: int, padding: str) -> torch.Tensor:
    """Pad the last two axes of ``(B, C, H, W)`` by ``radius`` on every side.

    Raises:
        ValueError: On an unknown ``padding``, or ``"reflect"`` by more than the image.
    """
    if padding not in _PAD_MODES:
        raise ValueError(f"padding: expected one of {sorted(_PAD_MODES)}, got {padding!r}")
    if radius == 0:
        return x
    height, width = x.shape[-2:]
    if padding == "reflect" and min(height, width) <= radius:
        raise ValueError(
            f"padding='reflect' by k // 2 = {radius} needs H and W > {radius}, got "
            f"H, W = {height}, {width}; use padding='replicate' or 'zeros', or a smaller k"
        )
    return F.pad(x, (radius, radius, radius, radius), mode=_PAD_MODES[padding])


def row_chunks(height: int, bytes_per_row: int, max_chunk_bytes: int) -> Iterator[slice]:
    """Consecutive output-row slices of at most ``max_chunk_bytes`` (at least one row)."""
    if max_chunk_bytes <= 0:
        raise ValueError(f"max_chunk_bytes: expected a positive integer, got {max_chunk_bytes!r}")
    rows = int(min(height, max(1, max_chunk_bytes // max(bytes_per_row, 1))))
    for start in range(0, height, rows):
        yield slice(start, min(height, start + rows))


def check_kernel_size(kernel_size: int) -> int:
    """``kernel_size`` as an int; raises ``ValueError`` unless it is a positive odd integer."""
    if isinstance(kernel_size, bool) or int(kernel_size) != kernel_size or kernel_size % 2 != 1:
        raise ValueError(f"kernel_size: expected a positive odd integer, got {kernel_size!r}")
    return int(kernel_size)


def check_image(image: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``image`` is a floating-point ``(B, C, H, W)`` tensor."""
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image: expected a (B, C, H, W) tensor, got {shape}")
    if not image.is_floating_point():
        raise ValueError(f"image: expected a floating-point tensor, got {image.dtype}")


def iter_patch_rows(
    x: torch.Tensor,
    kernel_size: int,
    padding: Padding = "reflect",
    max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Gather every pixel's ``k x k`` neighbourhood, a chunk of output rows at a time.

    The input is padded by ``r = k // 2`` once; each chunk of rows ``y0:y1`` is
    unfolded from the padded rows ``y0 : y1 + 2r`` (its ``r``-row halo on each side),
    so the whole ``k*k``-fold patch tensor never exists at once::

        patches[b, c, i * k + j, y - y0, x] = xpad[b, c, y + i, x + j]

    The patches are a contiguous tensor (``F.unfold``), differentiable in ``x`` with an
    ``F.fold`` backward. A kernel-guided convolution contracts them with its weight
    ``(O, C, k*k)`` after scaling by the per-pixel kernels, e.g.
    ``W.view(O, -1) @ (patches * K[:, None, :, rows]).view(B, C * k * k, -1)``, without
    a weight per pixel. Under autograd every chunk a consumer multiplies is kept for
    the backward pass; wrap the per-chunk work in ``torch.utils.checkpoint`` to keep
    training memory bounded too.

    Args:
        x: Input ``(B, C, H, W)``, any float dtype, any device.
        kernel_size: Odd kernel side ``k``.
        padding: ``"reflect"`` (mirror without repeating the edge: ``F.pad``'s reflect,
            OpenCV's ``BORDER_REFLECT_101``), ``"zeros"`` or ``"replicate"``.
        max_chunk_bytes: Upper bound on one chunk's patches,
            ``B * C * k*k * rows * W * itemsize``; a chunk has at least one row.

    Yields:
        ``(rows, patches)``: the output-row slice and patches ``(B, C, k*k, rows, W)``.
    """
    check_image(x)
    k = check_kernel_size(kernel_size)
    batch, channels, height, width = x.shape
    xpad = pad_image(x, k // 2, padding)
    bytes_per_row = batch * channels * k * k * width * x.element_size()
    for rows in row_chunks(height, bytes_per_row, max_chunk_bytes):
        window = xpad[:, :, rows.start : rows.stop + k - 1]
        patches = F.unfold(window, k).view(batch, channels, k * k, rows.stop - rows.start, width)
        yield rows, patches
