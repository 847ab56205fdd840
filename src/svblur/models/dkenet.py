"""DKENet: depth-informed, spatially variant kernel estimation (SSR, Sec. 3.2).

Written from the paper's description. Two branches: the LR branch is a 3x3 conv, a
depth-aware block (DABlock), a downsampling, a DABlock, an upsampling, a DABlock, a conv to
``k*k`` channels, a softmax over them and an upscaling to HR; the depth branch extracts
features the same way (conv, down, up) and enters every DABlock through an SFT layer. A
DABlock is that SFT layer followed by MAConv - ReLU - MAConv, whose mutual affine channel
split is the paper's "channel split". The kernel head is MANet's (``JingyunLiang/MANet``,
``MANet_arch.py``): a conv to ``k*k`` channels, a softmax over them, nearest upscaling by
the scale.

Choices where the paper is silent (all constructor arguments): channel counts, the
down/up-sampling (MANet's 2x2 stride-2 conv and 2x2 stride-2 transposed conv), the skip
connections (as MANet: the upsampled features are added to the first DABlock's, and the
head features to the last DABlock's), the residual inside a DABlock (around the MAConvs,
as MANet's MABlock), and the depth input: resized to the LR grid and, with ``normalize``
(the constructor's default), normalized per image to ``[0, 1]`` (relative depth), so that
metric depth, MiDaS-like output and estimates at any size are interchangeable. The SSR
configs turn it off and feed the depth in a form that keeps its scale and carries the
focus (:class:`~svblur.models.GroundTruthDepth`'s ``form="defocus"``): a per-image
normalization hides the quantities the kernels depend on (see
``docs/ssr_stage1_identifiability.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .depth import normalize_depth, resize_depth
from .manet import MABlock
from .rrdb_sft import SFT

__all__ = ["DABlock", "DKENet"]


class DABlock(nn.Module):
    """Depth-aware block: ``y = SFT(x, depth_features)``, then ``y + MAConv(ReLU(MAConv(y)))``.

    The MAConvs split the channels into ``splits`` groups that modulate each other
    (:class:`~svblur.models.MAConv`); the residual MAConv pair is a
    :class:`~svblur.models.MABlock`.

    Args:
        channels: Feature channels in and out.
        depth_channels: Channels of the depth features.
        sft_channels: Hidden channels of the SFT layer's branches.
        splits: Channel groups of the MAConvs.
        reduction: Reduction of the MAConvs' affine networks.

    Shape:
        ``x (B, channels, h, w), depth_features (B, depth_channels, h, w) -> (B, channels, h, w)``.
    """

    def __init__(
        self,
        channels: int,
        depth_channels: int,
        sft_channels: int = 32,
        splits: int = 2,
        reduction: int = 2,
    ) -> None:
        super().__init__()
        self.sft = SFT(channels, depth_channels, sft_channels)
        self.body = MABlock(channels, splits, reduction)

    def forward(self, x: torch.Tensor, depth_features: torch.Tensor) -> torch.Tensor:
        """Modulate ``x`` by the depth features, then refine it."""
        return self.body(self.sft(x, depth_features))


class DKENet(nn.Module):
    """Depth-informed kernel estimation network: one ``k x k`` kernel per HR pixel.

    LR branch (``c0, c1 = channels``)::

        f0 = conv3x3(lr)                        c0, h x w
        f1 = DABlock(f0, d0)                    c0
        f2 = DABlock(down(f1), d1)              c1, h/2 x w/2  (down: 2x2 conv, stride 2)
        f3 = DABlock(up(f2) + f1, d2) + f0      c0             (up: 2x2 transposed, stride 2)
        kernels = nearest_x_scale(softmax_k*k(conv3x3(f3)))

    Depth branch (``depth_channels`` wide, LeakyReLU 0.2 after each conv but the last of
    each level): ``d0 = conv3x3(conv3x3(depth))``, ``d1 = conv3x3(down(d0))``,
    ``d2 = up(d1) + d0``.

    Args:
        kernel_size: Odd kernel side ``k`` (SSR: 21).
        scale: Upscaling of the kernel field relative to the LR image.
        in_channels: Channels of the LR image.
        channels: LR-branch channels at the LR and at the half resolution.
        depth_channels: Depth-branch channels (the SFT priors).
        sft_channels: Hidden channels of the SFT layers.
        splits: Channel groups of every MAConv.
        reduction: Reduction of the MAConvs' affine networks.
        normalize: Normalize the depth per image to ``[0, 1]`` (relative depth) after
            resizing it to the LR grid; turn off only for depth that already is.

    Shape:
        ``lr (B, in_channels, h, w)`` in ``[0, 1]``, any ``h, w >= 1``; ``depth (B, 1, h', w')``
        at the LR size, the HR size or any other (resized to ``h x w``, by area averaging
        when shrinking) -> kernels ``(B, k*k, scale * h, scale * w)``, row-major, each pixel's
        kernel non-negative and summing to 1 (as :func:`svblur.degradation.apply_kernel_field`
        and the ``kernels`` of ``degradation=gaussian_sv`` batches).

    Example:
        >>> import torch
        >>> net = DKENet(kernel_size=5, scale=2, channels=(8, 16), depth_channels=4)
        >>> kernels = net(torch.rand(1, 3, 6, 7), torch.rand(1, 1, 12, 14))
        >>> kernels.shape, bool(torch.allclose(kernels.sum(1), torch.ones(1, 12, 14)))
        (torch.Size([1, 25, 12, 14]), True)
    """

    def __init__(
        self,
        kernel_size: int = 21,
        scale: int = 4,
        in_channels: int = 3,
        channels: Sequence[int] = (64, 128),
        depth_channels: int = 32,
        sft_channels: int = 32,
        splits: int = 2,
        reduction: int = 2,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        if scale < 1 or int(scale) != scale:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        if len(channels) != 2:
            raise ValueError(f"channels needs two entries (LR and half resolution), got {channels}")
        c0, c1 = (int(c) for c in channels)
        self.kernel_size = int(kernel_size)
        self.scale = int(scale)
        self.in_channels = in_channels
        self.normalize = normalize

        def block(c: int) -> DABlock:
            return DABlock(c, depth_channels, sft_channels, splits, reduction)

        self.head = nn.Conv2d(in_channels, c0, 3, padding=1)
        self.block1 = block(c0)
        self.down = nn.Conv2d(c0, c1, 2, stride=2)
        self.block2 = block(c1)
        self.up = nn.ConvTranspose2d(c1, c0, 2, stride=2)
        self.block3 = block(c0)
        self.tail = nn.Conv2d(c0, self.kernel_size**2, 3, padding=1)

        self.depth_head = nn.Sequential(
            nn.Conv2d(1, depth_channels, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(depth_channels, depth_channels, 3, padding=1),
        )
        self.depth_down = nn.Sequential(
            nn.Conv2d(depth_channels, depth_channels, 2, stride=2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(depth_channels, depth_channels, 3, padding=1),
        )
        self.depth_up = nn.ConvTranspose2d(depth_channels, depth_channels, 2, stride=2)

    def prepare_depth(self, depth: torch.Tensor, lr_size: tuple[int, int]) -> torch.Tensor:
        """The depth as the network sees it: resized to ``lr_size``, normalized per image
        (``normalize``) ``(B, 1, h, w)``."""
        if depth.dim() != 4 or depth.shape[1] != 1:
            raise ValueError(
                f"DKENet expects depth of shape (B, 1, H, W), got {tuple(depth.shape)}; add "
                "the channel dimension with depth.unsqueeze(1)"
            )
        depth = resize_depth(depth, lr_size)
        return normalize_depth(depth) if self.normalize else depth

    def forward(self, lr: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Estimate the HR kernel field of ``lr`` given its depth.

        Args:
            lr: ``(B, in_channels, h, w)`` in ``[0, 1]``.
            depth: ``(B, 1, h', w')`` depth of the scene, any size and units.

        Returns:
            ``(B, k*k, scale * h, scale * w)`` kernels, each summing to 1.
        """
        if lr.dim() != 4 or lr.shape[1] != self.in_channels:
            raise ValueError(
                f"DKENet expects lr of shape (B, {self.in_channels}, h, w), got {tuple(lr.shape)}"
            )
        if depth.shape[0] != lr.shape[0]:
            raise ValueError(
                f"depth has batch size {depth.shape[0]}, lr has {lr.shape[0]}; pass one "
                "depth map per image"
            )
        h, w = lr.shape[-2:]
        depth = self.prepare_depth(depth, (h, w)).to(lr.dtype)
        # pad to even sizes (replicate, as MANet) for the stride-2 level, crop before the head
        pad = (0, w % 2, 0, h % 2)
        x = F.pad(lr, pad, mode="replicate") if any(pad) else lr
        depth = F.pad(depth, pad, mode="replicate") if any(pad) else depth

        d0 = self.depth_head(depth)
        d1 = self.depth_down(d0)
        d2 = self.depth_up(d1) + d0

        f0 = self.head(x)
        f1 = self.block1(f0, d0)
        f2 = self.block2(self.down(f1), d1)
        f3 = self.block3(self.up(f2) + f1, d2) + f0
        kernels = self.tail(f3)[..., :h, :w].softmax(dim=1)
        if self.scale == 1:
            return kernels
        return F.interpolate(kernels, scale_factor=self.scale, mode="nearest")
