"""Lightning DataModule over the built-in offline defocus data set."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from svblur.data.samplers import ResumableDataMixin
from svblur.data.synthetic import SyntheticDefocus
from svblur.data.transforms import DefocusAugment, SigmaScaling
from svblur.degradation.pipeline import SamplePipeline

__all__ = ["DefocusDataModule"]


class DefocusDataModule(ResumableDataMixin, L.LightningDataModule):
    """Train / val / test loaders of :class:`~svblur.data.synthetic.SyntheticDefocus`.

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
            ("batch_size", batch_size),
        ):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if sigma_scaling not in ("physical", "released"):
            raise ValueError(
                f"sigma_scaling must be 'physical' or 'released', got {sigma_scaling!r}"
            )
        self.save_hyperparameters(logger=False, ignore=["degradation"])
        self.hr_size = hr_size
        self.scale = int(scale)
        self.num_classes = int(num_classes)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
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
