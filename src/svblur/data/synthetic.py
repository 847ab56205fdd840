"""The built-in, fully offline defocus data set and its DataModule: procedural and real
RGB-D scenes.

Every sample of :class:`SyntheticDefocus` is rendered on the fly (and cached) with the
same thin-lens defocus engine as the NYUv2-BSR / Cityscapes-BSR generators
(:mod:`svblur.degradation`), then downsampled with MATLAB-style bicubic ``imresize`` (or
the sample pipeline's LR step) to make the LR input. Data sets with the same settings can
share one render cache (``render_cache``, or :func:`shared_render_cache` for those built
out of reach, e.g. inside training jobs). :class:`DefocusDataModule` serves its train /
val / test splits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from svblur.data.loaders import WorkerRNG
from svblur.data.mixins import ResumableDataMixin
from svblur.data.scenes import Scene, generate_scene, stereo_motorcycle_scene
from svblur.data.transforms import DefocusAugment, SigmaScaling, record_to_sample
from svblur.degradation.pipeline import (
    SYNDOF_MAX_COC,
    DefocusBlur,
    SamplePipeline,
    SceneInput,
    maps_to_tensors,
)
from svblur.metrics import IGNORE_INDEX

__all__ = [
    "SPLITS",
    "DefocusDataModule",
    "RenderCache",
    "RenderedSample",
    "SyntheticDefocus",
    "default_max_coc",
    "shared_render_cache",
]

#: Split names and the code that separates their random streams.
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}

Augment = Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]]


def default_max_coc(width: int) -> float:
    """Largest circle of confusion (px) for an image ``width`` pixels wide.

    SYNDOF's 29 px is meant for 640 px wide images; it is scaled with the width so that
    blur covers the same fraction of the scene, rounded to an odd integer, but never
    below 9 px (sigma 2 HR px = 0.5 LR px at x4): below that the x4 bicubic
    antialiasing kernel hides most of the defocus and there is little left to estimate.
    Examples: 128 -> 9, 320 -> 15, 640 -> 29.
    """
    scaled = SYNDOF_MAX_COC * width / 640.0
    odd = 2 * math.floor(scaled / 2) + 1
    return float(max(9, odd))


@dataclass(frozen=True)
class RenderedSample:
    """A degraded sample before augmentation (numpy, HWC), with its draw.

    Attributes:
        hr: Sharp HR image ``(H, W, 3)`` float32 in ``[0, 1]`` (the SR target).
        hr_blurred: Degraded HR image ``(H, W, 3)`` float32 in ``[0, 1]`` (LR is made
            from it).
        maps: What the degradation knows, per HR pixel (``blur`` ``(H, W)`` sigma,
            ``kernels`` ``(k*k, H, W)``, ``blur_mask`` ``(H, W)``; see
            :data:`svblur.degradation.pipeline.SAMPLE_KEYS`).
        seg: Labels ``(H, W)`` int64 in ``[0, K)`` or 255.
        depth: Depth ``(H, W)`` float32 in millimetres.
        space_invariant: Whether one blur was used for the whole image.
        source: Scene source, ``"procedural"`` or ``"stereo_motorcycle"``.
        focal_length_mm: Focal length of the sampled camera (defocus; else NaN).
        focus_distance_mm: Focus distance (a depth of the scene); NaN if space-invariant.
    """

    hr: np.ndarray
    hr_blurred: np.ndarray
    maps: dict[str, np.ndarray]
    seg: np.ndarray
    depth: np.ndarray
    space_invariant: bool
    source: str
    focal_length_mm: float = math.nan
    focus_distance_mm: float = math.nan

    @property
    def blur(self) -> np.ndarray | None:
        """The sigma map ``(H, W)``, where the degradation gives one."""
        return self.maps.get("blur")

    def record(self) -> dict[str, np.ndarray]:
        """The maps as a dict, the input of :class:`~svblur.data.transforms.DefocusAugment`."""
        return {
            "hr": self.hr,
            "hr_blurred": self.hr_blurred,
            **self.maps,
            "seg": self.seg,
            "depth": self.depth,
        }


#: Rendered samples by ``(SyntheticDefocus.render_settings, index)``; one mapping can serve
#: every data set, since the key holds everything that decides a render.
RenderCache = MutableMapping[tuple[Hashable, int], RenderedSample]

_SHARED_RENDER_CACHE: ContextVar[RenderCache | None] = ContextVar(
    "svblur_shared_render_cache", default=None
)


@contextmanager
def shared_render_cache(store: RenderCache | None = None) -> Iterator[RenderCache]:
    """Share one render cache between every :class:`SyntheticDefocus` built in this context.

    For data sets built out of the caller's reach, e.g. by the data modules of several
    training jobs composed from configs (``svblur-compare``): with the same settings they
    draw the same samples, and each is rendered once for all of them. It is the default
    of ``render_cache`` for data sets constructed inside the context (in this thread);
    they keep using the store afterwards. Rendering results are unchanged.

    Args:
        store: The mapping to share; ``None``: a new dict.

    Yields:
        The shared store.
    """
    shared: RenderCache = {} if store is None else store
    token = _SHARED_RENDER_CACHE.set(shared)
    try:
        yield shared
    finally:
        _SHARED_RENDER_CACHE.reset(token)


def _evenly_spread(index: int, fraction: float, offset: float) -> bool:
    """Whether ``index`` is selected when a ``fraction`` of indices is spread evenly.

    Exactly ``floor(n * fraction + offset) - floor(offset)`` of the first ``n`` indices are
    selected, so for any ``n`` divisible by ``1 / fraction`` the share is exact.
    """
    return math.floor((index + 1) * fraction + offset) - math.floor(index * fraction + offset) == 1


class SyntheticDefocus(Dataset):
    """Offline defocus data set with blur, semantics, depth and x4 LR inputs.

    Sample ``i`` of a split is a pure function of ``(seed, split, i)``: its generator is
    ``np.random.default_rng([seed, SPLITS[split], i])``, so splits never share a stream.
    Per sample:

    1. a scene: a crop of the real ``stereo_motorcycle`` RGB-D pair (a ``real_fraction``
       of the space-variant samples, evenly spread, unlabelled = 255) or a procedural scene
       (:mod:`svblur.data.scenes`);
    2. the degradation of the sample pipeline (``degradation``; default: defocus): for
       defocus a camera from the prior (SYNDOF: 50/70/85 mm by weight 0.1/0.4/0.4),
       focus on the depth of a random pixel, f-number solved so the largest CoC equals
       ``max_coc``;
    3. space-invariant samples (indices ``i`` with ``floor((i+1)f) - floor(i f) = 1``
       for ``f = space_invariant_fraction``: i = 3, 7, 11, ... for 1/4, so exactly a
       quarter of any multiple of 4 samples) use one blur for the whole image (defocus:
       one Gaussian, its CoC uniform in ``[1, max_coc]`` on the 0.1 px grid);
    4. after the augmentation, the pipeline's LR step (the one place the LR is made); by
       default ``lr = clip(imresize(blurred_hr, 1 / scale), 0, 1)`` (no 8-bit
       quantisation). Random LR steps (noise, JPEG, the second-order model) draw from a
       generator of ``(seed, split, index)`` (and the epoch when the sampler gives one).

    Rendered samples are cached in memory (per worker process when ``num_workers > 0``),
    except those with a kernel field (``k*k`` times the image: they are rendered again
    on each access, identically).
    Augmentation runs after the cache, from a generator seeded by ``seed``, the split
    and the torch seed of the process or worker (so it differs across epochs and workers
    and follows ``lightning.seed_everything``).

    Args:
        num_samples: Number of samples in the split.
        hr_size: ``(H, W)`` of HR maps; each divisible by ``scale``.
        scale: LR downsampling factor.
        num_classes: Number of semantic classes ``K`` (see
            :func:`svblur.data.scenes.kind_to_class`).
        split: ``"train"``, ``"val"`` or ``"test"``.
        seed: Data set seed.
        space_invariant_fraction: Share of space-invariant samples.
        real_fraction: Share of the space-variant samples that are crops of the real
            ``stereo_motorcycle`` RGB-D pair.
        max_coc: Largest CoC in pixels; ``None`` uses :func:`default_max_coc` of the width
            (unless the degradation sets its own).
        augment: ``False``, ``True`` (a :class:`DefocusAugment` with ``sigma_scaling``),
            or a callable ``(record, rng) -> record`` (see :meth:`RenderedSample.record`);
            the LR is made from the augmented record's ``hr_blurred`` afterwards.
        sigma_scaling: Direction of the zoom's effect on sigma when ``augment=True``.
        cache: Keep rendered samples in memory, in this data set's own store (when no
            ``render_cache`` is given or shared).
        device: Device for the defocus renderer (``None``: its default).
        render_cache: Where rendered samples are kept, keyed by
            ``(render_settings, index)``: one mapping given to several data sets renders
            each sample once for all that share the settings. ``None``: the store of an
            enclosing :func:`shared_render_cache`, else this data set's own (``cache``).
        degradation: The sample pipeline (``None``: defocus, bicubic x ``scale``).

    Each item is a dict: ``lr`` ``(3, H/s, W/s)`` float32, ``hr`` ``(3, H, W)`` float32,
    the degradation's maps (defocus: ``blur`` ``(1, H, W)`` float32 sigma), ``seg``
    ``(H, W)`` int64, ``depth`` ``(1, H, W)`` float32 mm
    (:data:`svblur.degradation.pipeline.SAMPLE_KEYS`).
    """

    def __init__(
        self,
        num_samples: int = 256,
        hr_size: tuple[int, int] = (96, 128),
        scale: int = 4,
        num_classes: int = 8,
        split: str = "train",
        seed: int = 0,
        space_invariant_fraction: float = 0.25,
        real_fraction: float = 0.125,
        max_coc: float | None = None,
        augment: bool | Augment = False,
        sigma_scaling: SigmaScaling = "physical",
        cache: bool = True,
        device: str | torch.device | None = None,
        render_cache: RenderCache | None = None,
        degradation: SamplePipeline | None = None,
    ) -> None:
        super().__init__()
        if len(hr_size) != 2:
            raise ValueError(f"hr_size must be (H, W), got {hr_size}")
        height, width = int(hr_size[0]), int(hr_size[1])
        if scale < 1 or int(scale) != scale:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        if height % scale or width % scale or height < 8 * scale or width < 8 * scale:
            raise ValueError(
                f"hr_size must be divisible by scale={scale} and at least {8 * scale} each, got "
                f"{tuple(hr_size)}; expected e.g. "
                f"{(max(8 * scale, height // scale * scale), max(8 * scale, width // scale * scale))}"
            )
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if not 2 <= num_classes <= IGNORE_INDEX:
            raise ValueError(f"num_classes must be in [2, {IGNORE_INDEX}], got {num_classes}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        for name, value in (
            ("space_invariant_fraction", space_invariant_fraction),
            ("real_fraction", real_fraction),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if max_coc is not None and max_coc <= 1:
            raise ValueError(f"max_coc must be > 1 pixel, got {max_coc}")
        pipeline = (
            SamplePipeline(DefocusBlur(), scale=scale) if degradation is None else degradation
        )
        if pipeline.scale != int(scale):
            raise ValueError(f"the degradation's scale {pipeline.scale} differs from scale={scale}")

        self.num_samples = int(num_samples)
        self.hr_size = (height, width)
        self.lr_size = (height // scale, width // scale)
        self.scale = int(scale)
        self.num_classes = int(num_classes)
        self.split = split
        self.seed = int(seed)
        self.space_invariant_fraction = float(space_invariant_fraction)
        self.real_fraction = float(real_fraction)
        self.pipeline = pipeline
        self.max_coc = float(max_coc) if max_coc is not None else default_max_coc(width)
        if pipeline.is_defocus:
            self.max_coc = pipeline.blur.resolve_max_coc(self.max_coc)
        if augment is True:
            augment = DefocusAugment(self.hr_size, self.scale, sigma_scaling=sigma_scaling)
        self.augment: Augment | None = augment if callable(augment) else None
        self.cache = cache
        self.device = device
        self._render_settings: tuple[Hashable, ...] = (
            self.seed,
            self.split,
            self.hr_size,
            self.num_classes,
            self.space_invariant_fraction,
            self.real_fraction,
            self.max_coc,
            repr(pipeline.blur),
            None if device is None else str(device),
        )
        if render_cache is None:
            render_cache = _SHARED_RENDER_CACHE.get()
        if render_cache is None and cache:
            render_cache = {}
        self._renders: RenderCache | None = render_cache
        self._worker_rng = WorkerRNG(self.seed, 1, [SPLITS[split]])

    def __len__(self) -> int:
        return self.num_samples

    @property
    def render_settings(self) -> tuple[Hashable, ...]:
        """Everything besides the index that decides :meth:`render`'s output.

        With the index, the key of the render cache: data sets that differ only in
        ``num_samples``, ``scale``, augmentation or caching render the same samples.
        """
        return self._render_settings

    def is_space_invariant(self, index: int) -> bool:
        """Whether sample ``index`` has a uniform blur map (deterministic, evenly spread)."""
        return _evenly_spread(index, self.space_invariant_fraction, 0.0)

    def is_real(self, index: int) -> bool:
        """Whether sample ``index`` is a crop of the real ``stereo_motorcycle`` pair.

        Real crops are spread evenly over the space-variant samples (their depth is the
        point of using them): the ``j``-th space-variant sample is real when
        ``_evenly_spread(j, real_fraction, 0.5)``.
        """
        if self.is_space_invariant(index):
            return False
        rank = index - math.floor(index * self.space_invariant_fraction)
        return _evenly_spread(rank, self.real_fraction, 0.5)

    def generator(self, index: int) -> np.random.Generator:
        """The random generator of sample ``index`` (a fresh one per call)."""
        return np.random.default_rng([self.seed, SPLITS[self.split], int(index)])

    def render(self, index: int) -> RenderedSample:
        """Render sample ``index`` (from the cache if present), before augmentation.

        Args:
            index: Sample index in ``[0, len(self))``.

        Returns:
            The :class:`RenderedSample`.
        """
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        key = (self._render_settings, int(index))
        if self._renders is not None:
            cached = self._renders.get(key)
            if cached is not None:
                return cached
        rng = self.generator(index)
        scene: Scene
        if self.is_real(index):
            scene = stereo_motorcycle_scene(rng, self.hr_size)
        else:
            scene = generate_scene(rng, self.hr_size, self.num_classes)
        invariant = self.is_space_invariant(index)
        sharp = SceneInput(scene.image, scene.depth, scene.semantics)
        blur = self.pipeline.blur
        camera = None
        if self.pipeline.is_defocus:
            which = "invariant" if invariant else "variant"
            camera = blur.camera.draw(rng, scene.depth, self.max_coc, which)
            # The built-in data set blurs its space-invariant samples on SYNDOF's 29-px
            # support whatever its max_coc (kept, so that its samples stay the same).
            degraded = blur.render(
                sharp, camera, not invariant, self.max_coc, support=SYNDOF_MAX_COC, record=False
            )
        else:
            degraded = self.pipeline.degrade(sharp, rng, invariant=invariant, max_coc=self.max_coc)
        rendered = RenderedSample(
            hr=scene.image,
            hr_blurred=np.clip(np.asarray(degraded.image, np.float32), 0.0, 1.0),
            maps=degraded.maps,
            seg=scene.semantics,
            depth=scene.depth,
            space_invariant=invariant,
            source=scene.source,
            focal_length_mm=math.nan if camera is None else camera.focal_length_mm,
            focus_distance_mm=math.nan if camera is None else camera.focus_distance_mm,
        )
        if "kernels" in rendered.maps:
            return rendered  # k*k times the image: rendered again on each access
        if self._renders is not None:
            self._renders[key] = rendered
        return rendered

    def _augment_rng(self) -> np.random.Generator:
        """Per-process augmentation generator, re-seeded in every new worker process
        (:class:`~svblur.data.loaders.WorkerRNG` of ``seed`` and the split)."""
        return self._worker_rng()

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        """Sample ``index``; ``(index, epoch)`` seeds its augmentation from both.

        With a plain index, augmentation of the training split draws from a per-process
        stream (see :meth:`_augment_rng`) and that of an evaluation split is a pure
        function of ``(seed, split, index)`` (the same images in every epoch); with ``(index, epoch)`` (what
        :class:`~svblur.data.loaders.EpochSampler` yields for training) it is a pure
        function of ``(seed, split, index, epoch)``, which makes resumed runs exact.
        """
        epoch = None
        if isinstance(index, tuple):
            index, epoch = index
        rendered = self.render(index)
        record = rendered.record()
        if self.augment is not None:
            if epoch is not None:
                rng = np.random.default_rng(
                    [self.seed, SPLITS[self.split], int(index), int(epoch), 2]
                )
            elif self.split != "train":  # evaluation splits: fixed per sample
                rng = np.random.default_rng([self.seed, SPLITS[self.split], int(index), 2])
            else:
                rng = self._augment_rng()
            record = self.augment(record, rng)
        lr_rng = None
        if not self.pipeline.bicubic_only:
            # random LR steps draw from their own stream of (seed, split, index[, epoch])
            stream = [self.seed, SPLITS[self.split], int(index), 3]
            lr_rng = np.random.default_rng(stream if epoch is None else [*stream, int(epoch)])
        arrays = record_to_sample(record, self.pipeline, lr_rng)
        seg = np.asarray(arrays["seg"])
        bad = (seg != IGNORE_INDEX) & ((seg < 0) | (seg >= self.num_classes))
        if bad.any():
            raise ValueError(
                f"sample {index} of split {self.split!r} has labels {np.unique(seg[bad]).tolist()} "
                f"outside [0, {self.num_classes}) and not the ignore index {IGNORE_INDEX}"
            )
        # Copies, so that in-place edits of a batch never reach the cache.
        item = {
            "lr": torch.from_numpy(
                np.array(arrays["lr"].transpose(2, 0, 1), np.float32, order="C")
            ),
            "hr": torch.from_numpy(
                np.array(arrays["hr"].transpose(2, 0, 1), np.float32, order="C")
            ),
        }
        item.update(maps_to_tensors({k: arrays[k] for k in rendered.maps}))
        item["seg"] = torch.from_numpy(np.array(seg, np.int64))
        item["depth"] = torch.from_numpy(np.array(arrays["depth"], np.float32))[None]
        return item


# --------------------------------------------------------------------------- DataModule
class DefocusDataModule(ResumableDataMixin, L.LightningDataModule):
    """Train / val / test loaders of :class:`SyntheticDefocus`.

    The three splits draw from disjoint random streams of the same ``seed``. The training
    split is augmented (flip and zoom); with ``eval_zoom`` the evaluation splits get the
    same zoom distribution, fixed per sample, so that they share the training split's
    distribution of sigma (a zoom multiplies sigma; without it the evaluation splits'
    mean sigma is lower than the training split's, and a constant predictor fitted to
    training loses on them for that reason alone). Batches are dicts with ``lr`` ``(B, 3, H/s, W/s)``,
    ``hr`` ``(B, 3, H, W)``, the degradation's maps (defocus: ``blur`` ``(B, 1, H, W)``),
    ``seg`` ``(B, H, W)`` int64 (255 = ignore) and ``depth`` ``(B, 1, H, W)`` in mm
    (:data:`svblur.degradation.pipeline.SAMPLE_KEYS`).

    Args:
        train_size: Size of the training split.
        val_size: Size of the validation split.
        test_size: Size of the test split.
        hr_size: ``(H, W)`` of HR maps; each divisible by ``scale``.
        scale: LR downsampling factor.
        num_classes: Number of semantic classes.
        seed: Data set seed.
        batch_size: Batch size of every loader.
        num_workers: Loader worker processes (each keeps its own render cache).
        pin_memory: Pin batches in page-locked memory.
        persistent_workers: Keep workers alive between epochs (only used when
            ``num_workers > 0``; recommended, since it keeps their caches).
        augment: Augment the training split (flip + zoom, see
            :class:`~svblur.data.transforms.DefocusAugment`).
        sigma_scaling: ``"physical"`` (sigma times zoom, default) or ``"released"``.
        eval_zoom: With ``augment``, zoom the validation and test splits as training
            does (no flip; fixed per sample).
        space_invariant_fraction: Share of space-invariant samples in every split.
        real_fraction: Share of the space-variant samples that are real
            ``stereo_motorcycle`` crops.
        max_coc: Largest CoC in pixels; ``None`` scales SYNDOF's 29 px with the width.
        cache: Cache rendered samples in memory.
        degradation: The sample pipeline (``degradation=NAME``; ``None``: defocus).
    """

    def __init__(
        self,
        train_size: int = 256,
        val_size: int = 32,
        test_size: int = 64,
        hr_size: Sequence[int] = (96, 128),
        scale: int = 4,
        num_classes: int = 8,
        seed: int = 0,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        augment: bool = True,
        sigma_scaling: SigmaScaling = "physical",
        eval_zoom: bool = False,
        space_invariant_fraction: float = 0.25,
        real_fraction: float = 0.125,
        max_coc: float | None = None,
        cache: bool = True,
        degradation: SamplePipeline | None = None,
    ) -> None:
        super().__init__()
        hr_size = tuple(int(v) for v in hr_size)
        if len(hr_size) != 2:
            raise ValueError(f"hr_size must be (H, W), got {hr_size}")
        if scale < 1 or int(scale) != scale:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        if hr_size[0] % scale or hr_size[1] % scale:
            raise ValueError(
                f"hr_size must be divisible by scale={scale}, got {hr_size}; expected e.g. "
                f"{(hr_size[0] // scale * scale, hr_size[1] // scale * scale)}"
            )
        for name, value in (
            ("train_size", train_size),
            ("val_size", val_size),
            ("test_size", test_size),
        ):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.set_loader_settings(
            batch_size, None, num_workers, pin_memory, persistent_workers, seed
        )
        if sigma_scaling not in ("physical", "released"):
            raise ValueError(
                f"sigma_scaling must be 'physical' or 'released', got {sigma_scaling!r}"
            )
        self.save_hyperparameters(logger=False, ignore=["degradation"])
        self.hr_size = hr_size
        self.scale = int(scale)
        self.num_classes = int(num_classes)
        self._sizes = {
            "train": int(train_size),
            "val": int(val_size),
            "test": int(test_size),
        }
        self._dataset_kwargs: dict[str, Any] = {
            "hr_size": hr_size,
            "scale": self.scale,
            "num_classes": self.num_classes,
            "seed": int(seed),
            "space_invariant_fraction": space_invariant_fraction,
            "real_fraction": real_fraction,
            "max_coc": max_coc,
            "degradation": degradation,
            "sigma_scaling": sigma_scaling,
            "cache": cache,
        }
        self._augment = bool(augment)
        self._eval_zoom = bool(eval_zoom)
        self.datasets: dict[str, SyntheticDefocus] = {}
        # Build one split eagerly so that bad data set arguments fail at construction.
        self._build("val")

    def _build(self, split: str) -> SyntheticDefocus:
        if split not in self.datasets:
            self.datasets[split] = SyntheticDefocus(
                num_samples=self._sizes[split],
                split=split,
                augment=self._augmentation(split),
                **self._dataset_kwargs,
            )
        return self.datasets[split]

    def _augmentation(self, split: str) -> bool | DefocusAugment:
        if not self._augment:
            return False
        if split == "train":
            return True
        if not self._eval_zoom:
            return False
        return DefocusAugment(
            self.hr_size,
            self.scale,
            flip_p=0.0,
            sigma_scaling=self._dataset_kwargs["sigma_scaling"],
        )

    def setup(self, stage: str | None = None) -> None:
        """Create the data sets needed by ``stage`` (``fit``, ``validate``, ``test``...)."""
        if stage in (None, "fit"):
            self._build("train")
            self._build("val")
        if stage in (None, "validate"):
            self._build("val")
        if stage in (None, "test", "predict"):
            self._build("test")

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        # Training: order from (seed, epoch) and per-sample augmentation seeded from
        # (seed, index, epoch), so a resumed run sees exactly the data of an uninterrupted
        # one. Evaluation: unpadded shards, every image counted once under DDP.
        return self.loader(self._build(split), self.batch_size, train=shuffle, with_epoch=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
