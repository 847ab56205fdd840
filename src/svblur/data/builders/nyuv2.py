"""NYUv2-BSR from ``nyu_depth_v2_labeled.mat`` (HDF5 / MATLAB v7.3).

The labelled NYUv2 file holds ``images`` ``(N, 3, W, H)`` uint8, ``depths`` ``(N, W, H)``
float metres and ``labels`` ``(N, W, H)`` with 894 classes (0 = unlabelled), stored
transposed by MATLAB; :class:`NYUv2Mat` reads sample ``i`` as ``(H, W)`` arrays, depth
in millimetres and labels mapped to the 40 classes with a user-supplied class map.
The train / test split is the official ``splits.mat`` (``trainNdxs`` / ``testNdxs``,
1-based, 795 / 654 images).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from svblur.degradation.pipeline import CameraPrior

from .common import BuildConfig, BuildSummary, RawSample, make_jobs, run_build

__all__ = [
    "NUM_RAW_CLASSES",
    "NYUv2Mat",
    "build_nyuv2",
    "load_class_map",
    "load_nyuv2_splits",
]

#: Raw NYUv2 labels are 0..894 (0 = unlabelled), so a class map has 895 entries.
NUM_RAW_CLASSES = 895


def _loadmat(path: Path) -> dict[str, Any]:
    """Variables of a MATLAB file: scipy for v5 files, h5py for v7.3 (HDF5)."""
    import h5py
    import scipy.io

    try:
        return {k: v for k, v in scipy.io.loadmat(str(path)).items() if not k.startswith("__")}
    except NotImplementedError:  # v7.3
        with h5py.File(path, "r") as handle:
            return {k: np.asarray(v).T for k, v in handle.items() if hasattr(v, "shape")}
    except (ValueError, OSError) as error:
        raise ValueError(f"{path}: cannot read as a MATLAB file ({error})") from error


def load_class_map(path: str | Path) -> np.ndarray:
    """Load the 894 -> 40 class mapping.

    Accepted files:

    - ``.npy``, ``.txt`` or ``.csv``: 895 integers (separated by commas, spaces or new
      lines), entry ``r`` being the 40-class label (0..40, 0 = unlabelled) of raw label
      ``r`` (0..894);
    - ``.mat``: the widely used ``classMapping40.mat``, whose ``mapClass`` lists the
      40-class label of raw labels 1..894 (894 entries; raw 0 maps to 0), or any variable
      with 895 entries.

    Args:
        path: The mapping file.

    Returns:
        ``(895,)`` int64 lookup table.

    Raises:
        ValueError: If the file is missing, unreadable, of the wrong length or holds
            values outside 0..40; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"class map {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        values = np.load(path, allow_pickle=False)
    elif suffix in (".txt", ".csv"):
        tokens = [t for t in re.split(r"[\s,;]+", path.read_text()) if t]
        try:
            values = np.array([int(float(t)) for t in tokens])
        except ValueError as error:
            raise ValueError(f"class map {path}: not a list of integers ({error})") from None
    elif suffix == ".mat":
        variables = _loadmat(path)
        if "mapClass" in variables:
            values = np.asarray(variables["mapClass"]).ravel()
        else:
            sized = [np.asarray(v).ravel() for v in variables.values()]
            sized = [v for v in sized if v.size in (NUM_RAW_CLASSES, NUM_RAW_CLASSES - 1)]
            if not sized:
                raise ValueError(
                    f"class map {path}: no variable 'mapClass' and none with 894 or 895 entries"
                )
            values = sized[0]
    else:
        raise ValueError(
            f"class map {path}: unsupported type {suffix!r}; use .npy, .txt, .csv or .mat"
        )
    values = np.asarray(values).ravel()
    if values.size == NUM_RAW_CLASSES - 1:
        values = np.concatenate([[0], values])  # classMapping40.mat starts at raw label 1
    if values.size != NUM_RAW_CLASSES:
        raise ValueError(
            f"class map {path} has {values.size} entries, expected {NUM_RAW_CLASSES} (index = raw "
            "label 0..894, value = 40-class label 0..40)"
        )
    if not np.all(np.isfinite(values.astype(np.float64))) or values.min() < 0 or values.max() > 40:
        raise ValueError(
            f"class map {path}: values must lie in 0..40, got {values.min()}..{values.max()}"
        )
    table = values.astype(np.int64)
    if table[0] != 0:
        raise ValueError(
            f"class map {path}: raw label 0 (unlabelled) must map to 0, got {table[0]}"
        )
    return table


