"""Cityscapes-BSR from the raw Cityscapes folders.

Reads, for every ``<city>_<seq>_<frame>`` of a split::

    leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png   RGB
    disparity/<split>/<city>/<stem>_disparity.png       uint16, d = (p - 1) / 256, p = 0 invalid
    camera/<split>/<city>/<stem>_camera.json            extrinsic.baseline (m), intrinsic.fx (px)
    gtFine/<split>/<city>/<stem>_gtFine_labelIds.png    label ids -> the 19 train ids (255 ignore)

Depth in metres is ``baseline * fx / d``; invalid disparities become missing depth, filled
from the nearest valid pixel (:func:`svblur.degradation.fill_invalid_depth`), and depth is
converted to millimetres. Another disparity folder (e.g. stereo-matched maps such as the
CREStereo ones the authors used) can be named with ``disparity_folder``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from svblur.degradation.pipeline import CameraPrior
from svblur.io import ImageMode, read_image

from .common import BuildConfig, BuildSummary, RawSample, make_jobs, run_build

__all__ = ["CITYSCAPES_TRAIN_IDS", "CityscapesRaw", "build_cityscapes", "label_ids_to_train_ids"]

#: Cityscapes label id -> train id (255 = ignore), from cityscapesScripts' labels.py.
CITYSCAPES_TRAIN_IDS: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip

_LOOKUP = np.full(256, 255, dtype=np.uint8)
for _id, _train in CITYSCAPES_TRAIN_IDS.items():
    _LOOKUP[_id] = _train


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map Cityscapes label ids (``*_gtFine_labelIds.png``) to train ids 0..18 / 255."""
    return _LOOKUP[np.asarray(label_ids).astype(np.uint8)]


def _read(path: Path, mode: ImageMode = "unchanged") -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"missing file {path}")
    return read_image(path, mode)


class CityscapesRaw:
    """Reader of one Cityscapes split (picklable).

    Args:
        root: Cityscapes root (holding ``leftImg8bit/``, ``disparity/``, ``camera/``, ``gtFine/``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        disparity_folder: Folder of the disparity maps under ``root``.
    """

    def __init__(self, root: str | Path, split: str, disparity_folder: str = "disparity") -> None:
        self.root = Path(root)
        self.split = split
        self.disparity_folder = disparity_folder
        images = self.root / "leftImg8bit" / split
        if not images.is_dir():
            raise ValueError(f"missing folder {images} (expected a Cityscapes root at {self.root})")
        self.stems = sorted(
            p.name[: -len("_leftImg8bit.png")] for p in images.glob("*/*_leftImg8bit.png")
        )
        if not self.stems:
            raise ValueError(f"no *_leftImg8bit.png images under {images}/<city>/")
        for folder in (disparity_folder, "camera", "gtFine"):
            if not (self.root / folder / split).is_dir():
                raise ValueError(f"missing folder {self.root / folder / split}")

    def __len__(self) -> int:
        return len(self.stems)

    def _path(self, folder: str, stem: str, suffix: str) -> Path:
        city = stem.split("_")[0]
        return self.root / folder / self.split / city / f"{stem}{suffix}"

    def load(self, key: str) -> RawSample:
        """Sample ``key`` (its stem): RGB uint8, depth in mm (NaN = invalid), train ids."""
        stem = str(key)
        rgb = _read(self._path("leftImg8bit", stem, "_leftImg8bit.png"))[..., :3]
        disparity_path = self._path(self.disparity_folder, stem, "_disparity.png")
        stored = _read(disparity_path).astype(np.float64)
        if stored.ndim != 2:
            raise ValueError(f"{disparity_path}: expected a 1-channel 16-bit disparity PNG")
        camera_path = self._path("camera", stem, "_camera.json")
        if not camera_path.is_file():
            raise ValueError(f"missing file {camera_path}")
        try:
            camera = json.loads(camera_path.read_text())
            baseline = float(camera["extrinsic"]["baseline"])
            fx = float(camera["intrinsic"]["fx"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"{camera_path}: expected extrinsic.baseline and intrinsic.fx ({error})"
            ) from None
        disparity = np.where(stored > 0, (stored - 1.0) / 256.0, 0.0)
        with np.errstate(divide="ignore"):
            depth_m = np.where(disparity > 0, baseline * fx / np.maximum(disparity, 1e-12), np.nan)
        labels = label_ids_to_train_ids(
            _read(self._path("gtFine", stem, "_gtFine_labelIds.png"), "labels")
        )
        shapes = {rgb.shape[:2], depth_m.shape, labels.shape}
        if len(shapes) != 1:
            raise ValueError(f"sample {stem}: image, disparity and labels differ in size {shapes}")
        if not np.isfinite(depth_m).any():
            raise ValueError(f"{disparity_path}: no valid disparity")
        return RawSample(rgb, depth_m * 1000.0, labels)


def build_cityscapes(
    source: str | Path,
    out: str | Path,
    *,
    train_split: str = "train",
    test_split: str = "val",
    disparity_folder: str = "disparity",
    seed: int = 0,
    max_coc: float = 29.0,
    invariant_fraction: float = 0.2,
    camera: CameraPrior | None = None,
    workers: int = 1,
    progress: bool = False,
    limit: int | None = None,
    **run_kwargs: Any,
) -> BuildSummary:
    """Build Cityscapes-BSR in the released layout.

    ``train_split`` becomes ``train/`` and ``test_split`` (default ``val``: Cityscapes'
    test labels are not public) becomes ``val/`` with the five test groups. Files are
    named by the Cityscapes stem (``aachen_000000_000019.png``).

    Args:
        source: Cityscapes root.
        out: Output root.
        train_split: Cityscapes split written to ``train/``.
        test_split: Cityscapes split written to ``val/`` (five groups).
        disparity_folder: Folder of the disparity maps under ``source``.
        seed: Build seed.
        max_coc: Largest CoC in pixels.
        invariant_fraction: Share of space-invariant images per split / group.
        camera: The camera prior (default: SYNDOF's, :class:`~svblur.degradation.CameraPrior`).
        workers: Worker processes.
        progress: Show a progress bar.
        limit: Build only the first ``limit`` images of each split.
        **run_kwargs: Passed to :func:`~svblur.data.builders.common.run_build`.

    Returns:
        The :class:`~svblur.data.builders.common.BuildSummary`.
    """
    source = Path(source)
    readers = {
        "train": CityscapesRaw(source, train_split, disparity_folder),
        "test": CityscapesRaw(source, test_split, disparity_folder),
    }
    config = BuildConfig(
        dataset="cityscapes",
        seed=int(seed),
        max_coc=float(max_coc),
        invariant_fraction=float(invariant_fraction),
        camera=CameraPrior() if camera is None else camera,
        source={
            "train_split": train_split,
            "test_split": test_split,
            "disparity_folder": disparity_folder,
            "limit": limit,
        },
    )
    jobs = []
    for split, reader in readers.items():
        stems = reader.stems[:limit] if limit is not None else reader.stems
        jobs += make_jobs(split, stems, [f"{split}/{s}" for s in stems], config)
    return run_build(
        _SplitReader(readers), jobs, config, out, workers=workers, progress=progress, **run_kwargs
    )


class _SplitReader:
    """Dispatches ``"<split>/<stem>"`` keys to the reader of that split."""

    def __init__(self, readers: dict[str, CityscapesRaw]) -> None:
        self.readers = readers

    def load(self, key: str) -> RawSample:
        split, stem = key.split("/", 1)
        return self.readers[split].load(stem)
