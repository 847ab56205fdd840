"""CMOS: joint space-variant blur and semantic estimation (Chen et al., CVPR 2023).

An HRNet backbone (stride-1 stem) feeds per-task heads; GIA modules let the blur and
semantic features interact (stage 2, coarse to fine) and fuse each scale into the next
finer one, then again at every scale (stage 3) before HRNet output heads. Defaults
reproduce the released architecture (15,975,866 trainable parameters with 40 classes);
:func:`svblur.checkpoints.from_official_cmos` converts the authors' checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from svblur.nn import GIA, BasicBlock

from .backbones import HRNetBackbone

__all__ = ["CMOS", "HRNetHead", "parse_gia_variant"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_TASKS = ("blur", "seg")


def parse_gia_variant(variant: str) -> dict[str, bool]:
    """Turn ``"none"``, ``"F"``, ``"FC"``, ``"FCS"`` (any subset of F/C/S) into GIA flags.

    Returns:
        ``{"flow": ..., "channel": ..., "spatial": ...}`` for :class:`~svblur.nn.GIA`.
    """
    letters = "" if variant.lower() == "none" else variant.upper()
    if not set(letters) <= set("FCS") or len(set(letters)) != len(letters):
        raise ValueError(
            f"gia must be 'none' or a combination of F (flow), C (channel), S (spatial) such "
            f"as 'F', 'FC', 'FCS'; got {variant!r}"
        )
    return {"flow": "F" in letters, "channel": "C" in letters, "spatial": "S" in letters}


class HRNetHead(nn.Module):
    """HRNet output head: resize scales 1.. to scale 0, concatenate, 1x1 conv-BN-ReLU, 1x1 conv.

    Resizing is bilinear with ``align_corners=False``; the convolutions have biases.

    Args:
        channels: Channels of the input scales (finest first).
        out_channels: Output channels.

    Shape:
        ``[(B, c_s, H_s, W_s)] -> (B, out_channels, H_0, W_0)``.
    """

    def __init__(self, channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        total = sum(channels)
        self.fuse = nn.Conv2d(total, total, 1)
        self.bn = nn.BatchNorm2d(total)
        self.relu = nn.ReLU(inplace=True)
        self.classifier = nn.Conv2d(total, out_channels, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Predict from the multi-scale ``features``."""
        size = features[0].shape[-2:]
        resized = [features[0]] + [
            F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in features[1:]
        ]
        x = self.relu(self.bn(self.fuse(torch.cat(resized, 1))))
        return self.classifier(x)


