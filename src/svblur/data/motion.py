"""GoPro and REDS: real motion-blurred frames for blind SR (ArcSR, sections 4.1-4.2).

Released layouts (frames of a sequence are paired by file stem)::

    GOPRO_Large/{train,test}/<sequence>/blur/<frame>.png     blurred HR frames
    GOPRO_Large/{train,test}/<sequence>/sharp/<frame>.png    sharp HR frames (the SR target)

    <root>/{train,val}_sharp/<sequence>/<frame>.png            sharp HR frames
    <root>/{train,val}_blur/<sequence>/<frame>.png             blurred HR frames
    <root>/{train,val}_blur_bicubic/X4/<sequence>/<frame>.png  blurred, x4 bicubic LR

GoPro has no LR frames: its LR is the x4 MATLAB-bicubic downsampling of the blurred
frame (:func:`svblur.degradation.imresize`, the project's LR convention), clipped to
``[0, 1]`` and not quantised. REDS ships its LR (``*_blur_bicubic/X4``); with
``lr_source="blur"`` it is made from ``*_blur`` as for GoPro. A REDS folder may also sit
one level down, as the archives unpack (``<root>/train/train_sharp/...``).

:class:`GoProPairs` and :class:`REDSPairs` list the aligned (input, sharp) pairs of a
split and check the tree when they are built; a :class:`MotionDataError` lists every
problem, naming the missing folder, the sequence whose frames differ or the frame of the
wrong size. :class:`MotionSRDataset` serves them with the paper's training augmentation
and noise; :class:`MotionSRDataModule` adds the held-out validation sequences and the two
evaluation groups (noise levels 0 and 10). Samples carry no blur kernels: real data has
none. Batches: ``lr`` ``(B, 3, h, w)``, ``hr`` ``(B, 3, H, W)``, ``name`` (``list[str]``,
``"<sequence>/<frame>"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from svblur.data.folder_sr import FolderSRDataModule, FolderSRDataset, image_tensor
from svblur.data.folders import (
    DataLayoutError,
    check_crop_fits,
    check_data_folder,
    check_scale,
    crop_pair,
    hold_out,
    images_by_stem,
    require_root,
    shown_names,
    subfolders,
)
from svblur.degradation.noise import add_gaussian_noise
from svblur.degradation.resize import imresize
from svblur.errors import InputError
from svblur.io import image_size, read_image

__all__ = [
    "GOPRO_LAYOUT",
    "REDS_LR_SOURCES",
    "GoProPairs",
    "MotionDataError",
    "MotionPair",
    "MotionPairs",
    "MotionSRDataModule",
    "MotionSRDataset",
    "REDSPairs",
    "noise_group_name",
]

#: The GoPro layout, as missing-folder messages state it.
GOPRO_LAYOUT = "GOPRO_Large/<split>/<sequence>/{blur,sharp}"
#: Where :class:`REDSPairs` takes its LR input from: the stored ``*_blur_bicubic/X{scale}``
#: frames, or the bicubic downsampling of the blurred HR frames ``*_blur``.
REDS_LR_SOURCES: tuple[str, ...] = ("bicubic_blur", "blur")

#: The error of an unusable GoPro / REDS tree (the readers' common
#: :class:`~svblur.data.folders.DataLayoutError`; this name is kept for callers).
MotionDataError = DataLayoutError


@dataclass(frozen=True)
class MotionPair:
    """One aligned frame pair.

    Attributes:
        name: ``"<sequence>/<frame stem>"``.
        sequence: The sequence folder's name.
        source: The input file: a stored LR frame, or a blurred HR frame to downsample.
        hr: The sharp HR frame.
        hr_size: ``(H, W)`` of the HR frame from its header; ``None`` when not checked.
    """

    name: str
    sequence: str
    source: Path
    hr: Path
    hr_size: tuple[int, int] | None = None


def _match_frames(
    sequence: str, source_folder: Path, hr_folder: Path, problems: list[str]
) -> list[MotionPair]:
    """The pairs of one sequence, or none (and a problem) when its frame lists differ."""
    found = len(problems)
    source = images_by_stem(source_folder, problems, "frames")
    hr = images_by_stem(hr_folder, problems, "frames")
    if not hr:
        problems.append(f"no frames in {hr_folder}")
    only_source = sorted(set(source) - set(hr))
    only_hr = sorted(set(hr) - set(source))
    if hr and (only_source or only_hr):
        detail = []
        if only_source:
            detail.append(f"only in {source_folder.name}/: {shown_names(only_source)}")
        if only_hr:
            detail.append(f"only in {hr_folder.name}/: {shown_names(only_hr)}")
        problems.append(
            f"sequence {sequence}: the frames of {source_folder} and {hr_folder} differ ("
            + "; ".join(detail)
            + ")"
        )
    if len(problems) > found:
        return []
    return [
        MotionPair(f"{sequence}/{stem}", sequence, source[stem], hr[stem]) for stem in sorted(hr)
    ]


def _with_sizes(
    pairs: list[MotionPair], scale: int, source_is_lr: bool, problems: list[str]
) -> list[MotionPair]:
    """Read every header: input and HR sizes must agree (LR exactly ``1 / scale`` of HR)."""
    checked = []
    for pair in pairs:
        try:
            hr_w, hr_h = image_size(pair.hr)
            src_w, src_h = image_size(pair.source)
        except InputError as error:
            problems.append(str(error))
            continue
        if source_is_lr and (src_w * scale, src_h * scale) != (hr_w, hr_h):
            problems.append(
                f"LR {pair.source} is {src_w}x{src_h} (WxH) but HR {pair.hr} is {hr_w}x{hr_h}: "
                f"LR must be exactly 1/{scale} of HR, i.e. {hr_w / scale:g}x{hr_h / scale:g}"
            )
        elif not source_is_lr and (src_w, src_h) != (hr_w, hr_h):
            problems.append(
                f"blurred frame {pair.source} is {src_w}x{src_h} (WxH) but sharp frame "
                f"{pair.hr} is {hr_w}x{hr_h}"
            )
        elif min(hr_w, hr_h) < scale:
            problems.append(f"HR {pair.hr} is {hr_w}x{hr_h}, smaller than scale={scale}")
        else:
            checked.append(replace(pair, hr_size=(hr_h, hr_w)))
    return checked


class MotionPairs:
    """Aligned (input, sharp) frame pairs of one split; base of the GoPro and REDS readers.

    Subclasses fill :attr:`pairs` (checked) and set :attr:`source_is_lr`.

    Attributes:
        title: Data set name used in messages.
        root: Data root.
        split: The split read.
        scale: LR factor.
        source_is_lr: The input files are LR frames (else blurred HR frames).
        pairs: The pairs, sorted by sequence and frame.
    """

    title = "motion"

    def __init__(self, root: str | Path, split: str, scale: int) -> None:
        self.scale = check_scale(scale)
        self.root = require_root(root, f"the folder of the {self.title} data")
        self.split = split
        self.source_is_lr = False
        self.pairs: list[MotionPair] = []

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def names(self) -> list[str]:
        """``"<sequence>/<frame>"`` of every pair, in order."""
        return [pair.name for pair in self.pairs]

    @property
    def sequences(self) -> list[str]:
        """The sequence of every pair, in order."""
        return [pair.sequence for pair in self.pairs]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Pair ``index`` as ``(lr, hr)``: RGB float32 ``(h, w, 3)`` and ``(H, W, 3)`` in ``[0, 1]``.

        A blurred HR input is cropped with the sharp frame to a multiple of ``scale`` (at
        the bottom and right), then downsampled with :func:`~svblur.degradation.imresize`
        and clipped to ``[0, 1]``; a stored LR frame is returned as read.

        Raises:
            InputError: A file cannot be read, or its size does not fit the other.
        """
        pair = self.pairs[index]
        s = self.scale
        hr = read_image(pair.hr, "rgb")
        source = read_image(pair.source, "rgb")
        if self.source_is_lr:
            if (source.shape[0] * s, source.shape[1] * s) != hr.shape[:2]:
                raise InputError(
                    f"LR {pair.source} is {source.shape[1]}x{source.shape[0]} (WxH) but HR "
                    f"{pair.hr} is {hr.shape[1]}x{hr.shape[0]}: LR must be exactly 1/{s} of HR"
                )
            return source, hr
        if source.shape != hr.shape:
            raise InputError(
                f"blurred frame {pair.source} is {source.shape[1]}x{source.shape[0]} (WxH) but "
                f"sharp frame {pair.hr} is {hr.shape[1]}x{hr.shape[0]}"
            )
        height, width = (hr.shape[0] // s) * s, (hr.shape[1] // s) * s
        lr = np.clip(imresize(source[:height, :width], 1.0 / s), 0.0, 1.0)
        return lr.astype(np.float32, copy=False), hr[:height, :width]


class GoProPairs(MotionPairs):
    """One split of GoPro (``GOPRO_Large``): blurred frame -> sharp frame.

    The LR input is made here (see :meth:`MotionPairs.load`). The tree is checked when the
    object is built: the split folder, every sequence's ``blur`` and ``sharp`` folders,
    equal frame lists, and (``check_sizes``) every header: blurred and sharp frames of
    equal size.

    Args:
        root: ``GOPRO_Large`` itself or the folder that holds it.
        split: ``"train"`` (2,103 pairs in the release) or ``"test"`` (1,111 pairs).
        scale: LR factor.
        blur_folder: The blurred frames' folder: ``"blur"`` or ``"blur_gamma"``.
        check_sizes: Read every frame's header (sizes, truncated files).

    Raises:
        MotionDataError: The tree is not usable; the message names each problem.
    """

    title = "GoPro"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        scale: int = 4,
        blur_folder: str = "blur",
        check_sizes: bool = True,
    ) -> None:
        super().__init__(root, split, scale)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.blur_folder = blur_folder
        layout = GOPRO_LAYOUT.replace("blur,", f"{blur_folder},")
        expected = (
            f"{layout}/<frame>.png with the same frame names in {blur_folder}/ and sharp/ "
            "(data.root is GOPRO_Large or the folder that holds it)"
        )
        check_data_folder(self.root, self.title, expected)

        def fail(problems: list[str]) -> MotionDataError:
            return MotionDataError(problems, self.root, self.title, expected)

        base = self.root
        if base.name != "GOPRO_Large" and not (base / split).is_dir():
            base = base / "GOPRO_Large"
        split_folder = base / split
        if not split_folder.is_dir():
            raise fail([f"missing folder {split_folder} (expected {layout})"])
        sequences = subfolders(split_folder)
        if not sequences:
            raise fail([f"no sequences in {split_folder} (expected {layout})"])
        problems: list[str] = []
        pairs: list[MotionPair] = []
        for sequence in sequences:
            folders = (split_folder / sequence / blur_folder, split_folder / sequence / "sharp")
            missing = [f for f in folders if not f.is_dir()]
            for folder in missing:
                problems.append(f"missing folder {folder} (expected {layout})")
            if not missing:
                pairs += _match_frames(sequence, *folders, problems)
        if check_sizes:
            pairs = _with_sizes(pairs, self.scale, False, problems)
        if problems:
            raise fail(problems)
        self.split_folder = split_folder
        self.pairs = pairs


