"""Depth-driven defocus: thin-lens blur maps and the layered renderer of SYNDOF.

This is a fast re-implementation of SYNDOF's ``blur_by_depth.m`` (Lee et al.,
CVPR 2019), the generator of NYUv2-BSR and Cityscapes-BSR. Units: depth, focus
distance and focal length in millimetres; images RGB in ``[0, 1]``.

The renderer splits the scene into layers (unique depths far to near, runs with
equal rounded CoC merged), blurs each layer's colour and mask with its Gaussian
(symmetric boundary), composites far to near, and - for every layer after the
first in-focus one - first fills the background that the layer's kernel would pull
in from behind it by harmonic interpolation (MATLAB ``regionfill``). Speed comes
from working only on the 32x32 tiles a layer reaches (its own tiles grown by the
kernel radius, less those whose window misses the layer) in a tile-major layout
(each tile's padded window of image and layer map stored contiguously, so
gathering a layer's tiles is a block copy), separable convolution as two banded
matrix products per batch of tiles, re-normalising only tiles touched since the
last fill, and an exact banded Cholesky solve of the Laplace system on only those
connected parts of the fill region that the output uses (the rest is overwritten
by the next layer's fill). Everything that depends on the layer map alone - fill
regions, the factorized fill systems, the blurred layers - is planned ahead by
helper threads while the calling thread composites (see ``threads``). See
:func:`svblur.degradation.reference.render_defocus_reference` for the plain
per-layer transcription it is tested against.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

from ._camera import (
    apply_depth_shift,
    check_camera,
    coc_pixels,
    coc_to_sigma,
    f_number_for,
    gaussian_taps,
    symmetric_index,
)
from ._harmonic import FillSystem, prepare_fill

__all__ = [
    "DefocusLayers",
    "decompose_layers",
    "defocus_sigma",
    "fill_invalid_depth",
    "render_defocus",
    "render_uniform_blur",
    "solve_f_number",
]

Array = np.ndarray | torch.Tensor

#: Blurred layer masks below this are set to zero (SYNDOF).
MASK_FLOOR = 1e-4
#: Blurred "farther content" masks below this do not trigger filling (SYNDOF).
FILL_FLOOR = 1e-3


# --------------------------------------------------------------------------- inputs
def _to_numpy64(array: Array, name: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    try:
        return np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{name}: expected a numpy array or torch tensor, got {type(array)}"
        ) from error


def _check_depth(depth: np.ndarray) -> None:
    if depth.ndim != 2:
        raise ValueError(f"depth: expected a 2-D (H, W) depth map, got shape {depth.shape}")
    if depth.size == 0:
        raise ValueError("depth: empty depth map")


def _check_image(image: np.ndarray | torch.Tensor) -> tuple[int, int]:
    shape = tuple(image.shape)
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"image: expected an (H, W, 3) RGB image, got shape {shape}")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"image: empty image of shape {shape}")
    return shape[0], shape[1]


def _like(array: np.ndarray, reference: Array) -> Array:
    """Return ``array`` (float32) as the same kind (and device) as ``reference``."""
    if isinstance(reference, torch.Tensor):
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(reference.device)
    return np.ascontiguousarray(array, dtype=np.float32)


# --------------------------------------------------------------------------- depth
def _fill_invalid64(values: np.ndarray, max_depth: float | None) -> np.ndarray:
    """:func:`fill_invalid_depth` in float64 (no precision lost before the CoC)."""
    _check_depth(values)
    if max_depth is not None and not (math.isfinite(max_depth) and max_depth > 0):
        raise ValueError(f"max_depth: expected a positive finite value, got {max_depth!r}")
    far = np.isposinf(values)
    valid = np.isfinite(values) & (values > 0)
    if not valid.any():
        raise ValueError(
            "depth: no valid pixel (every value is NaN, inf, zero or negative); cannot fill"
        )
    filled = values.copy()
    far_value = float(max_depth) if max_depth is not None else float(values[valid].max())
    filled[far] = far_value
    if max_depth is not None:
        np.minimum(filled, far_value, out=filled, where=valid)
    missing = ~(valid | far)
    if missing.any():
        known = ~missing
        _, (rows, cols) = ndi.distance_transform_edt(~known, return_indices=True)
        filled[missing] = filled[rows[missing], cols[missing]]
    return filled


def fill_invalid_depth(depth: Array, *, max_depth: float | None = None) -> Array:
    """Replace unusable depth values.

    Policy:

    * NaN, ``-inf``, zero and negative depths are *missing*: each takes the value
      of its nearest valid pixel (Euclidean distance; ties resolved by SciPy's
      distance transform).
    * ``+inf`` means "infinitely far": it becomes the far clip, ``max_depth`` if
      given, else the largest finite valid depth of the map.
    * With ``max_depth``, every depth above it (e.g. MPI Sintel's ``1e11`` sky) is
      clipped to ``max_depth``.

    Args:
        depth: Depth map ``(H, W)``, numpy or torch.
        max_depth: Optional far clip in the depth's units; must be positive.

    Returns:
        Finite, positive depth of the same kind as the input (float32 for numpy,
        the input's float dtype and device for torch).

    Raises:
        ValueError: If ``depth`` is not 2-D, or no pixel is valid.
    """
    filled = _fill_invalid64(_to_numpy64(depth, "depth"), max_depth)
    if isinstance(depth, torch.Tensor):
        dtype = depth.dtype if depth.is_floating_point() else torch.float32
        return torch.from_numpy(filled).to(device=depth.device, dtype=dtype)
    return filled.astype(np.float32)


# --------------------------------------------------------------------------- camera
def defocus_sigma(
    depth: Array,
    image_width: int,
    focal_length_mm: float,
    focus_distance: float,
    f_number: float,
) -> Array:
    """Per-pixel Gaussian sigma of the thin-lens defocus (the ground-truth blur map).

    ``c = round_0.1(m (z_v / z_f) (f / N) |z - z_f| / (z + 1e-4))`` with
    ``m = image_width / 36`` and ``z_v = f z_f / (z_f - f + 1e-4)``; then
    ``sigma = (max(c, 1) - 1) / 4``. No depth shift is applied here (see
    :func:`render_defocus`).

    Args:
        depth: Depth in mm, ``(H, W)``, finite and positive.
        image_width: Image width in pixels (sets pixels per mm on the sensor).
        focal_length_mm: Focal length ``f`` in mm.
        focus_distance: Focus distance ``z_f`` in mm, greater than ``f``.
        f_number: Aperture number ``N > 0``.

    Returns:
        Sigma map ``(H, W)`` float32: a numpy array for numpy input, a tensor on
        the input's device for torch input.

    Raises:
        ValueError: On a non-2-D or non-finite/non-positive depth, or bad camera.
    """
    values = _to_numpy64(depth, "depth")
    _check_depth(values)
    check_camera(image_width, focal_length_mm, focus_distance)
    if not (math.isfinite(f_number) and f_number > 0):
        raise ValueError(f"f_number: expected a positive finite value, got {f_number!r}")
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise ValueError("depth: expected finite positive depths; clean it with fill_invalid_depth")
    sigma = coc_to_sigma(coc_pixels(values, image_width, focal_length_mm, focus_distance, f_number))
    return _like(sigma, depth)


def solve_f_number(
    depth: Array,
    image_width: int,
    focal_length_mm: float,
    focus_distance: float,
    max_coc: float = 29.0,
    *,
    shift_depth: bool = True,
) -> float:
    """Aperture number ``N`` at which the scene's largest CoC equals ``max_coc``.

    This is the ``N`` that :func:`render_defocus` uses when given ``f_number=None``:
    ``render_defocus(..., f_number=solve_f_number(depth, ...))`` renders the same
    image and blur map, bit for bit. Like the renderer, it first applies SYNDOF's
    depth shift: if the nearest depth is closer than ``5 f``, the depths and the
    focus distance are moved so that the nearest is at ``5 f``. Then whichever of
    the nearest and the farthest depth has the larger CoC decides:
    ``N = f^2 / (z_f - f) * (m / max_coc) * |z - z_f| / z``.

    Args:
        depth: Depth in mm, ``(H, W)``, finite and positive (the renderer cleans its
            depth with :func:`fill_invalid_depth` first; pass the same clean depth).
        image_width: Image width in pixels.
        focal_length_mm: Focal length ``f`` in mm.
        focus_distance: Focus distance ``z_f`` in mm, greater than ``f``.
        max_coc: Target largest CoC in pixels, ``> 1``.
        shift_depth: Apply the depth shift (the renderer's aperture). ``False``
            solves on the depths as given, the aperture of the unshifted thin-lens
            model (:func:`defocus_sigma` applies no shift); it differs from the
            renderer's only on scenes nearer than ``5 f``.

    Returns:
        The f-number.

    Raises:
        ValueError: On bad inputs or when every depth equals the focus distance.
    """
    values = _to_numpy64(depth, "depth")
    _check_depth(values)
    check_camera(image_width, focal_length_mm, focus_distance)
    if not (math.isfinite(max_coc) and max_coc > 1):
        raise ValueError(f"max_coc: expected a finite value > 1, got {max_coc!r}")
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise ValueError("depth: expected finite positive depths; clean it with fill_invalid_depth")
    extremes = np.array([values.min(), values.max()])
    if shift_depth:
        # The same arithmetic as decompose_layers' shift of every pixel.
        extremes, focus_distance, _ = apply_depth_shift(extremes, focus_distance, focal_length_mm)
        check_camera(image_width, focal_length_mm, focus_distance)
    return f_number_for(
        float(extremes[0]),
        float(extremes[1]),
        image_width,
        focal_length_mm,
        focus_distance,
        max_coc,
    )


@dataclass(frozen=True)
class DefocusLayers:
    """The scene split into SYNDOF's depth layers.

    Attributes:
        layer_map: Layer index per pixel, int64 ``(H, W)``; 0 is the farthest.
        coc: Rounded CoC per layer, float64 ``(L,)``.
        depth: Depth per layer (the largest of its merged run), float64 ``(L,)``.
        focus_index: Layers with index ``> focus_index`` get the background fill:
            the first layer with ``coc <= 1``, or (no such layer) the number of
            layers farther than the focus distance minus one.
        f_number: The aperture number used.
        focus_distance: The focus distance after any depth shift.
        shift: The amount added to every depth (0 when none).
    """

    layer_map: np.ndarray
    coc: np.ndarray
    depth: np.ndarray
    focus_index: int
    f_number: float
    focus_distance: float
    shift: float

    @property
    def sigma_map(self) -> np.ndarray:
        """Blur map ``(H, W)`` float32: each pixel's layer sigma."""
        return coc_to_sigma(self.coc).astype(np.float32)[self.layer_map]


def decompose_layers(
    depth: np.ndarray,
    image_width: int,
    focal_length_mm: float,
    focus_distance: float,
    f_number: float | None = None,
    max_coc: float = 29.0,
) -> DefocusLayers:
    """Depth shift, f-number and layer decomposition of SYNDOF.

    Args:
        depth: Valid depth in mm, ``(H, W)`` float.
        image_width: Image width in pixels.
        focal_length_mm: Focal length in mm.
        focus_distance: Focus distance in mm (before the shift).
        f_number: Aperture number, or ``None`` to solve it from ``max_coc``.
        max_coc: Largest CoC in pixels (kernel support).

    Returns:
        The :class:`DefocusLayers`.
    """
    f = float(focal_length_mm)
    z, focus_distance, shift = apply_depth_shift(depth, focus_distance, f)
    check_camera(image_width, f, focus_distance)
    # Sorted unique depths and each pixel's index among them (torch's is faster).
    unique_t, inverse_t = torch.unique(torch.from_numpy(z), sorted=True, return_inverse=True)
    unique, inverse = unique_t.numpy(), inverse_t.numpy()
    unique_far = unique[::-1]
    if f_number is None:
        f_number = f_number_for(
            float(unique[0]), float(unique[-1]), image_width, f, focus_distance, max_coc
        )
    elif not (math.isfinite(f_number) and f_number > 0):
        raise ValueError(f"f_number: expected a positive finite value, got {f_number!r}")
    cocs = coc_pixels(unique_far, image_width, f, focus_distance, f_number)
    starts = np.ones(len(cocs), dtype=bool)
    starts[1:] = cocs[1:] != cocs[:-1]
    run_of_unique_far = np.cumsum(starts) - 1
    layer_coc = cocs[starts]
    layer_depth = unique_far[starts]
    # Sorted ascending: unique index u is far-index (U - 1 - u).
    run_of_unique = run_of_unique_far[::-1]
    layer_map = run_of_unique[inverse.reshape(z.shape)].astype(np.int64)
    in_focus = np.flatnonzero(layer_coc <= 1)
    if in_focus.size:
        focus_index = int(in_focus[0])
    else:
        focus_index = int((layer_depth > focus_distance).sum()) - 1
    return DefocusLayers(
        layer_map=layer_map,
        coc=layer_coc,
        depth=layer_depth,
        focus_index=focus_index,
        f_number=float(f_number),
        focus_distance=float(focus_distance),
        shift=shift,
    )


# --------------------------------------------------------------------------- blur
def _pads(length: int) -> tuple[int, int]:
    """Samples before/after the output pixel (MATLAB's kernel centre ``floor((k+1)/2)``)."""
    centre = (length + 1) // 2
    return centre - 1, length - centre


def _separable(padded: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """'Valid' separable correlation of ``(C, h + k - 1, w + k - 1)`` -> ``(C, h, w)``."""
    k = taps.numel()
    x = padded[:, None]
    x = F.conv2d(x, taps.view(1, 1, 1, k))
    x = F.conv2d(x, taps.view(1, 1, k, 1))
    return x[:, 0]


#: Default cap on the threads of one render (the composite thread is the limit beyond).
DEFAULT_MAX_THREADS = 4

#: Side of the square tiles the renderer works on (only tiles a layer reaches).
TILE = 32


class _Tiles:
    """Tile bookkeeping: which ``TILE x TILE`` tiles each layer occupies."""

    def __init__(self, layer_map: np.ndarray, count: int) -> None:
        height, width = layer_map.shape
        self.rows = -(-height // TILE)
        self.cols = -(-width // TILE)
        tile_y = (np.arange(height) // TILE)[:, None]
        tile_x = (np.arange(width) // TILE)[None, :]
        tile_id = (tile_y * self.cols + tile_x).ravel()
        occupancy = np.zeros(count * self.rows * self.cols, dtype=bool)
        occupancy[layer_map.ravel() * (self.rows * self.cols) + tile_id] = True
        self.occupancy = occupancy.reshape(count, self.rows, self.cols)
        self.prefix = np.logical_or.accumulate(self.occupancy, axis=0)  # layers 0..i
        self.suffix = np.logical_or.accumulate(self.occupancy[::-1], axis=0)[::-1]  # i..L-1

    def dilate(self, grid: np.ndarray, pixels: int) -> np.ndarray:
        """Tiles within ``pixels`` of an occupied tile."""
        grid = grid.copy()
        for _ in range(-(-pixels // TILE)):  # each step: a 3 x 3 dilation
            grid[1:] |= grid[:-1]  # NumPy buffers overlapping operands
            grid[:-1] |= grid[1:]
            grid[:, 1:] |= grid[:, :-1]
            grid[:, :-1] |= grid[:, 1:]
        return grid


class _Canvas:
    """Tile-major working storage: every ``TILE x TILE`` tile is one contiguous block.

    ``image`` / ``labels`` hold, per tile, the window of the symmetric-padded
    image / layer map around it (``halo`` extra pixels on each side), so a layer's
    blur input is a plain ``index_select`` of whole tiles. ``acc`` holds the
    accumulated ``(mask, r, g, b)`` per tile.
    """

    def __init__(self, image: torch.Tensor, layer_map: torch.Tensor, halo: int) -> None:
        """``image``: the :func:`_tile_windows` of the ``(3, H, W)`` image with ``halo``."""
        height, width = layer_map.shape
        self.height, self.width, self.halo = height, width, halo
        self.rows, self.cols = -(-height // TILE), -(-width // TILE)
        device = image.device
        self.image = image  # (T, 3, s, s)
        self.labels = _tile_windows(layer_map[None], halo)[:, 0]  # (T, s, s)
        count = self.rows * self.cols
        self.acc = image.new_zeros((count, 4, TILE, TILE))
        inside_y = torch.arange(self.rows * TILE, device=device) < height
        inside_x = torch.arange(self.cols * TILE, device=device) < width
        inside = inside_y[:, None] & inside_x[None, :]
        self.in_image = inside.unfold(0, TILE, TILE).unfold(1, TILE, TILE).flatten(0, 1)
        # Flat image index of tile t's pixel p (p = row-major within the tile).
        tile_y, tile_x = np.divmod(np.arange(count), self.cols)
        self.tile_origin = (tile_y * TILE * width + tile_x * TILE).astype(np.int64)
        pixel_y, pixel_x = np.divmod(np.arange(TILE * TILE), TILE)
        self.pixel_offset = pixel_y * width + pixel_x
        # Index into acc.view(-1) of each image pixel's mask channel.
        y, x = np.divmod(np.arange(height * width), width)
        tile = (y // TILE) * self.cols + x // TILE
        self.acc_pixel = (tile * 4 * TILE + y % TILE) * TILE + x % TILE

    def ids(self, grid: np.ndarray) -> torch.Tensor:
        """Tile ids of the ``True`` cells of a ``(rows, cols)`` grid."""
        return torch.from_numpy(np.flatnonzero(grid)).to(self.acc.device)

    def acc_index(self, flat: np.ndarray, channels: slice) -> torch.Tensor:
        """Indices into ``acc.view(-1)`` of ``channels`` at flat image indices, pixel-major."""
        index = self.acc_pixel[flat][:, None] + np.arange(4)[channels] * (TILE * TILE)
        return torch.from_numpy(index.ravel()).to(self.acc.device)

    def flat_index(self, ids: torch.Tensor, pixels: torch.Tensor) -> np.ndarray:
        """Flat image indices of the ``True`` pixels of ``pixels`` ``(n, T, T)`` on tiles ``ids``."""
        where = np.flatnonzero(pixels.cpu().numpy())
        tile, pixel = np.divmod(where, TILE * TILE)
        return self.tile_origin[ids.cpu().numpy()[tile]] + self.pixel_offset[pixel]

    def image_out(self) -> torch.Tensor:
        """``(3, H, W)`` = accumulated colour / accumulated mask."""
        acc = self.acc.view(self.rows, self.cols, 4, TILE, TILE).permute(2, 0, 3, 1, 4)
        acc = acc.reshape(4, self.rows * TILE, self.cols * TILE)[:, : self.height, : self.width]
        mask = acc[0]
        safe = torch.where(mask > 0, mask, torch.ones_like(mask))
        return (acc[1:] / safe).clamp_(0.0, 1.0)


def _halo(max_coc: float) -> int:
    """Pixels any layer kernel reaches beyond its output pixel (half the support)."""
    return max(_pads(max(int(round(max_coc)), 1)))


def _tile_windows(planes: torch.Tensor, halo: int) -> torch.Tensor:
    """``(C, H, W)`` -> ``(T, C, s, s)``: each tile's window of the symmetric-padded planes."""
    _, height, width = planes.shape
    rows, cols = -(-height // TILE), -(-width // TILE)
    ys = symmetric_index(-halo, rows * TILE + halo, height).to(planes.device)
    xs = symmetric_index(-halo, cols * TILE + halo, width).to(planes.device)
    span = TILE + 2 * halo
    tiles = planes[:, ys][:, :, xs].unfold(-2, span, TILE).unfold(-2, span, TILE)  # (C, R, Q, s, s)
    return tiles.flatten(-4, -3).movedim(-3, 0).contiguous()


def _band_matrix(taps: np.ndarray) -> np.ndarray:
    """``(T + k - 1, T)`` matrix whose product is the valid correlation with ``taps``."""
    k = taps.size
    offset = np.arange(TILE + k - 1)[:, None] - np.arange(TILE)  # tap index at (row, column)
    return np.where((offset >= 0) & (offset < k), taps[np.clip(offset, 0, k - 1)], 0.0)


class _Kernel:
    """A layer's separable Gaussian as the band matrix and its window in the halo."""

    def __init__(
        self, coc: float, support: float, halo: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        taps = gaussian_taps((coc - 1.0) / 4.0, support)
        self.before, self.after = _pads(taps.size)
        band = _band_matrix(taps)
        self.band = torch.as_tensor(band, dtype=dtype, device=device)
        self.band_t = torch.as_tensor(band.T.copy(), dtype=dtype, device=device)
        self.window = slice(halo - self.before, halo + TILE + self.after)

    def blur(self, source: torch.Tensor) -> torch.Tensor:
        """``(..., T + k - 1, T + k - 1)`` -> ``(..., T, T)`` separable valid correlation.

        Both passes are products with a banded (Toeplitz) matrix, which BLAS runs
        much faster than a single-channel ``conv2d``.
        """
        return self.band_t @ (source @ self.band)


@dataclass(frozen=True)
class _Fill:
    """A prepared background fill: the factorized system and where its pixels lie."""

    system: FillSystem
    target: torch.Tensor  # (n * 4,) acc indices (mask, rgb) of the solved pixels
    source: torch.Tensor  # (m' * 3,) acc indices (rgb) of the boundary terms on farther layers
    farther: np.ndarray  # bool per boundary term: on a farther layer
    mask: np.ndarray  # (n, 1) the filled mask channel (its known values do not change)
    tiles: np.ndarray  # (rows, cols) bool: tiles with a solved pixel


@dataclass(frozen=True)
class _LayerPlan:
    """The part of a layer's work that does not depend on the layers composited before it."""

    active: np.ndarray  # (rows, cols) bool: tiles the blurred layer reaches
    ids: torch.Tensor  # their tile ids
    layer: torch.Tensor  # (n, 4, T, T): blurred mask and mask-weighted colour
    fill: _Fill | None  # the fill before compositing the layer (None: no fill)


class _Task:
    """A queued call; :meth:`result` waits for it and re-raises its error."""

    __slots__ = ("args", "done", "error", "fn", "value")

    def __init__(self, fn: Any, args: tuple) -> None:
        self.fn, self.args = fn, args
        self.value: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.value = self.fn(*self.args)
        except BaseException as error:  # re-raised by result() on the waiting thread
            self.error = error
        finally:
            self.done.set()

    def result(self) -> Any:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value


class _Pool:
    """First-in first-out tasks run by ``helpers`` threads and by the waiting caller.

    :meth:`wait` runs queued tasks on the calling thread until the awaited one is
    done, so ``threads`` workers need only ``threads - 1`` helper threads and no
    core sits idle (nor is oversubscribed) while the compositing thread waits.
    A task may wait (plainly) for tasks queued before it: those have started.
    """

    def __init__(self, helpers: int, single_intra_op: bool = True) -> None:
        """``single_intra_op``: helper threads run torch ops on one intra-op thread."""
        self.threads = helpers + 1  # the waiting caller included
        self._single_intra_op = single_intra_op
        self._queue: deque[_Task] = deque()
        self._queued = threading.Semaphore(0)
        self._closed = False
        self._helpers = [threading.Thread(target=self._work, daemon=True) for _ in range(helpers)]
        for helper in self._helpers:
            helper.start()

    def submit(self, fn: Any, *args: Any) -> _Task:
        task = _Task(fn, args)
        self._queue.append(task)
        self._queued.release()
        return task

    def _pop(self) -> _Task | None:
        try:
            return self._queue.popleft()
        except IndexError:
            return None

    def _work(self) -> None:
        with _rendering_thread(self._single_intra_op):
            while True:
                self._queued.acquire()
                if self._closed:
                    return
                task = self._pop()
                if task is not None:  # else the caller ran it
                    task.run()

    def wait(self, task: _Task) -> Any:
        while not task.done.is_set():
            other = self._pop()
            if other is None:
                break
            other.run()
        return task.result()

    def cancel(self) -> None:
        """Drop the tasks not yet started."""
        self._queue.clear()

    def shutdown(self) -> None:
        self._closed = True
        self._queue.clear()
        for _ in self._helpers:
            self._queued.release()
        for helper in self._helpers:
            helper.join()


# --------------------------------------------------------------------------- thread state
# Each rendering thread (the caller and the pool's helpers) changes two settings of
# its own and restores them when it is done; no setting of the process changes.
#
# * Flush-denormal (``torch.set_flush_denormal``) sets the FTZ and DAZ bits of the
#   calling thread's MXCSR register, so it is per thread: long products of
#   ``(1 - mask)`` and the Gaussian tails underflow to subnormal floats, ~100x
#   slower on x86, and are flushed to zero while rendering.
# * One intra-op thread. Torch's intra-op pool would run the hundreds of small
#   per-layer ops on OpenMP workers, which keep the floating-point mode they were
#   started with, unflushed (a 15x slow-down measured at 480x640), and which
#   oversubscribe the cores the pool's helpers use.
#   ``torch.set_num_threads`` is process-wide (it also seeds every thread that
#   first uses torch later, resizes the pthreadpool and clears oneDNN's cache), so
#   the renderer calls the per-thread setters underneath it instead: OpenMP's
#   ``omp_set_num_threads`` (the calling thread's ``nthreads`` ICV, which is what
#   ``torch.get_num_threads`` reads) and MKL's ``mkl_set_num_threads_local``, as
#   ``_harmonic`` does for SciPy's OpenBLAS.

#: The smallest subnormal double; times 1.0 it is 0.0 exactly when denormals are flushed.
_SUBNORMAL: float = struct.unpack("<d", struct.pack("<Q", 1))[0]


def _denormals_flushed() -> bool:
    """Whether the calling thread flushes denormals (``torch.set_flush_denormal``)."""
    return _SUBNORMAL * 1.0 == 0.0


@dataclass(frozen=True)
class _IntraOpSetters:
    """Per-thread setters of torch's intra-op parallelism."""

    omp: Callable[[int], None]  # omp_set_num_threads of the OpenMP runtime torch uses
    mkl_local: Callable[[int], int]  # mkl_set_num_threads_local: the previous value (0: unset)


def _find_intra_op_setters() -> _IntraOpSetters | None:
    """Look the setters up in the loaded ``libtorch_cpu`` (and so in its OpenMP runtime)."""
    no_load = getattr(os, "RTLD_NOLOAD", None)
    if no_load is None:  # pragma: no cover - Windows
        return None
    for path in sorted((Path(torch.__file__).parent / "lib").glob("libtorch_cpu.*")):
        try:
            library = ctypes.CDLL(str(path), mode=no_load | os.RTLD_LAZY)
            omp = library.omp_set_num_threads
        except (OSError, AttributeError):
            continue
        omp.argtypes, omp.restype = [ctypes.c_int], None
        # MKL's by-value C entry point (the lower-case name is its Fortran one).
        mkl_local = getattr(library, "MKL_Set_Num_Threads_Local", None)
        if mkl_local is None:  # pragma: no cover - torch without MKL
            return _IntraOpSetters(omp, lambda count: 0)
        mkl_local.argtypes, mkl_local.restype = [ctypes.c_int], ctypes.c_int
        return _IntraOpSetters(omp, mkl_local)
    return None  # pragma: no cover - a torch without a loaded libtorch_cpu


@functools.cache
def _intra_op_setters() -> _IntraOpSetters | None:
    """The setters, if they do change what torch's intra-op pool uses on this thread.

    ``None`` (Windows, a torch without OpenMP, an unusual build): the renderer then
    leaves the intra-op pool alone, which gives the same result, more slowly.
    """
    setters = _find_intra_op_setters()
    if setters is None:
        return None
    previous = torch.get_num_threads()  # also torch's lazy per-thread initialisation
    setters.omp(1)
    works = torch.get_num_threads() == 1
    setters.omp(previous)
    return setters if works else None


@contextmanager
def _rendering_thread(single_intra_op: bool) -> Iterator[None]:
    """Flush denormals and (``single_intra_op``) use one intra-op thread, on this thread only.

    Both settings are restored on exit, to what this thread had before.
    """
    flushed = _denormals_flushed()
    torch.set_flush_denormal(True)
    setters = _intra_op_setters() if single_intra_op else None
    if setters is not None:
        # First, so that torch's lazy per-thread initialisation cannot undo the change.
        threads = torch.get_num_threads()
        mkl_local = setters.mkl_local(1)
        setters.omp(1)
    try:
        yield
    finally:
        if setters is not None:
            setters.omp(threads)
            setters.mkl_local(mkl_local)
        torch.set_flush_denormal(flushed)


class _Renderer:
    """SYNDOF's layered compositing with background fill; see :func:`render_defocus`.

    Per layer, everything that depends only on the layer map - the fill region and
    its factorized Laplace system, the layer's blurred mask and colour - is a task of
    the :class:`_Pool`, queued ahead; the calling thread runs the sequential part
    (normalising, solving the fill for the current known values, compositing) and
    runs queued tasks while it waits for a plan.
    """

    def __init__(self, windows: torch.Tensor, layers: DefocusLayers, max_coc: float) -> None:
        """``windows``: the image's :func:`_tile_windows` with the halo :func:`_halo`."""
        self.height, self.width = layers.layer_map.shape
        device, dtype = windows.device, windows.dtype
        self.layers = layers
        self.count = len(layers.coc)
        self.tiles = _Tiles(layers.layer_map, self.count)
        label_dtype = torch.int16 if self.count < 2**15 else torch.int32
        layer_map = torch.from_numpy(layers.layer_map).to(device=device, dtype=label_dtype)
        halo = _halo(max_coc)
        self.halo, self.max_coc, self.dtype, self.device = halo, max_coc, dtype, device
        self.kernels: dict[float, _Kernel] = {}  # built on first use, by whichever thread
        self.canvas = _Canvas(windows, layer_map, halo)
        self.inner = slice(halo, halo + TILE)

    def kernel(self, index: int) -> _Kernel | None:
        coc = float(self.layers.coc[index])
        if coc <= 1:
            return None
        kernel = self.kernels.get(coc)
        if kernel is None:  # two threads may both build it: same values
            kernel = _Kernel(coc, self.max_coc, self.halo, self.dtype, self.device)
            self.kernels[coc] = kernel
        return kernel

    def region(self, index: int) -> np.ndarray | None:
        """Fill region of layer ``index`` (flat indices), ``None`` when it has none."""
        if index <= self.layers.focus_index or index >= self.count:
            return None
        return _fill_region(self.canvas, index, self.kernel(index), self.tiles)

    def plan(self, index: int, region: _Task, upcoming: _Task) -> _LayerPlan:
        canvas, kernel = self.canvas, self.kernel(index)
        active = self.tiles.occupancy[index]
        window = self.inner
        if kernel is not None:
            active = self.tiles.dilate(active, max(kernel.before, kernel.after))
            window = kernel.window
        ids = canvas.ids(active)
        hit = canvas.labels[:, window, window].index_select(0, ids) == index
        if kernel is not None:
            # Tiles whose window misses the layer would get exactly zero: skip them.
            reached = _any_per_tile(hit)
            if not bool(reached.all()):
                ids, hit = ids[reached], hit[reached]
                active = np.zeros_like(active)
                active.flat[ids.cpu().numpy()] = True
        source = canvas.acc.new_empty((ids.numel(), 4, *hit.shape[-2:]))
        source[:, 0] = hit
        torch.mul(
            canvas.image[:, :, window, window].index_select(0, ids),
            source[:, :1],
            out=source[:, 1:],
        )
        if kernel is None:
            layer = source
        else:
            layer = kernel.blur(source)
            mask = layer[:, 0]
            mask.masked_fill_(mask < MASK_FLOOR, 0.0)
        fill = self._prepare_fill(index, region.result(), upcoming.result())
        return _LayerPlan(active=active, ids=ids, layer=layer, fill=fill)

    def _prepare_fill(
        self, index: int, region: np.ndarray | None, upcoming: np.ndarray | None
    ) -> _Fill | None:
        if region is None:
            return None
        # Pixels the next layer's fill overwrites need no value now.
        if upcoming is None:
            needed = np.ones(region.size, dtype=bool)
        else:
            overwritten = np.zeros(self.height * self.width, dtype=bool)
            overwritten[upcoming] = True
            needed = ~overwritten[region]
        rows, cols = np.divmod(region, self.width)
        system = prepare_fill(rows, cols, (self.height, self.width), needed)
        if system is None:
            return None
        canvas = self.canvas
        tiles = np.zeros((self.tiles.rows, self.tiles.cols), dtype=bool)
        tiles[system.rows // TILE, system.cols // TILE] = True
        boundary = system.boundary_rows * self.width + system.boundary_cols
        farther = self.layers.layer_map.ravel()[boundary] < index
        return _Fill(
            system=system,
            target=canvas.acc_index(system.rows * self.width + system.cols, slice(None)),
            source=canvas.acc_index(boundary[farther], slice(1, None)),
            farther=farther,
            mask=system.solve(farther[:, None].astype(np.float64)),
            tiles=tiles,
        )

    def run(self, pool: _Pool) -> torch.Tensor:
        """Composite every layer far to near; returns the ``(3, H, W)`` image."""
        # Queued in this order, a plan only waits for regions queued before it, so
        # the pool cannot deadlock; the look-ahead bounds the memory held by plans.
        workers = pool.threads
        lookahead = 2 * workers + 1 if workers > 1 else 1
        regions: dict[int, _Task] = {}
        plans: dict[int, _Task] = {}

        def queue(index: int) -> None:
            for i in (index, index + 1):
                if i not in regions:
                    regions[i] = pool.submit(self.region, i)
            plans[index] = pool.submit(self.plan, index, regions[index], regions[index + 1])
            regions.pop(index - 1, None)

        acc = self.canvas.acc
        dirty = np.zeros((self.tiles.rows, self.tiles.cols), dtype=bool)  # mask in (0, 1)
        try:
            for index in range(min(lookahead, self.count)):
                queue(index)
            for index in range(self.count):
                plan = pool.wait(plans.pop(index))
                if index + lookahead < self.count:
                    queue(index + lookahead)
                if index > self.layers.focus_index:
                    if dirty.any():
                        ids = self.canvas.ids(dirty)
                        current = acc.index_select(0, ids)
                        scale = current[:, :1]
                        current /= scale.masked_fill(scale == 0, 1.0)
                        acc.index_copy_(0, ids, current)
                        dirty[:] = False
                    if plan.fill is not None:
                        self._fill(plan.fill)
                        dirty |= plan.fill.tiles
                current = acc.index_select(0, plan.ids)
                acc.index_copy_(
                    0, plan.ids, torch.addcmul(plan.layer, current, 1.0 - plan.layer[:, :1])
                )
                dirty |= plan.active
        finally:
            pool.cancel()
        return self.canvas.image_out()

    def _fill(self, fill: _Fill) -> None:
        """SYNDOF's ``inpaint_background_and_modify_merged_mask`` on the prepared region.

        The colour is filled harmonically from the (already normalized) accumulated
        colour on the farther layers and zero elsewhere; the mask channel from 1 on
        the farther layers and zero elsewhere. ``canvas.acc`` is updated in place.
        """
        flat = self.canvas.acc.view(-1)
        values = np.zeros((fill.farther.size, 3))
        values[fill.farther] = flat.index_select(0, fill.source).view(-1, 3).cpu().numpy()
        solution = np.concatenate([fill.mask, fill.system.solve(values)], axis=1)
        solution = torch.from_numpy(solution.reshape(-1)).to(device=flat.device, dtype=flat.dtype)
        flat.index_copy_(0, fill.target, solution)


def _any_per_tile(mask: torch.Tensor) -> torch.Tensor:
    """``(n, ...)`` bool -> ``(n,)``: whether each tile has a ``True`` (fast on CPU)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(mask.numpy().reshape(mask.shape[0], -1).any(axis=1))
    return mask.flatten(1).any(1)


def _fill_region(
    canvas: _Canvas, index: int, kernel: _Kernel | None, tiles: _Tiles
) -> np.ndarray | None:
    """Flat indices of the pixels SYNDOF fills before compositing layer ``index``.

    Every not-yet-composited pixel (layer ``>= index``) where the farther layers,
    blurred with this layer's kernel, reach ``FILL_FLOOR``; ``None`` when empty.
    """
    if index == 0 or kernel is None:
        return None  # nothing is farther than the farthest layer / nothing blurs
    candidates = tiles.suffix[index] & tiles.dilate(
        tiles.prefix[index - 1], max(kernel.before, kernel.after)
    )
    if not candidates.any():
        return None
    ids = canvas.ids(candidates)
    window = kernel.window
    farther = canvas.labels[:, window, window].index_select(0, ids) < index
    reached = _any_per_tile(farther)  # the others are exactly zero after blurring
    if not bool(reached.all()):
        ids, farther = ids[reached], farther[reached]
    reach = kernel.blur(farther.to(canvas.acc.dtype))
    inner = slice(kernel.before, kernel.before + TILE)
    region = (reach >= FILL_FLOOR) & ~farther[:, inner, inner] & canvas.in_image[ids]
    flat = canvas.flat_index(ids, region)
    return flat if flat.size else None


# --------------------------------------------------------------------------- public
def _resolve_device(image: Array, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if isinstance(image, torch.Tensor):
        return image.device
    return torch.device("cpu")


def _image_tensor(image: Array, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(H, W, 3)`` input -> ``(3, H, W)`` tensor, checked finite."""
    tensor = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.asarray(image))
    tensor = tensor.to(device=device, dtype=dtype).permute(2, 0, 1).contiguous()
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError("image: contains NaN or inf; expected finite RGB values in [0, 1]")
    return tensor


def _output(result: torch.Tensor, sigma: np.ndarray, like: Array) -> tuple[Array, Array]:
    blurred = result.permute(1, 2, 0).to(torch.float32)
    if isinstance(like, torch.Tensor):
        return blurred.to(like.device), torch.from_numpy(sigma).to(like.device)
    return blurred.cpu().numpy(), sigma


def render_defocus(
    image: Array,
    depth: Array,
    focal_length_mm: float,
    focus_distance: float,
    f_number: float | None = None,
    max_coc: float = 29.0,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    max_depth: float | None = None,
    threads: int | None = None,
) -> tuple[Array, Array]:
    """Render thin-lens defocus from an all-in-focus image and its depth (SYNDOF).

    The depth is first cleaned by :func:`fill_invalid_depth` (with ``max_depth``).
    If the nearest depth is closer than ``5 f``, all depths *and the focus
    distance* are shifted so that the nearest equals ``5 f`` (SYNDOF shifts the
    depth before it picks the focus among the scene's depths, so the focus stays
    on the same scene point).

    Args:
        image: All-in-focus RGB ``(H, W, 3)`` in ``[0, 1]``, numpy or torch.
        depth: Depth in mm ``(H, W)``, numpy or torch.
        focal_length_mm: Focal length in mm.
        focus_distance: Focus distance in mm, greater than the focal length.
        f_number: Aperture number; ``None`` solves it so the largest CoC is
            ``max_coc`` (the value :func:`solve_f_number` returns).
        max_coc: Largest CoC in pixels, also the Gaussian support (SYNDOF: 29).
        device: Torch device to compute on (default: the image's, else CPU).
        dtype: Compute precision (``torch.float32`` or ``torch.float64``).
        max_depth: Far clip for :func:`fill_invalid_depth`.
        threads: CPU threads for this image, the calling one included (default:
            ``torch.get_num_threads()``, at most 4; it is 1 in DataLoader workers).
            ``threads - 1`` helper threads plan layers ahead while the calling thread
            composites (and plans too while it waits); the result does not depend on
            the count. For many images, one thread per image in parallel processes
            is the most efficient.

    Rendering changes no process-wide setting, so renders may run in several threads
    at once, beside any other torch work. Each rendering thread (the calling one and
    its helpers) flushes denormal floats to zero and, on CPU, runs torch ops on one
    intra-op thread, both for itself only (the per-thread OpenMP and MKL settings
    beneath ``torch.set_num_threads``); the calling thread gets its previous
    ``torch.get_num_threads()`` and flush-denormal state back when the call
    returns. Where the per-thread intra-op setting is unavailable (Windows, a torch
    without OpenMP) the intra-op pool is left as it is: same result, slower.

    Returns:
        ``(blurred, sigma)``: blurred RGB ``(H, W, 3)`` float32 in ``[0, 1]`` and the
        blur map ``(H, W)`` float32, as numpy arrays for a numpy ``image`` and as
        tensors (on the image's device) for a torch ``image``.

    Raises:
        ValueError: On malformed image/depth, mismatched shapes or bad camera values.
    """
    height, width = _check_image(image)
    depth_np = _to_numpy64(depth, "depth")
    _check_depth(depth_np)
    if depth_np.shape != (height, width):
        raise ValueError(
            f"depth: shape {depth_np.shape} does not match the image's (H, W) = {(height, width)}"
        )
    check_camera(width, focal_length_mm, focus_distance)
    if not (math.isfinite(max_coc) and max_coc > 1):
        raise ValueError(f"max_coc: expected a finite value > 1, got {max_coc!r}")
    if f_number is not None and not (math.isfinite(f_number) and f_number > 0):
        raise ValueError(f"f_number: expected a positive finite value, got {f_number!r}")
    if threads is not None and not (isinstance(threads, int) and threads >= 1):
        raise ValueError(f"threads: expected a positive integer or None, got {threads!r}")
    target = _resolve_device(image, device)
    tensor = _image_tensor(image, target, dtype)
    if threads is None:
        threads = min(torch.get_num_threads(), DEFAULT_MAX_THREADS)
    single_intra_op = target.type == "cpu"
    with _rendering_thread(single_intra_op):
        pool = _Pool(threads - 1, single_intra_op)
        try:
            windows = pool.submit(_tile_windows, tensor, _halo(max_coc))
            depth_np = _fill_invalid64(depth_np, max_depth)
            layers = decompose_layers(
                depth_np, width, focal_length_mm, focus_distance, f_number, max_coc
            )
            result = _Renderer(pool.wait(windows), layers, max_coc).run(pool)
        finally:
            pool.shutdown()
    return _output(result, layers.sigma_map, image)


def render_uniform_blur(
    image: Array,
    sigma: float,
    *,
    max_coc: float = 29.0,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Array, Array]:
    """Space-invariant Gaussian blur with the layered renderer's kernel.

    Same kernel as one layer of :func:`render_defocus`: ``max_coc x max_coc``
    support, taps below ``eps * max`` dropped, cropped, normalized, symmetric
    (edge-repeating mirror) boundary.

    Args:
        image: RGB ``(H, W, 3)`` in ``[0, 1]``, numpy or torch.
        sigma: Gaussian sigma in pixels, ``>= 0``; 0 returns the image unchanged.
        max_coc: Kernel support in pixels.
        device: Torch device to compute on (default: the image's, else CPU).
        dtype: Compute precision.

    Returns:
        ``(blurred, sigma_map)``: ``(H, W, 3)`` float32 and the constant ``(H, W)``
        float32 blur map, numpy or torch like ``image``.

    Raises:
        ValueError: On a malformed image or a negative / non-finite sigma.
    """
    height, width = _check_image(image)
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma: expected a finite value >= 0, got {sigma!r}")
    if not (math.isfinite(max_coc) and max_coc >= 1):
        raise ValueError(f"max_coc: expected a finite value >= 1, got {max_coc!r}")
    target = _resolve_device(image, device)
    tensor = _image_tensor(image, target, dtype)
    sigma_map = np.full((height, width), sigma, dtype=np.float32)
    if sigma == 0:
        return _output(tensor, sigma_map, image)
    taps = torch.as_tensor(gaussian_taps(float(sigma), max_coc), dtype=dtype, device=target)
    before, after = _pads(taps.numel())
    rows = symmetric_index(-before, height + after, height).to(target)
    cols = symmetric_index(-before, width + after, width).to(target)
    blurred = _separable(tensor[:, rows][:, :, cols], taps)
    return _output(blurred, sigma_map, image)
