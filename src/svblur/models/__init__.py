"""Networks: plain ``nn.Module`` classes with no training logic."""

from .unet import UNetBlurSeg

__all__ = ["UNetBlurSeg"]
