"""Readers of the released NYUv2-BSR and Cityscapes-BSR archives.

Released layout (files of a split are matched by sorted name)::

    <root>/train/GT/        sharp HR images (the SR target)
    <root>/train/LRx4/      defocused, x4 bicubic-downsampled LR inputs
    <root>/train/blur/      blur maps: uint16 PNG, 3 equal channels, value = round(sigma * 10)
    <root>/train/semseg/    labels (NYUv2: 0 = unlabelled, 1..40; Cityscapes: train ids, 255)
    <root>/val/GT/          sharp HR test images
    <root>/val/semseg/      their labels
    <root>/val/Group{1..5}/LRx4/, <root>/val/Group{1..5}/blur/
                            the five test groups (each makes a different share of the
                            images space-invariant, everything else identical)

:func:`validate_bsr_root` checks the whole tree up-front and raises one
:class:`BSRDataError` listing every problem with the file or folder it concerns;
:class:`NYUv2BSRDataModule` and :class:`CityscapesBSRDataModule` run it in ``setup``.
Released archives carry no depth, so batches have no ``depth`` key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from svblur.data.folders import (
    DataLayoutError,
    check_data_folder,
    check_fraction,
    hold_out,
    require_root,
)
from svblur.data.folders import list_images as _list_images
from svblur.data.loaders import WorkerRNG
from svblur.data.mixins import SplitsDataMixin
from svblur.data.transforms import crop_windows
from svblur.degradation import blur_map_from_png
from svblur.errors import InputError
from svblur.io import ImageMode, image_size, read_image
from svblur.metrics.functional import IGNORE_INDEX

__all__ = [
    "BSR_DATASETS",
    "BSR_LAYOUT",
    "GROUP_NAMES",
    "IMAGE_SUFFIXES",
    "BSRDataError",
    "BSRDataModule",
    "BSRFolderDataset",
    "BSRSpec",
    "CityscapesBSRDataModule",
    "NYUv2BSRDataModule",
    "bsr_split_folders",
    "convert_labels",
    "list_images",
    "sample_key",
    "validate_bsr_root",
]

#: Names of the five test groups, in the order of the test dataloaders.
GROUP_NAMES: tuple[str, ...] = tuple(f"Group{g}" for g in range(1, 6))
#: File name endings treated as images.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# Endings that name the role of a file rather than the sample ("aachen_000000_000019_leftImg8bit"
# and "aachen_000000_000019_gtFine_labelTrainIds" are the same sample).
_ROLE_SUFFIX = re.compile(
    r"(_leftImg8bit|_gtFine_labelTrainIds|_gtFine_labelIds|_labelTrainIds|_labelIds|_disparity"
    r"|_blur|_LRx\d+|_x\d+|_GT|_HR|_LR|_semseg|_label|_seg|_depth)$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class BSRSpec:
    """Label convention and size of one released data set.

    Attributes:
        name: ``"nyuv2"`` or ``"cityscapes"``.
        title: Human-readable name used in messages.
        num_classes: Number of semantic classes after conversion.
        max_raw_label: Largest valid stored label other than 255.
    """

    name: str
    title: str
    num_classes: int
    max_raw_label: int


#: The supported data sets.
BSR_DATASETS: dict[str, BSRSpec] = {
    "nyuv2": BSRSpec("nyuv2", "NYUv2-BSR", 40, 40),
    "cityscapes": BSRSpec("cityscapes", "Cityscapes-BSR", 19, 18),
}


def _spec(dataset: str) -> BSRSpec:
    if dataset not in BSR_DATASETS:
        raise ValueError(f"dataset must be one of {sorted(BSR_DATASETS)}, got {dataset!r}")
    return BSR_DATASETS[dataset]


#: The layout :class:`BSRDataError` messages end with.
BSR_LAYOUT = (
    "<root>/train/{GT,LRx4,blur,semseg}, <root>/val/{GT,semseg} and "
    "<root>/val/Group{1..5}/{LRx4,blur}, with the same file names in matching folders "
    "(run `svblur-check-data ROOT --dataset ...` to re-check)."
)

#: The error of an unusable released tree (the readers' common
#: :class:`~svblur.data.folders.DataLayoutError`; this name is kept for callers).
BSRDataError = DataLayoutError


def _layout_error(problems: Sequence[str], root: str | Path, title: str = "BSR") -> BSRDataError:
    return BSRDataError(problems, root, title, BSR_LAYOUT)


def convert_labels(raw: np.ndarray, dataset: str) -> np.ndarray:
    """Stored labels -> training labels (int64, ``255`` = ignore).

    NYUv2-BSR stores the 40-class labels 1..40 with 0 = unlabelled: 0 becomes 255 and
    the others are shifted down by one. Cityscapes-BSR stores train ids 0..18 with 255
    = ignore, used as they are.

    Args:
        raw: Stored label image ``(H, W)``, any integer type.
        dataset: ``"nyuv2"`` or ``"cityscapes"``.

    Returns:
        ``(H, W)`` int64 labels in ``[0, num_classes)`` or 255.
    """
    spec = _spec(dataset)
    labels = np.asarray(raw).astype(np.int64)
    if spec.name == "nyuv2":
        return np.where(labels == 0, IGNORE_INDEX, labels - 1)
    return labels


def sample_key(path: str | Path) -> str:
    """The sample name of a file: its stem without a role suffix such as ``_leftImg8bit``."""
    return _ROLE_SUFFIX.sub("", Path(path).stem)


def list_images(folder: str | Path) -> list[Path]:
    """Image files (:data:`IMAGE_SUFFIXES`) directly inside ``folder``, sorted by name, hidden
    files left out (:func:`svblur.data.folders.list_images`)."""
    return _list_images(folder, IMAGE_SUFFIXES)


def bsr_split_folders(root: str | Path, split: str, scale: int = 4) -> dict[str, Path]:
    """Folders of ``hr``, ``lr``, ``blur`` and ``seg`` for ``split`` (``train`` or ``GroupN``)."""
    root = Path(root)
    lr_name = f"LRx{scale}"
    if split == "train":
        base = root / "train"
        return {
            "hr": base / "GT",
            "lr": base / lr_name,
            "blur": base / "blur",
            "seg": base / "semseg",
        }
    if split in GROUP_NAMES:
        val = root / "val"
        return {
            "hr": val / "GT",
            "lr": val / split / lr_name,
            "blur": val / split / "blur",
            "seg": val / "semseg",
        }
    raise ValueError(f"split must be 'train' or one of {list(GROUP_NAMES)}, got {split!r}")


def validate_bsr_root(
    root: str | Path, dataset: str = "nyuv2", *, scale: int = 4, decode: bool = False
) -> dict[str, int]:
    """Check a released-layout tree and raise one error listing every problem.

    Checks: every folder exists; the four folders of each split (``train`` and each
    ``GroupN``) hold the same number of images; files at the same sorted position name
    the same sample (see :func:`sample_key`); every image opens and is not truncated
    (PNG/JPEG end marker); LR is exactly ``1 / scale`` of HR in both dimensions; blur map
    and labels have the HR size. With ``decode=True`` every image is fully decoded too,
    and stored labels must lie in the data set's range.

    Args:
        root: Data root.
        dataset: ``"nyuv2"`` or ``"cityscapes"``.
        scale: LR factor (folder ``LRx{scale}``).
        decode: Decode every image fully (slower, catches corrupt pixel data).

    Returns:
        Number of samples per split: ``{"train": n, "Group1": m, ..., "Group5": m}``.

    Raises:
        BSRDataError: If anything is wrong; its message names each file or folder.
    """
    spec = _spec(dataset)
    root = Path(root)
    check_data_folder(root, spec.title, BSR_LAYOUT)
    splits = ("train", *GROUP_NAMES)
    folders = {split: bsr_split_folders(root, split, scale) for split in splits}
    unique = sorted({folder for roles in folders.values() for folder in roles.values()})
    missing = [f"missing folder {folder}" for folder in unique if not folder.is_dir()]
    if missing:
        raise _layout_error(missing, root, spec.title)

    listing = {folder: list_images(folder) for folder in unique}
    problems: list[str] = []
    counts: dict[str, int] = {}
    usable: list[str] = []
    for split, roles in folders.items():
        sizes = {role: len(listing[folder]) for role, folder in roles.items()}
        if len(set(sizes.values())) != 1:
            detail = ", ".join(f"{roles[r]} has {n}" for r, n in sizes.items())
            problems.append(f"unequal image counts in split {split}: {detail}")
            continue
        count = sizes["hr"]
        if count == 0:
            problems.append(f"no images in {roles['hr']}")
            continue
        mismatches = []
        for position in range(count):
            hr_path = listing[roles["hr"]][position]
            for role in ("lr", "blur", "seg"):
                other = listing[roles[role]][position]
                if sample_key(other) != sample_key(hr_path):
                    mismatches.append(
                        f"mismatched names in split {split} at sorted position {position}: "
                        f"{hr_path} vs {other}"
                    )
        problems += mismatches[:10]
        if len(mismatches) > 10:
            problems.append(f"... {len(mismatches) - 10} more mismatched names in split {split}")
        counts[split] = count
        if not mismatches:
            usable.append(split)

    # Probe every file once (val/GT and val/semseg are shared by the five groups).
    probed: dict[Path, tuple[int, int]] = {}
    for folder in unique:
        is_seg = folder.name == "semseg"
        for path in listing[folder]:
            try:
                if decode:
                    array = read_image(path, "labels" if is_seg else "unchanged")
                    size = (array.shape[1], array.shape[0])
                else:
                    array, size = None, image_size(path)
            except InputError as error:
                problems.append(str(error))
                continue
            probed[path] = size
            if array is not None and is_seg:
                bad = (array != IGNORE_INDEX) & (array > spec.max_raw_label)
                if bad.any():
                    problems.append(
                        f"labels out of range in {path}: found {int(array[bad].max())}, "
                        f"{spec.title} stores 0..{spec.max_raw_label} or 255"
                    )

    for split in usable:
        roles = folders[split]
        for position in range(counts[split]):
            hr_path = listing[roles["hr"]][position]
            if hr_path not in probed:
                continue
            width, height = probed[hr_path]
            lr_path = listing[roles["lr"]][position]
            if lr_path in probed:
                lr_size = probed[lr_path]
                if (lr_size[0] * scale, lr_size[1] * scale) != (width, height):
                    problems.append(
                        f"LR {lr_path} is {lr_size[0]}x{lr_size[1]} (WxH) but HR {hr_path} is "
                        f"{width}x{height}: LR must be exactly 1/{scale} of HR, i.e. "
                        f"{width / scale:g}x{height / scale:g}"
                    )
            for role in ("blur", "seg"):
                path = listing[roles[role]][position]
                if path in probed and probed[path] != (width, height):
                    problems.append(
                        f"{role} map {path} is {probed[path][0]}x{probed[path][1]} (WxH) but HR "
                        f"{hr_path} is {width}x{height}"
                    )
    if problems:
        raise _layout_error(problems, root, spec.title)
    return counts


def _read(path: Path, mode: ImageMode) -> np.ndarray:
    """:func:`svblur.io.read_image`, its error reported as a :class:`BSRDataError`."""
    try:
        return read_image(path, mode)
    except InputError as error:
        raise _layout_error([str(error)], path.parent) from None


class BSRFolderDataset(Dataset):
    """One split of a released NYUv2-BSR / Cityscapes-BSR tree.

    Does not validate the tree (call :func:`validate_bsr_root` first, as the DataModules
    do); files are paired by sorted position.

    Training augmentation (``crop_size`` and flips) draws from a per-process generator
    seeded by ``seed`` and the torch seed of the process or worker, so crops differ
    across epochs and workers and follow ``lightning.seed_everything``.

    Args:
        root: Data root.
        split: ``"train"`` or ``"Group1"`` ... ``"Group5"``.
        dataset: ``"nyuv2"`` or ``"cityscapes"`` (label convention).
        indices: Subset of sorted positions to serve (default: all).
        crop_size: HR ``(H, W)`` of a random aligned crop (each divisible by ``scale``);
            ``None`` serves whole images.
        hflip: Random horizontal flips (probability 1/2).
        vflip: Random vertical flips (probability 1/2).
        scale: LR factor (folder ``LRx{scale}``).
        seed: Seed of the augmentation generator.

    Each item is a dict: ``lr`` ``(3, H/s, W/s)`` float32 in ``[0, 1]``, ``hr``
    ``(3, H, W)`` float32, ``blur`` ``(1, H, W)`` float32 sigma in HR pixels, ``seg``
    ``(H, W)`` int64 (255 = ignore).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        dataset: str = "nyuv2",
        *,
        indices: Sequence[int] | None = None,
        crop_size: Sequence[int] | None = None,
        hflip: bool = False,
        vflip: bool = False,
        scale: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.spec = _spec(dataset)
        self.root = Path(root)
        self.split = split
        self.scale = int(scale)
        folders = bsr_split_folders(self.root, split, self.scale)
        files = {}
        for role, folder in folders.items():
            if not folder.is_dir():
                raise _layout_error([f"missing folder {folder}"], self.root, self.spec.title)
            files[role] = list_images(folder)
        counts = {len(v) for v in files.values()}
        if len(counts) != 1:
            counts_by_role = {role: len(paths) for role, paths in files.items()}
            raise _layout_error(
                [f"unequal image counts in split {split}: {counts_by_role}"],
                self.root,
                self.spec.title,
            )
        total = counts.pop()
        self.indices = list(range(total)) if indices is None else [int(i) for i in indices]
        for i in self.indices:
            if not 0 <= i < total:
                raise IndexError(f"index {i} out of range for {total} samples in split {split}")
        self.files = files
        if crop_size is not None:
            crop_size = (int(crop_size[0]), int(crop_size[1]))
            if crop_size[0] % self.scale or crop_size[1] % self.scale:
                raise ValueError(
                    f"crop_size must be divisible by scale={self.scale}, got {crop_size}; use e.g. "
                    f"{(crop_size[0] // self.scale * self.scale, crop_size[1] // self.scale * self.scale)}"
                )
        self.crop_size = crop_size
        self.hflip = bool(hflip)
        self.vflip = bool(vflip)
        self.seed = int(seed)
        self._worker_rng = WorkerRNG(self.seed, 7)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def names(self) -> list[str]:
        """Sample names (HR file stems) in item order."""
        return [sample_key(self.files["hr"][i]) for i in self.indices]

    def _rng(self) -> np.random.Generator:
        return self._worker_rng()

    def load(self, index: int) -> dict[str, np.ndarray]:
        """Sample ``index`` as numpy arrays (HWC images, no augmentation)."""
        position = self.indices[index]
        hr = _read(self.files["hr"][position], "rgb")
        lr = _read(self.files["lr"][position], "rgb")
        blur = np.asarray(blur_map_from_png(self.files["blur"][position]), np.float32)
        seg = convert_labels(_read(self.files["seg"][position], "labels"), self.spec.name)
        return {"lr": lr, "hr": hr, "blur": blur, "seg": seg}

    def _augment(self, sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rng = self._rng()
        s = self.scale
        if self.crop_size is not None:
            lr_h, lr_w = sample["lr"].shape[:2]
            crop_h, crop_w = self.crop_size[0] // s, self.crop_size[1] // s
            if crop_h > lr_h or crop_w > lr_w:
                raise ValueError(
                    f"crop_size {self.crop_size} is larger than the HR image "
                    f"{(lr_h * s, lr_w * s)}; lower data.crop_size"
                )
            lr_window, hr_window = crop_windows((lr_h, lr_w), self.crop_size, s, rng)
            sample["lr"] = sample["lr"][lr_window]
            for key in ("hr", "blur", "seg"):
                sample[key] = sample[key][hr_window]
        flip_h = self.hflip and rng.random() < 0.5
        flip_v = self.vflip and rng.random() < 0.5
        for key in sample:
            if flip_h:
                sample[key] = sample[key][:, ::-1]
            if flip_v:
                sample[key] = sample[key][::-1]
        return sample

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.load(index)
        if self.crop_size is not None or self.hflip or self.vflip:
            sample = self._augment(sample)
        return {
            "lr": torch.from_numpy(np.ascontiguousarray(sample["lr"].transpose(2, 0, 1))),
            "hr": torch.from_numpy(np.ascontiguousarray(sample["hr"].transpose(2, 0, 1))),
            "blur": torch.from_numpy(np.ascontiguousarray(sample["blur"]))[None],
            "seg": torch.from_numpy(np.ascontiguousarray(sample["seg"])),
        }


class BSRDataModule(SplitsDataMixin, L.LightningDataModule):
    """Train / val / five-group test loaders over a released BSR tree.

    ``setup`` first runs :meth:`validate` (once), so a broken tree fails before training
    with a message naming each bad file. Validation data comes from ``val_source``:

    - ``"train"`` (default): a held-out ``val_fraction`` of the training images (a fixed
      seeded subset, full images, no augmentation); the remaining images train;
    - ``"test"``: the test images of ``val_group`` (as the authors' code does; it selects
      models on test data, so prefer ``"train"`` for honest numbers).

    ``test_dataloader`` returns one loader per group in :attr:`test_group_names`, so the
    task reports ``test/Group1/...`` .. ``test/Group5/...`` and their mean, like the
    paper's tables.

    Args:
        root: Data root (the folder that holds ``train/`` and ``val/``).
        dataset: ``"nyuv2"`` or ``"cityscapes"``.
        num_classes: Must match the data set (40 or 19); ``None`` takes it from there.
        scale: LR factor of the archive (4 for the released data).
        batch_size: Training batch size.
        eval_batch_size: Batch size of the validation and test loaders (whole images).
        num_workers: Loader worker processes.
        pin_memory: Pin batches in page-locked memory.
        persistent_workers: Keep workers alive between epochs (when ``num_workers > 0``).
        crop_size: HR ``(H, W)`` of random training crops; ``None`` trains on whole images.
        hflip: Random horizontal flips in training.
        vflip: Random vertical flips in training.
        val_source: ``"train"`` or ``"test"`` (see above).
        val_fraction: Share of the training images held out when ``val_source="train"``.
        val_group: Test group used when ``val_source="test"``.
        seed: Seed of the held-out subset, the shuffling and the augmentation.
        check_decode: Make :meth:`validate` decode every image fully.
    """

    dataset_name = "nyuv2"

    def __init__(
        self,
        root: str | Path,
        dataset: str | None = None,
        num_classes: int | None = None,
        scale: int = 4,
        batch_size: int = 8,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        crop_size: Sequence[int] | None = (256, 256),
        hflip: bool = True,
        vflip: bool = False,
        val_source: str = "train",
        val_fraction: float = 0.05,
        val_group: str = "Group1",
        seed: int = 0,
        check_decode: bool = False,
    ) -> None:
        super().__init__()
        dataset = dataset or self.dataset_name
        self.spec = _spec(dataset)
        if num_classes is not None and int(num_classes) != self.spec.num_classes:
            raise ValueError(
                f"{self.spec.title} has {self.spec.num_classes} classes, got num_classes="
                f"{num_classes}; set data.num_classes={self.spec.num_classes}"
            )
        if val_source not in ("train", "test"):
            raise ValueError(f"val_source must be 'train' or 'test', got {val_source!r}")
        if val_source == "train":
            check_fraction("val_fraction", val_fraction)
        if val_group not in GROUP_NAMES:
            raise ValueError(f"val_group must be one of {list(GROUP_NAMES)}, got {val_group!r}")
        self.set_loader_settings(
            batch_size, eval_batch_size, num_workers, pin_memory, persistent_workers, seed
        )
        data_root = require_root(root, f"the folder of the {self.spec.title} archive")
        self.save_hyperparameters(logger=False)
        self.root = data_root
        self.dataset = self.spec.name
        self.num_classes = self.spec.num_classes
        self.scale = int(scale)
        self.crop_size = None if crop_size is None else (int(crop_size[0]), int(crop_size[1]))
        self.hflip = bool(hflip)
        self.vflip = bool(vflip)
        self.val_source = val_source
        self.val_fraction = float(val_fraction)
        self.val_group = val_group
        self.check_decode = bool(check_decode)
        self.test_group_names: list[str] = list(GROUP_NAMES)
        self.counts: dict[str, int] | None = None
        self.datasets: dict[str, Dataset] = {}

    def validate(self) -> dict[str, int]:
        """Check the tree once (see :func:`validate_bsr_root`); returns samples per split."""
        if self.counts is None:
            self.counts = validate_bsr_root(
                self.root, self.dataset, scale=self.scale, decode=self.check_decode
            )
        return self.counts

    def _train_val_indices(self) -> tuple[list[int], list[int]]:
        total = self.validate()["train"]
        if self.val_source == "test":
            return list(range(total)), []
        return hold_out(
            total,
            self.val_fraction,
            self.seed,
            owner=f"the {self.spec.title} train split",
            unit="image",
            hint="set data.val_source=test",
        )

    def setup(self, stage: str | None = None) -> None:
        """Validate the tree, then create the data sets needed by ``stage``."""
        self.validate()
        common = {"dataset": self.dataset, "scale": self.scale}
        if stage in (None, "fit", "validate") and "train" not in self.datasets:
            train_idx, val_idx = self._train_val_indices()
            self.datasets["train"] = BSRFolderDataset(
                self.root,
                "train",
                indices=train_idx,
                crop_size=self.crop_size,
                hflip=self.hflip,
                vflip=self.vflip,
                seed=self.seed,
                **common,
            )
            if self.val_source == "train":
                self.datasets["val"] = BSRFolderDataset(
                    self.root, "train", indices=val_idx, **common
                )
            else:
                self.datasets["val"] = BSRFolderDataset(self.root, self.val_group, **common)
        if stage in (None, "test", "predict"):
            for group in self.test_group_names:
                if group not in self.datasets:
                    self.datasets[group] = BSRFolderDataset(self.root, group, **common)

    def _loader(self, key: str, shuffle: bool, batch_size: int) -> DataLoader:
        if key not in self.datasets:
            self.setup(None)
        return super()._loader(key, shuffle, batch_size)


class NYUv2BSRDataModule(BSRDataModule):
    """:class:`BSRDataModule` for NYUv2-BSR (40 classes, HR 480x640, LR 120x160)."""

    dataset_name = "nyuv2"

    def __init__(self, root: str | Path, **kwargs) -> None:
        kwargs.setdefault("dataset", "nyuv2")
        super().__init__(root, **kwargs)


class CityscapesBSRDataModule(BSRDataModule):
    """:class:`BSRDataModule` for Cityscapes-BSR (19 train-id classes, 255 = ignore)."""

    dataset_name = "cityscapes"

    def __init__(self, root: str | Path, **kwargs) -> None:
        kwargs.setdefault("dataset", "cityscapes")
        super().__init__(root, **kwargs)
