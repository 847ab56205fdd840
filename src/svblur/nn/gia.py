"""GIA: Grouping Interactive Attention (Chen et al., CVPR 2023, Sec. 4.2).

GIA lets two feature maps ``a`` and ``b`` exchange information. ``a`` is first aligned to
``b`` (same size and channels), then a *channel stream* and a *spatial stream* each compute
an attention for both inputs from their grouped interactions, and a 3x3 conv-BN fuses the
two streams per input. The numerics (LeakyReLU 0.01, BatchNorm eps 1e-5, flow grid, window
padding, affinity conventions) are those of the authors' released code, so the released
weights load into it (see :mod:`svblur.checkpoints.convert`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBN, PooledBatchNorm2d, reflect_pad_to_multiple
from .flow import FlowAlignment

__all__ = ["GIA", "ChannelInteraction", "ResizeProjection", "SpatialInteraction", "default_groups"]


def default_groups(channels: int) -> int:
    """The largest divisor of ``channels`` not above its square root.

    This reproduces the released choices: 18 -> 3, 36 -> 6, 64 -> 8, 72 -> 8, 144 -> 12.
    """
    return max(d for d in range(1, math.isqrt(channels) + 1) if channels % d == 0)


class ResizeProjection(nn.Module):
    """Parameter-light stand-in for flow alignment (the "no F" ablations).

    A 1x1 conv without bias maps ``src`` to the reference's channels (only when the channel
    counts differ; otherwise nothing is learned), then bilinear resizing
    (``align_corners=False``) to the reference's size (only when the sizes differ).

    Args:
        src_channels: Channels of the map to align.
        ref_channels: Channels of the reference map (and of the output).

    Shape:
        ``src (B, src_channels, h, w), ref (B, ref_channels, H, W) -> (B, ref_channels, H, W)``.
    """

    def __init__(self, src_channels: int, ref_channels: int) -> None:
        super().__init__()
        self.project: nn.Module = (
            nn.Conv2d(src_channels, ref_channels, 1, bias=False)
            if src_channels != ref_channels
            else nn.Identity()
        )

    def forward(self, src: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """Align ``src`` to ``ref``'s channels and size."""
        out = self.project(src)
        if out.shape[-2:] != ref.shape[-2:]:
            out = F.interpolate(out, size=ref.shape[-2:], mode="bilinear", align_corners=False)
        return out


class ChannelInteraction(nn.Module):
    """Channel stream of GIA: grouped channel-attention interaction of two maps.

    Per input ``x`` in ``(a, b)``: ``f_x = embed_x(x)`` (3x3 conv-BN-LeakyReLU);
    ``v_x = squeeze_x(mean_hw(f_x))`` (1x1 conv-BN). Both ``v`` are split into ``groups``
    groups of ``C / groups`` channels and their ``groups x groups`` inner products
    ``v_b[i] . v_a[j]`` (row-major) go through a per-input MLP
    ``(groups^2 -> C -> C)``; ``attention_x = sigmoid(v_x + c_x * relu(mlp_x(.)))`` with a
    learnable scalar ``c_x`` starting at 0; ``out_x = out_conv_x(f_x * attention_x)``
    (3x3 conv-BN).

    Batch size 1 trains: the BatchNorm of the pooled vector is a :class:`PooledBatchNorm2d`.

    Args:
        channels: Channels of both inputs.
        groups: Number of channel groups ``r``; must divide ``channels``.
        negative_slope: LeakyReLU slope of the embeddings.

    Shape:
        ``a, b (B, C, H, W) -> out_a, out_b (B, C, H, W)``.
    """

    def __init__(self, channels: int, groups: int, negative_slope: float = 0.01) -> None:
        super().__init__()
        if groups < 1 or channels % groups:
            raise ValueError(f"groups={groups} must be a positive divisor of channels={channels}")
        self.groups = groups
        self.c_a = nn.Parameter(torch.zeros(1))
        self.c_b = nn.Parameter(torch.zeros(1))
        self.embed_a = ConvBN(channels, channels, 3, negative_slope)
        self.embed_b = ConvBN(channels, channels, 3, negative_slope)
        self.squeeze_a = ConvBN(channels, channels, 1, norm=PooledBatchNorm2d)
        self.squeeze_b = ConvBN(channels, channels, 1, norm=PooledBatchNorm2d)
        self.mlp_a = self._mlp(groups * groups, channels)
        self.mlp_b = self._mlp(groups * groups, channels)
        self.out_a = ConvBN(channels, channels, 3)
        self.out_b = ConvBN(channels, channels, 3)

    @staticmethod
    def _mlp(in_features: int, channels: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Linear(in_features, channels), nn.ReLU(), nn.Linear(channels, channels)
        )

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the channel-stream outputs for ``a`` and ``b``."""
        feat_a, feat_b = self.embed_a(a), self.embed_b(b)
        vec_a = self.squeeze_a(feat_a.mean((2, 3), keepdim=True))  # (B, C, 1, 1)
        vec_b = self.squeeze_b(feat_b.mean((2, 3), keepdim=True))
        batch, channels = vec_a.shape[:2]
        groups_a = vec_a.view(batch, self.groups, channels // self.groups)
        groups_b = vec_b.view(batch, self.groups, channels // self.groups)
        affinity = torch.bmm(groups_b, groups_a.transpose(1, 2)).flatten(1)  # (B, r * r)
        mod_a = F.relu(self.mlp_a(affinity)).view(batch, channels, 1, 1)
        mod_b = F.relu(self.mlp_b(affinity)).view(batch, channels, 1, 1)
        att_a = torch.sigmoid(vec_a + self.c_a * mod_a)
        att_b = torch.sigmoid(vec_b + self.c_b * mod_b)
        return self.out_a(feat_a * att_a), self.out_b(feat_b * att_b)


def _to_windows(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """``(B, C, nh * wh, nw * ww) -> (B * nh * nw, C, wh, ww)``, windows in row-major order.

    One copy, into channels-last order (what the following convolution prefers on CPU and
    with CUDA AMP); no copy when the map is a single window. While ``torch.jit.trace``
    records it (the ONNX export), the window counts are traced values and the copy is
    always made, so that the recorded graph splits maps of every size.
    """
    batch, channels, height, width = x.shape
    wh, ww = window
    nh, nw = height // wh, width // ww
    if not torch.jit.is_tracing() and nh == 1 and nw == 1:
        return x
    x = x.view(batch, channels, nh, wh, nw, ww).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(batch * nh * nw, wh, ww, channels).permute(0, 3, 1, 2)


def _from_windows(windows: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`_to_windows` for a map of size ``(height, width)`` (one copy; the
    sizes may be traced values, as there)."""
    _, channels, wh, ww = windows.shape
    nh, nw = height // wh, width // ww
    if not torch.jit.is_tracing() and nh == 1 and nw == 1:
        return windows
    x = windows.permute(0, 2, 3, 1).reshape(batch, nh, nw, wh, ww, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch, height, width, channels).permute(0, 3, 1, 2)


