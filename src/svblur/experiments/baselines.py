"""Trivial baselines, measured by the metric code the networks are measured with.

A trained network proves something only beside what needs no learning:

- blur maps: the training split's mean sigma predicted everywhere (:func:`mean_blur`,
  :func:`constant_blur_scores`);
- kernel fields: the training split's mean kernel at every pixel (:func:`mean_kernel`,
  :func:`constant_kernel_scores`);
- super-resolution: bicubic upscaling of the LR image (:func:`bicubic_scores`), also by
  region of ``blur_mask`` when the test data has one (as PBaSR is scored).

Each function takes an iterable of batches (a DataLoader, or a list of dicts with the
keys of :data:`svblur.degradation.pipeline.SAMPLE_KEYS`) and returns the values the
systems log under the same names (``blur/psnr``, ``kernels/l1``, ``sr/psnr_y``...).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from svblur.degradation.resize import imresize
from svblur.metrics import SRPSNR, SRSSIM, BlurPSNR, BlurSSIM, KernelL1, RegionMetrics
from svblur.systems.sr import kernels_on_grid

__all__ = [
    "baseline_scores",
    "bicubic_scores",
    "constant_blur_scores",
    "constant_kernel_scores",
    "mean_blur",
    "mean_kernel",
]

Batches = Iterable[Mapping[str, torch.Tensor]]


def mean_blur(batches: Batches) -> float:
    """Mean sigma over every pixel of ``batch["blur"]`` of all batches (float64 sum)."""
    total, count = 0.0, 0
    for batch in batches:
        blur = batch["blur"].double()
        total += float(blur.sum())
        count += blur.numel()
    if count == 0:
        raise ValueError("mean_blur: the batches hold no 'blur' map")
    return total / count


def constant_blur_scores(
    batches: Batches, sigma: float, blur_norm: float = 5.0
) -> dict[str, float]:
    """``blur/psnr``, ``blur/ssim`` and ``blur/mae`` of predicting ``sigma`` everywhere."""
    psnr, ssim = BlurPSNR(blur_norm), BlurSSIM(blur_norm)
    abs_sum, count = 0.0, 0
    for batch in batches:
        target = batch["blur"].float()
        pred = torch.full_like(target, float(sigma))
        psnr.update(pred, target)
        ssim.update(pred, target)
        abs_sum += float((pred - target).abs().double().sum())
        count += target.numel()
    return {
        "blur/psnr": float(psnr.compute()),
        "blur/ssim": float(ssim.compute()),
        "blur/mae": abs_sum / max(1, count),
    }


def _lr_grid_kernels(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return kernels_on_grid(batch["kernels"], tuple(batch["lr"].shape[-2:])).double()


def mean_kernel(batches: Batches) -> torch.Tensor:
    """The mean ``(k*k,)`` kernel of the batches' fields on the LR grid (sums to 1)."""
    total, count = None, 0
    for batch in batches:
        kernels = _lr_grid_kernels(batch)
        summed = kernels.sum(dim=(0, 2, 3))
        total = summed if total is None else total + summed
        count += kernels.shape[0] * kernels.shape[2] * kernels.shape[3]
    if total is None:
        raise ValueError("mean_kernel: the batches hold no 'kernels' field")
    return (total / count).float()


def constant_kernel_scores(batches: Batches, kernel: torch.Tensor) -> dict[str, float]:
    """``kernels/l1`` of predicting ``kernel`` ``(k*k,)`` at every pixel (LR grid)."""
    metric = KernelL1()
    for batch in batches:
        target = _lr_grid_kernels(batch).float()
        if target.shape[1] != kernel.numel():
            raise ValueError(
                f"constant kernel has {kernel.numel()} taps, the data's fields {target.shape[1]}"
            )
        pred = kernel.to(target).view(1, -1, 1, 1).expand_as(target)
        metric.update(pred, target)
    return {"kernels/l1": float(metric.compute())}


