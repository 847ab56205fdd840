"""Networks: plain ``nn.Module`` classes with no training logic."""

from .cmos import CMOS
from .convert import from_official_cmos, to_official_cmos
from .manet import MABlock, MAConv, MANet
from .unet import UNetBlurSeg

__all__ = [
    "CMOS",
    "MABlock",
    "MAConv",
    "MANet",
    "UNetBlurSeg",
    "from_official_cmos",
    "to_official_cmos",
]

# Blind SR (stages 2 and 3)
from .blind_sr import BlindSR  # noqa: E402
from .convert import (  # noqa: E402
    from_official_blind_sr,
    from_official_rrdb_sft,
    load_weights,
    to_official_blind_sr,
    to_official_rrdb_sft,
)
from .rrdb_sft import RRDBSFT  # noqa: E402

__all__ += [
    "RRDBSFT",
    "BlindSR",
    "from_official_blind_sr",
    "from_official_rrdb_sft",
    "load_weights",
    "to_official_blind_sr",
    "to_official_rrdb_sft",
]
