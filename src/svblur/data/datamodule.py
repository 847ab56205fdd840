"""Old home of :class:`DefocusDataModule`: it lives in :mod:`svblur.data.synthetic` now,
beside the data set it serves."""

from svblur.data.synthetic import DefocusDataModule

__all__ = ["DefocusDataModule"]
