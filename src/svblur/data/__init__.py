"""Data sets, DataModules and augmentation.

- Offline: :class:`SyntheticDefocus` (procedural scenes from :func:`generate_scene` plus
  real ``stereo_motorcycle`` crops), served by :class:`DefocusDataModule`.
- Released archives: NYUv2-BSR and Cityscapes-BSR (:class:`NYUv2BSRDataModule`,
  :class:`CityscapesBSRDataModule`, checked by :func:`validate_bsr_root`).
- On-the-fly defocus: a new camera per draw over raw RGB-D data
  (:class:`OnTheFlyDefocusDataModule` over :class:`NYUv2RGBD`, :class:`CityscapesRGBD` or
  :class:`RGBDFolder`), or any folder of images (:class:`ImageFolder`), with any
  degradation of :mod:`svblur.degradation.pipeline`.
- Real motion blur: GoPro and REDS (:class:`MotionSRDataModule` over :class:`GoProPairs`
  / :class:`REDSPairs`).
- Real blur kept by SR: ReBlurSR (:class:`ReBlurSRDataModule` over :class:`ReBlurSRFolder`),
  with blur masks; :class:`CombinedDataModule` trains on two modules at once (PBaSR).

Readers of released trees raise :class:`DataLayoutError` (also known by the old names
``BSRDataError``, ``MotionDataError`` and ``ReBlurSRDataError``), listing every problem.

:data:`IGNORE_INDEX` is :data:`svblur.metrics.IGNORE_INDEX`, the label of unlabelled pixels.
"""

from svblur.data.bsr import (
    BSRDataError,
    BSRDataModule,
    BSRFolderDataset,
    CityscapesBSRDataModule,
    NYUv2BSRDataModule,
    validate_bsr_root,
)
from svblur.data.combined import CombinedDataModule
from svblur.data.folders import DataLayoutError
from svblur.data.motion import (
    GoProPairs,
    MotionDataError,
    MotionSRDataModule,
    MotionSRDataset,
    REDSPairs,
)
from svblur.data.onthefly import OnTheFlyDefocusDataModule, OnTheFlyDefocusDataset
from svblur.data.reblursr import (
    ReBlurSRDataError,
    ReBlurSRDataModule,
    ReBlurSRDataset,
    ReBlurSRFolder,
)
from svblur.data.rgbd import CityscapesRGBD, ImageFolder, NYUv2RGBD, RGBDFolder
from svblur.data.scenes import CLASS_NAMES, Scene, generate_scene, stereo_motorcycle_scene
from svblur.data.synthetic import DefocusDataModule, SyntheticDefocus, default_max_coc
from svblur.data.transforms import DefocusAugment
from svblur.metrics.functional import IGNORE_INDEX

__all__ = [
    "CLASS_NAMES",
    "IGNORE_INDEX",
    "BSRDataError",
    "BSRDataModule",
    "BSRFolderDataset",
    "CityscapesBSRDataModule",
    "CityscapesRGBD",
    "CombinedDataModule",
    "DataLayoutError",
    "DefocusAugment",
    "DefocusDataModule",
    "GoProPairs",
    "ImageFolder",
    "MotionDataError",
    "MotionSRDataModule",
    "MotionSRDataset",
    "NYUv2BSRDataModule",
    "NYUv2RGBD",
    "OnTheFlyDefocusDataModule",
    "OnTheFlyDefocusDataset",
    "REDSPairs",
    "RGBDFolder",
    "ReBlurSRDataError",
    "ReBlurSRDataModule",
    "ReBlurSRDataset",
    "ReBlurSRFolder",
    "Scene",
    "SyntheticDefocus",
    "default_max_coc",
    "generate_scene",
    "stereo_motorcycle_scene",
    "validate_bsr_root",
]
