"""SSR's adaptive multi-modal fusion (AMF, Eq. 3) and its sparsity term (Eq. 5).

One :class:`AMF` per modality ``i`` (kernel, depth, LR image) modulates a feature map
``F_in`` of the diffusion UNet with that modality's encoder features ``f_i``::

    F_out = (1 + M_alpha(f_i)) * BN(F_in) + M_beta(f_i)                          (Eq. 3)

``M_alpha`` and ``M_beta`` follow StableSR's SPADE layer: a shared 3x3 conv to a hidden
width (128 in SSR and StableSR) with ReLU, then one 3x3 conv each to ``alpha`` and
``beta``. Those two output convs start at zero, so at initialization AMF is the
batch normalization alone. :class:`MultiModalAMF` holds one AMF per modality and averages
their outputs. :func:`amf_sparsity` is Eq. 5's ``sum_i lambda_i C_i(f_i)`` with ``C_i`` the
mean absolute value (an L1 norm divided by the element count, so that ``lambda_i`` does
not depend on the image size).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AMF", "MultiModalAMF", "amf_sparsity"]


class AMF(nn.Module):
    """Adaptive multi-modal fusion for one modality (SSR Eq. 3, SPADE-style).

    ``BN`` is a parameter-free ``BatchNorm2d`` (``affine=False``, as SPADE's
    ``param_free_norm``): the affine part is what the condition provides. The condition
    ``f`` is resized (bilinear) to ``F_in``'s size when the two differ.

    Args:
        channels: Channels of ``F_in``.
        cond_channels: Channels of the condition features ``f``.
        hidden: Width of the shared hidden layer (SSR, StableSR: 128).
        kernel_size: Kernel size of the three convolutions (StableSR: 3).

    Shape:
        ``x (B, channels, H, W)``, ``cond (B, cond_channels, H', W')`` -> ``(B, channels, H, W)``.
    """

    def __init__(
        self, channels: int, cond_channels: int, hidden: int = 128, kernel_size: int = 3
    ) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.shared = nn.Sequential(
            nn.Conv2d(cond_channels, hidden, kernel_size, padding=padding), nn.ReLU()
        )
        self.alpha = nn.Conv2d(hidden, channels, kernel_size, padding=padding)
        self.beta = nn.Conv2d(hidden, channels, kernel_size, padding=padding)
        for conv in (self.alpha, self.beta):  # AMF == BN at initialization
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def modulation(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(M_alpha(f), M_beta(f))``, each ``(B, channels, H', W')``."""
        hidden = self.shared(cond)
        return self.alpha(hidden), self.beta(hidden)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond.shape[-2:] != x.shape[-2:]:
            cond = F.interpolate(cond, size=x.shape[-2:], mode="bilinear", align_corners=False)
        alpha, beta = self.modulation(cond.to(x.dtype))
        return (1 + alpha) * self.norm(x) + beta


class MultiModalAMF(nn.Module):
    """One :class:`AMF` per modality applied to the same feature map, outputs averaged.

    SSR writes Eq. 3 once per modality and does not say how the three outputs meet; the
    mean keeps Eq. 3's form, ``(1 + mean_i alpha_i) * BN(F_in) + mean_i beta_i`` (every
    AMF normalizes the same input), and equals ``BN(F_in)`` at initialization.

    Args:
        channels: Channels of the modulated feature map.
        cond_channels: Condition channels by modality name, e.g. ``{"kernel": 16,
            "depth": 16, "lr": 32}``.
        hidden: Hidden width of every AMF.

    Shape:
        ``x (B, channels, H, W)``, ``conds`` mapping each modality to ``(B, C_i, H', W')``
        -> ``(B, channels, H, W)``.
    """

    def __init__(self, channels: int, cond_channels: Mapping[str, int], hidden: int = 128) -> None:
        super().__init__()
        if not cond_channels:
            raise ValueError("MultiModalAMF needs at least one modality")
        self.modalities = list(cond_channels)
        self.amf = nn.ModuleDict(
            {name: AMF(channels, int(c), hidden) for name, c in cond_channels.items()}
        )

    def forward(self, x: torch.Tensor, conds: Mapping[str, torch.Tensor]) -> torch.Tensor:
        missing = [name for name in self.modalities if name not in conds]
        if missing:
            raise KeyError(f"MultiModalAMF: no features for modalities {missing}")
        outputs = [self.amf[name](x, conds[name]) for name in self.modalities]
        return torch.stack(outputs).mean(0)


def amf_sparsity(
    features: Mapping[str, Sequence[torch.Tensor]], weights: Mapping[str, float]
) -> torch.Tensor:
    """Eq. 5's sparsity term ``sum_i lambda_i C_i(f_i)``.

    ``C_i`` is the mean absolute value of modality ``i``'s encoder features, averaged over
    the feature maps given for it (one per UNet level).

    Args:
        features: Feature maps by modality name (each a list, one tensor per level).
        weights: ``lambda_i`` by modality name; a modality missing here weighs 0.

    Returns:
        A scalar tensor (0 when every weight is 0).
    """
    unknown = sorted(set(weights) - set(features))
    if unknown:
        raise KeyError(f"amf_sparsity: weights for modalities without features: {unknown}")
    total: torch.Tensor | None = None
    for name, maps in features.items():
        weight = float(weights.get(name, 0.0))
        if weight == 0.0 or not maps:
            continue
        term = weight * torch.stack([f.float().abs().mean() for f in maps]).mean()
        total = term if total is None else total + term
    if total is None:
        first = next((m[0] for m in features.values() if m), None)
        return torch.zeros((), device=None if first is None else first.device)
    return total
