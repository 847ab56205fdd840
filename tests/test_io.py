"""svblur.io (atomic writes, the image reader) and the package version."""

from __future__ import annotations

import importlib.metadata
import io
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import svblur
from svblur.errors import InputError
from svblur.io import (
    TEMP_MARK,
    atomic_path,
    atomic_write_bytes,
    image_size,
    read_image,
    remove_temporaries,
)


# --------------------------------------------------------------------------- atomic writes
def test_atomic_path_renames_on_success(tmp_path: Path) -> None:
    path = tmp_path / "new" / "map.png"  # the folder is created
    with atomic_path(path) as temp:
        assert temp.parent == path.parent and temp.suffix == ".png"
        assert temp.name.startswith(".map.png" + TEMP_MARK)
        assert not path.exists()
        temp.write_bytes(b"complete")
    assert path.read_bytes() == b"complete"
    assert [p.name for p in path.parent.iterdir()] == ["map.png"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_path_error_keeps_the_old_file(tmp_path: Path, error: type[BaseException]) -> None:
    path = tmp_path / "state.pth"
    path.write_bytes(b"old")
    with pytest.raises(error), atomic_path(path) as temp:
        temp.write_bytes(b"half-")
        raise error
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.pth"]  # no temporary left


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_files_get_the_permissions_of_a_plain_write(tmp_path: Path) -> None:
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    atomic = tmp_path / "atomic.bin"
    atomic_write_bytes(atomic, b"x")
    assert (atomic.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)


def test_atomic_write_bytes_and_leftover_cleaning(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "data.json"
    atomic_write_bytes(path, b"{}")
    atomic_write_bytes(path, b'{"a": 1}')
    assert path.read_bytes() == b'{"a": 1}'
    # What a killed writer leaves behind: its temporary name, never renamed.
    with atomic_path(path) as temp:
        leftover_name = temp.name
    leftover = path.with_name(leftover_name)
    leftover.write_bytes(b"partial")
    older = tmp_path / ".0006.png.tmp-999"  # the name the builders used before
    older.write_bytes(b"partial")
    assert sorted(remove_temporaries(tmp_path)) == sorted([leftover, older])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["data.json", "sub"]


# --------------------------------------------------------------------------- image reader
def _png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(array, mode).save(path)
    return path


def test_read_8bit_rgb_grey_and_alpha(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    image = read_image(_png(tmp_path / "rgb.png", rgb))
    assert image.dtype == np.float32 and image.shape == (5, 7, 3)
    np.testing.assert_array_equal(image, rgb.astype(np.float32) / np.float32(255))
    rgba = np.dstack([rgb, np.full((5, 7), 9, np.uint8)])
    np.testing.assert_array_equal(read_image(_png(tmp_path / "rgba.png", rgba)), image)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png", "unchanged"), rgba)
    grey = rgb[..., 1]
    np.testing.assert_array_equal(
        read_image(_png(tmp_path / "grey.png", grey)), np.repeat(image[..., 1:2], 3, axis=2)
    )
    assert image_size(tmp_path / "rgb.png") == (7, 5)


def test_read_16bit_keeps_precision(tmp_path: Path) -> None:
    grey = np.array([[0, 1, 256, 257], [1000, 40000, 65534, 65535]], np.uint16)
    path = tmp_path / "grey16.png"
    assert cv2.imwrite(str(path), grey)
    image = read_image(path)
    assert image.shape == (2, 4, 3) and (image[..., 0] == image[..., 2]).all()
    np.testing.assert_array_equal(image[..., 0], grey.astype(np.float32) / np.float32(65535))
    assert image[0, 1, 0] > 0 and image[0, 2, 0] != image[0, 3, 0]  # 8 bits would merge these
    stored = read_image(path, "unchanged")
    assert stored.dtype == np.uint16 and np.array_equal(stored, grey)
    # 16-bit colour, in RGB order (OpenCV stores BGR)
    rgb = np.stack([grey, grey[::-1], 65535 - grey], axis=-1)
    path = tmp_path / "rgb16.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(read_image(path), rgb.astype(np.float32) / np.float32(65535))
    np.testing.assert_array_equal(read_image(path, "unchanged"), rgb)


def test_read_labels_exactly(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 2, 39], [40, 254, 255, 7]], np.uint8)
    plain = read_image(_png(tmp_path / "grey.png", labels), "labels")
    assert plain.dtype == np.uint8 and np.array_equal(plain, labels)
    equal = np.repeat(labels[..., None], 3, axis=2)
    assert np.array_equal(read_image(_png(tmp_path / "three.png", equal), "labels"), labels)
    # A palette PNG (as svblur-predict writes class maps): the indices, not the colours.
    palette = Image.fromarray(labels, "P")
    colours = np.random.default_rng(1).integers(0, 256, 768).tolist()
    palette.putpalette(colours)
    palette.save(tmp_path / "palette.png")
    for mode in ("labels", "unchanged"):
        assert np.array_equal(read_image(tmp_path / "palette.png", mode), labels)
    table = np.asarray(colours, np.uint8).reshape(256, 3)
    np.testing.assert_array_equal(
        read_image(tmp_path / "palette.png"), table[labels].astype(np.float32) / np.float32(255)
    )
    wide = np.array([[0, 300], [1000, 65535]], np.uint16)
    assert cv2.imwrite(str(tmp_path / "wide.png"), wide)
    assert np.array_equal(read_image(tmp_path / "wide.png", "labels"), wide)
    coloured = np.dstack([labels, labels, labels[::-1]])
    with pytest.raises(InputError, match=r"coloured\.png holds colours"):
        read_image(_png(tmp_path / "coloured.png", coloured), "labels")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image_is_named(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"cut{suffix}"
    buffer = io.BytesIO()
    noise = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format="PNG" if suffix == ".png" else "JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # the header is whole
    for read in (read_image, image_size):
        with pytest.raises(InputError, match=f"truncated image {re.escape(str(path))}"):
            read(path)


def test_non_image_and_missing_file_are_named(tmp_path: Path) -> None:
    junk = tmp_path / "notes.png"
    junk.write_text("not an image at all")
    for read in (read_image, image_size):
        with pytest.raises(InputError, match=f"unreadable image {re.escape(str(junk))}"):
            read(junk)
        with pytest.raises(InputError, match=r"unreadable image .*missing\.png"):
            read(tmp_path / "missing.png")
    assert issubclass(InputError, ValueError)  # callers that catch ValueError still do
    with pytest.raises(ValueError, match="mode must be"):
        read_image(junk, "bgr")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- version
def test_version_comes_from_the_package_metadata() -> None:
    assert svblur.__version__ == importlib.metadata.version("svblur")
