"""Harmonic (Laplace) region filling on a pixel grid, as MATLAB's ``regionfill``.

The unknown pixels ``R`` satisfy ``deg(x) u(x) - sum_{y ~ x, y in R} u(y) =
sum_{y ~ x, y not in R} v(y)`` over the 4-neighbourhood, where ``deg(x)`` counts
the neighbours inside the image (the image border is a zero-flux boundary) and
``v`` are the known values. Only the unknown pixels enter the system, which is
solved exactly for all channels at once.

The work is split in two: :func:`prepare_fill` builds and factorizes the system
from the region alone, :func:`FillSystem.solve` takes the known values. The
renderer prepares the fills of later layers while it composites earlier ones.

The fill regions of the defocus renderer are thin (every unknown lies within a
kernel radius of known pixels), so after a reverse Cuthill-McKee ordering the
symmetric positive definite system is banded with a bandwidth of a few tens:
LAPACK's banded Cholesky (``dpbtrf``/``dpbtrs``) solves it several times faster
than a general sparse LU. It is called through ctypes, which releases the GIL, so
factorizations in several threads run in parallel. Systems whose ordering stays
wide fall back to SuperLU.

Numbering, trimming and ordering the unknowns and assembling the bands run as
compiled code (:mod:`._fill_order`, Numba) when Numba works; otherwise NumPy and
SciPy's reverse Cuthill-McKee do the same, a few times slower.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import scipy.ndimage as ndi
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.linalg import lapack
from scipy.sparse.csgraph import reverse_cuthill_mckee

__all__ = ["FillSystem", "prepare_fill"]

#: Row and column steps to the four neighbours: up, down, left, right (as in :mod:`._fill_order`).
_STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))
#: Above this bandwidth a banded Cholesky costs more than a sparse LU.
_MAX_BANDWIDTH = 96
_FOUR_NEIGHBOURS = ndi.generate_binary_structure(2, 1)


@functools.cache
def _openblas_thread_setter() -> Callable[[int], int] | None:
    """SciPy's bundled OpenBLAS ``openblas_set_num_threads_local``, if it has one."""
    libs = Path(scipy.__file__).resolve().parent.parent / "scipy.libs"
    for path in sorted(libs.glob("libscipy_openblas*")):
        try:
            setter = ctypes.CDLL(str(path)).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        setter.argtypes = [ctypes.c_int]
        setter.restype = ctypes.c_int
        return setter
    return None


@contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Run SciPy's BLAS on the calling thread only (the setting is per thread).

    The systems are small and solved one after another; OpenBLAS's worker threads
    only add synchronisation, which on a busy machine costs far more than the
    arithmetic (a 20x slow-down on two shared cores).
    """
    setter = _openblas_thread_setter()
    if setter is None:
        yield
        return
    previous = setter(1)
    try:
        yield
    finally:
        setter(max(previous, 1))


_INT_P = ctypes.POINTER(ctypes.c_int)


@functools.cache
def _cython_lapack(name: str) -> Any:
    """SciPy's LAPACK routine ``name`` as a ctypes function (GIL released), or ``None``."""
    try:
        from scipy.linalg import cython_lapack

        capsule = cython_lapack.__pyx_capi__[name]
        api = ctypes.pythonapi
        get_name = ctypes.PYFUNCTYPE(ctypes.c_char_p, ctypes.py_object)(("PyCapsule_GetName", api))
        get_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
            ("PyCapsule_GetPointer", api)
        )
        address = get_pointer(capsule, get_name(capsule))
    except (ImportError, AttributeError, KeyError, ValueError):  # pragma: no cover
        return None
    arguments = {
        # uplo, n, kd, ab, ldab, info
        "dpbtrf": [ctypes.c_char_p, _INT_P, _INT_P, ctypes.c_void_p, _INT_P, _INT_P],
        # uplo, n, kd, nrhs, ab, ldab, b, ldb, info
        "dpbtrs": [
            ctypes.c_char_p,
            _INT_P,
            _INT_P,
            _INT_P,
            ctypes.c_void_p,
            _INT_P,
            ctypes.c_void_p,
            _INT_P,
            _INT_P,
        ],
    }[name]
    return ctypes.CFUNCTYPE(None, *arguments)(address)


def _int(value: int) -> Any:
    return ctypes.byref(ctypes.c_int(value))