class SpatialInteraction(nn.Module):
    """Spatial stream of GIA: window-wise pixel-affinity interaction of two maps.

    Per input ``x`` in ``(a, b)``: ``f_x = embed_x(x)`` (3x3 conv-BN-LeakyReLU), reflect-padded
    at the bottom/right to a multiple of ``window_size`` (see
    :func:`~svblur.nn.blocks.reflect_pad_to_multiple`) and split into windows (folded into the
    batch dimension); ``w_x = window_embed_x(window)`` (3x3 conv-BN-LeakyReLU per window).
    With ``A[i, j] = <w_a[:, i], w_b[:, j]>`` (``P x P``, ``P = wh * ww``), pixel ``i`` of
    ``a``'s window takes the row ``A[i, :]`` and pixel ``j`` of ``b``'s window the column
    ``A[:, j]``; ``reduce_x`` (a 1x1 conv ``P -> 1`` with bias) turns it into a map and
    ``weight_x = sigmoid(gate_x(window) + s_x * that map)`` (``gate_x``: 1x1 conv ``C -> 1``
    with bias; ``s_x`` a learnable scalar starting at 0). The weighted windows are merged,
    cropped and smoothed by ``out_x`` (3x3 conv-BN).

    Args:
        channels: Channels of both inputs.
        window_size: ``(height, width)`` of the windows.
        negative_slope: LeakyReLU slope of the embeddings.
        materialize_affinity: Build the ``P x P`` affinity matrix explicitly (as the
            released code does) instead of the equivalent factorized products; only useful
            to inspect or to reproduce the released FLOP count.

    Shape:
        ``a, b (B, C, H, W) -> out_a, out_b (B, C, H, W)``; any ``H, W >= 1``.
    """

    def __init__(
        self,
        channels: int,
        window_size: tuple[int, int] = (15, 20),
        negative_slope: float = 0.01,
        materialize_affinity: bool = False,
    ) -> None:
        super().__init__()
        self.materialize_affinity = materialize_affinity
        if len(window_size) != 2 or min(window_size) < 1:
            raise ValueError(f"window_size must be two positive ints, got {window_size}")
        self.window_size = (int(window_size[0]), int(window_size[1]))
        area = self.window_size[0] * self.window_size[1]
        self.s_a = nn.Parameter(torch.zeros(1))
        self.s_b = nn.Parameter(torch.zeros(1))
        self.embed_a = ConvBN(channels, channels, 3, negative_slope)
        self.embed_b = ConvBN(channels, channels, 3, negative_slope)
        self.gate_a = nn.Conv2d(channels, 1, 1)
        self.gate_b = nn.Conv2d(channels, 1, 1)
        self.window_embed_a = ConvBN(channels, channels, 3, negative_slope)
        self.window_embed_b = ConvBN(channels, channels, 3, negative_slope)
        self.reduce_a = nn.Conv2d(area, 1, 1)
        self.reduce_b = nn.Conv2d(area, 1, 1)
        self.out_a = ConvBN(channels, channels, 3)
        self.out_b = ConvBN(channels, channels, 3)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the spatial-stream outputs for ``a`` and ``b``."""
        batch, _, height, width = a.shape
        wh, ww = self.window_size
        feat_a = reflect_pad_to_multiple(self.embed_a(a), self.window_size)
        feat_b = reflect_pad_to_multiple(self.embed_b(b), self.window_size)
        padded_h, padded_w = feat_a.shape[-2:]
        win_a = _to_windows(feat_a, self.window_size)  # (N, C, wh, ww)
        win_b = _to_windows(feat_b, self.window_size)
        emb_a = self.window_embed_a(win_a).flatten(2)  # (N, C, P)
        emb_b = self.window_embed_b(win_b).flatten(2)
        red_a, red_b = self._reduced_affinity(emb_a, emb_b)  # (N, P) each
        n = emb_a.shape[0]
        weight_a = torch.sigmoid(self.gate_a(win_a) + self.s_a * red_a.view(n, 1, wh, ww))
        weight_b = torch.sigmoid(self.gate_b(win_b) + self.s_b * red_b.view(n, 1, wh, ww))
        out_a = _from_windows(win_a * weight_a, batch, padded_h, padded_w)[..., :height, :width]
        out_b = _from_windows(win_b * weight_b, batch, padded_h, padded_w)[..., :height, :width]
        return self.out_a(out_a), self.out_b(out_b)

    def _reduced_affinity(
        self, emb_a: torch.Tensor, emb_b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``reduce_a`` over the rows and ``reduce_b`` over the columns of ``A = a^T b``.

        ``reduce_x`` is a 1x1 conv over the ``P`` affinity values of a pixel, i.e.
        ``red_a = A w_a + bias`` and ``red_b = A^T w_b + bias``. By associativity
        ``A w_a = a^T (b w_a)`` and ``A^T w_b = b^T (a w_b)``, which is the same function
        without the ``P x P`` matrix: O(N C P) instead of O(N C P^2) time and no
        ``(N, P, P)`` tensor kept for backward (46 MB per GIA at 120 x 160, batch 2). Results
        differ from the explicit product only by float rounding. ``materialize_affinity``
        computes ``A`` explicitly instead.
        """
        w_a = self.reduce_a.weight.view(-1)
        w_b = self.reduce_b.weight.view(-1)
        if self.materialize_affinity:
            affinity = torch.bmm(emb_a.transpose(1, 2), emb_b)  # (N, P, P), [i, j] = <a_i, b_j>
            red_a = torch.matmul(affinity, w_a)
            red_b = torch.matmul(w_b, affinity)
        else:
            red_a = torch.bmm(emb_a.transpose(1, 2), torch.matmul(emb_b, w_a).unsqueeze(2))
            red_b = torch.bmm(emb_b.transpose(1, 2), torch.matmul(emb_a, w_b).unsqueeze(2))
            red_a, red_b = red_a.squeeze(2), red_b.squeeze(2)
        return red_a + self.reduce_a.bias, red_b + self.reduce_b.bias


