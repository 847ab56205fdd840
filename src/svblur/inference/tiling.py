"""Tiled inference for images of any size with bounded accelerator memory.

The LR image stays on the CPU; overlapping tiles are sent to the device one at a time and
their HR outputs are blended back on the CPU:

- continuous maps (the SR image, the blur map) with weights that ramp linearly from the
  tile border across the overlap (1 in the tile interior and at the image border), so
  seams are smooth;
- class maps (semantics) by taking, per pixel, the label of the tile whose weight there
  is the largest (the tile in which the pixel is the most central), so no ``K``-channel
  HR accumulator is needed.

A tile that runs out of device memory makes the whole image restart with tiles half as
large (down to ``min_tile_size``); a tile whose half-precision output holds NaN or inf is
recomputed in float32.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from svblur.ops.tiles import tile_starts, tile_weights

__all__ = ["TiledPredictor"]

log = logging.getLogger(__name__)

_PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def _is_oom(error: BaseException) -> bool:
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


@dataclass
class _Accumulators:
    sums: dict[str, torch.Tensor]
    weight: torch.Tensor
    labels: dict[str, torch.Tensor]
    best: torch.Tensor


class TiledPredictor:
    """Run ``fn`` on overlapping tiles of an LR image and blend the HR outputs on the CPU.

    Args:
        fn: ``lr (1, 3, h, w) -> dict`` of HR maps ``(1, C, h*scale, w*scale)`` (e.g. a
            :class:`~svblur.models.BlindSR`).
        scale: Output size / input size.
        tile_size: Tile side in LR pixels (tiles are square, smaller at small images).
        overlap: Overlap of neighbouring tiles in LR pixels.
        device: Where ``fn`` runs.
        precision: ``"fp32"``, ``"fp16"`` or ``"bf16"`` (autocast); non-finite half
            precision outputs are recomputed in float32.
        min_tile_size: Smallest tile tried after out-of-memory errors.
        min_input_size: Images smaller than this (per side) are padded by replication,
            then cropped back (CMOS needs at least 16 LR pixels).
        label_keys: Outputs holding class logits ``(1, K, H, W)``; they are returned as
            label maps ``(H, W)`` int64.
        lr_keys: Outputs at the LR size ``(1, C, h, w)`` (e.g. a kernel field), blended on
            the LR grid and returned at that size.

    Returns (``__call__``):
        Dict of CPU float32 ``(C, H, W)`` maps (``(C, h, w)`` for ``lr_keys``), and int64
        ``(H, W)`` label maps for ``label_keys``.
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor], dict[str, torch.Tensor]],
        scale: int = 4,
        tile_size: int = 256,
        overlap: int = 32,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        min_tile_size: int = 32,
        min_input_size: int = 16,
        label_keys: tuple[str, ...] = ("seg",),
        lr_keys: tuple[str, ...] = (),
    ) -> None:
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}")
        if tile_size <= overlap:
            raise ValueError(f"tile_size ({tile_size}) must exceed overlap ({overlap})")
        self.fn = fn
        self.scale = int(scale)
        self.tile_size = int(tile_size)
        self.overlap = int(overlap)
        self.device = torch.device(device)
        self.precision = precision
        self.min_tile_size = int(min_tile_size)
        self.min_input_size = int(min_input_size)
        self.label_keys = tuple(label_keys)
        self.lr_keys = tuple(lr_keys)
        #: Number of tiles recomputed in float32 and tile size used, for the last image.
        self.fp32_fallbacks = 0
        self.used_tile_size = self.tile_size

    def _autocast(self, enabled: bool) -> contextlib.AbstractContextManager:
        dtype = _PRECISIONS[self.precision]
        if not enabled or dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def _run_tile(self, tile: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode(), self._autocast(True):
            out = self.fn(tile.to(self.device))
        if self.precision != "fp32" and not all(
            bool(torch.isfinite(v).all()) for v in out.values() if v.is_floating_point()
        ):
            self.fp32_fallbacks += 1
            log.warning("non-finite %s output in a tile; recomputing it in float32", self.precision)
            with torch.inference_mode():
                out = self.fn(tile.to(self.device))
        return {k: v.detach().float().cpu() for k, v in out.items()}

    def _tiles(
        self, height: int, width: int, tile: int
    ) -> Iterator[tuple[int, int, int, int, tuple[bool, bool, bool, bool]]]:
        tile_h, tile_w = min(tile, height), min(tile, width)
        overlap = min(self.overlap, tile - 1)
        ys = tile_starts(height, tile_h, min(overlap, tile_h - 1))
        xs = tile_starts(width, tile_w, min(overlap, tile_w - 1))
        for y in ys:
            for x in xs:
                edges = (y > 0, y + tile_h < height, x > 0, x + tile_w < width)
                yield y, x, tile_h, tile_w, edges

    def _predict(self, lr: torch.Tensor, tile: int) -> dict[str, torch.Tensor]:
        _, _, height, width = lr.shape
        s = self.scale
        acc: _Accumulators | None = None
        lr_acc: _Accumulators | None = None
        overlap = min(self.overlap, tile - 1)
        for y, x, th, tw, edges in self._tiles(height, width, tile):
            out = self._run_tile(lr[:, :, y : y + th, x : x + tw])
            at_lr = {k: v for k, v in out.items() if k in self.lr_keys}
            out = {k: v for k, v in out.items() if k not in self.lr_keys}
            if out:
                weight = tile_weights((th * s, tw * s), overlap * s, edges)
                if acc is None:
                    acc = self._new_accumulators(out, height * s, width * s)
                self._add(
                    acc, out, weight, (slice(y * s, (y + th) * s), slice(x * s, (x + tw) * s))
                )
            if at_lr:
                weight = tile_weights((th, tw), overlap, edges)
                if lr_acc is None:
                    lr_acc = self._new_accumulators(at_lr, height, width)
                self._add(lr_acc, at_lr, weight, (slice(y, y + th), slice(x, x + tw)))
        result: dict[str, torch.Tensor] = {}
        for accumulators in (acc, lr_acc):
            if accumulators is not None:
                total = accumulators.weight.clamp(min=1e-8)
                result.update({k: v / total for k, v in accumulators.sums.items()})
                result.update(accumulators.labels)
        return result

    def _add(
        self,
        acc: _Accumulators,
        out: dict[str, torch.Tensor],
        weight: torch.Tensor,
        window: tuple[slice, slice],
    ) -> None:
        """Blend one tile's outputs into the accumulators at ``window``."""
        ys, xs = window
        for key, value in out.items():
            if key in self.label_keys:
                better = weight > acc.best[ys, xs]
                acc.labels[key][ys, xs] = torch.where(
                    better, value[0].argmax(0), acc.labels[key][ys, xs]
                )
            else:
                acc.sums[key][:, ys, xs] += value[0] * weight
        acc.best[ys, xs] = torch.maximum(acc.best[ys, xs], weight)
        acc.weight[ys, xs] += weight

    def _new_accumulators(
        self, out: dict[str, torch.Tensor], height: int, width: int
    ) -> _Accumulators:
        sums, labels = {}, {}
        for key, value in out.items():
            if value.dim() != 4 or value.shape[0] != 1:
                raise ValueError(f"output '{key}' must be (1, C, H, W), got {tuple(value.shape)}")
            if key in self.label_keys:
                labels[key] = torch.zeros(height, width, dtype=torch.int64)
            else:
                sums[key] = torch.zeros(value.shape[1], height, width, dtype=torch.float32)
        return _Accumulators(
            sums, torch.zeros(height, width), labels, torch.full((height, width), -1.0)
        )

    def __call__(self, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predict for one LR image ``(1, 3, h, w)`` or ``(3, h, w)`` (kept on the CPU)."""
        if lr.dim() == 3:
            lr = lr.unsqueeze(0)
        if lr.dim() != 4 or lr.shape[0] != 1:
            raise ValueError(f"expected one image (1, C, h, w), got {tuple(lr.shape)}")
        lr = lr.float().cpu()
        height, width = lr.shape[-2:]
        pad_h = max(0, self.min_input_size - height)
        pad_w = max(0, self.min_input_size - width)
        if pad_h or pad_w:
            lr = F.pad(lr, (0, pad_w, 0, pad_h), mode="replicate")
        self.fp32_fallbacks = 0
        tile = self.tile_size
        while True:
            try:
                result = self._predict(lr, tile)
                break
            except Exception as error:  # out of memory only; anything else propagates
                if not _is_oom(error) or tile <= self.min_tile_size:
                    raise
                new_tile = max(self.min_tile_size, tile // 2, self.overlap + 1)
                if new_tile >= tile:
                    raise
                log.warning("out of memory with %d px tiles; retrying with %d px", tile, new_tile)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                tile = new_tile
        self.used_tile_size = tile
        if pad_h or pad_w:
            hr_h, hr_w = height * self.scale, width * self.scale
            result = {
                k: v[..., :height, :width] if k in self.lr_keys else v[..., :hr_h, :hr_w]
                for k, v in result.items()
            }
        return result
