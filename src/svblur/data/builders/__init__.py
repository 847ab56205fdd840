"""Builders of NYUv2-BSR and Cityscapes-BSR from the raw data (``svblur-make-dataset``)."""

from .cityscapes import (
    CITYSCAPES_TRAIN_IDS,
    CityscapesRaw,
    build_cityscapes,
    label_ids_to_train_ids,
)
from .common import (
    GROUP_NAMES,
    BuildConfig,
    BuildSummary,
    Camera,
    RawSample,
    invariant_masks,
    render_sample,
    run_build,
    verify_manifest,
)
from .nyuv2 import NYUv2Mat, build_nyuv2, load_class_map, load_nyuv2_splits

__all__ = [
    "CITYSCAPES_TRAIN_IDS",
    "GROUP_NAMES",
    "BuildConfig",
    "BuildSummary",
    "Camera",
    "CityscapesRaw",
    "NYUv2Mat",
    "RawSample",
    "build_cityscapes",
    "build_nyuv2",
    "invariant_masks",
    "label_ids_to_train_ids",
    "load_class_map",
    "load_nyuv2_splits",
    "render_sample",
    "run_build",
    "verify_manifest",
]
