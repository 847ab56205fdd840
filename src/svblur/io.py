"""File helpers shared by every layer: atomic writes, the one image reader.

Writing: :func:`atomic_path` (and :func:`atomic_write_bytes`) make a file appear complete or
not at all. Their temporary files are hidden names beside the destination that hold
:data:`TEMP_MARK` (``.<name>.tmp-<random><suffix>``), so a writer that was killed leaves
files :func:`remove_temporaries` can find.

Reading: :func:`read_image` reads an image file as RGB, as class labels or as stored;
:func:`image_size` checks a file without decoding its pixels. Both raise
:class:`~svblur.errors.InputError` naming the file when it is missing, not an image,
truncated or undecodable. Pixels are decoded by OpenCV (16-bit colour keeps its precision;
EXIF orientation is not applied, so an image stays aligned with maps stored beside it);
Pillow reads the header, and the class indices of palette images.

Checkpoints are read by :func:`svblur.checkpoints.read_checkpoint`.
"""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Literal

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from svblur.errors import InputError

__all__ = [
    "IMAGE_SUFFIXES",
    "TEMP_MARK",
    "ImageMode",
    "atomic_path",
    "atomic_write_bytes",
    "image_size",
    "read_image",
    "remove_temporaries",
]

#: File suffixes read as images (lower case).
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)

#: Marks the temporary files of :func:`atomic_path` (``.<name>.tmp-<random><suffix>``).
TEMP_MARK = ".tmp-"

#: What :func:`read_image` returns: ``"rgb"`` float RGB, ``"labels"`` a 2-D class map,
#: ``"unchanged"`` the stored samples.
ImageMode = Literal["rgb", "labels", "unchanged"]

# Images whose header alone does not reveal a truncated file, and the bytes that end them.
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"
_PALETTE_MODES = ("P", "PA")


