"""Pictures of predictions for logs and output files: a panel of maps, a kernel field
drawn over its image, a sigma map with a colour bar (colour maps in :mod:`svblur.ops.colour`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from .colour import colorize_labels, colorize_scalar

__all__ = ["blur_colorbar_image", "kernel_field_picture", "prediction_panel"]


def prediction_panel(
    lr: torch.Tensor,
    blur_gt: torch.Tensor | None,
    blur_pred: torch.Tensor | None,
    seg_gt: torch.Tensor | None,
    seg_logits: torch.Tensor | None,
    num_classes: int,
    blur_vmax: float,
) -> torch.Tensor:
    """One row per image: LR (upsampled) | GT blur | predicted blur | GT seg | predicted seg.

    Returns:
        ``(3, B * H, n * W)`` float image in ``[0, 1]`` at HR size.
    """
    size = next(t.shape[-2:] for t in (blur_gt, seg_gt) if t is not None)
    tiles = [F.interpolate(lr.float(), size=size, mode="nearest").clamp(0, 1)]
    if blur_gt is not None and blur_pred is not None:
        tiles += [colorize_scalar(blur_gt, blur_vmax), colorize_scalar(blur_pred, blur_vmax)]
    if seg_gt is not None and seg_logits is not None:
        tiles += [
            colorize_labels(seg_gt, num_classes),
            colorize_labels(seg_logits.argmax(1), num_classes),
        ]
    rows = torch.cat([t.cpu() for t in tiles], dim=-1)  # (B, 3, H, n*W)
    return torch.cat(list(rows), dim=-2)


def kernel_field_picture(
    image: torch.Tensor,
    kernels: torch.Tensor | Callable[[int, int], torch.Tensor],
    cells: int = 8,
    dim: float = 0.45,
) -> torch.Tensor:
    """The kernel field drawn over its image: a grid of kernels, each at its pixel.

    The image is dimmed; at ``cells x cells`` evenly spread pixels the local kernel's
    whole ``k x k`` window is drawn (outlined), enlarged by the same factor everywhere to
    fill most of its grid cell, so kernel sizes compare across the image; each kernel is
    scaled to its own peak, in a white-hot colour ramp over the image.

    Args:
        image: ``(3, H, W)`` in ``[0, 1]``.
        kernels: ``(k*k, H, W)`` field (row-major kernels), or a function ``(y, x) ->
            (k, k)`` kernel (to draw a field never stored whole, e.g. Gaussians of a
            sigma map).
        cells: Kernels per row and per column.
        dim: Brightness of the image under the kernels.

    Returns:
        ``(3, H, W)`` float image in ``[0, 1]``.
    """
    _, height, width = image.shape
    if isinstance(kernels, torch.Tensor):
        field = kernels
        k = round(field.shape[0] ** 0.5)
        if k * k != field.shape[0] or field.shape[1:] != (height, width):
            raise ValueError(
                f"kernels must be (k*k, H, W) of the image's size, got {tuple(field.shape)}"
            )

        def kernel_at(y: int, x: int) -> torch.Tensor:
            return field[:, y, x].reshape(k, k)
    else:
        kernel_at = kernels
    canvas = image.float().clamp(0, 1) * dim
    cell_h, cell_w = height // cells, width // cells
    size = max(1, min(cell_h, cell_w) - 2)
    for row in range(cells):
        for col in range(cells):
            y, x = row * cell_h + cell_h // 2, col * cell_w + cell_w // 2
            kernel = torch.as_tensor(kernel_at(y, x)).float()[None, None]
            kernel = kernel / kernel.max().clamp(min=1e-12)
            patch = F.interpolate(kernel, size=(size, size), mode="nearest")[0, 0]
            top, left = y - size // 2, x - size // 2
            glow = torch.stack([patch.clamp(max=1), (patch * 1.5 - 0.3).clamp(0, 1), patch**3])
            region = canvas[:, top : top + size, left : left + size]
            weight = patch.clamp(0, 1)[None]
            region = region * (1 - weight) + glow * weight
            for edge in (region[:, 0, :], region[:, -1, :], region[:, :, 0], region[:, :, -1]):
                edge.mul_(0.5).add_(0.25)  # a faint frame: the k x k window
            canvas[:, top : top + size, left : left + size] = region
    return canvas.clamp(0, 1)


def blur_colorbar_image(sigma: torch.Tensor, vmax: float) -> Image.Image:
    """Colour-mapped sigma map ``(H, W)`` with a labelled colour bar on the right."""
    height, width = sigma.shape
    rgb = colorize_scalar(sigma[None, None].clamp(min=0), vmax)[0]
    bar_w = max(12, width // 40)
    label_w = 7 * 6 + 8
    ramp = torch.linspace(vmax, 0.0, height).view(1, 1, height, 1).expand(1, 1, height, bar_w)
    bar = colorize_scalar(ramp, vmax)[0]
    canvas = torch.ones(3, height, width + 6 + bar_w + label_w)
    canvas[:, :, :width] = rgb
    canvas[:, :, width + 6 : width + 6 + bar_w] = bar
    array = (canvas.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(array)
    draw = ImageDraw.Draw(image)
    x = width + 6 + bar_w + 3
    for frac in (0.0, 0.5, 1.0):
        y = int(round((1 - frac) * (height - 1)))
        draw.line([(x - 3, y), (x, y)], fill=(0, 0, 0))
        draw.text(
            (x + 2, min(max(0, y - 5), max(0, height - 11))), f"{frac * vmax:.1f}", fill=(0, 0, 0)
        )
    if height > 40:
        draw.text((x + 2, height // 4), "sigma", fill=(0, 0, 0))
        draw.text((x + 2, height // 4 + 11), "(px)", fill=(0, 0, 0))
    return image
