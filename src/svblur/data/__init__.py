"""Data sets, DataModules and augmentation.

The built-in offline data set is :class:`SyntheticDefocus` (procedural scenes from
:func:`generate_scene` plus real ``stereo_motorcycle`` crops), served by
:class:`DefocusDataModule`.
"""

from svblur.data.datamodule import DefocusDataModule
from svblur.data.scenes import (
    CLASS_NAMES,
    IGNORE_INDEX,
    Scene,
    generate_scene,
    stereo_motorcycle_scene,
)
from svblur.data.synthetic import SyntheticDefocus, default_max_coc
from svblur.data.transforms import DefocusAugment

__all__ = [
    "CLASS_NAMES",
    "IGNORE_INDEX",
    "DefocusAugment",
    "DefocusDataModule",
    "Scene",
    "SyntheticDefocus",
    "default_max_coc",
    "generate_scene",
    "stereo_motorcycle_scene",
]

# Real data sets: released NYUv2-BSR / Cityscapes-BSR archives, and on-the-fly defocus.
from svblur.data.bsr import (  # noqa: E402
    BSRDataError,
    BSRDataModule,
    BSRFolderDataset,
    CityscapesBSRDataModule,
    NYUv2BSRDataModule,
    validate_bsr_root,
)
from svblur.data.onthefly import (  # noqa: E402
    CityscapesRGBD,
    NYUv2RGBD,
    OnTheFlyDefocusDataModule,
    OnTheFlyDefocusDataset,
    RGBDFolder,
)

__all__ += [
    "BSRDataError",
    "BSRDataModule",
    "BSRFolderDataset",
    "CityscapesBSRDataModule",
    "CityscapesRGBD",
    "NYUv2BSRDataModule",
    "NYUv2RGBD",
    "OnTheFlyDefocusDataModule",
    "OnTheFlyDefocusDataset",
    "RGBDFolder",
    "validate_bsr_root",
]
