"""On-the-fly defocus: a new camera every time a sample is drawn.

The released NYUv2-BSR / Cityscapes-BSR fix one camera per image. Here the training
set is the raw RGB-D data (NYUv2 ``.mat``, a Cityscapes root, or any folder of RGB-D
pairs) and each draw renders a fresh camera with the same engine and sampling as the
builders (:mod:`svblur.data.builders`), so training sees unlimited blur variety.

Rendering happens either in the loader workers (``render_on="loader"``, CPU), or on the
training device after the batch is moved there (``render_on="device"``): the loader
then only reads and crops, and :meth:`OnTheFlyDefocusDataModule.on_after_batch_transfer`
renders the batch on the GPU. ``"auto"`` picks ``"device"`` when CUDA is available.
Validation and test samples use fixed cameras (a pure function of ``seed`` and index);
the test split has the five groups of the released data sets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from svblur.data.builders.common import (
    GROUP_NAMES,
    Camera,
    invariant_masks,
    render_sample,
    sample_camera,
)
from svblur.data.samplers import ResumableDataMixin
from svblur.degradation import fill_invalid_depth, render_defocus, render_uniform_blur
from svblur.degradation.resize import imresize
from svblur.io import read_image
from svblur.metrics.functional import IGNORE_INDEX

__all__ = [
    "CityscapesRGBD",
    "NYUv2RGBD",
    "OnTheFlyDefocusDataModule",
    "OnTheFlyDefocusDataset",
    "RGBDFolder",
    "RGBDSample",
    "RGBDSource",
    "render_batch",
]


@dataclass(frozen=True)
class RGBDSample:
    """A sharp RGB-D sample in training conventions.

    Attributes:
        image: RGB ``(H, W, 3)`` float32 in ``[0, 1]``.
        depth: Depth ``(H, W)`` in millimetres (NaN / 0 where unknown).
        seg: Labels ``(H, W)`` int64 in ``[0, K)`` or 255.
    """

    image: np.ndarray
    depth: np.ndarray
    seg: np.ndarray


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

    def __init__(self, root: str | Path, depth_scale: float = 1.0) -> None:
        self.root = Path(root)
        self.depth_scale = float(depth_scale)
        rgb = self.root / "rgb"
        if not rgb.is_dir():
            raise ValueError(f"missing folder {rgb} (expected <root>/rgb, <root>/depth)")
        self.images = sorted(
            p for p in rgb.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")
        )
        if not self.images:
            raise ValueError(f"no images in {rgb}")
        self.depths = []
        for image in self.images:
            stem = self.root / "depth" / image.stem
            found = [p for p in (stem.with_suffix(".png"), stem.with_suffix(".npy")) if p.is_file()]
            if not found:
                raise ValueError(f"missing depth for {image}: expected {stem}.png or {stem}.npy")
            self.depths.append(found[0])

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> RGBDSample:
        path = self.images[index]
        image = read_image(path, "rgb")
        depth_path = self.depths[index]
        if depth_path.suffix == ".npy":
            depth = np.load(depth_path).astype(np.float64)
        else:
            depth = read_image(depth_path, "unchanged")
            if depth.ndim != 2:
                raise ValueError(f"{depth_path}: expected a 1-channel depth PNG")
            depth = depth.astype(np.float64)
        depth = depth * self.depth_scale
        seg_path = self.root / "semseg" / f"{path.stem}.png"
        if seg_path.is_file():
            seg = read_image(seg_path, "labels").astype(np.int64)
        else:
            seg = np.full(image.shape[:2], IGNORE_INDEX, np.int64)
        if depth.shape != image.shape[:2] or seg.shape != image.shape[:2]:
            raise ValueError(f"{path}: image, depth and labels differ in size")
        return RGBDSample(image, depth, seg)


# --------------------------------------------------------------------------- data set
class OnTheFlyDefocusDataset(Dataset):
    """Renders defocus from sharp RGB-D samples when they are drawn.

    Per draw: an aligned random crop of ``crop_size`` (or the whole image, cropped to a
    multiple of ``scale``) with an optional horizontal flip, a camera drawn like the
    builders (:func:`~svblur.data.builders.sample_camera`: focal length 50/70/85 mm by
    weight, focus on a random pixel's depth, f-number so that the largest CoC equals
    ``max_coc``), and with probability ``space_invariant_fraction`` one Gaussian blur
    instead.

    With ``fixed=True`` (validation / test) the crop is centred, there is no flip and the
    camera of sample ``i`` comes from ``np.random.default_rng([seed, 2, i])``;
    ``invariant`` then fixes which samples are space-invariant. Otherwise draws come from
    a per-process stream seeded by ``seed`` and the worker's torch seed, so every epoch
    sees new cameras and runs follow ``lightning.seed_everything``.

    Args:
        source: Sharp RGB-D samples (:class:`RGBDSource`).
        crop_size: HR ``(H, W)``, each divisible by ``scale``; ``None``: whole images.
        scale: LR factor.
        max_coc: Largest CoC in HR pixels.
        focal_lengths: Candidate focal lengths in mm.
        focal_weights: Their weights.
        space_invariant_fraction: Probability of a space-invariant draw.
        hflip: Random horizontal flips (training).
        fixed: Fixed crops and cameras (validation / test).
        invariant: With ``fixed``, per-sample space-invariant flags.
        seed: Seed.
        render_on: ``"loader"`` renders here; ``"device"`` returns the camera for
            :func:`render_batch`.

    Items (``render_on="loader"``): ``lr`` ``(3, H/s, W/s)``, ``hr`` ``(3, H, W)``,
    ``blur`` ``(1, H, W)`` sigma, ``seg`` ``(H, W)`` int64, ``depth`` ``(1, H, W)`` mm.
    With ``"device"``: ``hr``, ``seg``, ``depth`` and ``camera`` ``(4,)`` float64 =
    (focal length, focus distance, invariant sigma, space-invariant flag).
    """

    def __init__(
        self,
        source: RGBDSource,
        crop_size: Sequence[int] | None = (256, 256),
        scale: int = 4,
        max_coc: float = 29.0,
        focal_lengths: Sequence[float] = (50.0, 70.0, 85.0),
        focal_weights: Sequence[float] = (0.1, 0.4, 0.4),
        space_invariant_fraction: float = 0.2,
        hflip: bool = True,
        fixed: bool = False,
        invariant: Sequence[bool] | None = None,
        seed: int = 0,
        render_on: str = "loader",
    ) -> None:
        super().__init__()
        if crop_size is not None:
            crop_size = (int(crop_size[0]), int(crop_size[1]))
            if crop_size[0] % scale or crop_size[1] % scale:
                raise ValueError(f"crop_size must be divisible by scale={scale}, got {crop_size}")
        if render_on not in ("loader", "device"):
            raise ValueError(f"render_on must be 'loader' or 'device', got {render_on!r}")
        if not (math.isfinite(max_coc) and max_coc > 1):
            raise ValueError(f"max_coc must be > 1 pixel, got {max_coc}")
        if invariant is not None and len(invariant) != len(source):
            raise ValueError(f"invariant has {len(invariant)} flags for {len(source)} samples")
        self.source = source
        self.crop_size = crop_size
        self.scale = int(scale)
        self.max_coc = float(max_coc)
        self.focal_lengths = tuple(float(f) for f in focal_lengths)
        self.focal_weights = tuple(float(w) for w in focal_weights)
        self.space_invariant_fraction = float(space_invariant_fraction)
        self.hflip = bool(hflip)
        self.fixed = bool(fixed)
        self.invariant = None if invariant is None else [bool(v) for v in invariant]
        self.seed = int(seed)
        self.render_on = render_on
        self._rng_state: tuple[object, np.random.Generator] | None = None

    def __len__(self) -> int:
        return len(self.source)

    def _rng(self, index: int) -> np.random.Generator:
        if self.fixed:
            return np.random.default_rng([self.seed, 2, int(index)])
        info = get_worker_info()
        base_seed = info.seed if info is not None else torch.initial_seed()
        token = (info.id if info is not None else None, base_seed)
        if self._rng_state is None or self._rng_state[0] != token:
            self._rng_state = (token, np.random.default_rng([self.seed, base_seed % 2**63, 3]))
        return self._rng_state[1]

    def _crop(self, sample: RGBDSample, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        s = self.scale
        height, width = sample.image.shape[:2]
        if self.crop_size is None:
            ch, cw = (height // s) * s, (width // s) * s
        else:
            ch, cw = self.crop_size
            if ch > height or cw > width:
                raise ValueError(
                    f"crop_size {self.crop_size} exceeds the image size {(height, width)}"
                )
        if self.fixed:
            top, left = (height - ch) // 2, (width - cw) // 2
            flip = False
        else:
            top = int(rng.integers(0, height - ch + 1))
            left = int(rng.integers(0, width - cw + 1))
            flip = self.hflip and bool(rng.random() < 0.5)
        window = (slice(top, top + ch), slice(left, left + cw))
        arrays = [sample.image[window], sample.depth[window], sample.seg[window]]
        if flip:
            arrays = [a[:, ::-1] for a in arrays]
        return tuple(np.ascontiguousarray(a) for a in arrays)

    def camera(
        self, index: int, depth: np.ndarray, rng: np.random.Generator
    ) -> tuple[Camera, bool]:
        """Camera and space-invariant flag of a draw."""
        camera = sample_camera(rng, depth, self.max_coc, self.focal_lengths, self.focal_weights)
        if self.fixed and self.invariant is not None:
            invariant = self.invariant[index]
        else:
            invariant = bool(rng.random() < self.space_invariant_fraction)
        # A crop of constant depth has no defocus to solve for: use one Gaussian.
        invariant = invariant or float(depth.max()) == float(depth.min())
        return camera, invariant

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = self._rng(index)
        image, depth, seg = self._crop(self.source.load(index), rng)
        depth = np.asarray(fill_invalid_depth(depth), np.float64)
        camera, invariant = self.camera(index, depth, rng)
        item = {
            "hr": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), np.float32)),
            "seg": torch.from_numpy(seg.astype(np.int64)),
            "depth": torch.from_numpy(depth.astype(np.float32))[None],
        }
        if self.render_on == "device":
            item["camera"] = torch.tensor(
                [
                    camera.focal_length_mm,
                    camera.focus_distance_mm,
                    camera.invariant_sigma,
                    float(invariant),
                ],
                dtype=torch.float64,
            )
            return item
        rendered = render_sample(image, depth, camera, not invariant, self.max_coc, self.scale)
        item["lr"] = torch.from_numpy(np.ascontiguousarray(rendered.lr.transpose(2, 0, 1)))
        item["blur"] = torch.from_numpy(rendered.blur)[None]
        return item


def render_batch(
    batch: dict[str, torch.Tensor], max_coc: float, scale: int
) -> dict[str, torch.Tensor]:
    """Render a batch of ``render_on="device"`` items on the batch's device.

    Args:
        batch: ``hr`` ``(B, 3, H, W)``, ``depth`` ``(B, 1, H, W)`` mm, ``camera`` ``(B, 4)``.
        max_coc: Largest CoC in pixels.
        scale: LR factor.

    Returns:
        The batch with ``lr`` ``(B, 3, H/s, W/s)`` and ``blur`` ``(B, 1, H, W)`` added and
        ``camera`` removed.
    """
    camera = batch.pop("camera").cpu().tolist()
    hr = batch["hr"]
    depth = batch["depth"][:, 0].detach().cpu().double().numpy()
    blurred, blur = [], []
    for i, (focal, focus, sigma, invariant) in enumerate(camera):
        image = hr[i].permute(1, 2, 0)
        if invariant:
            out, sigma_map = render_uniform_blur(image, sigma, max_coc=max_coc)
        else:
            out, sigma_map = render_defocus(image, depth[i], focal, focus, None, max_coc)
        blurred.append(out.permute(2, 0, 1))
        blur.append(sigma_map.to(hr.device, torch.float32))
    batch["lr"] = imresize(torch.stack(blurred).clamp(0, 1), 1.0 / scale).clamp(0, 1)
    batch["blur"] = torch.stack(blur)[:, None]
    return batch


# --------------------------------------------------------------------------- DataModule
class OnTheFlyDefocusDataModule(ResumableDataMixin, L.LightningDataModule):
    """Train on fresh cameras every epoch; validate and test on fixed ones.

    Args:
        train_source: Sharp RGB-D training samples.
        test_source: Test samples (five groups, fixed cameras); ``None``: no test split.
        val_source: Validation samples; ``None`` holds out ``val_fraction`` of
            ``train_source`` (with fixed cameras).
        num_classes: Number of semantic classes of the sources.
        scale: LR factor.
        crop_size: HR training crop ``(H, W)``.
        eval_crop_size: HR crop of validation / test samples; ``None``: whole images.
        max_coc: Largest CoC in HR pixels.
        focal_lengths: Candidate focal lengths in mm.
        focal_weights: Their weights.
        space_invariant_fraction: Share of space-invariant samples (and per test group).
        test_groups: Number of test groups (5 as the paper; 1 for a single ``test``).
        val_fraction: Held-out share of ``train_source`` when ``val_source`` is ``None``.
        batch_size: Training batch size.
        eval_batch_size: Validation / test batch size.
        num_workers: Loader workers.
        pin_memory: Pin batches.
        persistent_workers: Keep workers between epochs.
        seed: Seed of cameras, crops and the held-out split.
        render_on: ``"loader"``, ``"device"`` or ``"auto"`` (``"device"`` when CUDA is
            available). Validation and test always render in the loader (fixed cameras).
        **source_settings: Values the Hydra configs interpolate into the sources
            (``mat``, ``class_map``, ``root`` ...); kept in :attr:`source_settings` only.
    """

    def __init__(
        self,
        train_source: RGBDSource,
        test_source: RGBDSource | None = None,
        val_source: RGBDSource | None = None,
        num_classes: int = 40,
        scale: int = 4,
        crop_size: Sequence[int] = (256, 256),
        eval_crop_size: Sequence[int] | None = None,
        max_coc: float = 29.0,
        focal_lengths: Sequence[float] = (50.0, 70.0, 85.0),
        focal_weights: Sequence[float] = (0.1, 0.4, 0.4),
        space_invariant_fraction: float = 0.2,
        test_groups: int = 5,
        val_fraction: float = 0.05,
        batch_size: int = 8,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        seed: int = 0,
        render_on: str = "auto",
        **source_settings: Any,
    ) -> None:
        super().__init__()
        self.source_settings = source_settings
        if render_on == "auto":
            render_on = "device" if torch.cuda.is_available() else "loader"
        if render_on not in ("loader", "device"):
            raise ValueError(f"render_on must be 'loader', 'device' or 'auto', got {render_on!r}")
        if test_groups not in (1, len(GROUP_NAMES)):
            raise ValueError(f"test_groups must be 1 or {len(GROUP_NAMES)}, got {test_groups}")
        self.save_hyperparameters(
            logger=False, ignore=["train_source", "test_source", "val_source"]
        )
        self.num_classes = int(num_classes)
        self.scale = int(scale)
        self.render_on = render_on
        self.max_coc = float(max_coc)
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.seed = int(seed)
        common = {
            "scale": self.scale,
            "max_coc": self.max_coc,
            "focal_lengths": focal_lengths,
            "focal_weights": focal_weights,
            "space_invariant_fraction": space_invariant_fraction,
            "seed": self.seed,
        }
        eval_crop = None if eval_crop_size is None else tuple(eval_crop_size)
        if val_source is None:
            order = np.random.default_rng([self.seed, 11]).permutation(len(train_source))
            held = max(1, math.floor(len(train_source) * val_fraction + 0.5))
            if held >= len(train_source):
                raise ValueError(f"val_fraction={val_fraction} leaves no training samples")
            val_idx, train_idx = sorted(order[:held].tolist()), sorted(order[held:].tolist())
            val_source = _IndexedSource(train_source, val_idx)
            train_source = _IndexedSource(train_source, train_idx)
        self.datasets: dict[str, Dataset] = {
            "train": OnTheFlyDefocusDataset(
                train_source, crop_size, render_on=render_on, hflip=True, **common
            ),
            "val": OnTheFlyDefocusDataset(
                val_source,
                eval_crop,
                fixed=True,
                invariant=invariant_masks(len(val_source), space_invariant_fraction, self.seed, 1)[
                    0
                ],
                **common,
            ),
        }
        self.test_group_names: list[str] = []
        if test_source is not None:
            masks = invariant_masks(
                len(test_source), space_invariant_fraction, self.seed, test_groups
            )
            names = list(GROUP_NAMES) if test_groups > 1 else ["test"]
            for name, mask in zip(names, masks):
                self.datasets[name] = OnTheFlyDefocusDataset(
                    test_source, eval_crop, fixed=True, invariant=mask, **common
                )
            if test_groups > 1:
                self.test_group_names = names

    def _loader(self, key: str, shuffle: bool, batch_size: int) -> DataLoader:
        return self.split_loader(self.datasets[key], batch_size, train=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        if "test" in self.datasets:
            return self._loader("test", False, self.eval_batch_size)
        if not self.test_group_names:
            raise ValueError("no test_source was given to OnTheFlyDefocusDataModule")
        return [self._loader(g, False, self.eval_batch_size) for g in self.test_group_names]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Render ``render_on="device"`` training batches where they now are (the GPU)."""
        if isinstance(batch, dict) and "camera" in batch:
            batch = render_batch(batch, self.max_coc, self.scale)
        return batch


class _IndexedSource:
    """A subset of a source's samples."""

    def __init__(self, source: RGBDSource, indices: Sequence[int]) -> None:
        self.source, self.indices = source, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> RGBDSample:
        return self.source.load(self.indices[index])
