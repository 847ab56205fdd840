"""Harmonic (Laplace) region filling on a pixel grid, as MATLAB's ``regionfill``.

The unknown pixels ``R`` satisfy ``deg(x) u(x) - sum_{y ~ x, y in R} u(y) =
sum_{y ~ x, y not in R} v(y)`` over the 4-neighbourhood, where ``deg(x)`` counts
the neighbours inside the image (the image border is a zero-flux boundary) and
``v`` are the known values. Only the unknown pixels enter the system, which is
solved exactly for all channels at once.

The fill regions of the defocus renderer are thin (every unknown lies within a
kernel radius of known pixels), so after a reverse Cuthill-McKee ordering the
symmetric positive definite system is banded with a bandwidth of a few tens:
LAPACK's banded Cholesky (``dpbsv``) solves it several times faster than a general
sparse LU. Systems whose ordering stays wide fall back to SuperLU.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.linalg import lapack
from scipy.sparse.csgraph import connected_components, reverse_cuthill_mckee

__all__ = ["harmonic_fill"]

_STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))
#: Above this bandwidth a banded Cholesky costs more than a sparse LU.
_MAX_BANDWIDTH = 96


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
    """Run SciPy's BLAS on the calling thread only.

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


def harmonic_fill(
    rows: np.ndarray,
    cols: np.ndarray,
    shape: tuple[int, int],
    known_value: Callable[[np.ndarray, np.ndarray], np.ndarray],
    needed: np.ndarray | None = None,
) -> np.ndarray:
    """Solve the Laplace equation on the pixels ``(rows, cols)``.

    Args:
        rows: Row of each unknown pixel, int ``(n,)``, no duplicates.
        cols: Column of each unknown pixel, int ``(n,)``.
        shape: Image ``(H, W)``.
        known_value: Callable ``(rows, cols) -> (m, C)`` giving the Dirichlet value
            of known pixels.
        needed: Optional bool ``(n,)``: the pixels whose value the caller uses.
            Connected parts of the region without such a pixel are independent
            systems and are skipped (their rows of the result are zero).

    Returns:
        Solution ``(n, C)`` float64.
    """
    height, width = shape
    count = rows.size
    top, left = int(rows.min()), int(cols.min())
    local_y = rows - (top - 1)
    local_x = cols - (left - 1)
    number = np.full((int(local_y.max()) + 2, int(local_x.max()) + 2), -1, dtype=np.int64)
    number[local_y, local_x] = np.arange(count)

    neighbour = np.empty((count, 4), dtype=np.int64)
    degree = np.zeros(count)
    boundary_rows, boundary_y, boundary_x = [], [], []
    for step, (dy, dx) in enumerate(_STEPS):
        ny, nx = rows + dy, cols + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        degree += inside
        neighbour[:, step] = number[local_y + dy, local_x + dx]
        boundary = np.flatnonzero(inside & (neighbour[:, step] < 0))
        boundary_rows.append(boundary)
        boundary_y.append(ny[boundary])
        boundary_x.append(nx[boundary])
    b_rows = np.concatenate(boundary_rows)
    values = np.asarray(
        known_value(np.concatenate(boundary_y), np.concatenate(boundary_x)), dtype=np.float64
    )
    rhs = np.stack(
        [
            np.bincount(b_rows, weights=values[:, c], minlength=count)
            for c in range(values.shape[1])
        ],
        axis=1,
    )

    linked = neighbour >= 0
    indptr = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(linked.sum(axis=1), out=indptr[1:])
    indices = neighbour[linked]
    graph = sp.csr_matrix((np.ones(indices.size, dtype=np.int8), indices, indptr), (count, count))
    order = reverse_cuthill_mckee(graph, symmetric_mode=True)
    if needed is not None:
        # Every connected part is a separate system; RCM keeps each one contiguous.
        _, part = connected_components(graph, directed=False)
        keep_part = np.zeros(part.max() + 1, dtype=bool)
        keep_part[part[needed]] = True
        order = order[keep_part[part[order]]]
    solution = np.zeros_like(rhs)
    size = order.size
    if size == 0:
        return solution
    position = np.full(count, -1, dtype=np.int64)
    position[order] = np.arange(size)
    source = np.repeat(np.arange(count), linked.sum(axis=1))
    first, second = position[source], position[indices]
    upper = (first >= 0) & (first < second)
    first, second = first[upper], second[upper]
    bandwidth = int((second - first).max()) if first.size else 0
    with _single_threaded_blas():
        result = _solve_spd(degree[order], first, second, bandwidth, rhs[order])
    solution[order] = result
    return solution


def _solve_spd(
    diagonal: np.ndarray, first: np.ndarray, second: np.ndarray, bandwidth: int, rhs: np.ndarray
) -> np.ndarray:
    """Solve the graph-Laplacian system: ``diagonal`` and ``-1`` at each ``(first, second)``.

    ``first < second`` lists the upper off-diagonal entries once.
    """
    size = diagonal.size
    if bandwidth <= _MAX_BANDWIDTH:
        band = np.zeros((bandwidth + 1, size))
        band[bandwidth] = diagonal
        band[bandwidth + first - second, second] = -1.0
        _, result, info = lapack.dpbsv(band, rhs, lower=0, overwrite_ab=1, overwrite_b=1)
        if info != 0:  # pragma: no cover - the system is positive definite
            raise RuntimeError(f"harmonic_fill: banded Cholesky failed (info={info})")
    else:
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
        factor = spla.splu(
            matrix,
            permc_spec="MMD_AT_PLUS_A",
            diag_pivot_thresh=0.0,
            options={"SymmetricMode": True},
        )
        result = factor.solve(rhs)
    return result
