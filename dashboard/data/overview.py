"""Which cells a scatter of many cells draws: every cell up to a point budget, above it a
subsample for the overview and every cell inside a zoomed window (up to the same budget).

The browser stays smooth with a bounded number of WebGL points, whatever the dataset's size;
the server picks them. One fixed **priority order** over the cells decides every subsample:

* per cell type, the cells are in a seeded random order (a uniform subsample of a type keeps
  its density: dense regions stay dense, sparse ones sparse);
* the first ``MIN_PER_TYPE`` cells of every type come first, so a rare type is never thinned
  away; the rest follow by their position in their type's order as a fraction of the type, so
  every type is thinned by the same factor (proportional to its size);
* a view shows the cells of lowest priority rank among those it can show: the overview the
  ``budget`` first cells of all; a zoomed window the ``budget`` first cells inside it, or every
  cell inside it when they fit. Zooming therefore only adds points to those already drawn.

The order depends only on the cell types (and a fixed seed): the same results give the same
points in every process, so a recolour sends colours for exactly the points on screen.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from dashboard.data.results import Results

#: Most cells a scatter draws at once (measured in bench/bench_browser_scale.py).
POINT_BUDGET = 50_000
#: Cells of every type drawn before any type is thinned (all of a smaller type).
MIN_PER_TYPE = 200
SEED = 0

Window = tuple[float, float, float, float]  # x0, x1, y0, y1 (data units, x0 <= x1, y0 <= y1)


@dataclass(frozen=True)
class CellView:
    """The cells a scatter draws: ``cells`` (sorted int64 indices), out of ``n_in_view``
    cells inside ``window`` (all ``n_total`` cells when ``window`` is None)."""

    cells: np.ndarray
    n_in_view: int
    n_total: int
    window: Window | None = None

    @property
    def subsampled(self) -> bool:
        """Whether some cells of the view are left out."""
        return len(self.cells) < self.n_in_view

    def note(self, zoomable: bool = True) -> str | None:
        """What the figure says about the points it shows (None when it shows every cell)."""
        shown = len(self.cells)
        if self.window is None:
            if not self.subsampled:
                return None
            hint = " — zoom in to see all" if zoomable else ""
            return (
                f"showing {shown:,} of {self.n_total:,} cells (a subsample keeping every "
                f"cell type){hint}"
            )
        if self.subsampled:
            return (
                f"zoomed: showing {shown:,} of the {self.n_in_view:,} cells in view — zoom "
                "in further to see all; double-click for the overview"
            )
        return (
            f"zoomed: showing all {shown:,} cells in view (of {self.n_total:,}); "
            "double-click for the overview"
        )


def priority_order(codes: np.ndarray, min_per_type: int = MIN_PER_TYPE, seed: int = SEED):
    """Priority rank (int64 (N,), a permutation of 0..N-1; 0 drawn first) of cells whose types
    are ``codes`` (int (N,), any values, -1 included): see the module docstring."""
    codes = np.asarray(codes)
    n = len(codes)
    rng = np.random.default_rng(seed)
    shuffle = rng.permutation(n)  # random order within each type, and among equal keys
    by_type = shuffle[np.argsort(codes[shuffle], kind="stable")]
    _, starts, sizes = np.unique(codes[by_type], return_index=True, return_counts=True)
    within = np.arange(n) - np.repeat(starts, sizes)  # position in the type's random order
    size = np.repeat(sizes, sizes)
    # the first min_per_type of each type: keys below min_per_type; then the fraction of the
    # type already taken, scaled to the whole (the cell drawn once the budget reaches it)
    key = np.where(
        within < min_per_type,
        within.astype(np.float64),
        min_per_type + (within + 1) / size * n,
    )
    order = by_type[np.lexsort((np.argsort(shuffle)[by_type], key))]
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


def cell_priority(results: Results) -> np.ndarray:
    """:func:`priority_order` of these results' cell types (memoised)."""
    return results.memo(("cell_priority",), lambda: priority_order(results.cell_type_codes))


def _lowest(rank: np.ndarray, candidates: np.ndarray, budget: int) -> np.ndarray:
    """The ``budget`` candidates (indices) of lowest rank, sorted by index."""
    if len(candidates) <= budget:
        return candidates
    keep = np.argpartition(rank[candidates], budget - 1)[:budget]
    return np.sort(candidates[keep])


def overview(results: Results, budget: int | None = None) -> CellView:
    """The cells an unzoomed scatter draws: all when they fit ``budget`` (default
    ``POINT_BUDGET``), else the ``budget`` first in priority order."""
    budget = POINT_BUDGET if budget is None else budget
    n = results.n_cells
    if n <= budget:
        return CellView(np.arange(n, dtype=np.int64), n, n)
    cells = _lowest(cell_priority(results), np.arange(n, dtype=np.int64), budget)
    return CellView(cells, n, n)


def inside(xy: np.ndarray, window: Window) -> np.ndarray:
    """Indices (int64, sorted) of the points ``xy`` (N, 2) inside ``window`` (edges included)."""
    x0, x1, y0, y1 = window
    x, y = xy[:, 0], xy[:, 1]
    return np.flatnonzero((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)).astype(np.int64)


def window_view(
    results: Results, xy: np.ndarray, window: Window | None, budget: int | None = None
) -> CellView:
    """The cells a scatter of ``xy`` (N, 2) zoomed to ``window`` draws: every cell inside it
    when they fit ``budget``, else the ``budget`` first of them in priority order. No window,
    or a window holding every cell, is the :func:`overview`."""
    if window is None:
        return overview(results, budget)
    budget = POINT_BUDGET if budget is None else budget
    candidates = inside(xy, window)
    if len(candidates) == results.n_cells:
        return overview(results, budget)
    cells = _lowest(cell_priority(results), candidates, budget)
    return CellView(cells, len(candidates), results.n_cells, window)


def _finite_pair(values) -> tuple[float, float] | None:
    try:
        a, b = (float(v) for v in values)
    except (TypeError, ValueError):
        return None
    return (min(a, b), max(a, b)) if math.isfinite(a) and math.isfinite(b) else None


def _axis_range(relayout: dict, letter: str) -> tuple[float, float] | bool | None:
    """The range an event gave the first ``{letter}axis*`` it names (linked subplots share
    one); None for an autorange; False when it gave none."""
    for key in relayout:
        match = re.fullmatch(rf"({letter}axis\d*)\.(autorange|range(\[0\])?)", key)
        if match is None:
            continue
        if match.group(2) == "autorange":
            return None if relayout[key] else False
        name = match.group(1)
        pair = (
            relayout[key]
            if match.group(3) is None
            else (relayout.get(f"{name}.range[0]"), relayout.get(f"{name}.range[1]"))
        )
        return _finite_pair(pair) or False
    return False


def relayout_window(relayout: dict | None) -> Window | bool | None:
    """The window a plotly ``relayoutData`` event zoomed or panned to (the first x and y axes
    it names): a ``Window`` (an axis it leaves out is unbounded); ``None`` for a reset to
    autorange (the overview); ``False`` when it changed no axis range (a resize, a drag mode,
    a legend click)."""
    if not relayout:
        return False
    x, y = _axis_range(relayout, "x"), _axis_range(relayout, "y")
    if x is None or y is None:
        return None
    if x is False and y is False:
        return False
    unbounded = (-math.inf, math.inf)
    return (*(x or unbounded), *(y or unbounded))
