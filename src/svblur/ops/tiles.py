"""Tile geometry: where overlapping tiles start and how their outputs are blended.

Used by tiled prediction (:class:`svblur.inference.TiledPredictor`) and by the tiled
denoiser of :class:`svblur.models.DiffusionSR`.
"""

from __future__ import annotations

import math

import torch

__all__ = ["tile_starts", "tile_weights"]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with overlap >= ``overlap``.

    Tiles are spread evenly and never extend past the image; one tile (start 0) when
    ``length <= tile``.
    """
    if tile < 1 or overlap < 0 or overlap >= tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile, got {tile} and {overlap}")
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    count = max(count, 2)
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _ramp(size: int, ramp: int, start_open: bool, end_open: bool) -> torch.Tensor:
    """Weights ``(size,)`` along one side: 1, falling linearly over ``ramp`` pixels to an
    open end."""
    weight = torch.ones(size, dtype=torch.float32)
    if ramp <= 0:
        return weight
    pos = torch.arange(size, dtype=torch.float32) + 0.5
    if start_open:
        weight = torch.minimum(weight, pos / ramp)
    if end_open:
        weight = torch.minimum(weight, (size - pos) / ramp)
    return weight


def tile_weights(
    size: tuple[int, int], ramp: int, open_edges: tuple[bool, bool, bool, bool]
) -> torch.Tensor:
    """Blending weights ``(H, W)`` of one tile: linear ramps of ``ramp`` pixels at open edges.

    Args:
        size: ``(H, W)`` of the tile.
        ramp: Ramp length in pixels (the overlap at this resolution).
        open_edges: ``(top, bottom, left, right)``: whether that edge lies inside the image
            (shared with a neighbour tile) and so is ramped.
    """
    top, bottom, left, right = open_edges
    rows = _ramp(size[0], ramp, top, bottom)
    cols = _ramp(size[1], ramp, left, right)
    return rows[:, None] * cols[None, :]