class GIA(nn.Module):
    """Grouping Interactive Attention between two feature maps of any channels and sizes.

    ``a`` is aligned to ``b`` (flow alignment, :class:`~svblur.nn.flow.FlowAlignment`), then
    the channel stream (:class:`ChannelInteraction`) and the spatial stream
    (:class:`SpatialInteraction`) run on ``(aligned a, b)``, and per input a 3x3 conv-BN
    (``fuse_a``/``fuse_b``) fuses the concatenated stream outputs. Both outputs have
    ``b``'s size and ``in_channels_b`` channels.

    Each part can be switched off (the ablations of the paper's Tab. 5):

    - ``flow=False``: ``a`` is aligned by :class:`ResizeProjection` instead (a 1x1 conv only
      when the channel counts differ, bilinear resizing only when the sizes differ).
    - ``channel=False`` / ``spatial=False``: that stream is left out; ``fuse_x`` takes the
      concatenation of the remaining stream(s) (``C`` input channels for one stream).
    - both streams off: no fusion convs; the outputs are ``(aligned a, b)``.

    So "none" (all off) between two maps of equal shape is the identity, "F" is flow
    alignment of ``a`` with ``b`` passed through, "F+C" adds the channel stream and
    "F+C+S" is the full module.

    Two entry points, each with one return type: :meth:`forward` returns both outputs,
    :meth:`merge` their sum (the released code's merge mode).

    Args:
        in_channels_a: Channels of ``a`` (the map that is aligned).
        in_channels_b: Channels of ``b`` (the reference) and of both outputs.
        groups: Channel groups ``r`` of the channel stream; must divide ``in_channels_b``.
            ``None``: the largest divisor not above ``sqrt(in_channels_b)``
            (:func:`default_groups`).
        window_size: ``(height, width)`` of the spatial stream's windows.
        flow: Use flow alignment (else :class:`ResizeProjection`).
        channel: Use the channel stream.
        spatial: Use the spatial stream.
        negative_slope: LeakyReLU slope of the embeddings (0.01 as released).

    Shape:
        ``a (B, in_channels_a, h, w), b (B, in_channels_b, H, W)`` ->
        ``out_a, out_b (B, in_channels_b, H, W)`` (:meth:`forward`) or their sum
        (:meth:`merge`).

    Example:
        GIA in a depth + surface-normal network: let each task's decoder feature see the
        other's, and fuse a coarser decoder feature into a finer one::

            >>> import torch
            >>> from svblur.nn import GIA
            >>> depth, normals = torch.rand(2, 32, 24, 32), torch.rand(2, 32, 24, 32)
            >>> exchange = GIA(32, 32, groups=4, window_size=(8, 8))
            >>> depth, normals = exchange(depth, normals)
            >>> coarse = torch.rand(2, 64, 12, 16)
            >>> fused = GIA(64, 32, groups=4, window_size=(8, 8)).merge(coarse, depth)
            >>> fused.shape
            torch.Size([2, 32, 24, 32])
            >>> GIA(32, 32, flow=True, channel=True, spatial=False)(depth, normals)[0].shape
            torch.Size([2, 32, 24, 32])
    """

    def __init__(
        self,
        in_channels_a: int,
        in_channels_b: int,
        groups: int | None = None,
        window_size: tuple[int, int] = (15, 20),
        flow: bool = True,
        channel: bool = True,
        spatial: bool = True,
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        if in_channels_a < 1 or in_channels_b < 1:
            raise ValueError(
                f"channel counts must be positive, got {in_channels_a}, {in_channels_b}"
            )
        channels = in_channels_b
        self.in_channels_a = in_channels_a
        self.in_channels_b = in_channels_b
        self.align: nn.Module = (
            FlowAlignment(in_channels_a, channels)
            if flow
            else ResizeProjection(in_channels_a, channels)
        )
        groups = default_groups(channels) if groups is None else groups
        self.channel = ChannelInteraction(channels, groups, negative_slope) if channel else None
        self.spatial = (
            SpatialInteraction(channels, window_size, negative_slope) if spatial else None
        )
        streams = int(channel) + int(spatial)
        self.fuse_a = ConvBN(streams * channels, channels, 3) if streams else None
        self.fuse_b = ConvBN(streams * channels, channels, 3) if streams else None

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Let ``a`` and ``b`` interact.

        Args:
            a: ``(B, in_channels_a, h, w)``; aligned to ``b``.
            b: ``(B, in_channels_b, H, W)``.

        Returns:
            ``(out_a, out_b)``, each ``(B, in_channels_b, H, W)``.
        """
        if a.dim() != 4 or b.dim() != 4 or a.shape[0] != b.shape[0]:
            raise ValueError(
                f"GIA expects two (B, C, H, W) maps with the same B, got {tuple(a.shape)} "
                f"and {tuple(b.shape)}"
            )
        if a.shape[1] != self.in_channels_a or b.shape[1] != self.in_channels_b:
            raise ValueError(
                f"GIA built for ({self.in_channels_a}, {self.in_channels_b}) channels got "
                f"({a.shape[1]}, {b.shape[1]})"
            )
        a = self.align(a, b)
        parts_a: list[torch.Tensor] = []
        parts_b: list[torch.Tensor] = []
        if self.channel is not None:
            ch_a, ch_b = self.channel(a, b)
            parts_a.append(ch_a)
            parts_b.append(ch_b)
        if self.spatial is not None:
            sp_a, sp_b = self.spatial(a, b)
            parts_a.append(sp_a)
            parts_b.append(sp_b)
        if self.fuse_a is None or self.fuse_b is None:
            return a, b
        cat_a = parts_a[0] if len(parts_a) == 1 else torch.cat(parts_a, 1)
        cat_b = parts_b[0] if len(parts_b) == 1 else torch.cat(parts_b, 1)
        return self.fuse_a(cat_a), self.fuse_b(cat_b)

    def merge(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Fuse ``a`` into ``b``: the sum of both outputs of :meth:`forward`.

        Returns:
            ``(B, in_channels_b, H, W)``.
        """
        out_a, out_b = self(a, b)
        return out_a + out_b
