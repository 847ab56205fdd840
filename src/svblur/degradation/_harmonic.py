"""Harmonic (Laplace) region filling on a pixel grid, as MATLAB's ``regionfill``.

The unknown pixels ``R`` satisfy ``deg(x) u(x) - sum_{y ~ x, y in R} u(y) =
sum_{y ~ x, y not in R} v(y)`` over the 4-neighbourhood, where ``deg(x)`` counts
the neighbours inside the image (the image border is a zero-flux boundary) and
``v`` are the known values. Only the unknown pixels enter the sparse system, which
is solved directly (SuperLU) for all channels at once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

__all__ = ["harmonic_fill"]

_STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def harmonic_fill(
    rows: np.ndarray,
    cols: np.ndarray,
    shape: tuple[int, int],
    known_value: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> np.ndarray:
    """Solve the Laplace equation on the pixels ``(rows, cols)``.

    Args:
        rows: Row of each unknown pixel, int ``(n,)``.
        cols: Column of each unknown pixel, int ``(n,)``.
        shape: Image ``(H, W)``.
        known_value: Callable ``(rows, cols) -> (m, C)`` float64 array giving the
            Dirichlet value of known pixels.

    Returns:
        Solution ``(n, C)`` float64.
    """
    height, width = shape
    count = rows.size
    flat = rows * width + cols
    order = np.argsort(flat)
    sorted_flat = flat[order]
    degree = np.zeros(count)
    sys_rows, sys_cols = [np.arange(count)], [np.arange(count)]
    boundary_rows, boundary_index = [], []
    for dy, dx in _STEPS:
        ny, nx = rows + dy, cols + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        degree += inside
        neighbour_flat = ny * width + nx
        position = np.searchsorted(sorted_flat, neighbour_flat).clip(0, count - 1)
        is_unknown = inside & (sorted_flat[position] == neighbour_flat)
        sys_rows.append(np.flatnonzero(is_unknown))
        sys_cols.append(order[position[is_unknown]])
        boundary = inside & ~is_unknown
        boundary_rows.append(np.flatnonzero(boundary))
        boundary_index.append((ny[boundary], nx[boundary]))
    data = np.concatenate([degree, -np.ones(sum(r.size for r in sys_rows[1:]))])
    system = sp.csc_matrix(
        (data, (np.concatenate(sys_rows), np.concatenate(sys_cols))), shape=(count, count)
    )
    b_rows = np.concatenate(boundary_rows)
    b_y = np.concatenate([b[0] for b in boundary_index])
    b_x = np.concatenate([b[1] for b in boundary_index])
    values = np.asarray(known_value(b_y, b_x), dtype=np.float64)
    rhs = np.zeros((count, values.shape[1]))
    np.add.at(rhs, b_rows, values)
    factor = spla.splu(
        system, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True}
    )
    return factor.solve(rhs)
