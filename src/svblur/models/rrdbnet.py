"""RRDBNet: the ESRGAN generator (Wang et al., ECCV-W 2018), anchor network of PBaSR.

The same residual-in-residual dense blocks as RRDB-SFT (:class:`~svblur.models.rrdb_sft.RRDB`,
without the SFT layer), a long skip around the trunk, then nearest-neighbour upsampling:
one ``nearest x2 -> 3x3 conv -> LeakyReLU 0.2`` stage per factor of two (two stages for
x4, as ESRGAN), an HR conv with LeakyReLU and a last conv.

Parameter names follow BasicSR's ``RRDBNet`` (``conv_first``, ``body``, ``conv_body``,
``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``) except inside the blocks, where the
shared block names its dense blocks ``dense{1,2,3}`` where BasicSR writes ``rdb{1,2,3}``.
``svblur-convert`` (:mod:`svblur.checkpoints.esrgan`) converts BasicSR / Real-ESRGAN and
ESRGAN files to these names and back.

Two ways to build x2 and x1: by default x2 has one upsampling stage and x1 none;
``pixel_unshuffle=True`` is BasicSR's variant (Real-ESRGAN's x2plus): the LR image is
pixel-unshuffled by ``4 / scale`` (``conv_first`` then takes ``in_channels * 4`` or ``* 16``
channels) and the two stages of x4 bring it back to ``scale`` times its size.
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
        pixel_unshuffle: BasicSR's x2 / x1 variant (``scale`` 1, 2 or 4): the input is
            pixel-unshuffled by ``4 / scale`` and two upsampling stages follow, whatever the
            scale. An input whose sides are not multiples of ``4 / scale`` is padded by
            replication and the output cropped back. At ``scale=4`` it changes nothing.

    Shape:
        ``lr (B, in_channels, h, w) -> (B, out_channels, h*scale, w*scale)``.

    Example:
        >>> import torch
        >>> from svblur.models.rrdbnet import RRDBNet
        >>> net = RRDBNet(num_features=8, num_blocks=1, growth_channels=4, scale=2)
        >>> net(torch.rand(1, 3, 10, 12)).shape
        torch.Size([1, 3, 20, 24])
        >>> x2plus = RRDBNet(num_features=8, num_blocks=1, growth_channels=4, scale=2,
        ...                  pixel_unshuffle=True)
        >>> x2plus.conv_first.in_channels, x2plus(torch.rand(1, 3, 9, 12)).shape
        (12, torch.Size([1, 3, 18, 24]))
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        num_features: int = 64,
        num_blocks: int = 23,
        growth_channels: int = 32,
        scale: int = 4,
        pixel_unshuffle: bool = False,
    ) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        if int(scale) != scale or scale < 1 or (int(scale) & (int(scale) - 1)):
            raise ValueError(f"scale must be a power of two (1, 2, 4, ...), got {scale}")
        if pixel_unshuffle and scale > 4:
            raise ValueError(
                f"pixel_unshuffle is BasicSR's x1 / x2 variant (scale <= 4), got {scale}"
            )
        self.in_channels = in_channels
        self.scale = int(scale)
        self.pixel_unshuffle = bool(pixel_unshuffle)
        #: The factor the input is pixel-unshuffled by (1: not unshuffled).
        self.unshuffle_factor = 4 // self.scale if pixel_unshuffle else 1
        first_channels = in_channels * self.unshuffle_factor**2
        self.conv_first = nn.Conv2d(first_channels, num_features, 3, padding=1)
        self.body = nn.Sequential(*(RRDB(num_features, growth_channels) for _ in range(num_blocks)))
        self.conv_body = nn.Conv2d(num_features, num_features, 3, padding=1)
        self.num_upsamplings = int(math.log2(self.scale * self.unshuffle_factor))
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
        h, w = lr.shape[-2:]
        factor = self.unshuffle_factor
        if factor > 1:
            padded = F.pad(lr, (0, -w % factor, 0, -h % factor), mode="replicate")
            lr = F.pixel_unshuffle(padded, factor)
        features = self.conv_first(lr)
        features = features + self.conv_body(self.body(features))
        for i in range(self.num_upsamplings):
            conv = getattr(self, f"conv_up{i + 1}")
            upsampled = F.interpolate(features, scale_factor=2.0, mode="nearest")
            features = F.leaky_relu(conv(upsampled), 0.2)
        out = self.conv_last(F.leaky_relu(self.conv_hr(features), 0.2))
        return out[..., : h * self.scale, : w * self.scale] if factor > 1 else out