def _create_temporary(path: Path) -> Path:
    """Create an empty, new hidden file beside ``path`` with the same suffix.

    Created with ``os.open(..., 0o666)`` rather than :func:`tempfile.mkstemp`, so the
    finished file gets the permissions of any new file (the umask), not ``0o600``.
    """
    for _ in range(100):
        temp = path.with_name(f".{path.name}{TEMP_MARK}{secrets.token_hex(4)}{path.suffix}")
        try:
            handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(handle)
        return temp
    raise FileExistsError(f"no free temporary name beside {path}")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path``; on success it is renamed to ``path``.

    Whatever is written to the yielded path appears at ``path`` all at once, or not at all:
    an error (or an interrupt) inside the block removes the temporary file and leaves an
    existing ``path`` untouched. The folder of ``path`` is created when missing. The
    temporary name is hidden, holds :data:`TEMP_MARK` and keeps the suffix, so writers that
    pick the format from it (``cv2.imwrite``, ``PIL.Image.save``) work.

    Example::

        with atomic_path("out/model.pth") as tmp:
            torch.save(state, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _create_temporary(path)
    try:
        yield temp
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (flushed to disk before the rename)."""
    with atomic_path(path) as temp, open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def remove_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files that interrupted :func:`atomic_path` writers left in ``folder``.

    Searches ``folder`` and its subfolders. Call it only while nothing else writes there:
    it cannot tell a dead writer's file from a live one's.

    Returns:
        The files removed.
    """
    removed = []
    for temp in Path(folder).rglob(f".*{TEMP_MARK}*"):
        if temp.is_file():
            temp.unlink(missing_ok=True)
            removed.append(temp)
    return removed


def _check_header(path: Path, handle: BinaryIO) -> tuple[tuple[int, int], str]:
    """``((width, height), Pillow mode)`` of the image in ``handle``; checks it is complete."""
    try:
        with Image.open(handle) as image:
            kind = image.format
            size = (int(image.size[0]), int(image.size[1]))
            mode = image.mode
    except UnidentifiedImageError:
        raise InputError(f"unreadable image {path}: not an image file (unknown format)") from None
    except Exception as error:  # Pillow raises several types for broken headers
        raise InputError(f"unreadable image {path}: {error}") from None
    if kind in ("PNG", "JPEG"):
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 64))
        tail = handle.read()
        complete = tail.endswith(_PNG_END) if kind == "PNG" else _JPEG_END in tail
        if not complete:
            raise InputError(f"truncated image {path} (no {kind} end marker)")
    return size, mode


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(width, height)`` of an image file, from its header, without decoding the pixels.

    Checks that the file is an image Pillow identifies and, for PNG and JPEG, that it is
    complete (its end marker is there).

    Raises:
        InputError: The file is missing, not an image or truncated; the message names it.
    """
    path = Path(path)
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise InputError(f"unreadable image {path}: {error}") from None
    with handle:
        return _check_header(path, handle)[0]


def _decode(path: Path, data: bytes) -> np.ndarray:
    """The samples as OpenCV stores them: ``(H, W)`` or ``(H, W, C)`` in BGR(A) order."""
    try:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise InputError(f"image {path} cannot be decoded: {error}") from None
    if array is None:
        raise InputError(f"image {path} cannot be decoded")
    return array


def _bgr_to_rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 3:
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    if array.ndim == 3 and array.shape[2] == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA)
    return array


def read_image(path: str | os.PathLike[str], mode: ImageMode = "rgb") -> np.ndarray:
    """Read an image file.

    Args:
        path: An image file (PNG, JPEG, BMP, TIFF, WebP, PPM/PGM ...).
        mode: What to return:

            - ``"rgb"``: float32 ``(H, W, 3)`` RGB in ``[0, 1]``: 8-bit samples divided by
              255, 16-bit ones by 65535; grey is repeated over the three channels, an alpha
              channel is dropped and palette images give their colours.
            - ``"labels"``: a class map ``(H, W)`` with the stored values exactly (uint8 or
              uint16): a palette image gives its indices; a colour image whose three colour
              channels are equal gives one of them.
            - ``"unchanged"``: the stored samples (uint8 or uint16 for PNG), ``(H, W)`` or
              ``(H, W, C)`` with colour in RGB(A) order; a palette image gives its indices.

    Returns:
        The array described under ``mode``.

    Raises:
        InputError: The file is missing, not an image, truncated (PNG and JPEG end
            markers), cannot be decoded, decodes to another size than its header says, or
            does not hold what ``mode`` asks for (e.g. colours for ``"labels"``). The
            message names the file.
    """
    if mode not in ("rgb", "labels", "unchanged"):
        raise ValueError(f"mode must be 'rgb', 'labels' or 'unchanged', got {mode!r}")
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"unreadable image {path}: {error}") from None
    (width, height), pil_mode = _check_header(path, io.BytesIO(data))
    if mode != "rgb" and pil_mode in _PALETTE_MODES:
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                array = np.asarray(image)
        except Exception as error:  # Pillow raises several types for broken pixel data
            raise InputError(f"image {path} cannot be decoded: {error}") from None
        array = array[..., 0] if array.ndim == 3 else array
    else:
        array = _decode(path, data)
    if array.shape[:2] != (height, width):
        raise InputError(
            f"image {path} decodes to {array.shape[:2]}, header says {(width, height)}"
        )

    if mode == "unchanged":
        return _bgr_to_rgb(array)
    if mode == "labels":
        if array.ndim == 2:
            return array
        colour = array[..., :3]
        if colour.shape[2] == 3 and not (
            np.array_equal(colour[..., 0], colour[..., 1])
            and np.array_equal(colour[..., 0], colour[..., 2])
        ):
            raise InputError(
                f"label image {path} holds colours, not class indices (its colour channels "
                "differ); store the labels as one channel or as a palette PNG"
            )
        return np.ascontiguousarray(colour[..., 0])
    if array.dtype == np.uint8:
        peak = 255.0
    elif array.dtype == np.uint16:
        peak = 65535.0
    else:
        raise InputError(
            f"image {path} has {array.dtype} samples; expected 8- or 16-bit RGB or grey"
        )
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    rgb = cv2.cvtColor(np.ascontiguousarray(array[..., :3]), cv2.COLOR_BGR2RGB)
    return rgb.astype(np.float32) / peak
