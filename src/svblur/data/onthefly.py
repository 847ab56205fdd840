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

The sources (:class:`~svblur.data.rgbd.RGBDSource`: :class:`NYUv2RGBD`,
:class:`CityscapesRGBD`, :class:`RGBDFolder`, :class:`ImageFolder`) live in
:mod:`svblur.data.rgbd`; they are re-exported here under their old import path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import Dataset

from svblur.data.builders.common import GROUP_NAMES, invariant_masks
from svblur.data.folders import hold_out
from svblur.data.loaders import WorkerRNG
from svblur.data.mixins import SplitsDataMixin
from svblur.data.rgbd import (
    CityscapesRGBD,
    ImageFolder,
    NYUv2RGBD,
    RGBDFolder,
    RGBDSample,
    RGBDSource,
    load_image_sample,
)
from svblur.data.transforms import crop_windows
from svblur.degradation import fill_invalid_depth, render_defocus, render_uniform_blur
from svblur.degradation.pipeline import (
    Camera,
    DefocusBlur,
    SamplePipeline,
    SceneInput,
    maps_to_tensors,
)
from svblur.degradation.resize import imresize
from svblur.errors import InputError

__all__ = [
    "CityscapesRGBD",
    "ImageFolder",
    "NYUv2RGBD",
    "OnTheFlyDefocusDataModule",
    "OnTheFlyDefocusDataset",
    "RGBDFolder",
    "RGBDSample",
    "RGBDSource",
    "load_image_sample",
    "render_batch",
]