class _BandedCholesky:
    """Banded Cholesky factor (upper, LAPACK band storage) of an SPD matrix."""

    def __init__(self, band: np.ndarray) -> None:
        """``band``: Fortran-ordered ``(kd + 1, n)``, overwritten by the factor."""
        self.kd, self.size = band.shape[0] - 1, band.shape[1]
        factorize = _cython_lapack("dpbtrf")
        if factorize is None:  # pragma: no cover - SciPy without cython_lapack
            band, info = lapack.dpbtrf(band, lower=0, overwrite_ab=1)
        else:
            status = ctypes.c_int(0)
            factorize(
                b"U", _int(self.size), _int(self.kd), band.ctypes.data,
                _int(self.kd + 1), ctypes.byref(status),
            )  # fmt: skip
            info = status.value
        if info != 0:  # pragma: no cover - the system is positive definite
            raise RuntimeError(f"prepare_fill: banded Cholesky failed (info={info})")
        self.band = band

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """Solve for ``rhs`` ``(n, C)``; returns a new ``(n, C)`` array."""
        substitute = _cython_lapack("dpbtrs")
        if substitute is None:  # pragma: no cover - SciPy without cython_lapack
            result, _ = lapack.dpbtrs(self.band, rhs, lower=0)
            return result
        result = np.array(rhs, dtype=np.float64, order="F")
        status = ctypes.c_int(0)
        substitute(
            b"U", _int(self.size), _int(self.kd), _int(result.shape[1]),
            self.band.ctypes.data, _int(self.kd + 1), result.ctypes.data,
            _int(self.size), ctypes.byref(status),
        )  # fmt: skip
        return result


@dataclass(frozen=True)
class FillSystem:
    """A factorized fill: which pixels are solved and where their known values lie.

    Attributes:
        rows: Row of each solved pixel, in the order of the solution ``(n,)``.
        cols: Column of each solved pixel ``(n,)``.
        boundary_rows: Row of each known neighbour term ``(m,)`` (a known pixel
            appears once per unknown neighbour).
        boundary_cols: Column of each known neighbour term ``(m,)``.
        boundary_equation: The equation (index into ``rows``) each term enters.
    """

    rows: np.ndarray
    cols: np.ndarray
    boundary_rows: np.ndarray
    boundary_cols: np.ndarray
    boundary_equation: np.ndarray
    factor: Any

    def solve(self, values: np.ndarray) -> np.ndarray:
        """Solution ``(n, C)`` float64 for the known values ``(m, C)`` of the boundary terms."""
        values = np.asarray(values, dtype=np.float64)
        count = self.rows.size
        rhs = np.stack(
            [
                np.bincount(self.boundary_equation, weights=values[:, c], minlength=count)
                for c in range(values.shape[1])
            ],
            axis=1,
        )
        with _single_threaded_blas():
            return self.factor.solve(rhs)


