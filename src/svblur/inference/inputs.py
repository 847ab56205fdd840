"""The images to predict: finding them in a file or folder, reading them, naming outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from svblur.io import IMAGE_SUFFIXES, read_image

__all__ = ["find_inputs", "read_rgb", "unique_stems"]


def find_inputs(path: Path) -> tuple[list[Path], list[Path]]:
    """Image files of ``path`` (a file or a folder, sorted) and the other files left out.

    Raises:
        FileNotFoundError: ``path`` is neither a file nor a folder.
    """
    if path.is_file():
        return [path], []
    if not path.is_dir():
        raise FileNotFoundError(f"input: no file or folder at '{path}'")
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    return images, [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]


def read_rgb(path: Path) -> torch.Tensor:
    """An image file as ``(1, 3, h, w)`` float32 RGB in ``[0, 1]`` (16-bit files keep precision).

    Raises:
        InputError: The file is not a readable image (see :func:`svblur.io.read_image`).
    """
    array = read_image(path, "rgb")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]


def unique_stems(paths: list[Path]) -> dict[Path, str]:
    """The stem naming each file's outputs: its own, or ``<stem>_<ext>`` where two files
    share a stem (``a.png`` and ``a.jpg`` -> ``a_png``, ``a_jpg``)."""
    counts: dict[str, int] = {}
    for p in paths:
        counts[p.stem] = counts.get(p.stem, 0) + 1
    return {p: p.stem if counts[p.stem] == 1 else f"{p.stem}_{p.suffix[1:]}" for p in paths}
