"""Metrics for blur maps (PSNR/SSIM) and semantics (mIoU)."""

from .boundary import (
    BoundaryBlurError,
    boundary_blur_error,
    depth_boundary_mask,
    depth_discontinuities,
)
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
    "BoundaryBlurError",
    "MeanIoU",
    "blur_psnr",
    "blur_ssim",
    "boundary_blur_error",
    "confusion_matrix",
    "depth_boundary_mask",
    "depth_discontinuities",
    "mean_iou",
    "miou_from_confusion",
    "normalize_blur",
]

# Super-resolution metrics (Y channel, BasicSR convention)
from .sr import SRPSNR, SRSSIM, psnr_rgb, psnr_y, rgb_to_y, ssim_rgb, ssim_y  # noqa: E402

__all__ += ["SRPSNR", "SRSSIM", "psnr_rgb", "psnr_y", "rgb_to_y", "ssim_rgb", "ssim_y"]