def load_nyuv2_splits(path: str | Path, num_images: int) -> tuple[list[int], list[int]]:
    """0-based train and test indices from the official ``splits.mat``.

    Args:
        path: ``splits.mat`` with ``trainNdxs`` and ``testNdxs`` (1-based).
        num_images: Number of images in the labelled file.

    Returns:
        ``(train, test)`` sorted index lists.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"split file {path} does not exist; pass --splits with the official NYUv2 "
            "splits.mat (trainNdxs / testNdxs), distributed beside nyu_depth_v2_labeled.mat"
        )
    variables = _loadmat(path)
    missing = [k for k in ("trainNdxs", "testNdxs") if k not in variables]
    if missing:
        raise ValueError(f"split file {path} lacks {missing}")
    train = sorted(int(i) - 1 for i in np.asarray(variables["trainNdxs"]).ravel())
    test = sorted(int(i) - 1 for i in np.asarray(variables["testNdxs"]).ravel())
    bad = [i + 1 for i in train + test if not 0 <= i < num_images]
    if bad:
        raise ValueError(f"split file {path}: indices {bad[:5]} outside 1..{num_images}")
    if set(train) & set(test):
        raise ValueError(f"split file {path}: train and test indices overlap")
    return train, test


class NYUv2Mat:
    """Reader of ``nyu_depth_v2_labeled.mat`` (opened lazily, picklable).

    Args:
        path: The HDF5 (v7.3) ``.mat`` file.
        class_map: ``(895,)`` raw -> 40-class table (see :func:`load_class_map`).
    """

    KEYS = ("images", "depths", "labels")

    def __init__(self, path: str | Path, class_map: np.ndarray) -> None:
        self.path = Path(path)
        self.class_map = np.asarray(class_map, np.int64)
        self._file = None
        handle = self._open()
        shapes = {k: handle[k].shape for k in self.KEYS}
        n = shapes["images"][0]
        if len(shapes["images"]) != 4 or shapes["images"][1] != 3:
            raise ValueError(
                f"{self.path}: 'images' has shape {shapes['images']}, expected (N, 3, W, H)"
            )
        spatial = shapes["images"][2:]
        for key in ("depths", "labels"):
            if shapes[key] != (n, *spatial):
                raise ValueError(
                    f"{self.path}: '{key}' has shape {shapes[key]}, expected {(n, *spatial)} like 'images'"
                )
        self.num_images = int(n)
        self.close()

    def close(self) -> None:
        """Close the HDF5 file (it is reopened on the next :meth:`load`)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self):
        if self._file is None:
            import h5py

            if not self.path.is_file():
                raise ValueError(f"NYUv2 file {self.path} does not exist")
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as error:
                raise ValueError(
                    f"{self.path}: cannot open as HDF5 (MATLAB v7.3) file ({error}); expected "
                    "nyu_depth_v2_labeled.mat"
                ) from None
            missing = [k for k in self.KEYS if k not in self._file]
            if missing:
                raise ValueError(
                    f"{self.path}: missing datasets {missing}; expected {list(self.KEYS)}"
                )
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"] = None
        return state

    def __len__(self) -> int:
        return self.num_images

    def load(self, key: int) -> RawSample:
        """Image ``key`` (0-based): RGB uint8, depth in mm, 40-class labels (0 = unlabelled)."""
        handle = self._open()
        index = int(key)
        image = np.asarray(handle["images"][index]).transpose(2, 1, 0)
        depth = np.asarray(handle["depths"][index], np.float64).T * 1000.0
        raw = np.asarray(handle["labels"][index]).T.astype(np.int64)
        if raw.min() < 0 or raw.max() >= self.class_map.size:
            raise ValueError(f"{self.path}: image {index + 1} has raw labels outside 0..894")
        labels = self.class_map[raw].astype(np.uint8)
        return RawSample(np.ascontiguousarray(image, np.uint8), depth, labels)


def build_nyuv2(
    source: str | Path,
    class_map: str | Path,
    out: str | Path,
    *,
    splits: str | Path | None = None,
    seed: int = 0,
    max_coc: float = 29.0,
    invariant_fraction: float = 0.2,
    camera: CameraPrior | None = None,
    workers: int = 1,
    progress: bool = False,
    limit: int | None = None,
    **run_kwargs: Any,
) -> BuildSummary:
    """Build NYUv2-BSR in the released layout (see :mod:`svblur.data.builders.common`).

    Train images become ``train/``, test images ``val/`` with the five test groups.
    Files are named by the 1-based NYUv2 index (``0001.png``).

    Args:
        source: ``nyu_depth_v2_labeled.mat``.
        class_map: The 894 -> 40 class mapping (see :func:`load_class_map`).
        out: Output root.
        splits: Official ``splits.mat``; default: ``splits.mat`` beside ``source``.
        seed: Build seed.
        max_coc: Largest CoC in pixels.
        invariant_fraction: Share of space-invariant images per split / group.
        camera: The camera prior (default: SYNDOF's, :class:`~svblur.degradation.CameraPrior`).
        workers: Worker processes.
        progress: Show a progress bar.
        limit: Build only the first ``limit`` images of each split (a quick trial).
        **run_kwargs: Passed to :func:`~svblur.data.builders.common.run_build`.

    Returns:
        The :class:`~svblur.data.builders.common.BuildSummary`.
    """
    source = Path(source)
    table = load_class_map(class_map)
    reader = NYUv2Mat(source, table)
    split_file = Path(splits) if splits is not None else source.with_name("splits.mat")
    train, test = load_nyuv2_splits(split_file, len(reader))
    if limit is not None:
        train, test = train[:limit], test[:limit]
    config = BuildConfig(
        dataset="nyuv2",
        seed=int(seed),
        max_coc=float(max_coc),
        invariant_fraction=float(invariant_fraction),
        camera=CameraPrior() if camera is None else camera,
        source={
            "file": source.name,
            "class_map": Path(class_map).name,
            "splits": split_file.name,
            "limit": limit,
        },
    )
    jobs = []
    for split, indices in (("train", train), ("test", test)):
        names = [f"{i + 1:04d}" for i in indices]
        jobs += make_jobs(split, names, indices, config)
    return run_build(reader, jobs, config, out, workers=workers, progress=progress, **run_kwargs)