class REDSPairs(MotionPairs):
    """One split of REDS: LR (or blurred) frame -> sharp frame.

    ``lr_source="bicubic_blur"`` reads the stored LR of ``{split}_blur_bicubic/X{scale}``
    (the paper's input); ``"blur"`` downsamples ``{split}_blur`` here as for GoPro. Each
    folder is looked for at ``<root>/<folder>`` and at ``<root>/<split>/<folder>`` (as the
    archives unpack). The tree is checked when the object is built: both folders, equal
    sequence lists and frame lists, and (``check_sizes``) every header: LR exactly
    ``1 / scale`` of HR (or blurred and sharp frames of equal size).

    Args:
        root: The REDS folder.
        split: ``"train"`` (240 sequences of 100 frames) or ``"val"`` (30 sequences).
        lr_source: One of :data:`REDS_LR_SOURCES`.
        scale: LR factor (folder ``X{scale}``).
        check_sizes: Read every frame's header (sizes, truncated files).

    Raises:
        MotionDataError: The tree is not usable; the message names each problem.
    """

    title = "REDS"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        lr_source: str = "bicubic_blur",
        scale: int = 4,
        check_sizes: bool = True,
    ) -> None:
        super().__init__(root, split, scale)
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if lr_source not in REDS_LR_SOURCES:
            raise ValueError(f"lr_source must be one of {list(REDS_LR_SOURCES)}, got {lr_source!r}")
        self.lr_source = lr_source
        self.source_is_lr = lr_source == "bicubic_blur"
        hr_name = f"{split}_sharp"
        source_name = (
            f"{split}_blur_bicubic/X{self.scale}" if self.source_is_lr else f"{split}_blur"
        )
        expected = (
            f"<root>/{hr_name}/<sequence>/<frame>.png and <root>/{source_name}/<sequence>/"
            f"<frame>.png with the same sequences and frame names (each folder may also be "
            f"under <root>/{split}/)"
        )
        check_data_folder(self.root, self.title, expected)

        def fail(problems: list[str]) -> MotionDataError:
            return MotionDataError(problems, self.root, self.title, expected)

        folders = {}
        problems: list[str] = []
        for role, name in (("source", source_name), ("hr", hr_name)):
            candidates = (self.root / name, self.root / split / name)
            found = [c for c in candidates if c.is_dir()]
            folders[role] = found[0] if found else candidates[0]
            if not found:
                problems.append(f"missing folder {candidates[0]} (expected REDS/{name})")
        if problems:
            raise fail(problems)
        source_folder, hr_folder = folders["source"], folders["hr"]
        source_seqs, hr_seqs = subfolders(source_folder), subfolders(hr_folder)
        if not hr_seqs:
            problems.append(f"no sequences in {hr_folder}")
        only_source = sorted(set(source_seqs) - set(hr_seqs))
        only_hr = sorted(set(hr_seqs) - set(source_seqs))
        if only_source:
            problems.append(
                f"sequences in {source_folder} but not in {hr_folder}: {shown_names(only_source)}"
            )
        if only_hr:
            problems.append(
                f"sequences in {hr_folder} but not in {source_folder}: {shown_names(only_hr)}"
            )
        pairs: list[MotionPair] = []
        for sequence in hr_seqs:
            if sequence in source_seqs:
                pairs += _match_frames(
                    sequence, source_folder / sequence, hr_folder / sequence, problems
                )
        if check_sizes:
            pairs = _with_sizes(pairs, self.scale, self.source_is_lr, problems)
        if problems:
            raise fail(problems)
        self.source_folder, self.hr_folder = source_folder, hr_folder
        self.pairs = pairs