class CMOS(nn.Module):
    """Cross-MOdal fuSion network: blur map and semantic logits from a low-resolution image.

    Structure (scales ``s = 0..3`` at 1, 1/2, 1/4, 1/8 of the LR size):

    - ``backbone``: :class:`~svblur.models.backbones.HRNetBackbone`.
    - Stage 2, coarse to fine: at ``s = 3`` each task head (``heads[s][task]``, two ResNet
      basic blocks) reads the backbone feature; at ``s = 3, 2, 1`` the two head outputs
      interact (``task_gia2[s - 1]``: GIA(blur, seg) -> (blur, seg)), and per task
      ``scale_gia[task][s - 1]`` merges that feature into the backbone feature of scale
      ``s - 1`` (GIA merge, flow-aligned upsampling), giving the heads' input at ``s - 1``.
      At ``s = 0`` ``aux_heads[task]`` (1x1 conv) gives the auxiliary predictions.
    - Stage 3: at every scale ``task_gia3[s]`` lets the stage-2 head outputs interact;
      ``output_heads[task]`` (:class:`HRNetHead`) predicts from the four scales.
    - All predictions are resized x``scale`` (bilinear, ``align_corners=False``).

    Ablations (``gia``, paper Tab. 5) apply to every GIA of the network:

    - ``"FCS"`` (default): full GIA.
    - ``"FC"``: flow alignment + channel stream; the fusion convs take the channel stream's
      ``C`` channels instead of ``2C``.
    - ``"F"``: flow alignment only. Task-to-task GIAs return ``(flow-aligned blur, seg)``;
      cross-scale GIAs return ``flow-aligned upsampled task feature + backbone feature``.
    - ``"none"``: no GIA. Task-to-task GIAs are the identity (no parameters); cross-scale
      fusion is ``bilinear upsampling of a 1x1 conv projection (no bias) of the task
      feature + backbone feature``.

    Single-task variants (``tasks=("blur",)`` or ``("seg",)``) have no task-to-task GIAs;
    the cross-scale GIAs of the remaining task stay (in the chosen variant).

    Args:
        num_classes: Semantic classes ``K``.
        tasks: Any non-empty subset of ``("blur", "seg")``.
        aux: Emit the auxiliary (scale-0 head) predictions.
        gia: GIA variant, see above.
        groups: Channel groups of the channel stream per scale.
        window_size: Spatial-stream window ``(height, width)``.
        backbone: timm HRNet variant.
        pretrained: Backbone weights: ``False``, ``"timm"`` or a local checkpoint path
            (see :class:`~svblur.models.backbones.HRNetBackbone`). Never downloads by default.
        scale: Upscaling of the outputs relative to the input (the SR factor).
        channels_last: Keep weights and activations in channels-last memory order (faster
            convolutions on CPU and with CUDA AMP; numerically the same network). The
            outputs are returned in the default (contiguous) order either way.
        bn_momentum: BatchNorm momentum of the backbone (the released HRNet's 0.01). A
            short run with 0.01 leaves running statistics that trail the weights by about
            100 steps; :class:`svblur.systems.BatchNormRecalibration` recomputes them
            before evaluation.

    Shape:
        Input ``(B, 3, h, w)`` RGB in ``[0, 1]`` (ImageNet normalization is applied inside),
        any ``h, w >= 16``. Output dict with, for each enabled task, ``blur (B, 1, sh, sw)``
        (blur sigma map) and/or ``seg (B, K, sh, sw)`` (logits), and with ``aux=True``
        ``aux_blur``/``aux_seg`` of the same shapes.
    """

    def __init__(
        self,
        num_classes: int = 40,
        tasks: Sequence[str] = ("blur", "seg"),
        aux: bool = True,
        gia: str = "FCS",
        groups: Sequence[int] = (3, 6, 8, 12),
        window_size: Sequence[int] = (15, 20),
        backbone: str = "hrnet_w18_small_v2",
        pretrained: bool | str | Path = False,
        scale: int = 4,
        channels_last: bool = True,
        bn_momentum: float = 0.01,
    ) -> None:
        super().__init__()
        tasks = tuple(tasks)
        if not tasks or not set(tasks) <= set(_TASKS) or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must be a non-empty subset of {_TASKS}, got {tasks}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.tasks = tuple(t for t in _TASKS if t in tasks)
        self.num_classes = num_classes
        self.aux = aux
        self.scale = scale
        self.gia_variant = gia
        flags = parse_gia_variant(gia)
        window = (int(window_size[0]), int(window_size[1]))

        self.backbone = HRNetBackbone(backbone, pretrained=pretrained, bn_momentum=bn_momentum)
        channels = self.backbone.channels
        num_scales = len(channels)
        if len(groups) != num_scales:
            raise ValueError(f"groups needs one value per scale ({num_scales}), got {groups}")
        self.channels = list(channels)
        out_channels = {"blur": 1, "seg": num_classes}
        two_tasks = len(self.tasks) == 2

        self.heads = nn.ModuleList(
            nn.ModuleDict({t: nn.Sequential(BasicBlock(c), BasicBlock(c)) for t in self.tasks})
            for c in channels
        )
        self.aux_heads = (
            nn.ModuleDict({t: nn.Conv2d(channels[0], out_channels[t], 1) for t in self.tasks})
            if aux
            else None
        )
        # Stage 2: task-to-task GIAs at scales 1..3, cross-scale GIAs fusing s + 1 into s.
        self.task_gia2 = (
            nn.ModuleList(
                GIA(channels[s], channels[s], groups[s], window, **flags)
                for s in range(1, num_scales)
            )
            if two_tasks
            else None
        )
        self.scale_gia = nn.ModuleDict(
            {
                t: nn.ModuleList(
                    GIA(channels[s + 1], channels[s], groups[s], window, **flags)
                    for s in range(num_scales - 1)
                )
                for t in self.tasks
            }
        )
        # Stage 3: task-to-task GIAs at every scale, then the output heads.
        self.task_gia3 = (
            nn.ModuleList(
                GIA(channels[s], channels[s], groups[s], window, **flags) for s in range(num_scales)
            )
            if two_tasks
            else None
        )
        self.output_heads = nn.ModuleDict(
            {t: HRNetHead(channels, out_channels[t]) for t in self.tasks}
        )
        self.register_buffer(
            "mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def init_blur_bias(self, sigma: float) -> None:
        """Start the blur outputs (final and auxiliary) at ``sigma`` everywhere: their last
        convolution's bias is set to it and its weights scaled down 10x, so that training
        starts from the constant predictor instead of from a map around 0."""
        if "blur" not in self.tasks:
            return
        layers = [self.output_heads["blur"].classifier]
        if self.aux_heads is not None:
            layers.append(self.aux_heads["blur"])
        for conv in layers:
            conv.weight.mul_(0.1)
            conv.bias.fill_(float(sigma))

    @staticmethod
    def _check_input(lr: torch.Tensor) -> None:
        if lr.dim() != 4:
            raise ValueError(
                f"CMOS expects a batch of images (B, 3, h, w), got a {lr.dim()}-D tensor of "
                f"shape {tuple(lr.shape)}; add a batch dimension with lr.unsqueeze(0)"
            )
        if lr.shape[1] != 3:
            raise ValueError(
                f"CMOS expects 3-channel RGB input (B, 3, h, w), got {lr.shape[1]} channels"
            )

    def _interact(self, gia: GIA | None, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if gia is None:
            return feats
        blur, seg = gia(feats["blur"], feats["seg"])
        return {"blur": blur, "seg": seg}

    def forward(self, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        """Estimate the blur map and/or semantic logits of ``lr``.

        Args:
            lr: ``(B, 3, h, w)`` RGB in ``[0, 1]``.

        Returns:
            Dict keyed by task (``blur``, ``seg``) and, with ``aux=True``, ``aux_<task>``;
            every map at ``scale`` times the input size.
        """
        self._check_input(lr)
        x = (lr - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        features = self.backbone(x)
        last = len(features) - 1

        # Stage 2, coarse to fine.
        head_out: list[dict[str, torch.Tensor]] = [{} for _ in features]
        inputs = {t: features[last] for t in self.tasks}
        for s in range(last, 0, -1):
            head_out[s] = {t: self.heads[s][t](inputs[t]) for t in self.tasks}
            mixed = self._interact(
                self.task_gia2[s - 1] if self.task_gia2 is not None else None, head_out[s]
            )
            inputs = {
                t: self.scale_gia[t][s - 1].merge(mixed[t], features[s - 1]) for t in self.tasks
            }
        head_out[0] = {t: self.heads[0][t](inputs[t]) for t in self.tasks}

        # Stage 3, every scale.
        per_scale = [
            self._interact(self.task_gia3[s] if self.task_gia3 is not None else None, head_out[s])
            for s in range(len(features))
        ]
        out: dict[str, torch.Tensor] = {}
        for t in self.tasks:
            pred = self.output_heads[t]([f[t] for f in per_scale])
            out[t] = self._upscale(pred)
        if self.aux_heads is not None:
            for t in self.tasks:
                out[f"aux_{t}"] = self._upscale(self.aux_heads[t](head_out[0][t]))
        return out

    def _upscale(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()  # small LR-size map: the large output comes out contiguous
        return F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
