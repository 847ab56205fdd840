"""RRDBNet: the ESRGAN generator (Wang et al., ECCV-W 2018), anchor network of PBaSR.

The same residual-in-residual dense blocks as RRDB-SFT (:class:`~svblur.models.rrdb_sft.RRDB`,
without the SFT layer), a long skip around the trunk, then nearest-neighbour upsampling:
one ``nearest x2 -> 3x3 conv -> LeakyReLU 0.2`` stage per factor of two (two stages for
x4, as ESRGAN), an HR conv with LeakyReLU and a last conv.

Parameter names follow BasicSR's ``RRDBNet`` (``conv_first``, ``body``, ``conv_body``,
``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``) except inside the blocks, where the
shared block names its dense blocks ``dense{1,2,3}`` where BasicSR writes ``rdb{1,2,3}``:
a released x4 file (e.g. Real-ESRGAN's ``params_ema``) loads after renaming
``.rdb<j>.`` to ``.dense<j>.``. BasicSR's x2 and x1 models pixel-unshuffle the input and
keep two stages; here x2 has one stage and x1 none, so those files do not fit.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .rrdb_sft import RRDB

__all__ = ["RRDBNet"]


class RRDBNet(nn.Module):
    """ESRGAN's generator: ``conv_first -> RRDB x num_blocks -> conv_body (+ skip) -> up``.

    Args:
        in_channels: Channels of the LR image.
        out_channels: Channels of the SR image.
        num_features: Trunk channels (64 in ESRGAN).
        num_blocks: RRDB blocks (23 in ESRGAN).
        growth_channels: Growth of the dense blocks (32 in ESRGAN).
        scale: Upscaling factor, a power of two (1, 2, 4, ...): ``log2(scale)`` upsampling
            stages.

    Shape:
        ``lr (B, in_channels, h, w) -> (B, out_channels, h*scale, w*scale)``.

    Example:
        >>> import torch
        >>> from svblur.models.rrdbnet import RRDBNet
        >>> net = RRDBNet(num_features=8, num_blocks=1, growth_channels=4, scale=2)
        >>> net(torch.rand(1, 3, 10, 12)).shape
        torch.Size([1, 3, 20, 24])
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        num_features: int = 64,
        num_blocks: int = 23,
        growth_channels: int = 32,
        scale: int = 4,
    ) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        if int(scale) != scale or scale < 1 or (int(scale) & (int(scale) - 1)):
            raise ValueError(f"scale must be a power of two (1, 2, 4, ...), got {scale}")
        self.in_channels = in_channels
        self.scale = int(scale)
        self.conv_first = nn.Conv2d(in_channels, num_features, 3, padding=1)
        self.body = nn.Sequential(*(RRDB(num_features, growth_channels) for _ in range(num_blocks)))
        self.conv_body = nn.Conv2d(num_features, num_features, 3, padding=1)
        self.num_upsamplings = int(math.log2(self.scale))
        for i in range(self.num_upsamplings):
            self.add_module(f"conv_up{i + 1}", nn.Conv2d(num_features, num_features, 3, padding=1))
        self.conv_hr = nn.Conv2d(num_features, num_features, 3, padding=1)
        self.conv_last = nn.Conv2d(num_features, out_channels, 3, padding=1)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """Super-resolve ``lr`` (see the class docstring for shapes). No output clamp."""
        if lr.dim() != 4 or lr.shape[1] != self.in_channels:
            raise ValueError(
                f"RRDBNet expects lr of shape (B, {self.in_channels}, h, w), got {tuple(lr.shape)}"
            )
        features = self.conv_first(lr)
        features = features + self.conv_body(self.body(features))
        for i in range(self.num_upsamplings):
            conv = getattr(self, f"conv_up{i + 1}")
            upsampled = F.interpolate(features, scale_factor=2.0, mode="nearest")
            features = F.leaky_relu(conv(upsampled), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(features), 0.2))
