"""Colour maps for blur and semantic maps (no plotting library needed)."""

from __future__ import annotations

import torch

__all__ = ["colorize_labels", "colorize_scalar", "palette"]

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
