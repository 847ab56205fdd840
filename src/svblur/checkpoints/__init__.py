"""Checkpoints: reading them safely, the record training systems write into them, loading
weights strictly, rebuilding their network, and converting other formats.

Every file is read with ``torch.load(..., weights_only=True)`` (:mod:`.reading`); the record
(:mod:`.record`) stores what a system computes (:mod:`.kinds`) and how its network is built,
so that :func:`load_network` (:mod:`.loading`) rebuilds it without the training config;
:mod:`.convert` converts the CMOS authors' released files, :mod:`.esrgan` the ESRGAN family's
(BasicSR / Real-ESRGAN / ESRGAN RRDBNets, Real-ESRGAN's discriminator, PBaSR's release).
Networks are known here by name only (:func:`build_network`): this package sits below
:mod:`svblur.models`.
"""

from svblur.errors import CheckpointError, CheckpointMismatchError, CheckpointNotFoundError

from .building import build_network
from .convert import (
    RELEASED_KINDS,
    ReleasedConversion,
    convert_released,
    detect_official_kind,
    from_basicsr_rrdbnet,
    from_official_blind_sr,
    from_official_cmos,
    from_official_rrdb_sft,
    official_to_svblur_key,
    official_to_svblur_rrdb_sft_key,
    strip_prefixes,
    svblur_to_official_key,
    svblur_to_official_rrdb_sft_key,
    to_official_blind_sr,
    to_official_cmos,
    to_official_rrdb_sft,
)
from .esrgan import (
    ESRGAN_KINDS,
    ESRGANConversion,
    convert_esrgan,
    detect_esrgan_kind,
    from_esrgan_rrdbnet,
    select_network,
    to_basicsr,
    to_basicsr_rrdbnet,
)
from .kinds import LEGACY_KINDS, SR_KINDS, SYSTEM_KINDS, kind_of_config, normalize_kind
from .loading import LoadedNetwork, check_fits, load_network, load_weights
from .reading import read_checkpoint, read_state_dict, save_state_dict
from .record import RECORD_KEY, checkpoint_kind, network_record

__all__ = [
    # errors
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    # reading and writing
    "read_checkpoint",
    "read_state_dict",
    "save_state_dict",
    # the record and the kinds
    "RECORD_KEY",
    "network_record",
    "checkpoint_kind",
    "SYSTEM_KINDS",
    "SR_KINDS",
    "LEGACY_KINDS",
    "normalize_kind",
    "kind_of_config",
    # building and loading
    "build_network",
    "check_fits",
    "load_weights",
    "load_network",
    "LoadedNetwork",
    # other formats
    "RELEASED_KINDS",
    "ReleasedConversion",
    "convert_released",
    "detect_official_kind",
    "from_basicsr_rrdbnet",
    "from_official_blind_sr",
    "from_official_cmos",
    "from_official_rrdb_sft",
    "official_to_svblur_key",
    "official_to_svblur_rrdb_sft_key",
    "strip_prefixes",
    "svblur_to_official_key",
    "svblur_to_official_rrdb_sft_key",
    "to_official_blind_sr",
    "to_official_cmos",
    "to_official_rrdb_sft",
    # the ESRGAN family
    "ESRGAN_KINDS",
    "ESRGANConversion",
    "convert_esrgan",
    "detect_esrgan_kind",
    "from_esrgan_rrdbnet",
    "select_network",
    "to_basicsr",
    "to_basicsr_rrdbnet",
]
