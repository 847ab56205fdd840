"""Flow alignment (Semantic Flow, Li et al., ECCV 2020) as used by GIA."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FlowAlignment", "flow_warp"]


@functools.lru_cache(maxsize=64)
def _cached_base_grid(
    height: int, width: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    # A normal (non-inference) tensor, so that a grid first built under inference_mode can
    # later be used in a forward that records gradients.
    with torch.inference_mode(False), torch.no_grad():
        return _make_base_grid(height, width, device, dtype)


def _make_base_grid(
    height: int, width: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    # Built in float32 and then cast, like the released code (bit-identical grid).
    ys = torch.linspace(-1.0, 1.0, height, device=device)
    xs = torch.linspace(-1.0, 1.0, width, device=device)
    grid = torch.stack(
        (xs.view(1, width).expand(height, width), ys.view(height, 1).expand(height, width)), -1
    )
    return grid.unsqueeze(0).to(dtype)


def base_grid(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The identity sampling grid of ``grid_sample(..., align_corners=True)``.

    Built once per (size, device, dtype) and cached; under ``torch.compile`` it is built
    inline (the compiler folds it into a constant).

    Returns:
        Tensor of shape ``(1, height, width, 2)``, last dim ``(x, y)`` in ``[-1, 1]``.
    """
    if torch.compiler.is_compiling():
        return _make_base_grid(height, width, device, dtype)
    return _cached_base_grid(height, width, device, dtype)


def flow_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``x`` at the identity grid of ``flow``'s size shifted by ``flow`` (in pixels).

    The flow is divided by the *output* width and height (not ``(size - 1) / 2``), which is
    the released Semantic Flow / CMOS convention; bilinear, zero padding,
    ``align_corners=True``.

    Args:
        x: Features to warp, ``(B, C, h, w)`` (any size: sampling also resizes).
        flow: Offsets ``(B, 2, H, W)``, channel 0 along x (width), channel 1 along y.

    Returns:
        Warped features ``(B, C, H, W)`` (float32 when the inputs are lower precision).
    """
    if torch.jit.is_tracing():
        return _flow_warp_traced(x, flow)
    out_h, out_w = flow.shape[-2:]
    # Sampling positions in at least float32: a bfloat16 grid (autocast) would be off by
    # up to about a pixel at typical sizes.
    dtype = torch.promote_types(flow.dtype, torch.float32)
    norm = torch.tensor([out_w, out_h], dtype=dtype, device=flow.device)
    grid = base_grid(out_h, out_w, flow.device, dtype) + flow.to(dtype).permute(0, 2, 3, 1) / norm
    return F.grid_sample(x.to(dtype), grid, mode="bilinear", align_corners=True)


def _flow_warp_traced(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """:func:`flow_warp` for ``torch.jit.trace`` (the ONNX export): the grid and the flow's
    scale come from the traced sizes, where the cached grid and ``torch.tensor`` of the
    sizes would be constants of the example's size. The same numbers in eager mode."""
    out_h, out_w = flow.shape[-2:]
    dtype = torch.promote_types(flow.dtype, torch.float32)
    ys = torch.linspace(-1.0, 1.0, out_h, device=flow.device)
    xs = torch.linspace(-1.0, 1.0, out_w, device=flow.device)
    base = torch.stack(
        (xs.view(1, -1).expand(out_h, out_w), ys.view(-1, 1).expand(out_h, out_w)), -1
    )
    offset = flow.to(dtype)
    offset = torch.stack((offset[:, 0] / out_w, offset[:, 1] / out_h), -1)
    grid = base.unsqueeze(0).to(dtype) + offset
    return F.grid_sample(x.to(dtype), grid, mode="bilinear", align_corners=True)


class FlowAlignment(nn.Module):
    """Warp a feature map onto the grid of a reference map with a learned flow.

    ``src`` is reduced by a 1x1 conv (``reduce_src``) to the reference's channels and
    resized bilinearly (``align_corners=True``) to the reference's size when the sizes
    differ; the reference is reduced by a 1x1 conv (``reduce_ref``); a 3x3 conv
    (``flow_conv``) on their concatenation predicts a 2-channel flow; the *original* ``src``
    is warped with it (:func:`flow_warp`) and a 3x3 conv (``project``) maps it to the
    reference's channels. No biases. The flow step runs also when the sizes are equal.

    Args:
        src_channels: Channels of the map to warp.
        ref_channels: Channels of the reference map (and of the output).

    Shape:
        ``src (B, src_channels, h, w), ref (B, ref_channels, H, W) -> (B, ref_channels, H, W)``.
    """

    def __init__(self, src_channels: int, ref_channels: int) -> None:
        super().__init__()
        self.reduce_src = nn.Conv2d(src_channels, ref_channels, 1, bias=False)
        self.reduce_ref = nn.Conv2d(ref_channels, ref_channels, 1, bias=False)
        self.flow_conv = nn.Conv2d(2 * ref_channels, 2, 3, padding=1, bias=False)
        self.project = nn.Conv2d(src_channels, ref_channels, 3, padding=1, bias=False)

    def forward(self, src: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """Warp ``src`` onto ``ref``'s grid; see the class docstring for shapes."""
        size = ref.shape[-2:]
        reduced = self.reduce_src(src)
        if reduced.shape[-2:] != size:
            reduced = F.interpolate(reduced, size=size, mode="bilinear", align_corners=True)
        flow = self.flow_conv(torch.cat([reduced, self.reduce_ref(ref)], 1))
        return self.project(flow_warp(src, flow))
