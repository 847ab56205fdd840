"""Metrics for blur maps (PSNR/SSIM) and semantics (mIoU)."""

from .functional import (
    IGNORE_INDEX,
    blur_psnr,
    blur_ssim,
    confusion_matrix,
    mean_iou,
    miou_from_confusion,
    normalize_blur,
)
from .metrics import BlurPSNR, BlurSSIM, MeanIoU

__all__ = [
    "IGNORE_INDEX",
    "BlurPSNR",
    "BlurSSIM",
    "MeanIoU",
    "blur_psnr",
    "blur_ssim",
    "confusion_matrix",
    "mean_iou",
    "miou_from_confusion",
    "normalize_blur",
]