def prepare_fill(
    rows: np.ndarray,
    cols: np.ndarray,
    shape: tuple[int, int],
    needed: np.ndarray | None = None,
) -> FillSystem | None:
    """Build and factorize the Laplace system on the pixels ``(rows, cols)``.

    Args:
        rows: Row of each unknown pixel, int ``(n,)``, no duplicates.
        cols: Column of each unknown pixel, int ``(n,)``.
        shape: Image ``(H, W)``.
        needed: Optional bool ``(n,)``: the pixels whose value the caller uses.
            Connected parts of the region without such a pixel are independent
            systems; (most of) them are left out.

    Returns:
        The :class:`FillSystem` over the kept pixels (ordered for the solver), or
        ``None`` when no pixel is kept.
    """
    height, width = shape
    if rows.size == 0 or (needed is not None and not needed.any()):
        return None
    compiled = _compiled()
    if compiled is not None:
        if needed is None:
            needed = np.ones(rows.size, dtype=bool)
        kept, degree, first, second, equation, boundary_rows, boundary_cols = compiled.order_fill(
            np.asarray(rows, dtype=np.int64),
            np.asarray(cols, dtype=np.int64),
            np.asarray(needed, dtype=bool),
            height,
            width,
        )
        with _single_threaded_blas():
            factor = _factorize(degree, first, second, compiled)
        return FillSystem(
            rows=rows[kept],
            cols=cols[kept],
            boundary_rows=boundary_rows,
            boundary_cols=boundary_cols,
            boundary_equation=equation,
            factor=factor,
        )
    if needed is not None:
        keep = _connected_to_needed(rows, cols, needed)
        rows, cols = rows[keep], cols[keep]
    count = rows.size
    # Number the unknowns on their bounding box with a one-pixel frame, so that
    # every 4-neighbour lies on the grid (-1: not an unknown).
    top, left = int(rows.min()) - 1, int(cols.min()) - 1
    grid_width = int(cols.max()) - left + 2
    flat = (rows - top) * grid_width + (cols - left)
    number = np.full((int(rows.max()) - top + 2) * grid_width, -1, dtype=np.int32)
    number[flat] = np.arange(count, dtype=np.int32)
    neighbour = number[flat[:, None] + np.array([-grid_width, grid_width, -1, 1])]  # (n, 4)
    in_image = np.stack([rows > 0, rows < height - 1, cols > 0, cols < width - 1], axis=1)
    degree = _row_sums(in_image).astype(np.float64)
    linked = neighbour >= 0
    boundary_equation, step = np.nonzero(in_image & ~linked)
    steps = np.array(_STEPS)

    links = _row_sums(linked)
    indptr = np.zeros(count + 1, dtype=np.int32)
    np.cumsum(links, out=indptr[1:])
    indices = neighbour[linked]
    graph = sp.csr_matrix((np.ones(indices.size, dtype=np.int8), indices, indptr), (count, count))
    order = reverse_cuthill_mckee(graph, symmetric_mode=True)
    position = np.empty(count, dtype=np.int64)
    position[order] = np.arange(count)
    # Each coupling once (to the pixel below / to the right), as (first < second).
    down, right = neighbour[:, 1], neighbour[:, 3]
    has_down, has_right = np.flatnonzero(down >= 0), np.flatnonzero(right >= 0)
    one = position[np.concatenate([has_down, has_right])]
    other = position[np.concatenate([down[has_down], right[has_right]])]
    first, second = np.minimum(one, other), np.maximum(one, other)
    with _single_threaded_blas():
        factor = _factorize(degree[order], first, second)
    return FillSystem(
        rows=rows[order],
        cols=cols[order],
        boundary_rows=rows[boundary_equation] + steps[step, 0],
        boundary_cols=cols[boundary_equation] + steps[step, 1],
        boundary_equation=position[boundary_equation],
        factor=factor,
    )


@functools.cache
def _compiled() -> Any:
    """The compiled set-up :mod:`._fill_order`, or ``None`` without a working Numba.

    Without it (or with Numba's JIT disabled) the NumPy/SciPy set-up below runs:
    the same systems, ordered by SciPy's reverse Cuthill-McKee, a few times slower.
    """
    try:
        import numba

        if numba.config.DISABLE_JIT:
            return None
        from . import _fill_order
    except ImportError:
        return None
    return _fill_order


def _row_sums(flags: np.ndarray) -> np.ndarray:
    """Row sums of a bool ``(n, 4)`` array (several times faster than ``sum(axis=1)``)."""
    return flags[:, 0].astype(np.int32) + flags[:, 1] + flags[:, 2] + flags[:, 3]


#: Side of the cells on which :func:`_connected_to_needed` finds connected parts.
_CELL = 4


def _connected_to_needed(rows: np.ndarray, cols: np.ndarray, needed: np.ndarray) -> np.ndarray:
    """Pixels whose part of the region (cells of ``_CELL`` pixels) holds a needed pixel.

    Parts are found on the coarse grid of cells that contain region pixels, so a
    kept part may join pixel-level parts that do not touch: a superset of the
    connected parts of the needed pixels, found ~20x faster than on the pixels.
    """
    cell_y, cell_x = rows // _CELL, cols // _CELL
    cell_y -= cell_y.min()
    cell_x -= cell_x.min()
    occupied = np.zeros((int(cell_y.max()) + 1, int(cell_x.max()) + 1), dtype=bool)
    occupied[cell_y, cell_x] = True
    part, count = ndi.label(occupied, structure=_FOUR_NEIGHBOURS)
    keep_part = np.zeros(count + 1, dtype=bool)
    keep_part[part[cell_y[needed], cell_x[needed]]] = True
    return keep_part[part[cell_y, cell_x]]


class _SparseLU:
    def __init__(self, matrix: sp.csc_matrix) -> None:
        self.lu = spla.splu(
            matrix,
            permc_spec="MMD_AT_PLUS_A",
            diag_pivot_thresh=0.0,
            options={"SymmetricMode": True},
        )

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        return self.lu.solve(rhs)


class _BlockDiagonal:
    """Independent diagonal blocks, each with its own factor."""

    def __init__(self, bounds: list[int], factors: list[Any]) -> None:
        self.bounds, self.factors = bounds, factors

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        result = np.empty((rhs.shape[0], rhs.shape[1]))
        for start, end, factor in zip(self.bounds[:-1], self.bounds[1:], self.factors):
            result[start:end] = factor.solve(rhs[start:end])
        return result


