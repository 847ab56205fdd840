"""Backbones: timm's HRNet with a stride-1 stem, as CMOS uses it."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from svblur.checkpoints import read_state_dict

__all__ = ["HRNetBackbone"]

# Modules of timm's feature model that compute nothing we use (classification leftovers).
_UNUSED = ("global_pool", "head_drop", "classifier", "incre_modules", "downsamp_modules")


class HRNetBackbone(nn.Module):
    """timm HRNet (``features_only=True, feature_location=""``) with a stride-1 stem.

    Both stem convolutions have stride 1, so the four branches come out at 1, 1/2, 1/4 and
    1/8 of the input size (18/36/72/144 channels for ``hrnet_w18_small_v2``). The timm
    modules are registered directly on this module, so the state dict keys are timm's
    (``conv1.weight``, ``stage2.0.fuse_layers...``) and ImageNet checkpoints load as they are.

    Two details follow the released CMOS HRNet rather than timm: the fuse layers resize the
    coarser branches with bilinear interpolation (``align_corners=False``) to the exact size
    of the finer branch instead of nearest x2^k upsampling (which also makes odd input sizes
    work), and the BatchNorm momentum is 0.01.

    Args:
        name: timm HRNet variant.
        pretrained: ``False`` (random init, never downloads), ``"timm"`` (timm's ImageNet
            weights: downloads through timm if not cached) or a path to a local checkpoint
            (a timm/HRNet classification or feature state dict; ``backbone.`` and
            ``module.`` prefixes are stripped and classification-head keys ignored).
        bn_momentum: BatchNorm momentum of all backbone norms.

    Attributes:
        channels: Channels of the four outputs.
        reductions: Their strides relative to the input.

    Shape:
        ``(B, 3, H, W) -> [(B, c_s, ceil(H / 2^s), ceil(W / 2^s)) for s in 0..3]``.
    """

    def __init__(
        self,
        name: str = "hrnet_w18_small_v2",
        pretrained: bool | str | Path = False,
        bn_momentum: float = 0.01,
    ) -> None:
        super().__init__()
        use_timm_weights = pretrained == "timm"
        model = timm.create_model(
            name,
            pretrained=use_timm_weights,
            features_only=True,
            feature_location="",
            out_indices=(1, 2, 3, 4),
        )
        model.conv1.stride = (1, 1)
        model.conv2.stride = (1, 1)
        for child_name, child in model.named_children():
            if child_name not in _UNUSED:
                self.add_module(child_name, child)
        self.channels: list[int] = list(model.feature_info.channels())
        self.reductions: list[int] = [2**i for i in range(len(self.channels))]
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = bn_momentum
        if pretrained and not use_timm_weights:
            if not isinstance(pretrained, (str, Path)):
                raise ValueError(
                    f"pretrained must be False, 'timm' or a checkpoint path, got {pretrained!r}"
                )
            self.load_checkpoint(pretrained)

    def load_checkpoint(self, path: str | Path) -> None:
        """Load backbone weights from a local state dict file (:func:`read_state_dict`).

        Raises:
            CheckpointError: The file cannot be read as a state dict (the message names it).
            KeyError: Backbone keys are missing.
        """
        own = self.state_dict()
        picked = {}
        for key, value in read_state_dict(path).items():
            key = key.removeprefix("backbone.")
            if key in own:
                picked[key] = value
        missing = sorted(set(own) - set(picked))
        if missing:
            raise KeyError(
                f"{path}: {len(missing)} backbone keys missing, e.g. {missing[:3]}; "
                "expected a timm HRNet state dict"
            )
        self.load_state_dict(picked)

    @staticmethod
    def _run_stage(stage: nn.Sequential, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        for module in stage:
            xs = [branch(x) for branch, x in zip(module.branches, xs)]
            if len(xs) == 1:
                continue
            fused = []
            for i, row in enumerate(module.fuse_layers):
                y = xs[0] if i == 0 else row[0](xs[0])
                for j in range(1, len(xs)):
                    if j == i:
                        y = y + xs[j]
                    elif j > i:  # conv1x1-BN, then bilinear resize to branch i's size
                        up = row[j][1](row[j][0](xs[j]))
                        y = y + F.interpolate(
                            up, size=xs[i].shape[-2:], mode="bilinear", align_corners=False
                        )
                    else:
                        y = y + row[j](xs[j])
                fused.append(module.fuse_act(y))
            xs = fused
        return xs

    @staticmethod
    def _transition(transition: nn.ModuleList, ys: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i, t in enumerate(transition):
            if i < len(ys):
                out.append(ys[i] if isinstance(t, nn.Identity) else t(ys[i]))
            else:
                out.append(t(ys[-1]))
        return out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Compute the four branch outputs of ``x`` ``(B, 3, H, W)``, finest first."""
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.layer1(x)
        ys = self._run_stage(self.stage2, [t(x) for t in self.transition1])
        ys = self._run_stage(self.stage3, self._transition(self.transition2, ys))
        return self._run_stage(self.stage4, self._transition(self.transition3, ys))