def bicubic_scores(
    batches: Batches, scale: int, quantize: bool = True, rgb: bool = False
) -> dict[str, float]:
    """``sr/psnr_y`` and ``sr/ssim_y`` (and RGB with ``rgb``) of bicubic upscaling
    (:func:`svblur.degradation.resize.imresize`, MATLAB's) of ``batch["lr"]`` by ``scale``,
    measured like the SR systems (``scale`` pixels cropped). Batches with ``blur_mask``
    also give ``sr/<region>/<metric>`` (PSNR-Y, SSIM-Y, GMSD over the whole image and its
    blurred and sharp pixels), as :class:`svblur.metrics.RegionMetrics` scores PBaSR."""
    regions = RegionMetrics(crop_border=scale, metrics=("psnr_y", "ssim_y", "gmsd"))
    masked = False
    metrics = {
        "sr/psnr_y": SRPSNR(scale, y_channel=True, quantize=quantize),
        "sr/ssim_y": SRSSIM(scale, y_channel=True, quantize=quantize),
    }
    if rgb:
        metrics["sr/psnr_rgb"] = SRPSNR(scale, y_channel=False, quantize=quantize)
        metrics["sr/ssim_rgb"] = SRSSIM(scale, y_channel=False, quantize=quantize)
    for batch in batches:
        sr = imresize(batch["lr"].float(), scale).clamp(0.0, 1.0)
        for metric in metrics.values():
            metric.update(sr, batch["hr"].float())
        if "blur_mask" in batch:
            masked = True
            regions.update(sr, batch["hr"].float(), batch["blur_mask"].float())
    out = {name: float(metric.compute()) for name, metric in metrics.items()}
    if masked:
        out.update({f"sr/{key}": float(value) for key, value in regions.compute().items()})
    return out


def _loaders(loaders: Any) -> list[Any]:
    return list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]


def _group_mean(per_group: list[dict[str, float]]) -> dict[str, float]:
    """The mean over test groups, as the systems log ``test/<name>``: a key some group
    lacks or has as NaN (a region of a test set without masks) is the mean of the rest."""
    keys = dict.fromkeys(k for group in per_group for k in group)
    out = {}
    for key in keys:
        values = [g[key] for g in per_group if key in g and not math.isnan(g[key])]
        out[key] = sum(values) / len(values) if values else math.nan
    return out


def baseline_scores(
    datamodule: Any, scale: int, blur_norm: float = 5.0, quantize: bool = True
) -> dict[str, dict[str, float]]:
    """The trivial baselines of a data module, as ``{"constant": {...}, "bicubic": {...}}``
    with ``test/...`` keys (the mean over its test groups, as the systems log them).

    ``constant`` holds ``test/blur/*`` for data with a blur map (the training split's
    mean sigma, one augmented epoch) and ``test/kernels/l1`` for data with a kernel field
    (its mean kernel); ``bicubic`` holds ``test/sr/psnr_y`` and ``test/sr/ssim_y``.
    """
    datamodule.setup("fit")
    datamodule.setup("test")
    train = list(datamodule.train_dataloader())
    groups = [list(loader) for loader in _loaders(datamodule.test_dataloader())]
    constant: list[dict[str, float]] = [{} for _ in groups]
    if "blur" in train[0]:
        sigma = mean_blur(train)
        for scores, test in zip(constant, groups):
            scores.update(constant_blur_scores(test, sigma, blur_norm))
    if "kernels" in train[0]:
        kernel = mean_kernel(train)
        for scores, test in zip(constant, groups):
            scores.update(constant_kernel_scores(test, kernel))
    out = {"constant": _group_mean(constant)} if constant[0] else {}
    out["bicubic"] = _group_mean([bicubic_scores(test, scale, quantize) for test in groups])
    return {name: {f"test/{k}": v for k, v in scores.items()} for name, scores in out.items()}
