"""Sharp RGB-D samples and their sources: NYUv2, Cityscapes, folders of RGB-D pairs or images.

A source (:class:`RGBDSource`) is a picklable, indexable reader of :class:`RGBDSample`
(image, depth in millimetres, labels; depth and labels optional). :class:`NYUv2RGBD` and
:class:`CityscapesRGBD` read the raw data sets through the builders' readers
(:mod:`svblur.data.builders`); :class:`RGBDFolder` reads any folder of RGB-D pairs and
:class:`ImageFolder` any folder of images (depth and labels where they exist);
:func:`load_image_sample` reads one image with what lies beside it. Depth files are 16-bit
PNGs or ``.npy`` arrays, or MPI Sintel ``.dpt`` files (:func:`read_sintel_depth`).

The on-the-fly defocus data set (:mod:`svblur.data.onthefly`) and ReBlurSR
(:mod:`svblur.data.reblursr`) serve these samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Protocol

import numpy as np

from svblur.data.folders import hold_out, list_images
from svblur.errors import InputError
from svblur.io import IMAGE_SUFFIXES, image_size, read_image
from svblur.metrics.functional import IGNORE_INDEX

__all__ = [
    "SINTEL_TAG",
    "CityscapesRGBD",
    "ImageFolder",
    "NYUv2RGBD",
    "RGBDFolder",
    "RGBDSample",
    "RGBDSource",
    "load_image_sample",
    "read_sintel_depth",
]


@dataclass(frozen=True)
class RGBDSample:
    """A sharp RGB-D sample in training conventions.

    Attributes:
        image: RGB ``(H, W, 3)`` float32 in ``[0, 1]``.
        depth: Depth ``(H, W)`` in millimetres (NaN / 0 where unknown), or ``None``.
        seg: Labels ``(H, W)`` int64 in ``[0, K)`` or 255, or ``None``.
    """

    image: np.ndarray
    depth: np.ndarray | None
    seg: np.ndarray | None


class RGBDSource(Protocol):
    """A picklable, indexable reader of :class:`RGBDSample`."""

    def __len__(self) -> int: ...  # pragma: no cover

    def load(self, index: int) -> RGBDSample: ...  # pragma: no cover


class NYUv2RGBD:
    """One split of ``nyu_depth_v2_labeled.mat`` (40 classes, 255 = unlabelled).

    Args:
        path: The HDF5 ``.mat`` file.
        class_map: 894 -> 40 mapping file (see :func:`svblur.data.builders.load_class_map`).
        split: ``"train"``, ``"test"`` or ``"all"``.
        splits: Official ``splits.mat`` (default: beside ``path``).
    """

    def __init__(
        self,
        path: str | Path,
        class_map: str | Path,
        split: str = "train",
        splits: str | Path | None = None,
    ) -> None:
        from svblur.data.builders.nyuv2 import NYUv2Mat, load_class_map, load_nyuv2_splits

        self.reader = NYUv2Mat(path, load_class_map(class_map))
        if split == "all":
            self.indices = list(range(len(self.reader)))
        elif split in ("train", "test"):
            split_file = Path(splits) if splits else Path(path).with_name("splits.mat")
            train, test = load_nyuv2_splits(split_file, len(self.reader))
            self.indices = train if split == "train" else test
        else:
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> RGBDSample:
        raw = self.reader.load(self.indices[index])
        labels = raw.labels.astype(np.int64)
        seg = np.where(labels == 0, IGNORE_INDEX, labels - 1)
        return RGBDSample(raw.image.astype(np.float32) / np.float32(255), raw.depth, seg)


class CityscapesRGBD:
    """One Cityscapes split: RGB, depth from disparity, train ids (19 classes).

    Args:
        root: Cityscapes root.
        split: ``"train"``, ``"val"`` or ``"test"``.
        disparity_folder: Folder of the disparity maps under ``root``.
    """

    def __init__(self, root: str | Path, split: str = "train", disparity_folder: str = "disparity"):
        from svblur.data.builders.cityscapes import CityscapesRaw

        self.reader = CityscapesRaw(root, split, disparity_folder)

    def __len__(self) -> int:
        return len(self.reader)

    def load(self, index: int) -> RGBDSample:
        raw = self.reader.load(self.reader.stems[index])
        image = raw.image.astype(np.float32) / np.float32(255)
        return RGBDSample(image, raw.depth, raw.labels.astype(np.int64))


# --------------------------------------------------------------------------- files
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


def _read_depth(path: Path, depth_scale: float) -> np.ndarray:
    """A depth map file (16-bit PNG or ``.npy``) in millimetres."""
    if path.suffix == ".npy":
        depth = np.load(path).astype(np.float64)
    else:
        depth = read_image(path, "unchanged")
        if depth.ndim != 2:
            raise InputError(f"{path}: expected a 1-channel depth PNG")
        depth = depth.astype(np.float64)
    return depth * depth_scale


def _find_depth(folder: Path, stem: str) -> Path | None:
    found = [p for p in (folder / f"{stem}.png", folder / f"{stem}.npy") if p.is_file()]
    return found[0] if found else None


def _load_sample(
    image_path: Path, depth_path: Path | None, seg_path: Path | None, depth_scale: float
) -> RGBDSample:
    image = read_image(image_path, "rgb")
    depth = None if depth_path is None else _read_depth(depth_path, depth_scale)
    seg = None
    if seg_path is not None and seg_path.is_file():
        seg = read_image(seg_path, "labels").astype(np.int64)
    for name, array in (("depth", depth), ("labels", seg)):
        if array is not None and array.shape != image.shape[:2]:
            raise InputError(
                f"{image_path}: its {name} is {array.shape[1]}x{array.shape[0]}, the image "
                f"{image.shape[1]}x{image.shape[0]}"
            )
    return RGBDSample(image, depth, seg)


def load_image_sample(path: str | Path, depth_scale: float = 1.0) -> RGBDSample:
    """An image with its depth (``<folder>/depth/<stem>.png|npy``) and labels
    (``<folder>/semseg/<stem>.png``) where they exist beside it (``None`` where not)."""
    path = Path(path)
    depth = _find_depth(path.parent / "depth", path.stem)
    return _load_sample(path, depth, path.parent / "semseg" / f"{path.stem}.png", depth_scale)


# --------------------------------------------------------------------------- folders
class RGBDFolder:
    """Any folder of RGB-D pairs.

    Layout (files matched by stem)::

        <root>/rgb/<name>.png|jpg      8- or 16-bit RGB (read as stored: no EXIF rotation)
        <root>/depth/<name>.png|npy    16-bit PNG or float .npy; millimetres = value * depth_scale
                                       (0 / NaN = unknown)
        <root>/semseg/<name>.png       optional labels 0..K-1, 255 = ignore (one channel,
                                       or a palette PNG)

    Args:
        root: The folder.
        depth_scale: Millimetres per stored depth unit (1 for PNGs in mm, 1000 for
            ``.npy`` in metres).
    """

    has_depth = True

    def __init__(self, root: str | Path, depth_scale: float = 1.0) -> None:
        self.root = Path(root)
        self.depth_scale = float(depth_scale)
        rgb = self.root / "rgb"
        if not rgb.is_dir():
            raise InputError(f"missing folder {rgb} (expected <root>/rgb, <root>/depth)")
        self.images = list_images(rgb, (".png", ".jpg", ".jpeg"))
        if not self.images:
            raise InputError(f"no images in {rgb}")
        self.depths = []
        for image in self.images:
            depth = _find_depth(self.root / "depth", image.stem)
            if depth is None:
                stem = self.root / "depth" / image.stem
                raise InputError(f"missing depth for {image}: expected {stem}.png or {stem}.npy")
            self.depths.append(depth)

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> RGBDSample:
        path = self.images[index]
        sample = _load_sample(
            path, self.depths[index], self.root / "semseg" / f"{path.stem}.png", self.depth_scale
        )
        seg = sample.seg
        if seg is None:
            seg = np.full(sample.image.shape[:2], IGNORE_INDEX, np.int64)
        return RGBDSample(sample.image, sample.depth, seg)


class ImageFolder:
    """Any folder of sharp HR images, optionally with depth and labels, as a source.

    Layout (files matched by stem)::

        <root>/<name>.png|jpg|...       the images (any of svblur.io.IMAGE_SUFFIXES)
        <root>/depth/<name>.png|npy     optional depth; millimetres = value * depth_scale
        <root>/semseg/<name>.png        optional labels 0..K-1, 255 = ignore

    With ``<root>/train`` and ``<root>/test`` folders of that layout, ``split`` picks one;
    otherwise a fixed, seeded ``test_fraction`` of the images is the test split. Every
    image's header is checked when the folder is opened, so a bad file among good ones is
    named before training starts. Depth is all or nothing: :attr:`has_depth` tells.

    Args:
        root: The folder.
        split: ``"train"``, ``"test"`` or ``"all"``.
        depth_scale: Millimetres per stored depth unit.
        test_fraction: Held-out share when the folder has no ``train``/``test`` split.
        seed: Seed of that hold-out.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        depth_scale: float = 1.0,
        test_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        if split not in ("train", "test", "all"):
            raise InputError(f"split must be 'train', 'test' or 'all', got {split!r}")
        base = Path(root)
        if not base.is_dir():
            raise InputError(f"data.root: no folder at '{base}' (expected a folder of images)")
        presplit = (base / "train").is_dir() and (base / "test").is_dir()
        self.root = base / split if presplit and split != "all" else base
        self.depth_scale = float(depth_scale)
        images = list_images(self.root)
        if not images:
            raise InputError(f"no images in {self.root} (expected {sorted(IMAGE_SUFFIXES)} files)")
        bad = []
        for path in images:
            try:
                image_size(path)
            except (InputError, OSError) as error:
                bad.append(str(error))
        if bad:
            raise InputError(
                f"{len(bad)} of {len(images)} images in {self.root} cannot be read: "
                + "; ".join(bad[:5])
            )
        if not presplit and split != "all":
            kept, held = [0], []  # one image: all of it trains
            if len(images) > 1:
                kept, held = hold_out(
                    len(images),
                    test_fraction,
                    seed,
                    owner=f"the image folder {base}",
                    unit="image",
                    setting="test_fraction",
                    purpose="for testing",
                    hint="give <root>/train and <root>/test folders",
                    salt=13,
                )
            images = [images[i] for i in (held if split == "test" else kept)]
            if not images:
                raise InputError(
                    f"{base}: too few images for a {split} split (test_fraction={test_fraction})"
                )
        self.images = images
        depths = [_find_depth(self.root / "depth", p.stem) for p in images]
        found = sum(d is not None for d in depths)
        if 0 < found < len(images):
            missing = [p.name for p, d in zip(images, depths) if d is None]
            raise InputError(
                f"{self.root / 'depth'}: depth for {found} of {len(images)} images; missing "
                f"for {missing[:5]} (give depth for every image or for none)"
            )
        self.depths = depths if found else None

    @property
    def has_depth(self) -> bool:
        return self.depths is not None

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> RGBDSample:
        path = self.images[index]
        depth = None if self.depths is None else self.depths[index]
        return _load_sample(
            path, depth, self.root / "semseg" / f"{path.stem}.png", self.depth_scale
        )
