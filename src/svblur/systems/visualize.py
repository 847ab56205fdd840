"""Colour maps and prediction pictures; they live in :mod:`svblur.ops.colour` and
:mod:`svblur.ops.pictures` now (this alias module re-exports them)."""

from svblur.ops.colour import colorize_labels, colorize_scalar, palette
from svblur.ops.pictures import kernel_field_picture, prediction_panel

__all__ = [
    "colorize_labels",
    "colorize_scalar",
    "kernel_field_picture",
    "palette",
    "prediction_panel",
]
