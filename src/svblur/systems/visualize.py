"""Colour-coding of blur and semantic maps for logging (no plotting library needed)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# Anchor colours of a perceptually ordered map (dark blue -> cyan -> yellow -> red),
# interpolated linearly.
_ANCHORS = torch.tensor(
    [
        [0.19, 0.07, 0.23],
        [0.27, 0.51, 0.96],
        [0.10, 0.89, 0.71],
        [0.64, 0.99, 0.24],
        [0.98, 0.73, 0.22],
        [0.85, 0.22, 0.03],
        [0.48, 0.02, 0.01],
    ]
)


def colorize_scalar(values: torch.Tensor, vmax: float) -> torch.Tensor:
    """Map ``(B, 1, H, W)`` values in ``[0, vmax]`` to RGB ``(B, 3, H, W)`` in ``[0, 1]``."""
    anchors = _ANCHORS.to(values.device)
    t = (values.float() / max(vmax, 1e-8)).clamp(0, 1).squeeze(1) * (len(anchors) - 1)
    lo = t.floor().long().clamp(max=len(anchors) - 2)
    frac = (t - lo).unsqueeze(-1)
    rgb = anchors[lo] * (1 - frac) + anchors[lo + 1] * frac
    return rgb.permute(0, 3, 1, 2)


def palette(num_classes: int) -> torch.Tensor:
    """A fixed, well-spread colour per class, ``(num_classes, 3)`` in ``[0, 1]``."""
    idx = torch.arange(num_classes, dtype=torch.float64)
    hue = (idx * 0.618033988749895) % 1.0
    sat = 0.55 + 0.45 * ((idx * 0.37) % 1.0)
    val = 0.65 + 0.35 * ((idx * 0.71) % 1.0)
    k = (torch.tensor([5.0, 3.0, 1.0]) + hue.unsqueeze(1) * 6) % 6
    rgb = val.unsqueeze(1) - val.unsqueeze(1) * sat.unsqueeze(1) * (
        torch.minimum(k, 4 - k).clamp(0, 1)
    )
    return rgb.float()


def colorize_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Map ``(B, H, W)`` labels to RGB ``(B, 3, H, W)``; ignored pixels are black."""
    colours = torch.cat([palette(num_classes), torch.zeros(1, 3)]).to(labels.device)
    idx = labels.long().clone()
    idx[(idx < 0) | (idx >= num_classes)] = num_classes
    return colours[idx].permute(0, 3, 1, 2)


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
