"""Reusable layers: GIA, flow alignment, conv blocks."""

from .blocks import BasicBlock, ConvBN, PooledBatchNorm2d, reflect_pad_to_multiple
from .flow import FlowAlignment, flow_warp
from .gia import GIA, ChannelInteraction, ResizeProjection, SpatialInteraction, default_groups

__all__ = [
    "GIA",
    "BasicBlock",
    "ChannelInteraction",
    "ConvBN",
    "FlowAlignment",
    "PooledBatchNorm2d",
    "ResizeProjection",
    "SpatialInteraction",
    "default_groups",
    "flow_warp",
    "reflect_pad_to_multiple",
]
