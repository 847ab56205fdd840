"""Functional metrics for blur maps and semantics.

Conventions (stated so that numbers can be compared with the CMOS paper):

* Blur maps are per-pixel Gaussian sigmas in HR pixels, shaped ``(B, 1, H, W)``.
  Before PSNR/SSIM they are divided by ``blur_norm`` so that they lie in about
  ``[0, 1]``; the authors used ``blur_norm = (kernel_size - 1) / 4 = 5`` for
  NYUv2-BSR (kernel size 21). PSNR and SSIM then use ``data_range = 1`` and the
  normalized maps are clipped to ``[0, 1]``. We call this the
  "sigma/5, range 1" convention.
* PSNR is computed per image and averaged over images (not over pixels of the
  whole batch), in float64.
* mIoU is the mean over classes of intersection over union accumulated over the
  whole split, pixels labelled ``ignore_index`` excluded; classes that never occur
  in either prediction or target are left out of the mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure

__all__ = [
    "IGNORE_INDEX",
    "blur_psnr",
    "blur_ssim",
    "confusion_matrix",
    "kernel_l1",
    "mean_iou",
    "miou_from_confusion",
    "normalize_blur",
]

#: The label of pixels without a class: mIoU and the cross-entropy skip it, and every data
#: set of svblur stores unlabelled pixels with it (the one definition; import it from here).
IGNORE_INDEX = 255


def _check_blur_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"blur prediction and target must have the same shape, got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
    if pred.ndim != 4 or pred.shape[1] != 1:
        raise ValueError(f"blur maps must be (B, 1, H, W), got {tuple(pred.shape)}")


def normalize_blur(sigma: torch.Tensor, blur_norm: float) -> torch.Tensor:
    """Map sigma in pixels to the ``[0, 1]`` range used by the blur metrics."""
    if blur_norm <= 0:
        raise ValueError(f"blur_norm must be positive, got {blur_norm}")
    return (sigma / blur_norm).clamp(0.0, 1.0)


def blur_psnr(pred: torch.Tensor, target: torch.Tensor, blur_norm: float = 5.0) -> torch.Tensor:
    """Per-image PSNR of blur maps.

    Args:
        pred: Predicted sigma map, ``(B, 1, H, W)``.
        target: Ground-truth sigma map, ``(B, 1, H, W)``.
        blur_norm: Divisor that maps sigma to ``[0, 1]``.

    Returns:
        PSNR in dB per image, ``(B,)`` float64. Identical maps give ``inf``.
    """
    _check_blur_pair(pred, target)
    p = normalize_blur(pred.detach().double(), blur_norm)
    t = normalize_blur(target.detach().double(), blur_norm)
    mse = (p - t).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(1.0 / mse)


def blur_ssim(pred: torch.Tensor, target: torch.Tensor, blur_norm: float = 5.0) -> torch.Tensor:
    """Per-image SSIM (Gaussian window 11, sigma 1.5) of normalized blur maps, ``(B,)``."""
    _check_blur_pair(pred, target)
    p = normalize_blur(pred.detach().double(), blur_norm)
    t = normalize_blur(target.detach().double(), blur_norm)
    # SSIM's 11x11 window needs at least 11 pixels per side.
    if min(p.shape[-2:]) < 11:
        pad_h, pad_w = max(0, 11 - p.shape[-2]), max(0, 11 - p.shape[-1])
        p = F.pad(p, (0, pad_w, 0, pad_h), mode="replicate")
        t = F.pad(t, (0, pad_w, 0, pad_h), mode="replicate")
    return structural_similarity_index_measure(p, t, data_range=1.0, reduction="none")


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Confusion matrix ``(K, K)`` (rows: target, columns: prediction), int64.

    Args:
        pred: Class indices ``(B, H, W)`` or logits ``(B, K, H, W)``.
        target: Class indices ``(B, H, W)``; ``ignore_index`` pixels are skipped.
    """
    if pred.ndim == target.ndim + 1:
        pred = pred.argmax(dim=1)
    if pred.shape != target.shape:
        raise ValueError(
            f"segmentation prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ"
        )
    valid = target != ignore_index
    t = target[valid].long()
    if t.numel() and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(
            f"segmentation target holds labels outside [0, {num_classes}) other than "
            f"{ignore_index}: found {t.min().item()}..{t.max().item()}"
        )
    p = pred[valid].long().clamp(0, num_classes - 1)
    return torch.bincount(t * num_classes + p, minlength=num_classes**2).view(
        num_classes, num_classes
    )


def miou_from_confusion(confmat: torch.Tensor) -> torch.Tensor:
    """Mean IoU over the classes present in target or prediction (float64 scalar)."""
    confmat = confmat.double()
    inter = confmat.diag()
    union = confmat.sum(0) + confmat.sum(1) - inter
    present = union > 0
    if not present.any():
        return torch.tensor(float("nan"), dtype=torch.float64)
    return (inter[present] / union[present]).mean()


def mean_iou(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """mIoU of one batch, see :func:`miou_from_confusion`."""
    return miou_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index))


def kernel_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image kernel-field error: the mean over pixels of ``sum_taps |pred - target|``.

    Args:
        pred: Estimated kernels ``(B, k*k, H, W)``, each pixel's summing to 1.
        target: Ground-truth kernels, same shape.

    Returns:
        ``(B,)`` float32, 0 for equal fields, 2 for kernels with disjoint supports.
    """
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(
            f"kernel_l1 expects two (B, k*k, H, W) fields of one shape, got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    return (pred.float() - target.float()).abs().sum(dim=1).flatten(1).mean(dim=1)
