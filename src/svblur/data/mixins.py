"""Mixins of svblur's LightningDataModules: the data position in checkpoints and the loaders.

:class:`ResumableDataMixin` checks and keeps the loader settings
(:meth:`~ResumableDataMixin.set_loader_settings`), stores the training position (epoch,
batches done) in checkpoints and builds loaders with
:func:`~svblur.data.loaders.make_loader`, so a resumed run continues the interrupted
epoch's order; :class:`SplitsDataMixin` adds the train / val / test loaders of a module
whose data sets are named splits.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

from torch.utils.data import DataLoader

from svblur.data.folders import check_loader_settings
from svblur.data.loaders import make_loader

__all__ = ["ResumableDataMixin", "SplitsDataMixin"]


class ResumableDataMixin:
    """For LightningDataModules: store the training position in checkpoints, build loaders.

    The module needs ``seed``, ``num_workers``, ``pin_memory`` and ``persistent_workers``
    attributes for :meth:`loader`; :meth:`set_loader_settings` checks and sets them.

    Checkpoints get ``{"epoch", "batches_done"}`` from the trainer's progress; after
    loading one, :attr:`resume_position` holds it for the ``resume`` of
    :func:`~svblur.data.loaders.make_loader`.
    """

    resume_position: tuple[int, int] | None = None

    def set_loader_settings(
        self,
        batch_size: int,
        eval_batch_size: int | None,
        num_workers: int,
        pin_memory: bool,
        persistent_workers: bool,
        seed: int,
        val_max_images: int | None = None,
    ) -> None:
        """Check the loader settings (:func:`~svblur.data.folders.check_loader_settings`,
        ``val_max_images`` included where given) and keep them as attributes: ``batch_size``,
        ``eval_batch_size`` (not set when ``None``), ``num_workers``, ``pin_memory``,
        ``persistent_workers`` (only with workers) and ``seed``.

        Raises:
            ValueError: A setting is out of range; the message names it.
        """
        check_loader_settings(batch_size, eval_batch_size, num_workers, val_max_images)
        self.batch_size = int(batch_size)
        if eval_batch_size is not None:
            self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.seed = int(seed)

    def state_dict(self) -> dict[str, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None or not trainer.training:
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": int(trainer.current_epoch), "batches_done": int(progress.ready)}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        if state_dict:
            self.resume_position = (int(state_dict["epoch"]), int(state_dict["batches_done"]))

    def loader(
        self,
        dataset: Sized,
        batch_size: int,
        train: bool,
        drop_last: bool = False,
        with_epoch: bool = False,
    ) -> DataLoader:
        """:func:`~svblur.data.loaders.make_loader` with this module's ``seed``,
        ``num_workers``, ``pin_memory``, ``persistent_workers`` and, for training, its resume
        position."""
        return make_loader(
            dataset,
            batch_size,
            train=train,
            seed=self.seed,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            drop_last=drop_last,
            with_epoch=with_epoch,
            resume=self.resume_position if train else None,
        )

    def split_loader(self, dataset: Sized, batch_size: int, train: bool) -> DataLoader:
        """:meth:`loader` for a split of a folder data set: training drops a last partial
        batch when there are more; evaluation shards stay unpadded under DDP."""
        drop_last = train and len(dataset) > batch_size
        return self.loader(dataset, batch_size, train=train, drop_last=drop_last)


class SplitsDataMixin(ResumableDataMixin):
    """:class:`ResumableDataMixin` plus the loaders of a module whose data sets are named
    splits: ``datasets`` (name -> data set, with ``"train"``, ``"val"`` and either
    ``"test"`` or one entry per name of ``test_group_names``), ``batch_size`` for training
    and ``eval_batch_size`` for the others, each through :meth:`split_loader`."""

    datasets: dict[str, Any]
    test_group_names: list[str]

    def _loader(self, key: str, shuffle: bool, batch_size: int) -> DataLoader:
        return self.split_loader(self.datasets[key], batch_size, train=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        """One loader per name of :attr:`test_group_names`, in that order, or one ``test``
        loader when there are no groups."""
        if self.test_group_names:
            return [self._loader(g, False, self.eval_batch_size) for g in self.test_group_names]
        if "test" not in self.datasets:
            raise ValueError(f"no test_source was given to {type(self).__name__}")
        return self._loader("test", False, self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader | list[DataLoader]:
        return self.test_dataloader()
