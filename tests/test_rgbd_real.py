"""Defocus on the two real RGB-D samples shipped with SYNDOF (read in place).

Depth conventions used here:

* Sintel ``market_2``: scene units times ``SINTEL_DEPTH_SCALE = 1000`` -> mm (the
  scene spans about 6.6 m to 99 m); the 1e11 sky is clipped at 1000 units (1 km).
* SYNTHIA night: 8-bit relative depth ``v`` (0 near .. 255 far) mapped linearly to
  ``1000 + v * (50000 - 1000) / 255`` mm, i.e. 1 m to 50 m.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from svblur.data.rgbd import read_sintel_depth
from svblur.degradation import fill_invalid_depth, imresize, render_defocus
from svblur.io import read_image

SINTEL_DEPTH_SCALE = 1000.0
SINTEL_SKY_CLIP = 1000.0
SYNTHIA_NEAR_MM, SYNTHIA_FAR_MM = 1000.0, 50000.0
MAX_COC = 29.0


def _data_dir() -> Path:
    env = os.environ.get("SVBLUR_RGBD_DIR")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "rgbd"
    if not root.is_dir():
        pytest.skip(f"real RGB-D samples not found at {root} (set SVBLUR_RGBD_DIR)")
    return root


def _check(image: np.ndarray, blurred: np.ndarray, sigma: np.ndarray) -> None:
    assert np.isfinite(blurred).all() and blurred.shape == image.shape
    # The f-number is solved so that the largest CoC is MAX_COC: sigma (MAX_COC - 1) / 4.
    assert sigma.max() == (MAX_COC - 1) / 4
    assert (sigma == 0).mean() > 0.001  # an in-focus region exists
    assert (sigma > 1).mean() > 0.05  # and clearly blurred ones
    # Blur changes the blurred regions far more than the in-focus ones.
    change = np.abs(blurred - image).mean(axis=2)
    assert change[sigma > 2].mean() > 10 * change[sigma == 0].mean()


def test_sintel_pair() -> None:
    root = _data_dir() / "sintel_market_2"
    depth = read_sintel_depth(root / "depth.dpt")
    image = read_image(root / "image.png")
    assert depth.shape == (436, 1024) and image.shape == (436, 1024, 3)
    assert (depth > 1e10).any()
    depth_mm = np.asarray(fill_invalid_depth(depth, max_depth=SINTEL_SKY_CLIP)) * SINTEL_DEPTH_SCALE
    focus = float(np.quantile(depth_mm, 0.3))
    blurred, sigma = render_defocus(image, depth_mm, 70.0, focus, max_coc=MAX_COC)
    _check(image, blurred, sigma)


def test_synthia_pair_downscaled() -> None:
    root = _data_dir() / "synthia_seqs01_night"
    image = read_image(root / "image.png")
    relative = read_image(root / "depth.png")[:, :, 0] * 255.0
    assert image.shape == (760, 1280, 3)
    depth_mm = SYNTHIA_NEAR_MM + relative * (SYNTHIA_FAR_MM - SYNTHIA_NEAR_MM) / 255.0
    image = np.clip(imresize(image, 0.5), 0, 1)
    depth_mm = depth_mm[::2, ::2]
    focus = float(np.quantile(depth_mm, 0.5))
    blurred, sigma = render_defocus(image, depth_mm, 50.0, focus, max_coc=MAX_COC)
    assert blurred.shape == image.shape
    _check(image, blurred, sigma)


def test_sintel_reader_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dpt"
    bad.write_bytes(np.array([1.0], "<f4").tobytes() + np.array([2, 2], "<i4").tobytes())
    with pytest.raises(ValueError, match=r"bad\.dpt.*tag"):
        read_sintel_depth(bad)
    short = tmp_path / "short.dpt"
    short.write_bytes(
        np.array([202021.25], "<f4").tobytes() + np.array([4, 4], "<i4").tobytes() + b"\0" * 8
    )
    with pytest.raises(ValueError, match=r"short\.dpt.*expected"):
        read_sintel_depth(short)
