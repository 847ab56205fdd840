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
from .depth import DepthEstimator, GroundTruthDepth, HFDepth, SMPDepthNet, normalize_depth
from .diffusion_sr import ConditionEncoder, DiffusionSR
from .discriminators import ConditionalUNetDiscriminatorSN, UNetDiscriminatorSN
from .dkenet import DABlock, DKENet
from .manet import MABlock, MAConv, MANet
from .rrdb_sft import RRDBSFT
from .rrdbnet import RRDBNet
from .ssr import SVKR, fit_kernel_pca
from .unet import UNetBlurSeg

__all__ = [
    "CMOS",
    "RRDBSFT",
    "SVKR",
    "ArcSR",
    "BlindSR",
    "CheckpointError",
    "CheckpointMismatchError",
    "ConditionEncoder",
    "ConditionalUNetDiscriminatorSN",
    "DABlock",
    "DKENet",
    "DepthEstimator",
    "DiffusionSR",
    "GroundTruthDepth",
    "HFDepth",
    "LoadedNetwork",
    "MABlock",
    "MAConv",
    "MANet",
    "RRDBNet",
    "SMPDepthNet",
    "UNetBlurSeg",
    "UNetDiscriminatorSN",
    "build_network",
    "convert_released",
    "fit_kernel_pca",
    "from_official_blind_sr",
    "from_official_cmos",
    "from_official_rrdb_sft",
    "load_network",
    "load_weights",
    "normalize_depth",
    "read_checkpoint",
    "read_state_dict",
    "to_official_blind_sr",
    "to_official_cmos",
    "to_official_rrdb_sft",
]
