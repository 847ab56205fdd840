"""Networks: plain ``nn.Module`` classes with no training logic, their converters and
checkpoint loading."""

from .arcsr import ArcSR
from .blind_sr import BlindSR
from .checkpoints import (
    CheckpointError,
    CheckpointMismatchError,
    LoadedNetwork,
    build_network,
    load_network,
    load_weights,
    read_checkpoint,
    read_state_dict,
)
from .cmos import CMOS
from .convert import (
    convert_released,
    from_official_blind_sr,
    from_official_cmos,
    from_official_rrdb_sft,
    to_official_blind_sr,
    to_official_cmos,
    to_official_rrdb_sft,
)
from .discriminators import ConditionalUNetDiscriminatorSN, UNetDiscriminatorSN
from .manet import MABlock, MAConv, MANet
from .rrdb_sft import RRDBSFT
from .rrdbnet import RRDBNet
from .unet import UNetBlurSeg

__all__ = [
    "CMOS",
    "RRDBSFT",
    "ArcSR",
    "BlindSR",
    "CheckpointError",
    "CheckpointMismatchError",
    "ConditionalUNetDiscriminatorSN",
    "LoadedNetwork",
    "MABlock",
    "MAConv",
    "MANet",
    "RRDBNet",
    "UNetBlurSeg",
    "UNetDiscriminatorSN",
    "build_network",
    "convert_released",
    "from_official_blind_sr",
    "from_official_cmos",
    "from_official_rrdb_sft",
    "load_network",
    "load_weights",
    "read_checkpoint",
    "read_state_dict",
    "to_official_blind_sr",
    "to_official_cmos",
    "to_official_rrdb_sft",
]
