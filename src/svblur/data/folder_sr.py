"""What the blind-SR data sets of checked folders and their DataModules share.

GoPro / REDS (:mod:`svblur.data.motion`) and ReBlurSR (:mod:`svblur.data.reblursr`) serve
the positions of a reader that checked its tree when it was built. Their data sets
(:class:`FolderSRDataset`) draw from a fixed stream per position for evaluation and from a
per-worker stream for training, and cut HR patches on the LR grid so that HR and LR stay
aligned; their DataModules (:class:`FolderSRDataModule`) keep the same settings and hold
out validation data from the training source alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import Dataset

from svblur.data.folders import check_source_scales, evenly_spaced, hold_out
from svblur.data.loaders import WorkerRNG
from svblur.data.mixins import SplitsDataMixin
from svblur.data.transforms import crop_windows
from svblur.errors import InputError

__all__ = ["FolderSRDataModule", "FolderSRDataset", "image_tensor"]


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """An ``(H, W, 3)`` image as a contiguous float32 ``(3, H, W)`` tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), np.float32))


class FolderSRDataset(Dataset):
    """Base of the data sets that serve positions of a checked folder source.

    The source has ``names`` (one per position) and ``len``. Sample ``position`` draws,
    with ``fixed`` (evaluation), from ``np.random.default_rng(self.fixed_stream(position))``,
    a pure function of ``seed`` and the position; otherwise from a per-process stream of
    ``seed`` and the worker's torch seed (:class:`~svblur.data.loaders.WorkerRNG` with
    :attr:`salt`), so every epoch differs and runs follow ``lightning.seed_everything``.

    Subclasses set :attr:`salt`, :attr:`what` and ``crop_size`` (HR ``(H, W)`` or
    ``None``) and define :meth:`fixed_stream`.

    Args:
        source: The reader.
        indices: Positions of ``source`` served, in order; ``None``: all.
        scale: LR factor.
        fixed: Evaluation draws (see above).
        seed: Seed.
    """

    #: Keeps the training streams of this data set apart from other data sets'.
    salt: int = 0
    #: What one image is, for messages (``"HR frame"``, ``"ReBlurSR photo"``).
    what: str = "image"
    crop_size: tuple[int, int] | None = None

    def __init__(
        self, source: Any, indices: Sequence[int] | None, scale: int, fixed: bool, seed: int
    ) -> None:
        super().__init__()
        self.source = source
        self.scale = int(scale)
        self.indices = list(range(len(source))) if indices is None else [int(i) for i in indices]
        self.fixed = bool(fixed)
        self.seed = int(seed)
        self._worker_rng = WorkerRNG(self.seed, self.salt)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def names(self) -> list[str]:
        """The source's name of every item, in order."""
        names = self.source.names
        return [names[i] for i in self.indices]

    def fixed_stream(self, position: int) -> list[int]:
        """The key of the evaluation stream of ``position`` (with ``fixed``)."""
        raise NotImplementedError

    def _rng(self, position: int) -> np.random.Generator:
        if self.fixed:
            return np.random.default_rng(self.fixed_stream(position))
        return self._worker_rng()

    def _windows(
        self, lr_size: tuple[int, int], name: str, rng: np.random.Generator
    ) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
        """The LR and HR windows of a ``crop_size`` patch on the LR grid (``lr_size``
        ``(h, w)``; :func:`~svblur.data.transforms.crop_windows`): centred with ``fixed``,
        else drawn from ``rng``; the whole image when ``crop_size`` is ``None``.

        Raises:
            InputError: The image is smaller than ``crop_size``; the message names it.
        """
        s = self.scale
        height, width = lr_size
        if self.crop_size is not None and (
            self.crop_size[0] // s > height or self.crop_size[1] // s > width
        ):
            raise InputError(
                f"crop_size {self.crop_size} is larger than the {self.what} {name} "
                f"({height * s}x{width * s}, HxW); lower data.crop_size"
            )
        return crop_windows(lr_size, self.crop_size, s, None if self.fixed else rng)


class FolderSRDataModule(SplitsDataMixin, L.LightningDataModule):
    """Base of the DataModules over checked folder sources (``title``, ``split``, ``scale``
    and ``names``): their common settings and the choice of validation data.

    Subclasses may hold out groups rather than single items (:meth:`_hold_out`).
    """

    #: What one held-out item is, for messages.
    unit: str = "photo"

    def _keep_settings(
        self, sources: Sequence[Any], source_settings: dict[str, Any], num_classes: int, scale: int
    ) -> None:
        """Keep ``source_settings``, ``num_classes`` and ``scale``; every source (``None``
        skipped) must have that scale (:func:`~svblur.data.folders.check_source_scales`)."""
        self.source_settings = source_settings
        self.num_classes = int(num_classes)
        self.scale = int(scale)
        check_source_scales(self.scale, sources)

    def _hold_out(self, source: Any, fraction: float) -> tuple[list[int], list[int]]:
        """Training and validation positions of ``source``: a ``fraction`` of its items held
        out, chosen by ``seed``."""
        return hold_out(
            len(source),
            fraction,
            self.seed,
            owner=f"the {source.title} {source.split} split",
            unit=self.unit,
        )

    def _train_and_val(
        self,
        train_source: Any,
        val_source: Any | None,
        val_fraction: float,
        val_max_images: int | None,
    ) -> tuple[list[int], Any, list[int]]:
        """Training positions, the validation source and its positions.

        Without ``val_source``, :meth:`_hold_out` splits ``train_source``; at most
        ``val_max_images`` evenly spaced validation positions are kept.
        """
        if val_source is None:
            train_idx, val_idx = self._hold_out(train_source, float(val_fraction))
            val_source = train_source
        else:
            train_idx, val_idx = list(range(len(train_source))), list(range(len(val_source)))
        return train_idx, val_source, evenly_spaced(val_idx, val_max_images)
