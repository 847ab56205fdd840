"""SYNDOF's layered defocus renderer (``blur_by_depth.m``), fast.

The renderer splits the scene into layers (unique depths far to near, runs with
equal rounded CoC merged; :mod:`.layers`), blurs each layer's colour and mask with
its Gaussian (symmetric boundary), composites far to near, and - for every layer
after the first in-focus one - first fills the background that the layer's kernel
would pull in from behind it by harmonic interpolation (MATLAB ``regionfill``). Speed
comes from working only on the 32x32 tiles a layer reaches (its own tiles grown by
the kernel radius, less those whose window misses the layer) in a tile-major layout
(each tile's padded window of image and layer map stored contiguously, so
gathering a layer's tiles is a block copy), separable convolution as two banded
matrix products per batch of tiles, re-normalising only tiles touched since the
last fill, and an exact banded Cholesky solve of the Laplace system on only those
connected parts of the fill region that the output uses (the rest is overwritten
by the next layer's fill). Everything that depends on the layer map alone - fill
regions, the factorized fill systems, the blurred layers - is planned ahead by
helper threads while the calling thread composites (see :mod:`.threads`). See
:func:`svblur.degradation.reference.render_defocus_reference` for the plain
per-layer transcription it is tested against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .._camera import check_camera, gaussian_taps, symmetric_index
from .._harmonic import FillSystem, prepare_fill
from .layers import DefocusLayers, decompose_layers
from .lens import Array, _check_depth, _fill_invalid64, _to_numpy64
from .threads import _Pool, _rendering_thread, _Task

__all__ = ["render_defocus", "render_uniform_blur"]

#: Blurred layer masks below this are set to zero (SYNDOF).
MASK_FLOOR = 1e-4
#: Blurred "farther content" masks below this do not trigger filling (SYNDOF).
FILL_FLOOR = 1e-3


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


class _Renderer:
    """SYNDOF's layered compositing with background fill; see :func:`render_defocus`.

    Per layer, everything that depends only on the layer map - the fill region and
    its factorized Laplace system, the layer's blurred mask and colour - is a task of
    the :class:`~.threads._Pool`, queued ahead; the calling thread runs the sequential
    part (normalising, solving the fill for the current known values, compositing) and
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
def _check_image(image: np.ndarray | torch.Tensor) -> tuple[int, int]:
    shape = tuple(image.shape)
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"image: expected an (H, W, 3) RGB image, got shape {shape}")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"image: empty image of shape {shape}")
    return shape[0], shape[1]


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

    The depth is first cleaned by :func:`~.lens.fill_invalid_depth` (with ``max_depth``).
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
            ``max_coc`` (the value :func:`~.lens.solve_f_number` returns).
        max_coc: Largest CoC in pixels, also the Gaussian support (SYNDOF: 29).
        device: Torch device to compute on (default: the image's, else CPU).
        dtype: Compute precision (``torch.float32`` or ``torch.float64``).
        max_depth: Far clip for :func:`~.lens.fill_invalid_depth`.
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
