"""The conditioning parts of :class:`~svblur.models.LatentDiffusionSR`: the time-aware
half-UNet encoder of the LR latent (input blocks, middle block, feature-translate block)
and the SPADE-style injection whose zero-initialised last layer leaves the pretrained
UNet unchanged at initialisation (ControlNet's zero convolution, our choice)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D
from torch import nn

from .diffusion_sr import (
    _check_groups,
    down_blocks,
)

__all__ = ["SPADEInjection", "TimeAwareEncoder"]


class TimeAwareEncoder(nn.Module):
    """StableSR-style time-aware half UNet: features at every UNet level.

    Input blocks (``conv_in``, then one diffusers ``DownBlock2D`` or ``AttnDownBlock2D``
    per level, down-sampling between levels), a middle block (``UNetMidBlock2D``) at the
    last level and one feature-translate block per level (a ``ResnetBlock2D``, as
    StableSR's); every residual block sees the timestep embedding.

    Args:
        in_channels: Input channels (the VAE's latent channels).
        channels: Width per level (its length is the number of levels).
        layers_per_block: Residual blocks per level (StableSR: 2).
        norm_num_groups: GroupNorm groups (must divide every width).
        attention: Self-attention in the input blocks.
        mid_attention: Self-attention in the middle block (StableSR has it).
        attention_head_dim: Channels per attention head (at most the block's width).

    Shape:
        ``x (B, in_channels, H, W)``, ``timesteps (B,)`` -> list of
        ``(B, channels[l], H / 2**l, W / 2**l)``.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        attention: bool = False,
        mid_attention: bool = True,
        attention_head_dim: int = 64,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        _check_groups(channels, norm_num_groups, "TimeAwareEncoder")
        self.channels = channels
        time_dim = 4 * channels[0]
        self.time_proj = Timesteps(channels[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(channels[0], time_dim)
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.blocks = down_blocks(
            channels,
            layers_per_block,
            norm_num_groups,
            temb_channels=time_dim,
            attention_head_dim=attention_head_dim if attention else None,
        )
        self.middle = UNetMidBlock2D(
            channels[-1],
            temb_channels=time_dim,
            resnet_eps=1e-5,
            resnet_groups=norm_num_groups,
            add_attention=mid_attention,
            attention_head_dim=min(attention_head_dim, channels[-1]),
        )
        self.translate = nn.ModuleList(
            ResnetBlock2D(
                in_channels=c, out_channels=c, temb_channels=time_dim, groups=norm_num_groups
            )
            for c in channels
        )

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> list[torch.Tensor]:
        temb = self.time_embedding(self.time_proj(timesteps).to(x.dtype))
        hidden = self.conv_in(x)
        features = []
        for block in self.blocks:
            hidden, states = block(hidden, temb)
            features.append(states[len(block.resnets) - 1])  # before down-sampling
        features[-1] = self.middle(features[-1], temb)
        return [block(f, temb) for block, f in zip(self.translate, features)]


class SPADEInjection(nn.Module):
    """SPADE-style modulation of a residual branch by a condition map, identity at start.

    ``h -> h * (1 + gamma(c)) + beta(c)``, with ``gamma`` and ``beta`` two 3x3 convs on a
    shared 3x3 conv + ReLU of the condition ``c`` (resized bilinearly to ``h``'s size when
    they differ). ``gamma`` and ``beta`` start at zero (ControlNet's zero convolution, our
    choice), so that the module starts as the identity.

    Args:
        channels: Channels of ``h``.
        cond_channels: Channels of ``c``.
        hidden: Width of the shared layer (StableSR's SPADE: 128).
    """

    def __init__(self, channels: int, cond_channels: int, hidden: int = 128) -> None:
        super().__init__()
        self.shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)
        for conv in (self.gamma, self.beta):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond.shape[-2:] != h.shape[-2:]:
            cond = F.interpolate(cond, size=h.shape[-2:], mode="bilinear", align_corners=False)
        shared = self.shared(cond.to(h.dtype))
        return h * (1 + self.gamma(shared)) + self.beta(shared)


# ---------------------------------------------------------------------- the pretrained folder
