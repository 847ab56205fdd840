"""Readers for RGB-D samples: MPI Sintel ``.dpt`` depth, and colour images.

Colour images are read by :func:`svblur.io.read_image`, re-exported here as before.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from svblur.io import read_image

__all__ = ["SINTEL_TAG", "read_image", "read_sintel_depth"]

#: The float32 tag that opens every MPI Sintel ``.dpt`` file.
SINTEL_TAG = 202021.25


def read_sintel_depth(path: str | PathLike[str]) -> np.ndarray:
    """Read an MPI Sintel ``.dpt`` depth file.

    The format is little-endian: a float32 tag (202021.25), int32 width, int32
    height, then ``width * height`` float32 depths in row-major order.

    Args:
        path: The ``.dpt`` file.

    Returns:
        Depth in the file's scene units, float32 array of shape ``(H, W)``. Sky
        pixels keep the file's huge values (about 1e11); clip them with
        :func:`svblur.degradation.fill_invalid_depth` (``max_depth``).

    Raises:
        ValueError: If the tag, the size or the payload length is wrong.
    """
    path = Path(path)
    raw = path.read_bytes()
    if len(raw) < 12:
        raise ValueError(f"{path}: too short for a Sintel .dpt header ({len(raw)} bytes, need 12)")
    tag = np.frombuffer(raw, "<f4", count=1, offset=0)[0]
    if tag != np.float32(SINTEL_TAG):
        raise ValueError(
            f"{path}: wrong .dpt tag {tag!r}, expected {SINTEL_TAG} (not a Sintel depth file?)"
        )
    width, height = (int(v) for v in np.frombuffer(raw, "<i4", count=2, offset=4))
    if not (0 < width < 100_000 and 0 < height < 100_000):
        raise ValueError(f"{path}: implausible .dpt size width={width}, height={height}")
    expected = 12 + 4 * width * height
    if len(raw) != expected:
        raise ValueError(
            f"{path}: .dpt payload has {len(raw)} bytes, expected {expected} for {width}x{height}"
        )
    depth = np.frombuffer(raw, "<f4", count=width * height, offset=12)
    return depth.reshape(height, width).astype(np.float32)
