"""ReBlurSR: real photos with intended defocus or motion blur, and their blur masks (PBaSR).

ReBlurSR (Qin et al., "A New Dataset and Framework for Real-World Blurred Images
Super-Resolution", 2024) holds 2,811 training and 120 test HR photos whose blur is meant
to be kept by SR, each with a mask of its blurred region. The release unpacks to
``ALL_HR``/``ALL_mask``; its ``train_validation_split.py`` sorts them into the layout read
here (files of a folder pair are matched by stem)::

    <root>/train/{defocus,motion}/HR/<stem>.png|jpg|...     HR photos
    <root>/train/{defocus,motion}/mask/<stem>.png|...       their masks
    <root>/valid/{defocus,motion}/HR, .../mask              the test split (ReBlurSR-Test)
    <root>/valid/{defocus,motion}/LR/X4/<stem>.png          its released LR (BSRGAN +
                                                            Real-ESRGAN degradations)

``split="test"`` reads ``valid/`` (``split_folder`` names another); ``blur_types=None``
reads ``<root>/<split folder>/{HR,mask}`` directly; ``hr_folder``, ``mask_folder`` and
``lr_folder`` rename the leaves.

Masks as released: 0 = blurred, 255 = sharp (a mask holding only 0 and 1 is read as
0 = blurred, 1 = sharp). They become svblur's ``blur_mask`` (float32, 1 = blurred, see
:data:`svblur.degradation.pipeline.SAMPLE_KEYS`). A mask with other grey levels (a JPEG,
a resampled mask) is thresholded at 128 (below = blurred), and the reader logs that once.

:class:`ReBlurSRFolder` lists and checks one split when it is built and raises a
:class:`ReBlurSRDataError` naming every problem (missing folder, image without mask, mask
without image, size mismatch, unreadable file). It is an
:class:`~svblur.data.rgbd.RGBDSource` (``load`` gives the photo without depth or
labels); :meth:`ReBlurSRFolder.load_with_mask` adds the mask. :class:`ReBlurSRDataset`
crops photo and mask together and makes the LR with the degradation's downsampling and LR
steps only (the photos are already blurred), or reads the released LR;
:class:`ReBlurSRDataModule` serves training, a held-out validation part and the test split
(one group per blur type). Batches: ``lr`` ``(B, 3, h, w)``, ``hr`` ``(B, 3, H, W)``,
``blur_mask`` ``(B, 1, H, W)``, ``name`` (``"<blur type>/<stem>"``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from svblur.data.folder_sr import FolderSRDataModule, FolderSRDataset, image_tensor
from svblur.data.folders import (
    DataLayoutError,
    check_crop_fits,
    check_data_folder,
    check_scale,
    crop_pair,
    images_by_stem,
    require_root,
    shown_names,
)
from svblur.data.rgbd import RGBDSample
from svblur.degradation.pipeline import SamplePipeline
from svblur.errors import InputError
from svblur.io import image_size, read_image

__all__ = [
    "REBLURSR_BLUR_TYPES",
    "ReBlurSRDataError",
    "ReBlurSRDataModule",
    "ReBlurSRDataset",
    "ReBlurSRFolder",
    "ReBlurSRItem",
    "blur_mask_from_released",
]

log = logging.getLogger(__name__)

#: The blur types of the release, one subfolder each.
REBLURSR_BLUR_TYPES: tuple[str, ...] = ("defocus", "motion")

#: Split name -> its folder in the release (the split script writes ``valid/``).
_SPLIT_FOLDERS = {"train": "train", "test": "valid"}
#: Released mask values at or above this are sharp when a mask is not binary.
_MASK_THRESHOLD = 128


#: The error of an unusable ReBlurSR tree (the readers' common
#: :class:`~svblur.data.folders.DataLayoutError`; this name is kept for callers).
ReBlurSRDataError = DataLayoutError


@dataclass(frozen=True)
class ReBlurSRItem:
    """One photo of a split.

    Attributes:
        name: ``"<blur type>/<stem>"`` (``"<stem>"`` without blur-type folders).
        blur_type: ``"defocus"``, ``"motion"`` (the subfolder), or ``""``.
        hr: The HR photo.
        mask: Its mask.
        lr: Its released LR image, or ``None``.
        size: ``(H, W)`` of the photo from its header; ``None`` when not checked.
    """

    name: str
    blur_type: str
    hr: Path
    mask: Path
    lr: Path | None = None
    size: tuple[int, int] | None = None


def blur_mask_from_released(raw: np.ndarray) -> tuple[np.ndarray, bool]:
    """svblur's ``blur_mask`` (1 = blurred) from a released mask (0 = blurred, 255 = sharp).

    Args:
        raw: The stored samples, ``(H, W)`` or ``(H, W, C)`` (colour channels are averaged,
            an alpha channel is dropped), 8- or 16-bit (16-bit is scaled to 8 bits).

    Returns:
        ``(mask, binary)``: the mask, float32 ``(H, W)`` in ``{0, 1}``, and whether the
        stored mask was binary (only 0 and 255, or only 0 and 1, where 1 = sharp); a mask
        that is not is thresholded at 128 (below = blurred).
    """
    values = np.asarray(raw)
    if values.ndim == 3:
        colour = values[..., : 3 if values.shape[2] >= 3 else 1]
        values = colour[..., 0] if colour.shape[2] == 1 else colour.mean(axis=2)
    if values.dtype == np.uint16:
        values = values / 257.0
    levels = np.unique(values)
    if np.isin(levels, (0, 1)).all():
        return (values < 1).astype(np.float32), True
    binary = bool(np.isin(levels, (0, 255)).all())
    return (values < _MASK_THRESHOLD).astype(np.float32), binary


class ReBlurSRFolder:
    """One split of ReBlurSR: HR photos with their blur masks (and, optionally, LR).

    The tree is checked when the object is built: the split and blur-type folders, equal
    stem lists in the HR and mask folders (and the LR folder when given) and, with
    ``check_sizes``, every header: mask and photo of equal size, LR of
    ``(H // scale, W // scale)``, no truncated file. Mask values are checked when read.

    Args:
        root: The folder holding ``train/`` and ``valid/`` (see the module docstring).
        split: ``"train"`` or ``"test"``.
        blur_types: The blur-type subfolders to read, in order; ``None`` or empty: none
            (``<root>/<split folder>/{HR,mask}``).
        hr_folder: The HR photos' folder name.
        mask_folder: The masks' folder name.
        lr_folder: The released LR images' folder (relative to the blur-type folder, e.g.
            ``"LR/X4"``); ``None``: no LR is read (the data set makes it).
        scale: LR factor (checks the LR size).
        split_folder: The split's folder; ``None``: ``train`` or ``valid`` (the release).
        check_sizes: Read every header (sizes, truncated files).

    Raises:
        ReBlurSRDataError: The tree is not usable; the message names each problem.
    """

    has_depth = False
    title = "ReBlurSR"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        blur_types: Sequence[str] | None = REBLURSR_BLUR_TYPES,
        hr_folder: str = "HR",
        mask_folder: str = "mask",
        lr_folder: str | None = None,
        scale: int = 4,
        split_folder: str | None = None,
        check_sizes: bool = True,
    ) -> None:
        if split not in _SPLIT_FOLDERS:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.scale = check_scale(scale)
        self.root = require_root(root, "the ReBlurSR folder (holding train/, valid/)")
        self.split = split
        self.blur_types = tuple(blur_types or ())
        self.lr_folder = lr_folder or None
        self.split_folder = self.root / (split_folder or _SPLIT_FOLDERS[split])
        leaves = [hr_folder, mask_folder] + ([self.lr_folder] if self.lr_folder else [])
        type_part = "{" + ",".join(self.blur_types) + "}/" if self.blur_types else ""
        expected = (
            f"{self.split_folder}/{type_part}{{{','.join(leaves)}}}/<stem>.png|jpg with the "
            f"same stems in each (masks: 0 = blurred, 255 = sharp)"
        )
        check_data_folder(self.root, self.title, expected)

        def fail(problems: list[str]) -> ReBlurSRDataError:
            return ReBlurSRDataError(problems, self.root, self.title, expected)

        if not self.split_folder.is_dir():
            hint = ""
            if (self.root / "ALL_HR").is_dir():
                hint = (
                    " (the release is not split yet: run its train_validation_split.py "
                    "to make train/ and valid/)"
                )
            raise fail([f"missing folder {self.split_folder}{hint}"])
        problems: list[str] = []
        items: list[ReBlurSRItem] = []
        for blur_type in self.blur_types or ("",):
            base = self.split_folder / blur_type if blur_type else self.split_folder
            folders = [base / hr_folder, base / mask_folder]
            if self.lr_folder:
                folders.append(base / self.lr_folder)
            missing = [f for f in folders if not f.is_dir()]
            problems += [f"missing folder {f}" for f in missing]
            if not missing:
                items += self._match(blur_type, folders, problems)
        if check_sizes:
            items = self._with_sizes(items, problems)
        if problems:
            raise fail(problems)
        self.items = items
        self._noted_thresholded = False

    @staticmethod
    def _match(blur_type: str, folders: list[Path], problems: list[str]) -> list[ReBlurSRItem]:
        """The items of one blur type, or none (and problems) when the stems differ."""
        found = len(problems)
        hr, mask, *lr = (images_by_stem(folder, problems) for folder in folders)
        if not hr:
            problems.append(f"no images in {folders[0]}")
        for other, folder in zip((mask, *lr), folders[1:]):
            without = sorted(set(hr) - set(other))
            extra = sorted(set(other) - set(hr))
            if without:
                shown = shown_names([hr[s].name for s in without])
                problems.append(f"{shown} in {folders[0]} without a file in {folder}")
            if extra:
                shown = shown_names([other[s].name for s in extra])
                problems.append(f"{shown} in {folder} without an image in {folders[0]}")
        if len(problems) > found:
            return []
        return [
            ReBlurSRItem(
                f"{blur_type}/{stem}" if blur_type else stem,
                blur_type,
                hr[stem],
                mask[stem],
                lr[0][stem] if lr else None,
            )
            for stem in sorted(hr)
        ]

    def _with_sizes(self, items: list[ReBlurSRItem], problems: list[str]) -> list[ReBlurSRItem]:
        """Read every header: masks of the photo's size, LR of ``1 / scale`` of it."""
        checked = []
        s = self.scale
        for item in items:
            try:
                width, height = image_size(item.hr)
                mask_size = image_size(item.mask)
                lr_size = None if item.lr is None else image_size(item.lr)
            except InputError as error:
                problems.append(str(error))
                continue
            if mask_size != (width, height):
                problems.append(
                    f"mask {item.mask} is {mask_size[0]}x{mask_size[1]} (WxH) but its image "
                    f"{item.hr} is {width}x{height}"
                )
            elif lr_size is not None and lr_size != (width // s, height // s):
                problems.append(
                    f"LR {item.lr} is {lr_size[0]}x{lr_size[1]} (WxH) but its HR {item.hr} is "
                    f"{width}x{height}: expected {width // s}x{height // s} (1/{s})"
                )
            elif min(width, height) < s:
                problems.append(f"image {item.hr} is {width}x{height}, smaller than scale={s}")
            else:
                checked.append(
                    ReBlurSRItem(
                        item.name, item.blur_type, item.hr, item.mask, item.lr, (height, width)
                    )
                )
        return checked

    def __len__(self) -> int:
        return len(self.items)

    @property
    def names(self) -> list[str]:
        """``"<blur type>/<stem>"`` of every photo, in order."""
        return [item.name for item in self.items]

    @property
    def has_lr(self) -> bool:
        """Whether the released LR images are read (``lr_folder`` was given)."""
        return self.lr_folder is not None

    def indices_of(self, blur_type: str) -> list[int]:
        """Positions of the photos of one blur type."""
        return [i for i, item in enumerate(self.items) if item.blur_type == blur_type]

    def load(self, index: int) -> RGBDSample:
        """Photo ``index`` as an :class:`~svblur.data.rgbd.RGBDSample` (no depth, no
        labels): RGB float32 ``(H, W, 3)`` in ``[0, 1]``."""
        return RGBDSample(read_image(self.items[index].hr, "rgb"), None, None)

    def load_mask(self, index: int) -> np.ndarray:
        """The ``blur_mask`` of photo ``index``: float32 ``(H, W)`` in ``{0, 1}``, 1 = blurred.

        Raises:
            InputError: The mask cannot be read; the message names it.
        """
        path = self.items[index].mask
        mask, binary = blur_mask_from_released(read_image(path, "unchanged"))
        if not binary and not self._noted_thresholded:
            # Once per folder and process: the masks of a release are all alike.
            self._noted_thresholded = True
            log.warning(
                "ReBlurSR mask %s is not binary (grey levels other than 0 and 255); "
                "thresholded at %d (below = blurred), as every such mask of %s",
                path,
                _MASK_THRESHOLD,
                self.split_folder,
            )
        return mask

    def load_with_mask(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Photo ``index`` and its ``blur_mask``: ``(H, W, 3)`` and ``(H, W)``, float32.

        Raises:
            InputError: A file cannot be read, or the mask's size differs from the photo's.
        """
        image = self.load(index).image
        mask = self.load_mask(index)
        if mask.shape != image.shape[:2]:
            item = self.items[index]
            raise InputError(
                f"mask {item.mask} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
                f"{item.hr} is {image.shape[1]}x{image.shape[0]}"
            )
        return image, mask

    def load_lr(self, index: int) -> np.ndarray:
        """The released LR image of photo ``index``, RGB float32 ``(h, w, 3)`` in ``[0, 1]``.

        Raises:
            ValueError: The folder was built without ``lr_folder``.
            InputError: The file cannot be read.
        """
        path = self.items[index].lr
        if path is None:
            raise ValueError("this ReBlurSRFolder reads no LR images (lr_folder=None)")
        return read_image(path, "rgb")


# --------------------------------------------------------------------------- data set
_noted_blur_steps: set[str] = set()


def _note_unused_blur(pipeline: SamplePipeline) -> None:
    """Say once per process that a pipeline's blur step is not applied to ReBlurSR."""
    if pipeline.blur is None:
        return
    kind = type(pipeline.blur).__name__
    if kind not in _noted_blur_steps:
        _noted_blur_steps.add(kind)
        log.info(
            "ReBlurSR: the degradation's blur step (%s) is not applied: the photos are "
            "already blurred; the LR is made by its downsampling and LR steps only",
            kind,
        )


class ReBlurSRDataset(FolderSRDataset):
    """ReBlurSR photos, cropped with their masks, and the LR made from them.

    Per item: photo and mask are cropped together (``crop_size``: random, or centred with
    ``fixed``; ``None``: the whole photo, cut to a multiple of ``scale`` at the bottom and
    right) and flipped together (``hflip``, training). The LR is ``degradation.to_lr`` of
    the HR crop: the pipeline's downsampling and LR steps (noise, JPEG ...), never its blur
    step. When the folder reads released LR images (``lr_folder``) and ``use_stored_lr``,
    those are cropped instead, on the LR grid, and no degradation runs.

    With ``fixed=True`` (validation / test) the draws of photo ``i`` come from
    ``np.random.default_rng([seed, 29, i])``; otherwise from a per-process stream seeded
    by ``seed`` and the worker's torch seed (new LR noise every epoch).

    Args:
        folder: The photos.
        scale: LR factor; must equal the degradation's.
        crop_size: HR crop ``(H, W)`` or side, each divisible by ``scale``; ``None``: whole.
        degradation: The sample pipeline; ``None``: bicubic x ``scale``.
        fixed: Centred crops and fixed draws (validation / test).
        hflip: Random horizontal flips (ignored with ``fixed``).
        seed: Seed.
        indices: Positions of ``folder`` served, in order; ``None``: all.
        use_stored_lr: Use the folder's released LR when it has one.

    Items: ``lr`` ``(3, h, w)``, ``hr`` ``(3, H, W)``, ``blur_mask`` ``(1, H, W)`` (float32,
    1 = blurred) and ``name`` (``"<blur type>/<stem>"``).
    """

    salt = 31
    what = "ReBlurSR photo"

    def __init__(
        self,
        folder: ReBlurSRFolder,
        scale: int = 4,
        crop_size: int | Sequence[int] | None = (256, 256),
        degradation: SamplePipeline | None = None,
        fixed: bool = False,
        hflip: bool = True,
        seed: int = 0,
        indices: Sequence[int] | None = None,
        use_stored_lr: bool = True,
    ) -> None:
        super().__init__(folder, indices, scale, fixed, seed)
        self.crop_size = crop_pair(crop_size)
        if self.crop_size is not None and (
            self.crop_size[0] % self.scale or self.crop_size[1] % self.scale
        ):
            raise ValueError(f"crop_size must be divisible by scale={scale}, got {crop_size}")
        self.pipeline = (
            SamplePipeline(None, scale=self.scale) if degradation is None else degradation
        )
        if self.pipeline.scale != self.scale:
            raise ValueError(
                f"the degradation's scale {self.pipeline.scale} differs from scale={scale}"
            )
        self.stored_lr = bool(use_stored_lr) and folder.has_lr
        if not self.stored_lr:
            _note_unused_blur(self.pipeline)
        self.hflip = bool(hflip) and not self.fixed

    @property
    def folder(self) -> ReBlurSRFolder:
        """The photos (the :attr:`source`)."""
        return self.source

    def fixed_stream(self, position: int) -> list[int]:
        return [self.seed, 29, position]

    def __getitem__(self, index: int) -> dict[str, Any]:
        position = self.indices[index]
        item = self.folder.items[position]
        rng = self._rng(position)
        s = self.scale
        image, mask = self.folder.load_with_mask(position)
        # The crop is chosen on the LR grid, so that HR, mask and LR stay aligned.
        lr_h, lr_w = image.shape[0] // s, image.shape[1] // s
        lr = None
        if self.stored_lr:
            lr = self.folder.load_lr(position)
            if lr.shape[:2] != (lr_h, lr_w):
                raise InputError(
                    f"LR {item.lr} is {lr.shape[1]}x{lr.shape[0]} (WxH) but its HR {item.hr} "
                    f"is {image.shape[1]}x{image.shape[0]}: expected {lr_w}x{lr_h} (1/{s})"
                )
        lr_window, hr_window = self._windows((lr_h, lr_w), item.name, rng)
        if lr is not None:
            lr = lr[lr_window]
        hr, mask = image[hr_window], mask[hr_window]
        flip = self.hflip and bool(rng.random() < 0.5)
        if flip:
            hr, mask = hr[:, ::-1], mask[:, ::-1]
            lr = None if lr is None else lr[:, ::-1]
        hr = np.ascontiguousarray(hr, np.float32)
        if lr is None:
            lr = self.pipeline.to_lr(hr, rng)
        return {
            "lr": image_tensor(lr),
            "hr": image_tensor(hr),
            "blur_mask": torch.from_numpy(np.ascontiguousarray(mask, np.float32))[None],
            "name": item.name,
        }


# --------------------------------------------------------------------------- DataModule
class ReBlurSRDataModule(FolderSRDataModule):
    """ReBlurSR for blind SR that keeps the blur: patches for training, whole photos for test.

    Validation uses ``val_source`` when given; otherwise a seeded ``val_fraction`` of the
    training photos is held out (at most ``val_max_images``, evenly spaced), centre-cropped
    to ``val_crop_size`` with fixed LR draws. The test split is served whole (or
    ``test_crop_size``); with ``test_by_blur_type`` and several blur types it is one group
    per type, named in :attr:`test_group_names` (``defocus``, ``motion``: the paper reports
    them apart), so the SR task logs ``test/defocus/sr/psnr_y`` etc.

    Args:
        train_source: Training photos.
        test_source: Test photos; ``None``: no test split.
        val_source: Validation photos; ``None`` holds out training photos.
        num_classes: Unused (no labels); the model configs interpolate it.
        scale: LR factor; must equal the sources' and the degradation's.
        crop_size: HR training patch, side or ``(H, W)``, divisible by ``scale``.
        val_crop_size: HR validation crop (centred); ``None``: whole photos.
        test_crop_size: HR test crop (centred); ``None``: whole photos.
        hflip: Random horizontal flips of training patches.
        val_fraction: Share of the training photos held out when ``val_source`` is ``None``.
        val_max_images: Most validation photos (evenly spaced); ``None``: all.
        test_by_blur_type: One test group per blur type of ``test_source``.
        batch_size: Training batch size.
        eval_batch_size: Validation / test batch size.
        num_workers: Loader workers.
        pin_memory: Pin batches.
        persistent_workers: Keep workers between epochs.
        seed: Seed of the hold-out, the shuffling, the crops and the LR draws.
        degradation: The sample pipeline; only its downsampling and LR steps are used
            (``None``: bicubic x ``scale``).
        **source_settings: Values the Hydra config interpolates into the sources (``root``,
            ``blur_types`` ...); kept in :attr:`source_settings` only.
    """

    def __init__(
        self,
        train_source: ReBlurSRFolder,
        test_source: ReBlurSRFolder | None = None,
        val_source: ReBlurSRFolder | None = None,
        num_classes: int = 8,
        scale: int = 4,
        crop_size: int | Sequence[int] = 256,
        val_crop_size: int | Sequence[int] | None = None,
        test_crop_size: int | Sequence[int] | None = None,
        hflip: bool = True,
        val_fraction: float = 0.05,
        val_max_images: int | None = 100,
        test_by_blur_type: bool = True,
        batch_size: int = 16,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        seed: int = 0,
        degradation: SamplePipeline | None = None,
        **source_settings: Any,
    ) -> None:
        super().__init__()
        self.set_loader_settings(
            batch_size,
            eval_batch_size,
            num_workers,
            pin_memory,
            persistent_workers,
            seed,
            val_max_images,
        )
        self.save_hyperparameters(
            logger=False, ignore=["train_source", "test_source", "val_source", "degradation"]
        )
        sources = (train_source, test_source, val_source)
        self._keep_settings(sources, source_settings, num_classes, scale)
        pipeline = SamplePipeline(None, scale=self.scale) if degradation is None else degradation
        common = {"scale": self.scale, "degradation": pipeline, "seed": self.seed}

        train_idx, val_base, val_idx = self._train_and_val(
            train_source, val_source, val_fraction, val_max_images
        )
        crop = crop_pair(crop_size)
        for source, indices, size, setting in (
            (train_source, train_idx, crop, "crop_size"),
            (val_base, val_idx, crop_pair(val_crop_size), "val_crop_size"),
        ):
            check_crop_fits(
                size,
                self.scale,
                ((source.items[i].hr, source.items[i].size) for i in indices),
                "ReBlurSR photo",
                setting,
            )
        self.datasets: dict[str, Dataset] = {
            "train": ReBlurSRDataset(
                train_source, crop_size=crop, hflip=hflip, indices=train_idx, **common
            ),
            "val": ReBlurSRDataset(
                val_base, crop_size=val_crop_size, fixed=True, indices=val_idx, **common
            ),
        }
        self.test_group_names: list[str] = []
        if test_source is not None:
            types = [t for t in test_source.blur_types if test_source.indices_of(t)]
            if test_by_blur_type and len(types) > 1:
                for blur_type in types:
                    self.datasets[blur_type] = ReBlurSRDataset(
                        test_source,
                        crop_size=test_crop_size,
                        fixed=True,
                        indices=test_source.indices_of(blur_type),
                        **common,
                    )
                self.test_group_names = types
            else:
                self.datasets["test"] = ReBlurSRDataset(
                    test_source, crop_size=test_crop_size, fixed=True, **common
                )
