"""Prediction from any checkpoint: loading its network by kind, tiling, diffusion
sampling, and writing the outputs.

:func:`load_for_prediction` rebuilds a checkpoint's network and refuses the kinds a photo
cannot drive; :func:`predict_images` runs it over images (:class:`TiledPredictor` in
overlapping tiles, or :class:`DiffusionPredictor` for diffusion SR) and writes each
image's files (:func:`save_outputs`) and a summary. ``svblur-predict`` is its command line;
:func:`degrade_images` (``svblur-degrade``) writes what a degradation does to the same inputs;
:func:`export_onnx` (``svblur-export``) writes a deployable network as ONNX.
"""

from svblur.ops.tiles import tile_starts, tile_weights

from .degrading import degrade_images
from .diffusion import DiffusionPredictor
from .export import EXPORTABLE_KINDS, OnnxExport, export_onnx, load_for_export
from .inputs import find_inputs, read_rgb, unique_stems
from .loading import PREDICTABLE_KINDS, load_for_prediction, num_classes_of
from .outputs import save_outputs, write_summary
from .predicting import network_predictor, predict_images, resolve_device
from .tiling import TiledPredictor

__all__ = [
    # loading
    "PREDICTABLE_KINDS",
    "load_for_prediction",
    "num_classes_of",
    # inputs
    "find_inputs",
    "read_rgb",
    "unique_stems",
    # running
    "resolve_device",
    "network_predictor",
    "predict_images",
    "TiledPredictor",
    "DiffusionPredictor",
    # degradations of your own images (svblur-degrade)
    "degrade_images",
    # ONNX (svblur-export)
    "EXPORTABLE_KINDS",
    "OnnxExport",
    "export_onnx",
    "load_for_export",
    # outputs
    "save_outputs",
    "write_summary",
    # tile geometry (defined in svblur.ops.tiles)
    "tile_starts",
    "tile_weights",
]
