"""Loaders whose data order is reproducible, resumable and DDP-correct, and the per-worker
random streams of data sets.

:class:`EpochSampler` is a :class:`~torch.utils.data.DistributedSampler` (so Lightning
leaves it in place) that works in one process as well as under DDP:

- training (``shuffle=True``): the order of epoch ``e`` is a permutation drawn from
  ``(seed, e)`` only, so a run resumed from a checkpoint sees the same order as an
  uninterrupted one; :meth:`EpochSampler.resume_at` skips the batches an interrupted
  epoch already used. Each index is yielded as ``(index, epoch)`` so that data sets can
  seed per-sample augmentation from it (:class:`~svblur.data.SyntheticDefocus` does).
- evaluation (``pad=False``): rank ``r`` of ``R`` takes indices ``r, r + R, ...`` and
  nothing is repeated to even out the shards, so every image is counted exactly once
  when metrics are reduced across ranks.

:func:`make_loader` builds a loader over one; :class:`WorkerRNG` gives each loader worker
its own reproducible stream for training draws. The DataModules use them through
:mod:`svblur.data.mixins`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence, Sized

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, get_worker_info

__all__ = ["EpochSampler", "WorkerRNG", "make_loader"]


class EpochSampler(DistributedSampler):
    """Per-epoch seeded, optionally unpadded shard of a data set for this process.

    Args:
        dataset: The data set (only its length is used).
        shuffle: Shuffle every epoch (training).
        seed: Seed of the shuffles.
        pad: Repeat indices so that every rank gets the same count (training under DDP
            needs equal step counts); ``False`` for evaluation.
        with_epoch: Yield ``(index, epoch)`` pairs instead of plain indices.
        num_replicas: World size; default: from ``torch.distributed`` when initialized, else 1.
        rank: This process's rank; default likewise, else 0.
    """

    def __init__(
        self,
        dataset: Sized,
        shuffle: bool = False,
        seed: int = 0,
        pad: bool = True,
        with_epoch: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.pad = pad
        self.with_epoch = with_epoch
        if not pad:
            self.total_size = len(dataset)
            self.num_samples = len(range(rank, self.total_size, num_replicas))
        self._skip: tuple[int, int] | None = None

    def resume_at(self, epoch: int, samples_done: int) -> None:
        """Skip the first ``samples_done`` samples of this rank's shard in ``epoch`` only."""
        self._skip = (int(epoch), int(samples_done))

    def _order(self) -> list[int]:
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        if self.pad and len(order) < self.total_size:
            repeats = math.ceil((self.total_size - len(order)) / max(1, len(order)))
            order += (order * repeats)[: self.total_size - len(order)]
        return order[: self.total_size]

    def __iter__(self) -> Iterator:
        shard = self._order()[self.rank : self.total_size : self.num_replicas]
        if self._skip is not None and self._skip[0] == self.epoch:
            shard = shard[self._skip[1] :]
        if self.with_epoch:
            return iter([(i, self.epoch) for i in shard])
        return iter(shard)

    def __len__(self) -> int:
        # The full shard length, also while resuming: Lightning counts the batches an
        # interrupted epoch already ran and expects the loader to yield the rest.
        return self.num_samples


def make_loader(
    dataset: Sized,
    batch_size: int,
    train: bool,
    seed: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    drop_last: bool = False,
    with_epoch: bool = False,
    resume: tuple[int, int] | None = None,
) -> DataLoader:
    """A loader over an :class:`EpochSampler`: shuffled and padded for training, in order and
    unpadded for evaluation; ``resume=(epoch, batches_done)`` continues an interrupted epoch."""
    sampler = EpochSampler(dataset, shuffle=train, seed=seed, pad=train, with_epoch=with_epoch)
    if train and resume is not None:
        sampler.set_epoch(resume[0])
        sampler.resume_at(resume[0], resume[1] * batch_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
        drop_last=drop_last,
    )


class WorkerRNG:
    """The random generator of a data set's training draws, one stream per loader worker.

    Calling it returns ``np.random.default_rng([seed, *keys, base_seed % 2**63, salt])``
    where ``base_seed`` is the worker's torch seed (the process's outside workers), so each
    worker of each epoch draws its own stream, reproducibly; the generator is kept while
    the worker (and its seed) stays the same. ``salt`` keeps the streams of different data
    sets apart, ``keys`` (none by default; e.g. a split's code) those of one data set's parts.
    """

    def __init__(self, seed: int, salt: int, keys: Sequence[int] = ()) -> None:
        self.seed = int(seed)
        self.salt = int(salt)
        self.keys = [int(key) for key in keys]
        self._state: tuple[object, np.random.Generator] | None = None

    def __call__(self) -> np.random.Generator:
        info = get_worker_info()
        base_seed = info.seed if info is not None else torch.initial_seed()
        token = (info.id if info is not None else None, base_seed)
        if self._state is None or self._state[0] != token:
            key = [self.seed, *self.keys, base_seed % 2**63, self.salt]
            self._state = (token, np.random.default_rng(key))
        return self._state[1]
