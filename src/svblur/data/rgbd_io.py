"""Old home of :func:`read_sintel_depth`: it lives in :mod:`svblur.data.rgbd` now (colour
images: :func:`svblur.io.read_image`, re-exported here as before)."""

from svblur.data.rgbd import SINTEL_TAG, read_sintel_depth
from svblur.io import read_image

__all__ = ["SINTEL_TAG", "read_image", "read_sintel_depth"]
