"""RRDB-SFT: non-blind super-resolution conditioned on a blur map and a semantic map.

The SR network of MANet (Liang et al., ICCV 2021) as used by CMOS (Chen et al., CVPR 2023,
Sec. 5.1): an RRDB trunk whose blocks each start with an SFT layer that modulates the
features with a *prior* map. CMOS builds the prior from two modalities: the HR blur
(sigma) map and the semantic map each go through a 3x3 conv, a GIA in merge mode fuses
them, and nearest resizing brings the result to the LR size. Defaults reproduce the
released architecture (:func:`svblur.checkpoints.from_official_rrdb_sft` converts the
authors' weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from svblur.nn import GIA

__all__ = ["RRDB", "SFT", "RRDBSFT", "PriorEncoder", "RRDBSFTBlock", "ResidualDenseBlock"]

SegEncoding = Literal["index", "onehot", "probs", "none"]
FuseResolution = Literal["hr", "lr"]
_SEG_ENCODINGS = ("index", "onehot", "probs", "none")


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs (LeakyReLU 0.2 after the first four), scaled residual.

    Args:
        channels: Input and output channels.
        growth_channels: Channels added by each of the first four convs.
        residual_scale: Weight of the block's output before it is added to the input.

    Shape:
        ``(B, channels, H, W) -> (B, channels, H, W)``.
    """

    def __init__(
        self, channels: int = 64, growth_channels: int = 32, residual_scale: float = 0.2
    ) -> None:
        super().__init__()
        self.residual_scale = residual_scale
        for i in range(4):
            self.add_module(
                f"conv{i + 1}",
                nn.Conv2d(channels + i * growth_channels, growth_channels, 3, padding=1),
            )
        self.conv5 = nn.Conv2d(channels + 4 * growth_channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        features = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            features.append(self.act(conv(torch.cat(features, 1))))
        return self.conv5(torch.cat(features, 1)) * self.residual_scale + x


class SFT(nn.Module):
    """Spatial feature transform: ``features * sigmoid(scale(.)) + shift(.)``.

    ``scale`` and ``shift`` are each ``3x3 conv -> LeakyReLU 0.2 -> 3x3 conv`` on the
    concatenation of the features and the prior.

    Args:
        channels: Feature channels.
        prior_channels: Prior channels.
        hidden_channels: Channels between the two convs of each branch.

    Shape:
        ``features (B, channels, h, w), prior (B, prior_channels, h, w) -> (B, channels, h, w)``.
    """

    def __init__(self, channels: int = 64, prior_channels: int = 64, hidden_channels: int = 32):
        super().__init__()
        both = channels + prior_channels
        self.scale_conv1 = nn.Conv2d(both, hidden_channels, 3, padding=1)
        self.scale_conv2 = nn.Conv2d(hidden_channels, channels, 3, padding=1)
        self.shift_conv1 = nn.Conv2d(both, hidden_channels, 3, padding=1)
        self.shift_conv2 = nn.Conv2d(hidden_channels, channels, 3, padding=1)

    def forward(self, features: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """Modulate ``features`` with ``prior``."""
        both = torch.cat([features, prior], 1)
        scale = torch.sigmoid(self.scale_conv2(F.leaky_relu(self.scale_conv1(both), 0.2)))
        shift = self.shift_conv2(F.leaky_relu(self.shift_conv1(both), 0.2))
        return features * scale + shift


class RRDB(nn.Module):
    """ESRGAN's residual-in-residual dense block, optionally modulated by a prior (SFT).

    Three :class:`ResidualDenseBlock` in a row, their output scaled by ``residual_scale``
    (0.2) and added to the block's input. With ``prior_channels`` an :class:`SFT` layer
    modulates the input by a prior map before the dense blocks (MANet's RRDB-SFT block);
    without, it is the plain block of ESRGAN's RRDBNet. Parameter names: ``sft.*`` (only
    with a prior), ``dense{1,2,3}.conv{1..5}.*``.

    Args:
        channels: Input and output channels.
        growth_channels: Growth of the dense blocks.
        residual_scale: Residual scale of the dense blocks and of the whole block.
        prior_channels: Channels of the prior map; ``None``: no SFT layer.

    Shape:
        ``features (B, C, h, w)`` [, ``prior (B, P, h, w)``] ``-> (B, C, h, w)``.
    """

    def __init__(
        self,
        channels: int = 64,
        growth_channels: int = 32,
        residual_scale: float = 0.2,
        prior_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.residual_scale = residual_scale
        # built before the dense blocks, so that seeded initialization is unchanged
        self.sft = None if prior_channels is None else SFT(channels, prior_channels)
        self.dense1 = ResidualDenseBlock(channels, growth_channels, residual_scale)
        self.dense2 = ResidualDenseBlock(channels, growth_channels, residual_scale)
        self.dense3 = ResidualDenseBlock(channels, growth_channels, residual_scale)

    def forward(self, features: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the block (``prior`` is required with an SFT layer, ignored without)."""
        out = features
        if self.sft is not None:
            if prior is None:
                raise ValueError("this RRDB block has an SFT layer: pass the prior map")
            out = self.sft(out, prior)
        out = self.dense3(self.dense2(self.dense1(out)))
        return out * self.residual_scale + features


class RRDBSFTBlock(RRDB):
    """SFT, then three residual dense blocks, scaled residual (0.2) around the whole block.

    An :class:`RRDB` with an SFT layer (``prior_channels`` is required).

    Shape:
        ``features (B, C, h, w), prior (B, P, h, w) -> (B, C, h, w)``.
    """

    def __init__(
        self,
        channels: int = 64,
        prior_channels: int = 64,
        growth_channels: int = 32,
        residual_scale: float = 0.2,
    ) -> None:
        super().__init__(channels, growth_channels, residual_scale, prior_channels)


class PriorEncoder(nn.Module):
    """Blur map + semantic map -> one prior map at the LR size.

    ``blur_embed`` and ``seg_embed`` (3x3 convs with bias) lift the blur map and the encoded
    semantic map to ``prior_channels`` each; ``fuse`` (a :class:`~svblur.nn.GIA`, merge mode,
    first input blur) fuses them; nearest resizing gives the LR size.

    ``fuse_resolution="hr"`` fuses at HR resolution like the released code (the GIA is then
    about half of the network's FLOPs). ``"lr"`` first brings the maps to the LR size (blur
    and probabilities by area averaging, class maps by nearest sampling), so every prior
    layer runs on ``scale**2`` times fewer pixels.

    With ``seg_encoding="none"`` there is no semantic branch and no GIA: the prior is the
    embedded blur map (the "w/o semseg" ablation of the paper's Tab. 6).
    """

    def __init__(
        self,
        prior_channels: int = 64,
        seg_encoding: SegEncoding = "index",
        num_classes: int | None = None,
        fuse_resolution: FuseResolution = "hr",
        gia_groups: int | None = 8,
        window_size: Sequence[int] = (15, 20),
    ) -> None:
        super().__init__()
        if seg_encoding not in _SEG_ENCODINGS:
            raise ValueError(f"seg_encoding must be one of {_SEG_ENCODINGS}, got {seg_encoding!r}")
        if fuse_resolution not in ("hr", "lr"):
            raise ValueError(f"fuse_resolution must be 'hr' or 'lr', got {fuse_resolution!r}")
        if seg_encoding in ("onehot", "probs") and not num_classes:
            raise ValueError(f"seg_encoding={seg_encoding!r} needs num_classes")
        self.seg_encoding = seg_encoding
        self.num_classes = num_classes
        self.fuse_resolution = fuse_resolution
        self.blur_embed = nn.Conv2d(1, prior_channels, 3, padding=1)
        if seg_encoding == "none":
            self.seg_embed = None
            self.fuse = None
        else:
            seg_channels = 1 if seg_encoding == "index" else int(num_classes or 0)
            self.seg_embed = nn.Conv2d(seg_channels, prior_channels, 3, padding=1)
            window = (int(window_size[0]), int(window_size[1]))
            self.fuse = GIA(prior_channels, prior_channels, gia_groups, window)

    def encode_seg(self, seg: torch.Tensor) -> torch.Tensor:
        """Semantic input -> ``(B, channels, H, W)`` float map as the encoding prescribes.

        ``index``: the class index as one float channel (the released code; the ignore
        label 255 of ground-truth maps passes through unchanged). ``onehot``: one channel per
        class, all zeros for ignored pixels. ``probs``: the given probabilities. The map
        has the dtype of the encoder's weights (float32, or float64 after ``.double()``).
        """
        dtype = self.blur_embed.weight.dtype
        if self.seg_encoding == "probs":
            if seg.dim() != 4 or seg.shape[1] != self.num_classes:
                raise ValueError(
                    f"seg_encoding='probs' expects (B, {self.num_classes}, H, W) class "
                    f"probabilities, got {tuple(seg.shape)}"
                )
            return seg.to(dtype)
        if seg.dim() == 4 and seg.shape[1] == 1:
            seg = seg[:, 0]
        if seg.dim() != 3 or seg.is_floating_point():
            raise ValueError(
                f"seg_encoding={self.seg_encoding!r} expects a (B, H, W) integer class map, got "
                f"{tuple(seg.shape)} {seg.dtype}; for probabilities use seg_encoding='probs'"
            )
        if self.seg_encoding == "index":
            return seg.unsqueeze(1).to(dtype)
        num_classes = int(self.num_classes or 0)
        valid = (seg >= 0) & (seg < num_classes)
        onehot = F.one_hot(torch.where(valid, seg, 0).long(), num_classes)
        onehot = onehot * valid.unsqueeze(-1)
        return onehot.permute(0, 3, 1, 2).to(dtype)

    def forward(
        self, blur: torch.Tensor, seg: torch.Tensor | None, lr_size: tuple[int, int]
    ) -> torch.Tensor:
        """Return the prior ``(B, prior_channels, *lr_size)``.

        Args:
            blur: HR sigma map ``(B, 1, H, W)``.
            seg: Semantic input as ``seg_encoding`` prescribes (ignored for ``"none"``).
            lr_size: ``(h, w)`` of the LR image.
        """
        blur = blur.to(self.blur_embed.weight.dtype)
        encoded = None if self.seg_encoding == "none" or seg is None else self.encode_seg(seg)
        if self.seg_encoding != "none" and encoded is None:
            raise ValueError(f"seg_encoding={self.seg_encoding!r} needs a semantic map")
        if self.fuse_resolution == "lr" and tuple(blur.shape[-2:]) != tuple(lr_size):
            blur = F.adaptive_avg_pool2d(blur, lr_size)
            if encoded is not None:
                encoded = (
                    F.adaptive_avg_pool2d(encoded, lr_size)
                    if self.seg_encoding == "probs"
                    else F.interpolate(encoded, size=lr_size, mode="nearest")
                )
        prior = self.blur_embed(blur)
        if self.fuse is not None and self.seg_embed is not None and encoded is not None:
            prior = self.fuse.merge(prior, self.seg_embed(encoded))
        if tuple(prior.shape[-2:]) != tuple(lr_size):
            prior = F.interpolate(prior, size=lr_size, mode="nearest")
        return prior


class KernelPrior(nn.Module):
    """Kernel field -> prior map at the LR size (RRDB-SFT conditioned on blur kernels).

    The field ``(B, k*k, H, W)`` (or already on the LR grid) is averaged over each
    ``scale x scale`` block to the LR size, then a 1x1 conv maps the ``k*k`` taps to
    ``prior_channels`` (a learned linear code of the kernel, where MANet uses a fixed PCA
    basis: see :class:`~svblur.degradation.KernelPCA`), followed by LeakyReLU and a 3x3
    conv.
    """

    def __init__(self, kernel_channels: int, prior_channels: int = 64) -> None:
        super().__init__()
        self.kernel_channels = int(kernel_channels)
        self.code = nn.Conv2d(self.kernel_channels, prior_channels, 1)
        self.mix = nn.Conv2d(prior_channels, prior_channels, 3, padding=1)

    def forward(self, kernels: torch.Tensor, lr_size: tuple[int, int]) -> torch.Tensor:
        if kernels.dim() != 4 or kernels.shape[1] != self.kernel_channels:
            raise ValueError(
                f"kernels must be (B, {self.kernel_channels}, H, W), got {tuple(kernels.shape)}"
            )
        kernels = kernels.to(self.code.weight.dtype)
        if tuple(kernels.shape[-2:]) != tuple(lr_size):
            kernels = F.adaptive_avg_pool2d(kernels, lr_size)
        return self.mix(F.leaky_relu(self.code(kernels), 0.2))


class RRDBSFT(nn.Module):
    """RRDB-SFT super-resolution network conditioned on blur and semantic maps.

    ``conv_first`` (3x3) -> ``num_blocks`` :class:`RRDBSFTBlock` (each modulated by the prior
    of :class:`PriorEncoder`) -> ``trunk_conv`` (3x3) + the ``conv_first`` features ->
    ``upsample`` (3x3 conv to ``out_channels * scale**2``, pixel shuffle). No output clamp.

    Args:
        in_channels: Channels of the LR image.
        out_channels: Channels of the SR image.
        num_features: Trunk channels.
        num_blocks: RRDB-SFT blocks (10 as released).
        growth_channels: Growth of the dense blocks.
        prior_channels: Channels of the prior (the released ``code_length``, 64).
        seg_encoding: How the semantic map enters: ``"index"`` (class index as one float
            channel, as released), ``"onehot"``, ``"probs"`` (``(B, K, H, W)``
            probabilities), or ``"none"`` (blur only, no GIA).
        num_classes: Classes ``K``; needed for ``onehot`` and ``probs``.
        scale: Upscaling factor.
        fuse_resolution: ``"hr"`` (released: GIA on HR maps) or ``"lr"`` (cheaper: maps
            reduced to LR size first), see :class:`PriorEncoder`.
        gia_groups: Channel groups of the GIA (8 as released).
        window_size: Spatial-stream window of the GIA (15 x 20 as released).
        kernel_channels: Condition on a kernel field of this many taps (``k*k``) instead of
            the blur and semantic maps (:class:`KernelPrior`; for Gaussian / motion kernel
            fields, MANet's RRDB-SFT). ``None``: the maps (the released network).

    Shape:
        ``lr (B, 3, h, w)`` in ``[0, 1]``, ``blur (B, 1, h*scale, w*scale)`` sigma in HR pixels,
        ``seg`` ``(B, h*scale, w*scale)`` integer classes (``index``/``onehot``) or
        ``(B, K, h*scale, w*scale)`` probabilities (``probs``) -> ``(B, 3, h*scale, w*scale)``.

    Example:
        >>> import torch
        >>> from svblur.models import RRDBSFT
        >>> net = RRDBSFT(num_features=16, num_blocks=1, growth_channels=8, prior_channels=8,
        ...               gia_groups=2, window_size=(8, 8))
        >>> lr = torch.rand(1, 3, 12, 16)
        >>> blur, seg = torch.rand(1, 1, 48, 64), torch.randint(0, 5, (1, 48, 64))
        >>> net(lr, blur, seg).shape
        torch.Size([1, 3, 48, 64])
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        num_features: int = 64,
        num_blocks: int = 10,
        growth_channels: int = 32,
        prior_channels: int = 64,
        seg_encoding: SegEncoding = "index",
        num_classes: int | None = None,
        scale: int = 4,
        fuse_resolution: FuseResolution = "hr",
        gia_groups: int | None = 8,
        window_size: Sequence[int] = (15, 20),
        kernel_channels: int | None = None,
    ) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        if scale < 1 or int(scale) != scale:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        self.scale = int(scale)
        self.in_channels = in_channels
        self.kernel_channels = None if kernel_channels is None else int(kernel_channels)
        self.seg_encoding = seg_encoding if kernel_channels is None else "none"
        self.num_classes = num_classes
        self.prior: nn.Module = (
            PriorEncoder(
                prior_channels, seg_encoding, num_classes, fuse_resolution, gia_groups, window_size
            )
            if kernel_channels is None
            else KernelPrior(kernel_channels, prior_channels)
        )
        self.conv_first = nn.Conv2d(in_channels, num_features, 3, padding=1)
        self.trunk = nn.ModuleList(
            RRDBSFTBlock(num_features, prior_channels, growth_channels) for _ in range(num_blocks)
        )
        self.trunk_conv = nn.Conv2d(num_features, num_features, 3, padding=1)
        self.upsample = nn.Sequential()
        self.upsample.add_module(
            "conv", nn.Conv2d(num_features, out_channels * self.scale**2, 3, padding=1)
        )
        self.upsample.add_module("shuffle", nn.PixelShuffle(self.scale))

    def _check_inputs(self, lr: torch.Tensor, blur: torch.Tensor, seg: torch.Tensor | None):
        if lr.dim() != 4 or lr.shape[1] != self.in_channels:
            raise ValueError(
                f"RRDBSFT expects lr of shape (B, {self.in_channels}, h, w), got {tuple(lr.shape)}"
            )
        hr_size = (lr.shape[-2] * self.scale, lr.shape[-1] * self.scale)
        if blur.dim() != 4 or blur.shape[1] != 1 or tuple(blur.shape[-2:]) != hr_size:
            raise ValueError(
                f"blur must be the HR sigma map (B, 1, {hr_size[0]}, {hr_size[1]}) for lr of "
                f"size {tuple(lr.shape[-2:])} and scale {self.scale}, got {tuple(blur.shape)}"
            )
        if seg is not None and tuple(seg.shape[-2:]) != hr_size:
            raise ValueError(
                f"seg must have the HR size {hr_size} (scale {self.scale} x lr), got "
                f"{tuple(seg.shape)}"
            )

    def forward(
        self,
        lr: torch.Tensor,
        blur: torch.Tensor | None = None,
        seg: torch.Tensor | None = None,
        *,
        kernels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Super-resolve ``lr`` given its HR blur and semantic maps, or (``kernel_channels``)
        its kernel field ``(B, k*k, H, W)`` (HR or LR grid), see the class docstring.

        Returns:
            SR image ``(B, out_channels, h*scale, w*scale)``.
        """
        lr_size = (lr.shape[-2], lr.shape[-1])
        if self.kernel_channels is not None:
            if kernels is None:
                raise ValueError("this RRDBSFT is conditioned on kernels: pass kernels=...")
            prior = self.prior(kernels, lr_size).to(lr.dtype)
        else:
            if blur is None:
                raise ValueError("RRDBSFT needs the HR blur map (blur=...)")
            self._check_inputs(lr, blur, seg)
            prior = self.prior(blur, seg, lr_size).to(lr.dtype)
        features = self.conv_first(lr)
        trunk = features
        for block in self.trunk:
            trunk = block(trunk, prior)
        return self.upsample(features + self.trunk_conv(trunk))
