"""Super-resolution metrics: PSNR and SSIM on the Y channel (the BasicSR convention).

Conventions (those of BasicSR / MANet's test code, used by the CMOS paper):

* Inputs are RGB images ``(B, 3, H, W)`` in ``[0, 1]``; they are clamped to ``[0, 1]`` and,
  with ``quantize=True`` (default), rounded to 8 bits, as when the SR image is saved as a
  PNG before it is measured.
* Y channel of ITU-R BT.601 YCbCr: ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` (RGB in
  ``[0, 1]``, Y in ``[16, 235]``); PSNR with peak 255. ``psnr_rgb``/``ssim_rgb`` measure
  the RGB channels (values times 255) instead.
* ``crop_border`` pixels (the SR scale) are removed on every side first.
* SSIM: Gaussian window 11 x 11, sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``, data range 255,
  over the valid region (no padding); RGB SSIM is the mean over channels.
* Everything is computed in float64, per image; the torchmetrics classes average the
  per-image values over all images of the split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .metrics import PerImageMean

__all__ = [
    "SRPSNR",
    "SRSSIM",
    "psnr_rgb",
    "psnr_y",
    "rgb_to_y",
    "ssim_rgb",
    "ssim_y",
]

_Y_WEIGHTS = (65.481, 128.553, 24.966)


def _prepare(
    pred: torch.Tensor, target: torch.Tensor, crop_border: int, quantize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != target.shape:
        raise ValueError(
            f"SR prediction and target must have the same shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    if pred.dim() != 4 or pred.shape[1] != 3:
        raise ValueError(f"SR metrics expect RGB images (B, 3, H, W), got {tuple(pred.shape)}")
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    height, width = pred.shape[-2:]
    if min(height, width) <= 2 * crop_border:
        raise ValueError(
            f"images of size {(height, width)} are too small for crop_border={crop_border}"
        )
    out = []
    for x in (pred, target):
        x = x.detach().double().clamp(0.0, 1.0)
        if quantize:
            x = (x * 255.0).round() / 255.0
        if crop_border:
            x = x[..., crop_border:-crop_border, crop_border:-crop_border]
        out.append(x)
    return out[0], out[1]


def rgb_to_y(rgb: torch.Tensor) -> torch.Tensor:
    """BT.601 luma ``(B, 1, H, W)`` in ``[16, 235]`` of RGB ``(B, 3, H, W)`` in ``[0, 1]``."""
    weights = torch.tensor(_Y_WEIGHTS, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return 16.0 + (rgb * weights).sum(1, keepdim=True)


def _psnr_255(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    mse = (pred - target).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(255.0**2 / mse)


def _gaussian_window(device: torch.device, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


def _ssim_255(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of ``(B, C, H, W)`` maps with values in ``[0, 255]``, mean over C."""
    batch, channels = pred.shape[:2]
    if min(pred.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11 x 11 pixels, got {pred.shape[-2:]}")
    window = _gaussian_window(pred.device)
    x = pred.reshape(batch * channels, 1, *pred.shape[-2:])
    y = target.reshape(batch * channels, 1, *target.shape[-2:])
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
    var_x = F.conv2d(x * x, window) - mu_x**2
    var_y = F.conv2d(y * y, window) - mu_y**2
    cov = F.conv2d(x * y, window) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return ssim_map.flatten(1).mean(1).view(batch, channels).mean(1)


def psnr_y(
    pred: torch.Tensor, target: torch.Tensor, crop_border: int = 4, quantize: bool = True
) -> torch.Tensor:
    """Per-image PSNR on the Y channel (BasicSR convention, see the module docstring).

    Args:
        pred: SR images ``(B, 3, H, W)``, RGB in ``[0, 1]``.
        target: HR images ``(B, 3, H, W)``, RGB in ``[0, 1]``.
        crop_border: Pixels removed on each side (the SR scale).
        quantize: Round to 8 bits first (as a saved PNG).

    Returns:
        ``(B,)`` float64 PSNR in dB; identical images give ``inf``.
    """
    p, t = _prepare(pred, target, crop_border, quantize)
    return _psnr_255(rgb_to_y(p), rgb_to_y(t))


def ssim_y(
    pred: torch.Tensor, target: torch.Tensor, crop_border: int = 4, quantize: bool = True
) -> torch.Tensor:
    """Per-image SSIM on the Y channel (BasicSR convention), ``(B,)`` float64."""
    p, t = _prepare(pred, target, crop_border, quantize)
    return _ssim_255(rgb_to_y(p), rgb_to_y(t))


def psnr_rgb(
    pred: torch.Tensor, target: torch.Tensor, crop_border: int = 4, quantize: bool = True
) -> torch.Tensor:
    """Per-image PSNR over the RGB channels (values x 255, peak 255), ``(B,)`` float64."""
    p, t = _prepare(pred, target, crop_border, quantize)
    return _psnr_255(p * 255.0, t * 255.0)


def ssim_rgb(
    pred: torch.Tensor, target: torch.Tensor, crop_border: int = 4, quantize: bool = True
) -> torch.Tensor:
    """Per-image SSIM, mean over the RGB channels (values x 255), ``(B,)`` float64."""
    p, t = _prepare(pred, target, crop_border, quantize)
    return _ssim_255(p * 255.0, t * 255.0)


class _SRMetric(PerImageMean):
    """Mean over images of a per-image SR score of ``(B, 3, H, W)`` batches."""

    def __init__(
        self, crop_border: int = 4, y_channel: bool = True, quantize: bool = True, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.crop_border = int(crop_border)
        self.y_channel = bool(y_channel)
        self.quantize = bool(quantize)


class SRPSNR(_SRMetric):
    """PSNR of SR images, Y channel (default) or RGB, mean over images; see :func:`psnr_y`."""

    def _score(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fn = psnr_y if self.y_channel else psnr_rgb
        return fn(pred, target, self.crop_border, self.quantize)


class SRSSIM(_SRMetric):
    """SSIM of SR images, Y channel (default) or RGB, mean over images; see :func:`ssim_y`."""

    def _score(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fn = ssim_y if self.y_channel else ssim_rgb
        return fn(pred, target, self.crop_border, self.quantize)
