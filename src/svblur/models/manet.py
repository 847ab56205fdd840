"""MANet: spatially variant blur estimation with mutual affine convolutions.

Liang et al., "Mutual Affine Network for Spatially Variant Kernel Estimation in Blind
Image Super-Resolution", ICCV 2021. Written from the paper's description:

- A mutual affine convolution (MAConv) splits its input channels into ``splits`` groups.
  Each group is modulated by an affine transform (a per-pixel scale and shift) predicted
  from the *other* groups by a small 1x1-conv network, then convolved; the group outputs
  are concatenated. The channels thus interact without the cost of a full convolution.
- The estimator is a small encoder-decoder of residual MAConv blocks with a moderate
  receptive field: blur is local, so looking far away only adds unrelated content.

The paper predicts a ``21 x 21`` kernel per pixel; on svblur's data the blur is an
isotropic Gaussian, so this network predicts its sigma per HR pixel instead, which lets
it share :class:`~svblur.systems.BlurSemanticsTask` (single task, ``blur``) and the blur
metrics with CMOS. Its forward returns ``{"blur": (B, 1, s*h, s*w)}``, the same key and
shape as CMOS's blur output, so it can be the frozen stage-1 estimator of blind SR in
place of CMOS (the paper's "MANet + RRDB-SFT" row); having no ``seg`` output, it pairs
with an SR network that takes no semantic prior (RRDB-SFT ``seg_encoding="none"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MABlock", "MAConv", "MANet"]


def _split_sizes(channels: int, splits: int) -> list[int]:
    """Near-equal split of ``channels`` into ``splits`` groups, larger groups first."""
    base, extra = divmod(channels, splits)
    return [base + (1 if i < extra else 0) for i in range(splits)]


class MAConv(nn.Module):
    """Mutual affine convolution.

    For every split ``i`` of the input: ``scale_i, shift_i = A_i(cat(other splits))``,
    ``y_i = conv_i(x_i * sigmoid(scale_i) + shift_i)``; the output is ``cat(y_i)``.
    ``A_i`` is 1x1 conv (reduce by ``reduction``) - ReLU - 1x1 conv (to ``2 * |x_i|``).

    Args:
        in_channels: Input channels (at least ``splits``).
        out_channels: Output channels (at least ``splits``).
        kernel_size: Size of each split's convolution (odd; padding keeps the size).
        stride: Stride of each split's convolution.
        splits: Number of channel groups.
        reduction: Channel reduction of the affine-transform networks.

    Shape:
        ``(B, in_channels, H, W) -> (B, out_channels, H', W')`` with ``H' = ceil(H / stride)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        splits: int = 2,
        reduction: int = 2,
    ) -> None:
        super().__init__()
        if splits < 2:
            raise ValueError(f"MAConv needs splits >= 2 (one split has no others), got {splits}")
        if min(in_channels, out_channels) < splits:
            raise ValueError(
                f"MAConv with {splits} splits needs at least {splits} input and output "
                f"channels, got {in_channels} -> {out_channels}"
            )
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.in_splits = _split_sizes(in_channels, splits)
        out_splits = _split_sizes(out_channels, splits)
        self.affine = nn.ModuleList()
        self.conv = nn.ModuleList()
        for c_in, c_out in zip(self.in_splits, out_splits):
            rest = in_channels - c_in
            hidden = max(1, rest // reduction)
            self.affine.append(
                nn.Sequential(
                    nn.Conv2d(rest, hidden, 1),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(hidden, 2 * c_in, 1),
                )
            )
            self.conv.append(nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the mutual affine convolution to ``x``."""
        parts = torch.split(x, self.in_splits, dim=1)
        out = []
        for i, (affine, conv) in enumerate(zip(self.affine, self.conv)):
            others = torch.cat([p for j, p in enumerate(parts) if j != i], dim=1)
            scale, shift = affine(others).chunk(2, dim=1)
            out.append(conv(parts[i] * torch.sigmoid(scale) + shift))
        return torch.cat(out, dim=1)


class MABlock(nn.Module):
    """Residual mutual affine block: ``x + MAConv(ReLU(MAConv(x)))``.

    Args:
        channels: Channels in and out.
        splits: Channel groups of each MAConv.
        reduction: Reduction of the MAConvs' affine networks.
    """

    def __init__(self, channels: int, splits: int = 2, reduction: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(
            MAConv(channels, channels, 3, 1, splits, reduction),
            nn.ReLU(inplace=True),
            MAConv(channels, channels, 3, 1, splits, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class MANet(nn.Module):
    """Mutual affine network: a per-pixel blur (Gaussian sigma) map from an LR image.

    Structure: 3x3 conv to ``channels[0]``; per level ``l`` ``num_blocks[l]`` MABlocks, then
    (except at the last level) a stride-2 MAConv to ``channels[l + 1]``; back up with 4x4
    stride-2 transposed convolutions, each added to the encoder feature of that level and
    followed by ``num_blocks[l]`` MABlocks; a 3x3 conv to one channel at LR size, resized
    x ``scale`` (bilinear, ``align_corners=False``) to HR size. With the defaults (three
    levels, ``num_blocks=(1, 1, 1)``) the receptive field is about 60 LR pixels: moderate,
    as the paper argues blur estimation should be.

    Args:
        in_channels: Input channels.
        channels: Channels per level (finest first); one downsampling between levels.
        num_blocks: MABlocks per level in the encoder and again in the decoder
            (the coarsest level has one set only).
        splits: Channel groups of every MAConv.
        reduction: Reduction of the MAConvs' affine networks.
        scale: Upscaling of the output relative to the input (the SR factor).
        output: ``"blur"``: one sigma per HR pixel (bilinear upscaling); ``"kernels"``:
            MANet's own head, a ``kernel_size**2``-channel conv at LR size, a softmax over
            the channels (each pixel's kernel sums to 1) and nearest upscaling by
            ``scale``, for spatially variant kernel fields (Gaussian, motion).
        kernel_size: Odd kernel side ``k`` of ``output="kernels"`` (MANet: 21).

    Shape:
        Input ``(B, in_channels, h, w)`` in ``[0, 1]``, any ``h, w >= 1`` (padded internally
        to a multiple of ``2 ** (len(channels) - 1)``, output cropped back). Output
        ``{"blur": (B, 1, scale * h, scale * w)}``, sigma in HR pixels, or ``{"kernels":
        (B, k*k, scale * h, scale * w)}`` (row-major kernels, as
        :func:`svblur.degradation.apply_kernel_field` takes them).
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: Sequence[int] = (64, 128, 128),
        num_blocks: Sequence[int] = (1, 1, 1),
        splits: int = 2,
        reduction: int = 2,
        scale: int = 4,
        output: str = "blur",
        kernel_size: int = 21,
    ) -> None:
        super().__init__()
        if output not in ("blur", "kernels"):
            raise ValueError(f"output must be 'blur' or 'kernels', got {output!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        self.output = output
        self.kernel_size = int(kernel_size)
        channels = [int(c) for c in channels]
        num_blocks = [int(n) for n in num_blocks]
        if not channels or len(num_blocks) != len(channels):
            raise ValueError(
                f"channels and num_blocks need one entry per level, got {channels} and {num_blocks}"
            )
        if scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        self.scale = int(scale)
        self.multiple = 2 ** (len(channels) - 1)
        levels = len(channels)

        def blocks(c: int, n: int) -> nn.Sequential:
            return nn.Sequential(*(MABlock(c, splits, reduction) for _ in range(n)))

        self.head = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.encoder = nn.ModuleList(blocks(channels[i], num_blocks[i]) for i in range(levels))
        self.down = nn.ModuleList(
            MAConv(channels[i], channels[i + 1], 3, 2, splits, reduction) for i in range(levels - 1)
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(channels[i + 1], channels[i], 4, 2, 1) for i in range(levels - 1)
        )
        self.decoder = nn.ModuleList(blocks(channels[i], num_blocks[i]) for i in range(levels - 1))
        out_channels = 1 if output == "blur" else self.kernel_size**2
        self.tail = nn.Conv2d(channels[0], out_channels, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    @torch.no_grad()
    def init_blur_bias(self, sigma: float) -> None:
        """Start the blur output at ``sigma`` everywhere (as
        :meth:`svblur.models.CMOS.init_blur_bias`): the last convolution's bias is set to
        it and its weights scaled down 10x. Kernel outputs are left as they are."""
        if self.output != "blur":
            return
        self.tail.weight.mul_(0.1)
        self.tail.bias.fill_(float(sigma))

    def forward(self, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        """Estimate the blur sigma map (or the kernel field) of ``lr``.

        Args:
            lr: ``(B, 3, h, w)`` RGB in ``[0, 1]``.

        Returns:
            ``{"blur": (B, 1, scale * h, scale * w)}`` or ``{"kernels": (B, k*k, scale * h,
            scale * w)}``.
        """
        if lr.dim() != 4:
            raise ValueError(
                f"MANet expects a batch of images (B, C, h, w), got shape {tuple(lr.shape)}; "
                "add a batch dimension with lr.unsqueeze(0)"
            )
        h, w = lr.shape[-2:]
        pad_h, pad_w = (-h) % self.multiple, (-w) % self.multiple
        x = F.pad(lr, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else lr
        x = self.relu(self.head(x))
        skips = []
        for i, encoder in enumerate(self.encoder):
            x = encoder(x)
            if i < len(self.down):
                skips.append(x)
                x = self.relu(self.down[i](x))
        for i in reversed(range(len(self.up))):
            x = self.decoder[i](self.relu(self.up[i](x)) + skips[i])
        out = self.tail(x)[..., :h, :w]
        if self.output == "kernels":
            kernels = out.softmax(dim=1)
            return {"kernels": F.interpolate(kernels, scale_factor=self.scale, mode="nearest")}
        blur = F.interpolate(out, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return {"blur": blur}
