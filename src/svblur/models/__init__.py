"""Networks: plain ``nn.Module`` classes with no training logic."""

from .cmos import CMOS
from .convert import from_official_cmos, to_official_cmos
from .unet import UNetBlurSeg

__all__ = ["CMOS", "UNetBlurSeg", "from_official_cmos", "to_official_cmos"]