#: A separate factor per block pays off above this saving (multiply-adds); below it the
#: per-call overhead dominates.
_BLOCK_OVERHEAD = 3e5


def _factorize(
    diagonal: np.ndarray, first: np.ndarray, second: np.ndarray, compiled: Any = None
) -> _BandedCholesky | _SparseLU | _BlockDiagonal:
    """Factorize the graph Laplacian system: ``diagonal`` and ``-1`` at each ``(first, second)``.

    ``first < second`` lists the upper off-diagonal entries once. The ordering keeps
    every connected part contiguous; parts whose own bandwidth is much smaller than
    the largest get their own (cheaper) banded factor. ``compiled``: the
    :mod:`._fill_order` module, which finds the parts and assembles the bands.
    """
    size = diagonal.size
    if compiled is not None:
        starts, widths = compiled.parts(first, second, size)
    else:
        starts, widths = _parts(first, second, size)
    bounds, block_widths = _merge_parts(starts, widths, size)
    if compiled is not None and max(block_widths) <= _MAX_BANDWIDTH:
        bands, offsets = compiled.bands(
            diagonal, first, second, np.array(bounds), np.array(block_widths)
        )
        factors: list[Any] = []
        for k, width in enumerate(block_widths):
            count = bounds[k + 1] - bounds[k]
            band = bands[offsets[k] : offsets[k] + count * (width + 1)]
            factors.append(_BandedCholesky(band.reshape(count, width + 1).T))
    else:
        block_of_edge = np.searchsorted(bounds, first, side="right") - 1
        factors = []
        for k, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
            edges = block_of_edge == k
            factors.append(
                _factorize_block(
                    diagonal[start:end],
                    first[edges] - start,
                    second[edges] - start,
                    block_widths[k],
                )
            )
    return factors[0] if len(factors) == 1 else _BlockDiagonal(bounds, factors)


def _parts(first: np.ndarray, second: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """First position and bandwidth of each connected part of the ordered system.

    A part ends where no coupling reaches past it (NumPy version of
    :func:`._fill_order.parts`).
    """
    reach = np.arange(size)
    np.maximum.at(reach, first, second)
    width = np.zeros(size, dtype=np.int64)
    np.maximum.at(width, first, second - first)
    starts = np.flatnonzero(np.maximum.accumulate(reach)[:-1] < np.arange(1, size)) + 1
    starts = np.concatenate([[0], starts])
    return starts, np.maximum.reduceat(width, starts)


def _merge_parts(starts: np.ndarray, widths: np.ndarray, size: int) -> tuple[list[int], list[int]]:
    """Group neighbouring parts into blocks while one factor costs less than two.

    Returns the block bounds (first position of each block, then ``size``) and the
    bandwidth of each block.
    """
    sizes = np.diff(np.concatenate([starts, [size]]))
    bounds, block_widths = [0], []
    block_size, block_width = int(sizes[0]), int(widths[0])
    for part_size, part_width in zip(sizes[1:].tolist(), widths[1:].tolist()):
        merged = max(block_width, part_width)
        separate = block_size * block_width**2 + part_size * part_width**2 + _BLOCK_OVERHEAD
        if (block_size + part_size) * merged**2 <= separate:
            block_size, block_width = block_size + part_size, merged
        else:
            bounds.append(bounds[-1] + block_size)
            block_widths.append(block_width)
            block_size, block_width = part_size, part_width
    bounds.append(size)
    block_widths.append(block_width)
    return bounds, block_widths


def _factorize_block(
    diagonal: np.ndarray, first: np.ndarray, second: np.ndarray, bandwidth: int
) -> _BandedCholesky | _SparseLU:
    """One factor of ``diagonal`` and ``-1`` at each ``(first, second)``."""
    size = diagonal.size
    if bandwidth <= _MAX_BANDWIDTH:
        band = np.zeros((size, bandwidth + 1)).T  # Fortran order (kd + 1, n)
        band[bandwidth] = diagonal
        band[bandwidth + first - second, second] = -1.0
        return _BandedCholesky(band)
    matrix = sp.csc_matrix(
        (
            np.concatenate([diagonal, -np.ones(2 * first.size)]),
            (
                np.concatenate([np.arange(size), first, second]),
                np.concatenate([np.arange(size), second, first]),
            ),
        ),
        shape=(size, size),
    )
    return _SparseLU(matrix)