def noise_group_name(level: float) -> str:
    """Name of the test group at noise ``level`` (grey levels): ``"noise0"``, ``"noise10"``."""
    return f"noise{float(level):g}"


class MotionSRDataset(FolderSRDataset):
    """Pairs of a :class:`MotionPairs` with ArcSR's augmentation and noise.

    Training (``fixed=False``): an HR patch of ``crop_size`` at a random position on the LR
    grid with the matching LR patch, rotated by a random multiple of 90 degrees (both
    images alike; ``rotate``) and, with ``hflip``, flipped left-right with probability 1/2;
    then Gaussian noise of ``sigma ~ U(noise_range) / 255``, one field per channel, on the
    LR patch. Draws come from a per-process stream seeded by ``seed`` and the worker's
    torch seed, so every epoch differs and runs follow ``lightning.seed_everything``.

    Evaluation (``fixed=True``): whole frames, no augmentation, and noise that is a pure
    function of ``seed``, the pair's position in the source and the level:
    ``noise_level`` grey levels (exactly no noise at 0), or, when it is ``None``, a level
    drawn from ``noise_range`` for each pair.

    Args:
        source: The pairs.
        indices: Positions in ``source`` to serve (default: all).
        crop_size: HR patch ``(H, W)`` or side, divisible by ``scale`` (training only; square
            when ``rotate``).
        scale: LR factor; must equal ``source.scale``.
        rotate: Random rotations by 0, 90, 180 or 270 degrees (training).
        hflip: Random left-right flips (training).
        noise_range: ``(low, high)`` training noise level in grey levels (``/ 255``).
        noise_level: Fixed evaluation noise level in grey levels (``fixed`` only).
        fixed: Evaluation mode (see above).
        seed: Seed.

    Items: ``lr`` ``(3, h, w)`` and ``hr`` ``(3, H, W)`` float32 in ``[0, 1]`` and ``name``
    (``"<sequence>/<frame>"``).
    """

    salt = 19
    what = "HR frame"

    def __init__(
        self,
        source: MotionPairs,
        indices: Sequence[int] | None = None,
        crop_size: int | Sequence[int] | None = 256,
        scale: int = 4,
        rotate: bool = True,
        hflip: bool = False,
        noise_range: Sequence[float] = (0.2, 20.0),
        noise_level: float | None = None,
        fixed: bool = False,
        seed: int = 0,
    ) -> None:
        if int(scale) != source.scale:
            raise ValueError(f"scale={scale} differs from the source's scale {source.scale}")
        super().__init__(source, indices, scale, fixed, seed)
        for i in self.indices:
            if not 0 <= i < len(source):
                raise IndexError(f"index {i} out of range for {len(source)} pairs")
        if not fixed:
            if crop_size is None:
                raise ValueError("training needs a crop_size (HR patch side, e.g. 256)")
            crop = crop_pair(crop_size)
            if crop[0] % self.scale or crop[1] % self.scale or min(crop) < self.scale:
                raise ValueError(f"crop_size must be a multiple of scale={self.scale}, got {crop}")
            if rotate and crop[0] != crop[1]:
                raise ValueError(
                    f"rotations by 90 degrees need a square crop_size, got {crop}; give one "
                    "side (e.g. crop_size=256) or set rotate=false"
                )
            self.crop_size: tuple[int, int] | None = crop
        else:
            self.crop_size = None
        low, high = (float(v) for v in noise_range)
        if not 0 <= low <= high:
            raise ValueError(
                f"noise_range must be (low, high) with 0 <= low <= high, got {noise_range}"
            )
        if noise_level is not None and not float(noise_level) >= 0:
            raise ValueError(f"noise_level must be >= 0 grey levels, got {noise_level}")
        self.noise_range = (low, high)
        self.noise_level = None if noise_level is None else float(noise_level)
        self.rotate = bool(rotate)
        self.hflip = bool(hflip)

    def fixed_stream(self, position: int) -> list[int]:
        """A pure function of (seed, level, pair): the same noise in every run, process and
        group order, and a different field for each level."""
        level = -1 if self.noise_level is None else round(self.noise_level * 1000)
        return [self.seed, 23, level + 1, position]

    def _augment(
        self, lr: np.ndarray, hr: np.ndarray, name: str, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        lr_window, hr_window = self._windows(lr.shape[:2], name, rng)
        lr, hr = lr[lr_window], hr[hr_window]
        turns = int(rng.integers(0, 4)) if self.rotate else 0
        if turns:
            lr, hr = np.rot90(lr, turns, axes=(0, 1)), np.rot90(hr, turns, axes=(0, 1))
        if self.hflip and rng.random() < 0.5:
            lr, hr = lr[:, ::-1], hr[:, ::-1]
        return np.ascontiguousarray(lr), np.ascontiguousarray(hr)

    def __getitem__(self, index: int) -> dict[str, Any]:
        position = self.indices[index]
        name = self.source.pairs[position].name
        rng = self._rng(position)
        lr, hr = self.source.load(position)
        if not self.fixed:
            lr, hr = self._augment(lr, hr, name, rng)
        level = self.noise_level
        if level is None:
            level = float(rng.uniform(*self.noise_range))
        if level > 0:
            lr = add_gaussian_noise(lr, rng, level / 255.0)
        return {"lr": image_tensor(lr), "hr": image_tensor(hr), "name": name}


class MotionSRDataModule(FolderSRDataModule):
    """GoPro / REDS for blind SR: augmented patches for training, two noise levels for test.

    Validation uses ``val_source`` when given; otherwise a seeded ``val_fraction`` of the
    training *sequences* is held out (whole sequences, since neighbouring frames are near
    copies), at most ``val_max_images`` evenly spaced frames of them, with a noise level
    drawn from ``noise_range`` per frame but fixed across epochs. ``test_dataloader``
    returns one loader per level of ``test_noise_levels`` over the whole test split, named
    in :attr:`test_group_names` (``noise0``, ``noise10``: the paper's Table 2), so the SR
    task logs ``test/noise0/sr/psnr_y`` etc. (Y channel, ``scale`` border cropped).

    Args:
        train_source: Training pairs.
        test_source: Test pairs; ``None``: no test split.
        val_source: Validation pairs; ``None`` holds out training sequences.
        num_classes: Unused (real data has no labels); the model configs interpolate it.
        scale: LR factor; must equal the sources'.
        crop_size: HR training patch side, or ``(H, W)`` when ``rotate`` is off.
        rotate: Random rotations by multiples of 90 degrees (the paper's augmentation).
        hflip: Random left-right flips as well (not in the paper).
        noise_range: Training noise levels ``(low, high)`` in grey levels (paper: 0.2, 20).
        test_noise_levels: One test group per level, in grey levels (paper: 0 and 10).
        val_fraction: Share of the training sequences held out when ``val_source`` is ``None``.
        val_max_images: Most validation frames (evenly spaced); ``None``: all.
        batch_size: Training batch size.
        eval_batch_size: Validation / test batch size (whole frames).
        num_workers: Loader workers.
        pin_memory: Pin batches.
        persistent_workers: Keep workers between epochs.
        seed: Seed of the hold-out, the shuffling, the augmentation and the noise.
        **source_settings: Values the Hydra configs interpolate into the sources (``root``,
            ``lr_source`` ...); kept in :attr:`source_settings` only.
    """

    def __init__(
        self,
        train_source: MotionPairs,
        test_source: MotionPairs | None = None,
        val_source: MotionPairs | None = None,
        num_classes: int = 8,
        scale: int = 4,
        crop_size: int | Sequence[int] = 256,
        rotate: bool = True,
        hflip: bool = False,
        noise_range: Sequence[float] = (0.2, 20.0),
        test_noise_levels: Sequence[float] = (0, 10),
        val_fraction: float = 0.05,
        val_max_images: int | None = 100,
        batch_size: int = 16,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        seed: int = 0,
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
        levels = [float(level) for level in test_noise_levels]
        names = [noise_group_name(level) for level in levels]
        if len(set(names)) != len(names):
            raise ValueError(f"test_noise_levels must differ, got {list(test_noise_levels)}")
        self.save_hyperparameters(
            logger=False, ignore=["train_source", "test_source", "val_source"]
        )
        self.noise_range = tuple(float(v) for v in noise_range)
        sources = (train_source, test_source, val_source)
        self._keep_settings(sources, source_settings, num_classes, scale)
        common = {"scale": self.scale, "noise_range": self.noise_range, "seed": self.seed}

        train_idx, val_base, val_idx = self._train_and_val(
            train_source, val_source, val_fraction, val_max_images
        )
        train = MotionSRDataset(
            train_source, train_idx, crop_size, rotate=rotate, hflip=hflip, **common
        )
        check_crop_fits(
            crop_pair(crop_size),
            self.scale,
            ((train_source.pairs[i].hr, train_source.pairs[i].hr_size) for i in train_idx),
            f"{train_source.title} frame",
        )
        self.datasets: dict[str, Dataset] = {
            "train": train,
            "val": MotionSRDataset(val_base, val_idx, fixed=True, **common),
        }
        self.test_group_names: list[str] = []
        if test_source is not None:
            for name, level in zip(names, levels):
                self.datasets[name] = MotionSRDataset(
                    test_source, fixed=True, noise_level=level, **common
                )
            self.test_group_names = names

    def _hold_out(self, source: MotionPairs, fraction: float) -> tuple[list[int], list[int]]:
        """Training and validation positions: whole sequences held out, chosen by ``seed``."""
        sequences = sorted(set(source.sequences))
        _, held = hold_out(
            len(sequences),
            fraction,
            self.seed,
            owner=f"the {source.title} {source.split} split",
            unit="sequence",
        )
        val_seqs = {sequences[i] for i in held}
        train_idx = [i for i, seq in enumerate(source.sequences) if seq not in val_seqs]
        val_idx = [i for i, seq in enumerate(source.sequences) if seq in val_seqs]
        return train_idx, val_idx
