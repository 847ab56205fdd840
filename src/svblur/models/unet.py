"""A U-Net baseline for joint blur and semantic estimation (segmentation-models-pytorch)."""

from __future__ import annotations

from collections.abc import Sequence

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TASKS = ("blur", "seg")


def check_lr_input(lr: torch.Tensor) -> None:
    """Raise a clear error unless ``lr`` is a ``(B, 3, h, w)`` tensor."""
    if not isinstance(lr, torch.Tensor):
        raise TypeError(f"expected the LR image as a torch.Tensor, got {type(lr).__name__}")
    if lr.ndim != 4:
        raise ValueError(
            f"expected the LR image as (B, 3, h, w), got {lr.ndim}-D {tuple(lr.shape)}"
        )
    if lr.shape[1] != 3:
        raise ValueError(
            f"expected a 3-channel RGB LR image (B, 3, h, w), got {lr.shape[1]} channels "
            f"{tuple(lr.shape)}"
        )


class UNetBlurSeg(nn.Module):
    """U-Net with a blur head and a semantic head, the pre-CMOS baseline.

    The LR image is normalized with ImageNet statistics, padded to a multiple of 32
    (reflect), passed through one U-Net that predicts ``1 + num_classes`` channels
    at LR resolution, cropped, and upsampled bilinearly by ``scale``.

    Args:
        num_classes: Number of semantic classes ``K``.
        encoder_name: Any segmentation-models-pytorch encoder, e.g. ``"resnet18"``.
        scale: Ratio between HR and LR size; outputs are at HR size.
        tasks: Which outputs to produce, a subset of ``("blur", "seg")``.
        decoder_channels: U-Net decoder widths.

    Example:
        >>> net = UNetBlurSeg(num_classes=8)
        >>> out = net(torch.rand(2, 3, 24, 32))
        >>> out["blur"].shape, out["seg"].shape
        (torch.Size([2, 1, 96, 128]), torch.Size([2, 8, 96, 128]))
    """

    def __init__(
        self,
        num_classes: int = 8,
        encoder_name: str = "resnet18",
        scale: int = 4,
        tasks: Sequence[str] = TASKS,
        decoder_channels: Sequence[int] = (128, 64, 32, 32, 16),
    ) -> None:
        super().__init__()
        unknown = set(tasks) - set(TASKS)
        if unknown or not tasks:
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {tuple(tasks)}")
        self.tasks = tuple(t for t in TASKS if t in tasks)
        self.num_classes = num_classes
        self.scale = scale
        out_channels = ("blur" in self.tasks) + ("seg" in self.tasks) * num_classes
        self.unet = smp.Unet(
            encoder_name=encoder_name,
            encoder_weights=None,
            decoder_channels=tuple(decoder_channels),
            classes=out_channels,
        )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predict blur and semantics.

        Args:
            lr: LR image in ``[0, 1]``, ``(B, 3, h, w)``.

        Returns:
            ``{"blur": (B, 1, s*h, s*w), "seg": (B, K, s*h, s*w)}`` for the enabled tasks.
        """
        check_lr_input(lr)
        h, w = lr.shape[-2:]
        x = (lr - self.mean) / self.std
        # A multiple of 32, and at least 64 so that the 1/32 bottleneck holds 2x2 pixels
        # (BatchNorm cannot train on a single value per channel with batch size 1).
        pad_h, pad_w = max(64, h + (-h) % 32) - h, max(64, w + (-w) % 32) - w
        if pad_h or pad_w:
            # Reflect needs the pad to be smaller than the size; replicate covers the rest.
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        y = self.unet(x)[..., :h, :w]
        y = F.interpolate(y, scale_factor=self.scale, mode="bilinear", align_corners=False)
        out: dict[str, torch.Tensor] = {}
        offset = 0
        if "blur" in self.tasks:
            out["blur"] = y[:, :1]
            offset = 1
        if "seg" in self.tasks:
            out["seg"] = y[:, offset : offset + self.num_classes]
        return out
