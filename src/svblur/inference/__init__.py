"""Inference helpers: tiled prediction for images of any size."""

from .tiling import TiledPredictor, tile_starts, tile_weights

__all__ = ["TiledPredictor", "tile_starts", "tile_weights"]
