"""Blur-map storage in the released data sets' PNG format.

NYUv2-BSR and Cityscapes-BSR store the ground-truth Gaussian sigma per pixel as a
16-bit PNG with three equal channels holding ``round(sigma * 10)``; readers take
channel 1 and divide by 10.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import cv2
import numpy as np
import torch

from svblur.io import atomic_path, read_image

__all__ = ["blur_map_from_png", "blur_map_to_png"]

_SCALE = 10.0


def blur_map_to_png(sigma: np.ndarray | torch.Tensor, path: str | PathLike[str]) -> None:
    """Write a blur map as a 16-bit, 3-channel PNG holding ``round(sigma * 10)``.

    The file is written under a temporary name in the destination folder and then
    renamed (:func:`svblur.io.atomic_path`), so a reader never sees a half-written PNG.

    Args:
        sigma: Gaussian sigma per pixel, shape ``(H, W)``, finite and within
            ``[0, 6553.5]``.
        path: Destination ``.png`` file.

    Raises:
        ValueError: If ``sigma`` is not 2-D, not finite or out of range.
        OSError: If the file cannot be written.
    """
    if isinstance(sigma, torch.Tensor):
        sigma = sigma.detach().cpu().numpy()
    sigma = np.asarray(sigma, dtype=np.float64)
    if sigma.ndim != 2:
        raise ValueError(f"sigma: expected a 2-D (H, W) blur map, got shape {sigma.shape}")
    if not np.isfinite(sigma).all():
        raise ValueError("sigma: contains NaN or inf; expected finite values")
    scaled = np.floor(sigma * _SCALE + 0.5)  # halves away from zero for sigma >= 0
    if scaled.size and (scaled.min() < 0 or scaled.max() > 65535):
        raise ValueError(
            f"sigma: values must lie in [0, 6553.5] to fit uint16 after x10, "
            f"got [{sigma.min()}, {sigma.max()}]"
        )
    channel = scaled.astype(np.uint16)
    stacked = np.ascontiguousarray(np.repeat(channel[:, :, None], 3, axis=2))
    with atomic_path(path) as temp:
        if not cv2.imwrite(str(temp), stacked):
            raise OSError(f"{path}: cv2.imwrite failed to write the blur map")


def blur_map_from_png(path: str | PathLike[str]) -> np.ndarray:
    """Read a blur map PNG written in the released format.

    Args:
        path: A 16-bit PNG with one channel or three (equal) channels.

    Returns:
        Sigma per pixel, float32 array of shape ``(H, W)``: channel 1 (or the only
        channel) divided by 10.

    Raises:
        ValueError: If the file is missing, unreadable, not 16-bit, or has an
            unexpected number of channels.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: blur map file does not exist")
    array = read_image(path, "unchanged")
    if array.dtype != np.uint16:
        raise ValueError(f"{path}: expected a 16-bit (uint16) blur map PNG, got {array.dtype}")
    if array.ndim == 3:
        if array.shape[2] not in (3, 4):
            raise ValueError(f"{path}: expected 1 or 3 channels, got {array.shape[2]}")
        array = array[:, :, 1]
    elif array.ndim != 2:
        raise ValueError(f"{path}: unexpected array shape {array.shape}")
    return array.astype(np.float32) / np.float32(_SCALE)
