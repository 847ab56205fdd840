"""Metrics: blur maps (PSNR/SSIM, boundary error), semantics (mIoU) and super-resolution
(PSNR/SSIM on the Y channel, BasicSR convention)."""

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
    kernel_l1,
    mean_iou,
    miou_from_confusion,
    normalize_blur,
)
from .iqa import PAPER_IQA_METRICS, IQAMean, local_iqa_metrics
from .metrics import BlurPSNR, BlurSSIM, KernelL1, MeanIoU
from .regions import (
    HIGHER_IS_BETTER,
    REGIONS,
    RegionMetrics,
    SRPerceptual,
    local_perceptual_metrics,
    region_scores,
)
from .sr import SRPSNR, SRSSIM, psnr_rgb, psnr_y, rgb_to_y, ssim_rgb, ssim_y

__all__ = [
    "HIGHER_IS_BETTER",
    "IGNORE_INDEX",
    "IQAMean",
    "PAPER_IQA_METRICS",
    "REGIONS",
    "SRPSNR",
    "SRSSIM",
    "SRPerceptual",
    "BlurPSNR",
    "BlurSSIM",
    "BoundaryBlurError",
    "KernelL1",
    "MeanIoU",
    "RegionMetrics",
    "blur_psnr",
    "blur_ssim",
    "boundary_blur_error",
    "confusion_matrix",
    "depth_boundary_mask",
    "depth_discontinuities",
    "kernel_l1",
    "local_iqa_metrics",
    "local_perceptual_metrics",
    "mean_iou",
    "miou_from_confusion",
    "normalize_blur",
    "psnr_rgb",
    "psnr_y",
    "region_scores",
    "rgb_to_y",
    "ssim_rgb",
    "ssim_y",
]
