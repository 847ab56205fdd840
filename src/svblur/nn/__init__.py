"""Reusable layers: GIA, flow alignment, conv blocks, ArcSR's DMConv and KGConv, SSR's AMF."""

from .amf import AMF, MultiModalAMF, amf_sparsity
from .arcsr import ChannelAttention, DMBlock, DMConv, KernelConcatConv, KGBlock, KGConv
from .blocks import BasicBlock, ConvBN, PooledBatchNorm2d, reflect_pad_to_multiple
from .flow import FlowAlignment, flow_warp
from .gia import GIA, ChannelInteraction, ResizeProjection, SpatialInteraction, default_groups

__all__ = [
    "AMF",
    "GIA",
    "BasicBlock",
    "ChannelAttention",
    "ChannelInteraction",
    "ConvBN",
    "DMBlock",
    "DMConv",
    "FlowAlignment",
    "KGBlock",
    "KGConv",
    "KernelConcatConv",
    "MultiModalAMF",
    "PooledBatchNorm2d",
    "ResizeProjection",
    "SpatialInteraction",
    "amf_sparsity",
    "default_groups",
    "flow_warp",
    "reflect_pad_to_multiple",
]
