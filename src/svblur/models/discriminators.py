"""U-Net discriminators with spectral normalization: Real-ESRGAN's and PBaSR's blur-conditioned one.

Both output per-pixel real/fake *logits* at the input size. Spectral normalization is
:func:`torch.nn.utils.spectral_norm` (one power iteration per training forward), so the
parameter names (``conv1.weight_orig``, ``conv1.weight_u``, ...) are those of the released
Real-ESRGAN discriminator and its files load unchanged into :class:`UNetDiscriminatorSN`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

__all__ = ["ConditionalUNetDiscriminatorSN", "UNetDiscriminatorSN"]


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class UNetDiscriminatorSN(nn.Module):
    """Real-ESRGAN's U-Net discriminator with spectral normalization.

    ``conv0`` (3x3, plain) -> three stride-2 4x4 spectral-norm convs (``F -> 2F -> 4F -> 8F``
    channels, no bias) -> three ``bilinear x2 -> 3x3 SN conv`` stages back to ``F`` channels,
    each added to the encoder features of the same size (``skip_connection``) -> two 3x3 SN
    convs -> ``conv9`` (3x3, plain) to one channel. LeakyReLU 0.2 after every conv but the
    last.

    Args:
        in_channels: Channels of the image.
        num_features: ``F``, channels of the first level (64 in Real-ESRGAN).
        skip_connection: Add the encoder features to the decoder's (True in Real-ESRGAN).

    Shape:
        ``(B, in_channels, H, W) -> (B, 1, H, W)`` logits; ``H`` and ``W`` divisible by 8.
    """

    def __init__(
        self, in_channels: int = 3, num_features: int = 64, skip_connection: bool = True
    ) -> None:
        super().__init__()
        f = num_features
        self.in_channels = in_channels
        self.skip_connection = skip_connection
        self.conv0 = nn.Conv2d(in_channels, f, 3, padding=1)
        self.conv1 = spectral_norm(nn.Conv2d(f, f * 2, 4, 2, 1, bias=False))
        self.conv2 = spectral_norm(nn.Conv2d(f * 2, f * 4, 4, 2, 1, bias=False))
        self.conv3 = spectral_norm(nn.Conv2d(f * 4, f * 8, 4, 2, 1, bias=False))
        self.conv4 = spectral_norm(nn.Conv2d(f * 8, f * 4, 3, 1, 1, bias=False))
        self.conv5 = spectral_norm(nn.Conv2d(f * 4, f * 2, 3, 1, 1, bias=False))
        self.conv6 = spectral_norm(nn.Conv2d(f * 2, f, 3, 1, 1, bias=False))
        self.conv7 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv8 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(f, 1, 3, padding=1)

    def _check_image(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects images of shape (B, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        if h % 8 or w % 8:
            raise ValueError(
                f"{type(self).__name__} needs height and width divisible by 8, got ({h}, {w}); "
                f"pad or crop to ({h // 8 * 8 or 8}, {w // 8 * 8 or 8})"
            )

    def _trunk(self, x0: torch.Tensor) -> torch.Tensor:
        """Everything after the first level's features ``x0 (B, F, H, W)``."""
        x1 = _lrelu(self.conv1(x0))
        x2 = _lrelu(self.conv2(x1))
        x3 = _lrelu(self.conv3(x2))
        x4 = _lrelu(self.conv4(_up2(x3)))
        if self.skip_connection:
            x4 = x4 + x2
        x5 = _lrelu(self.conv5(_up2(x4)))
        if self.skip_connection:
            x5 = x5 + x1
        x6 = _lrelu(self.conv6(_up2(x5)))
        if self.skip_connection:
            x6 = x6 + x0
        out = _lrelu(self.conv8(_lrelu(self.conv7(x6))))
        return self.conv9(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits ``(B, 1, H, W)`` for images ``x (B, C, H, W)``."""
        self._check_image(x)
        return self._trunk(_lrelu(self.conv0(x)))


class ConditionalUNetDiscriminatorSN(UNetDiscriminatorSN):
    """PBaSR's blur-conditioned U-Net discriminator (``ConditionalUNetDiscriminatorSNv2``).

    The condition (the blur mask or map) goes through ``condition_conv`` (3x3 to ``F / 2``
    channels) and LeakyReLU 0.2, is concatenated with the image's first-level features
    (``conv0`` + LeakyReLU), and a 1x1 ``fuse`` conv brings the ``F + F / 2`` channels back
    to ``F``; the rest is :class:`UNetDiscriminatorSN` (the skip of the first level carries
    the fused features).

    ``fuse`` starts as the identity on the image channels, zero on the condition channels
    and zero bias, so at initialization the output does not depend on the condition and
    equals that of an :class:`UNetDiscriminatorSN` with the same weights: training starts
    from the unconditional discriminator and learns how to use the condition. As in the
    released code, ``conv0``, ``condition_conv`` and ``fuse`` carry no spectral
    normalization (on ``fuse`` it would not change that start: the largest singular value
    of ``[I | 0]`` is 1).

    Args:
        in_channels: Channels of the image.
        condition_channels: Channels of the condition (1 for a blur mask or map).
        num_features: ``F`` (64 as released).
        skip_connection: As in :class:`UNetDiscriminatorSN`.

    Shape:
        ``x (B, in_channels, H, W), condition (B, condition_channels, H, W) -> (B, 1, H, W)``
        logits; ``H`` and ``W`` divisible by 8.
    """

    def __init__(
        self,
        in_channels: int = 3,
        condition_channels: int = 1,
        num_features: int = 64,
        skip_connection: bool = True,
    ) -> None:
        super().__init__(in_channels, num_features, skip_connection)
        self.condition_channels = condition_channels
        half = num_features // 2
        self.condition_conv = nn.Conv2d(condition_channels, half, 3, padding=1)
        self.fuse = nn.Conv2d(num_features + half, num_features, 1)
        with torch.no_grad():
            self.fuse.weight.zero_()
            self.fuse.weight[:, :num_features, 0, 0].copy_(torch.eye(num_features))
            self.fuse.bias.zero_()

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits ``(B, 1, H, W)`` for images ``x`` given their ``condition``."""
        self._check_image(x)
        expected = (x.shape[0], self.condition_channels, *x.shape[-2:])
        if condition.dim() != 4 or tuple(condition.shape) != expected:
            raise ValueError(
                f"condition must have shape {expected} (the image's size), got "
                f"{tuple(condition.shape)}"
            )
        image = _lrelu(self.conv0(x))
        cond = _lrelu(self.condition_conv(condition.to(image.dtype)))
        return self._trunk(self.fuse(torch.cat([image, cond], 1)))
