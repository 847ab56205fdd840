"""Moved to :mod:`svblur.checkpoints.convert`; this module re-exports its names for older
code."""

from svblur.checkpoints.convert import (
    RELEASED_KINDS,
    ReleasedConversion,
    convert_released,
    detect_official_kind,
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

__all__ = [
    "RELEASED_KINDS",
    "ReleasedConversion",
    "convert_released",
    "detect_official_kind",
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
]
