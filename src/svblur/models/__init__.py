"""Networks: plain ``nn.Module`` classes with no training logic.

Checkpoint reading, loading and converting live in :mod:`svblur.checkpoints`; the names
this package used to export for them still resolve here, with a ``DeprecationWarning``.
"""

import warnings
from typing import Any

from .arcsr import ArcSR
from .blind_sr import BlindSR
from .cmos import CMOS
from .depth import DepthEstimator, GroundTruthDepth, HFDepth, SMPDepthNet, normalize_depth
from .diffusion_sr import ConditionEncoder, DiffusionSR
from .discriminators import ConditionalUNetDiscriminatorSN, UNetDiscriminatorSN
from .dkenet import DABlock, DKENet
from .latent_diffusion_sr import LatentDiffusionSR
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
    "ConditionEncoder",
    "ConditionalUNetDiscriminatorSN",
    "DABlock",
    "DKENet",
    "DepthEstimator",
    "DiffusionSR",
    "GroundTruthDepth",
    "HFDepth",
    "LatentDiffusionSR",
    "MABlock",
    "MAConv",
    "MANet",
    "RRDBNet",
    "SMPDepthNet",
    "UNetBlurSeg",
    "UNetDiscriminatorSN",
    "fit_kernel_pca",
    "normalize_depth",
]

# Checkpoint names this package exported before they moved to svblur.checkpoints.
_MOVED_TO_CHECKPOINTS = frozenset(
    {
        "CheckpointError",
        "CheckpointMismatchError",
        "LoadedNetwork",
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
    }
)


def __getattr__(name: str) -> Any:
    """``svblur.models.load_network`` and the other moved names: from svblur.checkpoints."""
    if name in _MOVED_TO_CHECKPOINTS:
        import svblur.checkpoints

        warnings.warn(
            f"svblur.models.{name} moved to svblur.checkpoints.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(svblur.checkpoints, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
