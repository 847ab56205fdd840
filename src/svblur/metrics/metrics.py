"""torchmetrics classes for blur maps and semantics (DDP-safe: states reduce by sum)."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from .functional import (
    IGNORE_INDEX,
    blur_psnr,
    blur_ssim,
    confusion_matrix,
    kernel_l1,
    miou_from_confusion,
)


class PerImageMean(Metric):
    """Mean over images of a per-image score (``_score``), capped at 100 per image."""

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state(
            "total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _score(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def scores(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The per-image scores ``(B,)`` that :meth:`update` averages (not capped)."""
        return self._score(pred.float(), target.float())

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        scores = self.scores(pred, target)
        # A perfect prediction has infinite PSNR; cap it so that one image cannot
        # turn the mean into inf (100 dB = an error below 1e-5 of the range).
        scores = scores.clamp(max=100.0)
        self.total += scores.sum().to(self.total)
        self.count += scores.numel()

    def compute(self) -> torch.Tensor:
        """Mean over the images seen (float32)."""
        return (self.total / self.count.clamp(min=1)).float()


class _BlurMetric(PerImageMean):
    """A per-image blur-map score; sigma is divided by ``blur_norm``."""

    def __init__(self, blur_norm: float = 5.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.blur_norm = float(blur_norm)


class BlurPSNR(_BlurMetric):
    """Blur-map PSNR (sigma / ``blur_norm``, data range 1), mean over images."""

    def _score(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return blur_psnr(pred, target, self.blur_norm)


class BlurSSIM(_BlurMetric):
    """Blur-map SSIM (sigma / ``blur_norm``, data range 1), mean over images."""

    def _score(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return blur_ssim(pred, target, self.blur_norm)


class MeanIoU(Metric):
    """Mean intersection over union from a confusion matrix accumulated over the split."""

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state(
            "confmat",
            default=torch.zeros(num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.confmat += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def compute(self) -> torch.Tensor:
        return miou_from_confusion(self.confmat).float()


class KernelL1(PerImageMean):
    """Kernel-field error (:func:`~svblur.metrics.functional.kernel_l1`), mean over images;
    lower is better."""

    higher_is_better = False

    def _score(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return kernel_l1(pred, target)
