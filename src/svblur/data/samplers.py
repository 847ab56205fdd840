"""Old home of the loaders and DataModule mixins: they live in :mod:`svblur.data.loaders`
and :mod:`svblur.data.mixins` now."""

from svblur.data.loaders import EpochSampler, WorkerRNG, make_loader
from svblur.data.mixins import ResumableDataMixin, SplitsDataMixin

__all__ = ["EpochSampler", "ResumableDataMixin", "SplitsDataMixin", "WorkerRNG", "make_loader"]