# --------------------------------------------------------------------------- data set
class OnTheFlyDefocusDataset(Dataset):
    """Degrades sharp (RGB-D) samples when they are drawn, with the sample pipeline.

    Per draw: an aligned random crop of ``crop_size`` (or the whole image, cropped to a
    multiple of ``scale``) with an optional horizontal flip, then the degradation
    (:class:`~svblur.degradation.SamplePipeline`; default: defocus, the builders' camera
    prior and rendering), space-invariant with probability ``space_invariant_fraction``.

    With ``fixed=True`` (validation / test) the crop is centred, there is no flip and the
    draw of sample ``i`` comes from ``np.random.default_rng([seed, 2, i])``; ``invariant``
    then fixes which samples are space-invariant. Otherwise draws come from a per-process
    stream seeded by ``seed`` and the worker's torch seed, so every epoch sees new
    degradations and runs follow ``lightning.seed_everything``.

    Args:
        source: Sharp samples (:class:`RGBDSource`); depth and labels are optional.
        crop_size: HR ``(H, W)``, each divisible by ``scale``; ``None``: whole images.
        scale: LR factor.
        max_coc: Largest CoC in HR pixels of the defocus degradation (unless the
            degradation sets its own).
        space_invariant_fraction: Probability of a space-invariant draw.
        hflip: Random horizontal flips (training).
        fixed: Fixed crops and draws (validation / test).
        invariant: With ``fixed``, per-sample space-invariant flags.
        seed: Seed.
        render_on: ``"loader"`` renders here; ``"device"`` (defocus with bicubic LR only)
            returns the camera for :func:`render_batch`.
        degradation: The sample pipeline (``None``: defocus, bicubic x ``scale``).

    Items: see :data:`svblur.degradation.pipeline.SAMPLE_KEYS` (``lr``, ``hr`` and the
    degradation's maps; ``depth`` and ``seg`` where the source has them). With
    ``render_on="device"``: ``hr``, ``seg``, ``depth`` and ``camera`` ``(4,)`` float64 =
    (focal length, focus distance, invariant sigma, space-invariant flag).
    """

    def __init__(
        self,
        source: RGBDSource,
        crop_size: Sequence[int] | None = (256, 256),
        scale: int = 4,
        max_coc: float = 29.0,
        space_invariant_fraction: float = 0.2,
        hflip: bool = True,
        fixed: bool = False,
        invariant: Sequence[bool] | None = None,
        seed: int = 0,
        render_on: str = "loader",
        degradation: SamplePipeline | None = None,
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
        self.pipeline = (
            SamplePipeline(DefocusBlur(), scale=scale) if degradation is None else degradation
        )
        if self.pipeline.scale != int(scale):
            raise ValueError(
                f"the degradation's scale {self.pipeline.scale} differs from scale={scale}"
            )
        if render_on == "device" and not (self.pipeline.is_defocus and self.pipeline.bicubic_only):
            raise ValueError(
                "render_on='device' renders plain defocus with bicubic LR only; use "
                "render_on='loader' for this degradation"
            )
        self.source = source
        self.crop_size = crop_size
        self.scale = int(scale)
        self.max_coc = (
            self.pipeline.blur.resolve_max_coc(max_coc) if self.pipeline.is_defocus else max_coc
        )
        self.space_invariant_fraction = float(space_invariant_fraction)
        self.hflip = bool(hflip)
        self.fixed = bool(fixed)
        self.invariant = None if invariant is None else [bool(v) for v in invariant]
        self.seed = int(seed)
        self.render_on = render_on
        self._worker_rng = WorkerRNG(self.seed, 3)

    def __len__(self) -> int:
        return len(self.source)

    def _rng(self, index: int) -> np.random.Generator:
        if self.fixed:
            return np.random.default_rng([self.seed, 2, int(index)])
        return self._worker_rng()

    def _crop(self, sample: RGBDSample, rng: np.random.Generator) -> SceneInput:
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
        window, _ = crop_windows((height, width), (ch, cw), 1, None if self.fixed else rng)
        flip = not self.fixed and self.hflip and bool(rng.random() < 0.5)

        def take(array: np.ndarray | None) -> np.ndarray | None:
            if array is None:
                return None
            array = array[window]
            return np.ascontiguousarray(array[:, ::-1] if flip else array)

        depth = take(sample.depth)
        if depth is not None:
            depth = np.asarray(fill_invalid_depth(depth), np.float64)
        seg = take(sample.seg)
        return SceneInput(take(sample.image), depth, None if seg is None else seg.astype(np.int64))

    def _invariant(self, index: int, depth: np.ndarray | None, rng: np.random.Generator) -> bool:
        if self.fixed and self.invariant is not None:
            invariant = self.invariant[index]
        else:
            invariant = bool(rng.random() < self.space_invariant_fraction)
        # A crop of constant depth has no defocus to solve for: use one Gaussian.
        return invariant or (
            self.pipeline.is_defocus
            and depth is not None
            and float(depth.max()) == float(depth.min())
        )

    def camera(
        self, index: int, depth: np.ndarray, rng: np.random.Generator
    ) -> tuple[Camera, bool]:
        """Camera and space-invariant flag of a defocus draw (the builders' order)."""
        camera = self.pipeline.blur.camera.draw(rng, depth, self.max_coc)
        return camera, self._invariant(index, depth, rng)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = self._rng(index)
        scene = self._crop(self.source.load(index), rng)
        item = {
            "hr": torch.from_numpy(
                np.ascontiguousarray(scene.image.transpose(2, 0, 1), np.float32)
            ),
        }
        if scene.seg is not None:
            item["seg"] = torch.from_numpy(scene.seg)
        if scene.depth is not None:
            item["depth"] = torch.from_numpy(scene.depth.astype(np.float32))[None]
        if self.pipeline.is_defocus:
            if scene.depth is None:
                raise ValueError(
                    f"sample {index} has no depth: degradation defocus needs depth (choose "
                    "degradation=gaussian_sv or motion_sv for images without depth)"
                )
            camera, invariant = self.camera(index, scene.depth, rng)
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
            degraded = self.pipeline.blur.render(scene, camera, not invariant, self.max_coc)
        else:
            invariant = self._invariant(index, scene.depth, rng)
            degraded = self.pipeline.degrade(scene, rng, invariant=invariant, max_coc=self.max_coc)
        lr = self.pipeline.to_lr(degraded.image, rng)
        item["lr"] = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1)))
        item.update(maps_to_tensors(degraded.maps))
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
class OnTheFlyDefocusDataModule(SplitsDataMixin, L.LightningDataModule):
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
        max_coc: Largest CoC in HR pixels (defocus).
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
            available and the degradation is plain defocus with bicubic LR). Validation
            and test always render in the loader (fixed cameras).
        degradation: The sample pipeline (``degradation=NAME``; ``None``: defocus).
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
        degradation: SamplePipeline | None = None,
        **source_settings: Any,
    ) -> None:
        super().__init__()
        self.set_loader_settings(
            batch_size, eval_batch_size, num_workers, pin_memory, persistent_workers, seed
        )
        self.source_settings = source_settings
        pipeline = (
            SamplePipeline(DefocusBlur(), scale=scale) if degradation is None else degradation
        )
        if render_on == "auto":
            on_device = pipeline.is_defocus and pipeline.bicubic_only
            render_on = "device" if torch.cuda.is_available() and on_device else "loader"
        if render_on not in ("loader", "device"):
            raise ValueError(f"render_on must be 'loader', 'device' or 'auto', got {render_on!r}")
        if pipeline.is_defocus and not getattr(train_source, "has_depth", True):
            raise InputError(
                "degradation=defocus needs depth, and this data has none (give depth maps, "
                "e.g. <root>/depth/<name>.png, or choose degradation=gaussian_sv, motion_sv or "
                "partial_blur with degradation.blur.source=motion)"
            )
        if test_groups not in (1, len(GROUP_NAMES)):
            raise ValueError(f"test_groups must be 1 or {len(GROUP_NAMES)}, got {test_groups}")
        self.save_hyperparameters(
            logger=False, ignore=["train_source", "test_source", "val_source", "degradation"]
        )
        self.num_classes = int(num_classes)
        self.scale = int(scale)
        self.render_on = render_on
        self.max_coc = (
            pipeline.blur.resolve_max_coc(max_coc) if pipeline.is_defocus else float(max_coc)
        )
        common = {
            "scale": self.scale,
            "max_coc": self.max_coc,
            "space_invariant_fraction": space_invariant_fraction,
            "degradation": pipeline,
            "seed": self.seed,
        }
        eval_crop = None if eval_crop_size is None else tuple(eval_crop_size)
        if val_source is None:
            train_idx, val_idx = hold_out(
                len(train_source),
                val_fraction,
                self.seed,
                owner="the training source",
                unit="sample",
            )
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
