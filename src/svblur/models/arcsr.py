"""ArcSR: blind super-resolution with per-pixel kernels (deformable receptive field).

Liu and Hao, "Customized Treatment per Pixel for Blind Image Super-Resolution". No code
was released; this network follows the paper's Sec. 3.2 and Fig. 1a and names every
choice the paper leaves open in :class:`ArcSR`'s docstring. Its layers live in
:mod:`svblur.nn.arcsr`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from svblur.nn.arcsr import ChannelAttention, DMBlock, KGBlock

__all__ = ["ArcSR"]


def _dm_stage(channels: int, num_blocks: int, **block: Any) -> nn.Sequential:
    return nn.Sequential(*(DMBlock(channels, **block) for _ in range(num_blocks)))


class ArcSR(nn.Module):
    """ArcSR: a DMConv U-Net estimates a kernel per pixel, KGConvs super-resolve with it.

    **Kernel estimation** (LR resolution). A 3x3 conv lifts the image to
    ``unet_channels[0]``. Encoder level ``l`` is ``dm_blocks_per_level`` :class:`DMBlock`
    (each of ``dm_convs_per_block`` DMConvs) at ``unet_channels[l]``, followed except at
    the last level by a stride-2 3x3 conv to ``unet_channels[l + 1]``. Decoder level ``l``
    (every level but the last) takes the encoder output of level ``l`` plus the decoder
    output of level ``l + 1`` brought up by a 2x2 stride-2 transposed conv, and applies
    ``dm_blocks_per_level`` DMBlocks. A 3x3 conv to ``kernel_size**2`` channels and a
    softmax over them give each pixel a kernel that sums to 1 (as MANet's head).

    **Super-resolution** (LR resolution, then x ``scale``). A 3x3 conv to ``num_features``;
    ``num_kg_blocks`` times a :class:`KGBlock` of ``kg_convs_per_block`` KGConvs guided by
    the kernels, then :class:`ChannelAttention`; the head's features are added back; a 3x3
    conv to ``num_features * scale**2``, pixel shuffle, and a 3x3 conv to ``out_channels``.
    The output is not clamped.

    Choices where the paper is silent (all constructor arguments):

    - ``kernel_size = 5``: ``ks`` is both the estimated kernel's size and the KGConvs'
      kernel size. 5 is the smallest size beyond a plain 3x3 that can take a directional
      (motion) shape, and spans +-2 LR pixels (+-8 HR pixels at x4); the SR branch's cost
      grows as ``ks**2`` (24 KGConvs of 64 channels: 2.5 M weights at 5, 4.8 M at 7).
    - ``unet_channels = (32, 64, 128)``: three levels (inputs are padded internally to a
      multiple of 4 and cropped back), a moderate receptive field as MANet argues for blur.
    - ``num_features = 64`` SR channels, ReLU activations, 2x2 transposed-conv
      upsampling and stride-2 conv downsampling in the U-Net, a long skip around the
      KG blocks (as EDSR/RCAN), one pixel-shuffle stage.
    - DMConv: DCN v1 (``modulated=False``), ``offset_channels = C / 4``, 3x3 offset convs,
      1x1 fusion; see :class:`svblur.nn.DMConv`.
    - ``kernel_gain = kernel_size**2``: the KGConvs receive ``gain * kernels``. A kernel
      that sums to 1 has taps of about ``1 / ks**2``, which would shrink every KGConv's
      output by that factor; with the gain a uniform kernel makes a KGConv a plain
      convolution, so the standard initialization keeps its scale. The ``kernels``
      output is the normalized one. The concatenation ablation gets the same input.

    Ablations (the paper's Table 1, by configuration): ``dmconv=False`` replaces every
    DMConv with a plain 3x3 convolution; ``kgconv=False`` replaces every KGConv with a
    convolution of the features concatenated with the kernels
    (:class:`svblur.nn.KernelConcatConv`); both off is the baseline.

    Args:
        scale: Upscaling factor.
        in_channels: Channels of the LR image.
        out_channels: Channels of the SR image.
        num_features: Channels of the SR branch.
        kernel_size: Odd size ``ks`` of the estimated kernels and of the KGConvs.
        num_kg_blocks: KGBlocks (8 in the paper).
        kg_convs_per_block: KGConvs per KGBlock (3 in the paper).
        unet_channels: Channels per U-Net level, finest first (multiples of 4).
        dm_blocks_per_level: DMBlocks per U-Net level, encoder and decoder (2 in the paper).
        dm_convs_per_block: DMConvs per DMBlock (4 in the paper).
        offset_channels: Hidden channels of the DMConvs' offset branch (``None``: C / 4).
        modulated: DCN v2 (offsets and mask) instead of DCN v1.
        dmconv: DMConvs (``True``) or plain convolutions in the U-Net.
        kgconv: KGConvs (``True``) or concatenation + convolution in the SR branch.
        kernel_gain: Factor on the normalized kernels fed to the SR branch
            (``None``: ``kernel_size**2``).
        max_chunk_bytes: Bound on one KGConv chunk (``None``: by device), see
            :class:`svblur.nn.KGConv`.

    Shape:
        ``lr (B, in_channels, h, w)`` in ``[0, 1]``, any ``h, w >= 1`` ->
        ``{"sr": (B, out_channels, scale * h, scale * w), "kernels": (B, ks*ks, h, w)}``
        (row-major taps, each pixel's kernel sums to 1).

    Example:
        >>> import torch
        >>> from svblur.models.arcsr import ArcSR
        >>> net = ArcSR(num_features=8, num_kg_blocks=1, unet_channels=(8, 8),
        ...             dm_blocks_per_level=1, dm_convs_per_block=1, kernel_size=3)
        >>> out = net(torch.rand(1, 3, 16, 20))
        >>> out["sr"].shape, out["kernels"].shape
        (torch.Size([1, 3, 64, 80]), torch.Size([1, 9, 16, 20]))
    """

    def __init__(
        self,
        scale: int = 4,
        in_channels: int = 3,
        out_channels: int = 3,
        num_features: int = 64,
        kernel_size: int = 5,
        num_kg_blocks: int = 8,
        kg_convs_per_block: int = 3,
        unet_channels: Sequence[int] = (32, 64, 128),
        dm_blocks_per_level: int = 2,
        dm_convs_per_block: int = 4,
        offset_channels: int | None = None,
        modulated: bool = False,
        dmconv: bool = True,
        kgconv: bool = True,
        kernel_gain: float | None = None,
        max_chunk_bytes: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(scale, bool) or int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        channels = [int(c) for c in unet_channels]
        if not channels or (dmconv and any(c % 4 for c in channels)):
            raise ValueError(
                f"unet_channels needs at least one level, each a multiple of 4 for the "
                f"DMConvs' 1/4 : 3/4 split; got {tuple(unet_channels)}"
            )
        if min(num_kg_blocks, dm_blocks_per_level) < 1:
            raise ValueError(
                f"num_kg_blocks and dm_blocks_per_level must be >= 1, got "
                f"{num_kg_blocks} and {dm_blocks_per_level}"
            )
        self.scale = int(scale)
        self.in_channels = int(in_channels)
        self.kernel_size = int(kernel_size)
        self.kernel_gain = float(kernel_size**2 if kernel_gain is None else kernel_gain)
        self.multiple = 2 ** (len(channels) - 1)
        levels = len(channels)
        block = {
            "num_convs": dm_convs_per_block,
            "deformable": dmconv,
            "offset_channels": offset_channels,
            "modulated": modulated,
        }

        # Kernel estimation U-Net.
        self.unet_head = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.encoder = nn.ModuleList(_dm_stage(c, dm_blocks_per_level, **block) for c in channels)
        self.down = nn.ModuleList(
            nn.Conv2d(channels[i], channels[i + 1], 3, stride=2, padding=1)
            for i in range(levels - 1)
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(channels[i + 1], channels[i], 2, stride=2) for i in range(levels - 1)
        )
        self.decoder = nn.ModuleList(
            _dm_stage(channels[i], dm_blocks_per_level, **block) for i in range(levels - 1)
        )
        self.kernel_head = nn.Conv2d(channels[0], kernel_size**2, 3, padding=1)

        # Super-resolution branch.
        self.sr_head = nn.Conv2d(in_channels, num_features, 3, padding=1)
        self.kg_blocks = nn.ModuleList(
            KGBlock(num_features, kernel_size, kg_convs_per_block, kgconv, max_chunk_bytes)
            for _ in range(num_kg_blocks)
        )
        self.attention = nn.ModuleList(ChannelAttention(num_features) for _ in range(num_kg_blocks))
        self.upsample = nn.Sequential(
            nn.Conv2d(num_features, num_features * self.scale**2, 3, padding=1),
            nn.PixelShuffle(self.scale),
        )
        self.sr_tail = nn.Conv2d(num_features, out_channels, 3, padding=1)

    def estimate_kernels(self, lr: torch.Tensor) -> torch.Tensor:
        """The per-pixel kernels of ``lr`` ``(B, C, h, w)``: ``(B, ks*ks, h, w)``, sum 1."""
        h, w = lr.shape[-2:]
        pad_h, pad_w = (-h) % self.multiple, (-w) % self.multiple
        x = F.pad(lr, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else lr
        x = F.relu(self.unet_head(x))
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x)
            if i < len(self.down):
                skips.append(x)
                x = F.relu(self.down[i](x))
        for i in reversed(range(len(self.decoder))):
            x = self.decoder[i](skips[i] + F.relu(self.up[i](x)))
        return self.kernel_head(x)[..., :h, :w].softmax(dim=1)

    def forward(self, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        """Estimate the kernels of ``lr`` and super-resolve it with them.

        Args:
            lr: ``(B, in_channels, h, w)`` in ``[0, 1]``.

        Returns:
            ``{"sr": (B, out_channels, scale * h, scale * w), "kernels": (B, ks*ks, h, w)}``.
        """
        if lr.dim() != 4 or lr.shape[1] != self.in_channels:
            raise ValueError(
                f"ArcSR expects lr of shape (B, {self.in_channels}, h, w), got "
                f"{tuple(lr.shape)}; add a batch dimension with lr.unsqueeze(0)"
            )
        kernels = self.estimate_kernels(lr)
        guide = kernels * self.kernel_gain
        features = self.sr_head(lr)
        x = features
        for kg_block, attention in zip(self.kg_blocks, self.attention):
            x = attention(kg_block(x, guide))
        sr = self.sr_tail(self.upsample(features + x))
        return {"sr": sr, "kernels": kernels}
