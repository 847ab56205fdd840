"""Blur-map PNG storage in the released data sets' format."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from svblur.degradation import blur_map_from_png, blur_map_to_png


def test_round_trip_and_format(tmp_path: Path) -> None:
    sigma = np.array([[0.0, 0.04, 0.05, 1.175], [2.6, 6.96, 7.0, 0.25]], dtype=np.float32)
    path = tmp_path / "blur.png"
    blur_map_to_png(sigma, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blur.png"]  # no temp file left
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (2, 4, 3)
    assert (raw[:, :, 0] == raw[:, :, 1]).all() and (raw[:, :, 1] == raw[:, :, 2]).all()
    np.testing.assert_array_equal(raw[:, :, 1], [[0, 0, 1, 12], [26, 70, 70, 3]])
    back = blur_map_from_png(path)
    assert back.dtype == np.float32 and back.shape == (2, 4)
    np.testing.assert_allclose(back, np.floor(sigma.astype(np.float64) * 10 + 0.5) / 10, atol=1e-6)


def test_torch_input_and_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "b.png"
    blur_map_to_png(torch.full((3, 5), 2.0), path)
    blur_map_to_png(torch.full((3, 5), 3.0), path)
    np.testing.assert_array_equal(blur_map_from_png(path), np.full((3, 5), 3.0, np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ["b.png"]


def test_single_channel_png_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    cv2.imwrite(str(path), np.array([[10, 25]], dtype=np.uint16))
    np.testing.assert_allclose(blur_map_from_png(path), [[1.0, 2.5]])


def test_bad_files_raise_errors_naming_the_file(tmp_path: Path) -> None:
    eight_bit = tmp_path / "eight.png"
    cv2.imwrite(str(eight_bit), np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match=r"eight\.png.*uint16"):
        blur_map_from_png(eight_bit)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"junk\.png"):
        blur_map_from_png(junk)
    with pytest.raises(ValueError, match=r"missing\.png"):
        blur_map_from_png(tmp_path / "missing.png")


def test_bad_sigma_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2-D"):
        blur_map_to_png(np.zeros((2, 2, 3)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="NaN"):
        blur_map_to_png(np.array([[np.nan]]), tmp_path / "x.png")
    with pytest.raises(ValueError, match="range|fit"):
        blur_map_to_png(np.array([[-1.0]]), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []
