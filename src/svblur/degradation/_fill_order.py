"""Compiled set-up of a fill system: numbering, trimming to the needed parts, ordering.

:func:`order_fill` does in one pass over the unknown pixels what
:func:`svblur.degradation._harmonic.prepare_fill` otherwise does with NumPy, SciPy's
reverse Cuthill-McKee and a coarse labelling: it numbers the 4-neighbours, keeps
exactly the connected parts that hold a needed pixel, orders every part by
reverse Cuthill-McKee started from a pseudo-peripheral node (George and Liu's
search; narrower bands than starting from any node of least degree), and lists
the couplings and known-neighbour terms of the ordered system.

Compiled with Numba (``nogil``: renderer threads set up fills in parallel); the
compiled code is cached on disk after the first call of a process.
"""

from __future__ import annotations

import numba
import numpy as np

#: Row and column steps to the four neighbours: up, down, left, right (the order of
#: ``_neighbours``' shifts, and of the NumPy set-up in :mod:`._harmonic`).
_STEP_ROW = np.array([-1, 1, 0, 0], dtype=np.int64)
_STEP_COL = np.array([0, 0, -1, 1], dtype=np.int64)


@numba.njit(cache=True, nogil=True)
def _neighbours(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(n, 4)`` index of each pixel's up/down/left/right neighbour (-1: none), and counts."""
    count = rows.size
    top, left = rows.min() - 1, cols.min() - 1
    grid_width = cols.max() - left + 2
    number = np.full((rows.max() - top + 2) * grid_width, -1, dtype=np.int32)
    flat = (rows - top) * grid_width + (cols - left)
    for i in range(count):
        number[flat[i]] = i
    shifts = (-grid_width, grid_width, -1, 1)
    neighbour = np.empty((count, 4), dtype=np.int32)
    links = np.zeros(count, dtype=np.int32)
    for i in range(count):
        for k in range(4):
            other = number[flat[i] + shifts[k]]
            neighbour[i, k] = other
            if other >= 0:
                links[i] += 1
    return neighbour, links


@numba.njit(cache=True, nogil=True)
def _breadth_first(
    neighbour: np.ndarray,
    start: int,
    mark: np.ndarray,
    stamp: int,
    queue: np.ndarray,
    level: np.ndarray,
) -> tuple[int, int]:
    """Visit ``start``'s part (``mark`` set to ``stamp``) into ``queue``.

    Returns the number of pixels visited and the queue position where the last
    level starts.
    """
    queue[0] = start
    mark[start] = stamp
    level[start] = 0
    head, tail, last = 0, 1, 0
    while head < tail:
        node = queue[head]
        if level[node] != level[queue[last]]:
            last = head
        head += 1
        for k in range(4):
            other = neighbour[node, k]
            if other >= 0 and mark[other] != stamp:
                mark[other] = stamp
                level[other] = level[node] + 1
                queue[tail] = other
                tail += 1
    return tail, last


@numba.njit(cache=True, nogil=True)
def _pseudo_peripheral(
    neighbour: np.ndarray,
    links: np.ndarray,
    start: int,
    mark: np.ndarray,
    stamp: int,
    queue: np.ndarray,
    level: np.ndarray,
) -> tuple[int, int]:
    """George-Liu: move to a least-linked pixel of the farthest level while the depth grows.

    Returns the node and the next unused ``stamp``.
    """
    depth = -1
    while True:
        count, last = _breadth_first(neighbour, start, mark, stamp, queue, level)
        stamp += 1
        reached = level[queue[count - 1]]
        if reached <= depth:
            return start, stamp
        depth = reached
        best = queue[last]
        for j in range(last + 1, count):
            if links[queue[j]] < links[best]:
                best = queue[j]
        if best == start:
            return start, stamp
        start = best


@numba.njit(cache=True, nogil=True)
def order_fill(
    rows: np.ndarray, cols: np.ndarray, needed: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, ...]:
    """Trim, order and list the Laplace system on the unknown pixels ``(rows, cols)``.

    Args:
        rows: Row of each unknown pixel, int64 ``(n,)``, no duplicates.
        cols: Column of each unknown pixel, int64 ``(n,)``.
        needed: Bool ``(n,)``: pixels whose value is used; parts without one are dropped.
        height: Image height (the image border is a zero-flux boundary).
        width: Image width.

    Returns:
        ``kept`` (input index of each solved pixel, in solver order), ``degree``
        (diagonal of the system, float64), ``first`` < ``second`` (solver positions
        of each coupling, once), ``boundary_equation`` (solver position),
        ``boundary_rows`` and ``boundary_cols`` (pixel) of each known-neighbour
        term.
    """
    count = rows.size
    neighbour, links = _neighbours(rows, cols)
    mark = np.zeros(count, dtype=np.int32)
    queue = np.empty(count, dtype=np.int32)
    level = np.empty(count, dtype=np.int32)
    # One seed per part that holds a needed pixel.
    seeds = np.empty(count, dtype=np.int32)
    parts = 0
    for i in range(count):
        if needed[i] and mark[i] == 0:
            _breadth_first(neighbour, i, mark, 1, queue, level)
            seeds[parts] = i
            parts += 1
    # Cuthill-McKee per part (children by increasing link count), then reversed.
    order = np.empty(count, dtype=np.int32)
    children = np.empty(4, dtype=np.int32)
    filled, stamp = 0, 2
    for s in range(parts):
        start, stamp = _pseudo_peripheral(neighbour, links, seeds[s], mark, stamp, queue, level)
        head = filled
        order[filled] = start
        mark[start] = stamp
        filled += 1
        while head < filled:
            node = order[head]
            head += 1
            found = 0
            for k in range(4):
                other = neighbour[node, k]
                if other >= 0 and mark[other] != stamp:
                    mark[other] = stamp
                    slot = found
                    while slot > 0 and links[children[slot - 1]] > links[other]:
                        children[slot] = children[slot - 1]
                        slot -= 1
                    children[slot] = other
                    found += 1
            for slot in range(found):
                order[filled] = children[slot]
                filled += 1
        stamp += 1
    kept = order[:filled][::-1].copy()
    position = np.empty(count, dtype=np.int64)
    for p in range(filled):
        position[kept[p]] = p
    # The system in solver order: couplings to the pixel below / right, once each.
    degree = np.empty(filled, dtype=np.float64)
    first = np.empty(2 * filled, dtype=np.int64)
    second = np.empty(2 * filled, dtype=np.int64)
    boundary_equation = np.empty(4 * filled, dtype=np.int64)
    boundary_rows = np.empty(4 * filled, dtype=np.int64)
    boundary_cols = np.empty(4 * filled, dtype=np.int64)
    edges, terms = 0, 0
    for p in range(filled):
        node = kept[p]
        row, col = rows[node], cols[node]
        inside = 0
        for k in range(4):
            to_row, to_col = row + _STEP_ROW[k], col + _STEP_COL[k]
            if to_row < 0 or to_row >= height or to_col < 0 or to_col >= width:
                continue
            inside += 1
            other = neighbour[node, k]
            if other < 0:
                boundary_equation[terms] = p
                boundary_rows[terms] = to_row
                boundary_cols[terms] = to_col
                terms += 1
            elif k == 1 or k == 3:
                q = position[other]
                first[edges], second[edges] = min(p, q), max(p, q)
                edges += 1
        degree[p] = inside
    return (
        kept,
        degree,
        first[:edges],
        second[:edges],
        boundary_equation[:terms],
        boundary_rows[:terms],
        boundary_cols[:terms],
    )


@numba.njit(cache=True, nogil=True)
def parts(first: np.ndarray, second: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """First position and bandwidth of each connected part of an ordered system.

    The ordering keeps parts contiguous: a part ends where no coupling ``(first,
    second)`` reaches past it.
    """
    reach = np.arange(size)
    width = np.zeros(size, dtype=np.int64)
    for e in range(first.size):
        reach[first[e]] = max(reach[first[e]], second[e])
        width[first[e]] = max(width[first[e]], second[e] - first[e])
    starts = np.empty(size, dtype=np.int64)
    widths = np.zeros(size, dtype=np.int64)
    count, furthest = 0, -1
    for p in range(size):
        if p > furthest:  # nothing before p reaches p: a new part
            starts[count] = p
            count += 1
        furthest = max(furthest, reach[p])
        widths[count - 1] = max(widths[count - 1], width[p])
    return starts[:count], widths[:count]


@numba.njit(cache=True, nogil=True)
def bands(
    diagonal: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    bounds: np.ndarray,
    widths: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """LAPACK upper band storage of each block ``bounds[k]:bounds[k + 1]``, in one buffer.

    Block ``k`` with bandwidth ``w`` and ``n`` rows is the column-major ``(w + 1, n)``
    array starting at ``offsets[k]``: the diagonal in its last row, the coupling
    ``(i, j)``, ``i < j``, at row ``w + i - j`` of column ``j`` (block-local).
    """
    blocks = widths.size
    offsets = np.zeros(blocks + 1, dtype=np.int64)
    block_of = np.empty(diagonal.size, dtype=np.int64)
    for k in range(blocks):
        offsets[k + 1] = offsets[k] + (bounds[k + 1] - bounds[k]) * (widths[k] + 1)
        block_of[bounds[k] : bounds[k + 1]] = k
    band = np.zeros(offsets[blocks], dtype=np.float64)
    for p in range(diagonal.size):
        k = block_of[p]
        band[offsets[k] + (p - bounds[k]) * (widths[k] + 1) + widths[k]] = diagonal[p]
    for e in range(first.size):
        k = block_of[second[e]]
        column = second[e] - bounds[k]
        band[offsets[k] + column * (widths[k] + 1) + widths[k] + first[e] - second[e]] = -1.0
    return band, offsets[:blocks]
