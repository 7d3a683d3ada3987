"""Statistics of a cell selection against the rest of the cells, vectorised over all genes.

A selection is a boolean mask over the N cells (from a lasso on a UMAP, a saved selection, …).
Its *velocity drivers* are the genes whose velocity (and velocity coherence, when given) differs
most between the selected cells and the rest, by Welch's unequal-variance t-test per gene:

    t = (m_in − m_out) / sqrt(s²_in/n_in + s²_out/n_out),  s² with ddof = 1,

with Welch–Satterthwaite degrees of freedom and a two-sided p-value (Student t), plus
Benjamini–Hochberg q-values over genes. The ranking score combines both tests as
``sqrt(t_velocity² + max(t_coherence, 0)²)``: a gene drives the selection when its velocity
differs there, or when it is more coherent with the selection's flow than elsewhere (a gene
that is merely less coherent in the selection does not count).

Speed: per-gene sums and sums of squares of the whole matrix are computed once
(:func:`column_moments`, memoise it per results file); a selection then only reads the rows of
its smaller side (selected or rest), in float64-accumulated row blocks, and gets the other side
by subtraction. Non-finite entries are left out of a gene's statistics.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

ROW_BLOCK = 256
"""Rows gathered per block (2 MB of float32 at 2000 genes: stays in cache between the sum and
the sum of squares)."""

RANKINGS = ("score", "velocity", "coherence")


@dataclass(frozen=True)
class Moments:
    """Per-gene count of finite values, and sum and sum of squares of ``x − shift`` over some
    rows; float64 (G,). ``shift`` (float32 (G,), e.g. the column means) keeps the variance
    ``(Σ(x−c)² − (Σ(x−c))²/n)/(n−1)`` free of cancellation. ``all_finite`` says every value
    was finite (later selections can then skip the finiteness test)."""

    count: np.ndarray
    total: np.ndarray
    total_sq: np.ndarray
    shift: np.ndarray
    all_finite: bool

    def __sub__(self, other: Moments) -> Moments:
        if not np.array_equal(self.shift, other.shift):
            raise ValueError("moments with different shifts cannot be subtracted")
        return Moments(
            self.count - other.count,
            self.total - other.total,
            self.total_sq - other.total_sq,
            self.shift,
            self.all_finite and other.all_finite,
        )

    @classmethod
    def concat(cls, parts: list[Moments]) -> Moments:
        """The moments of consecutive column blocks of one matrix, as one (G,) record."""
        return cls(
            np.concatenate([m.count for m in parts]),
            np.concatenate([m.total for m in parts]),
            np.concatenate([m.total_sq for m in parts]),
            np.concatenate([m.shift for m in parts]),
            all(m.all_finite for m in parts),
        )

    def columns(self, genes: slice) -> Moments:
        """The moments of the columns ``genes`` only."""
        return Moments(
            self.count[genes],
            self.total[genes],
            self.total_sq[genes],
            self.shift[genes],
            self.all_finite,
        )


@dataclass(frozen=True)
class Comparison:
    """Welch's t-test of one (N, G) matrix, selected cells vs the rest; arrays (G,) float64."""

    mean_in: np.ndarray
    mean_out: np.ndarray
    t: np.ndarray
    p: np.ndarray
    q: np.ndarray


def column_moments(
    X: np.ndarray,
    rows: np.ndarray | None = None,
    shift: np.ndarray | None = None,
    check_finite: bool = True,
) -> Moments:
    """:class:`Moments` of the columns of ``X`` (N, G) over ``rows`` (indices; all when None).

    ``shift`` defaults to the column means of about 1000 evenly spaced rows; pass the totals'
    shift when summing a subset. Rows are gathered in blocks of :data:`ROW_BLOCK` into one
    reused float32 buffer, summed with BLAS (a ones-vector product) and accumulated across
    blocks in float64. ``check_finite=False`` skips the finiteness test (use it when the whole
    matrix is known to be finite).
    """
    n_rows = X.shape[0] if rows is None else len(rows)
    n_genes = X.shape[1]
    if shift is None:  # near the column means is enough: from about 1000 evenly spaced rows
        sample = np.asarray(X[:: max(1, X.shape[0] // 1000)], dtype=np.float64)
        sample[~np.isfinite(sample)] = np.nan
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: shift 0
            shift = np.nan_to_num(np.nanmean(sample, axis=0)).astype(np.float32)
    count = np.zeros(n_genes)
    total = np.zeros(n_genes)
    total_sq = np.zeros(n_genes)
    all_finite = True
    buffer = np.empty((min(ROW_BLOCK, max(n_rows, 1)), n_genes), dtype=np.float32)
    ones = np.ones(buffer.shape[0], dtype=np.float32)
    for start in range(0, n_rows, ROW_BLOCK):
        stop = min(start + ROW_BLOCK, n_rows)
        block = buffer[: stop - start]
        if rows is None:
            np.copyto(block, X[start:stop], casting="unsafe")
        elif X.dtype == np.float32:
            np.take(X, rows[start:stop], axis=0, out=block, mode="clip")
        else:
            block[...] = X[rows[start:stop]]
        block -= shift
        finite_rows = stop - start
        if check_finite:
            finite = np.isfinite(block)
            if not finite.all():
                all_finite = False
                block[~finite] = 0.0
                count += finite.sum(0)
                finite_rows = 0
        count += finite_rows
        weights = ones[: stop - start]
        total += weights @ block
        np.multiply(block, block, out=block)
        total_sq += weights @ block
    return Moments(count, total, total_sq, shift, all_finite)


def _mean_var(m: Moments) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased variance (ddof = 1) per gene; NaN where undefined."""
    with np.errstate(invalid="ignore", divide="ignore"):
        shifted_mean = m.total / m.count
        var = (m.total_sq - m.count * shifted_mean**2) / (m.count - 1)
    return shifted_mean + m.shift, np.maximum(var, 0.0)


def welch_t(
    mean_a: np.ndarray,
    var_a: np.ndarray,
    n_a: np.ndarray,
    mean_b: np.ndarray,
    var_b: np.ndarray,
    n_b: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Welch's t statistic of a − b and its two-sided p-value, elementwise, from the groups'
    means, variances (ddof = 1) and sizes.

    ``scipy.stats.ttest_ind_from_stats(equal_var=False)``, except NaN (never ±inf) where a group
    has fewer than two values or both groups are constant, so such genes rank last.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        result = stats.ttest_ind_from_stats(
            mean_a, np.sqrt(var_a), n_a, mean_b, np.sqrt(var_b), n_b, equal_var=False
        )
        undefined = (n_a < 2) | (n_b < 2) | ~(var_a / n_a + var_b / n_b > 0)
    return np.where(undefined, np.nan, result.statistic), np.where(undefined, np.nan, result.pvalue)


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg q-values of ``p`` (NaN entries stay NaN and are not counted)."""
    q = np.full_like(p, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        q[finite] = stats.false_discovery_control(p[finite])
    return q


def compare_selection(X: np.ndarray, mask: np.ndarray, totals: Moments | None = None) -> Comparison:
    """Welch's t-test per column of ``X`` (N, G) between the cells in ``mask`` (N,) and the rest.

    ``totals`` are :func:`column_moments` of the whole ``X`` (computed here when None); only the
    smaller side of the selection is read. Raises ValueError for an empty selection or one that
    holds every cell (nothing to compare with).
    """
    mask = check_mask(mask, X.shape[0])
    if totals is None:
        totals = column_moments(X)
    rows, small_is_in = smaller_side(mask)
    small = column_moments(X, rows, totals.shift, check_finite=not totals.all_finite)
    return comparison_from_moments(small, totals, small_is_in)


def smaller_side(mask: np.ndarray) -> tuple[np.ndarray, bool]:
    """Row indices of the smaller side of ``mask`` (N,) bool (the selected cells or the rest)
    and whether that side is the selection: the only rows a comparison needs to read."""
    n_in = int(mask.sum())
    small_is_in = n_in <= mask.size - n_in
    return np.flatnonzero(mask if small_is_in else ~mask), small_is_in


def comparison_from_moments(small: Moments, totals: Moments, small_is_in: bool) -> Comparison:
    """Welch's t-test per gene from the moments of the smaller side (:func:`smaller_side`)
    and of all cells: the other side is their difference."""
    large = totals - small
    inside, outside = (small, large) if small_is_in else (large, small)
    mean_in, var_in = _mean_var(inside)
    mean_out, var_out = _mean_var(outside)
    t, p = welch_t(mean_in, var_in, inside.count, mean_out, var_out, outside.count)
    return Comparison(mean_in, mean_out, t, p, _bh(p))


def check_mask(mask: np.ndarray, n_cells: int) -> np.ndarray:
    """``mask`` as a bool (N,) array; ValueError when its shape is wrong, it selects no cell
    or every cell (nothing to compare with)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (n_cells,):
        raise ValueError(f"the selection mask has shape {mask.shape}, expected ({n_cells},)")
    n_in = int(mask.sum())
    if n_in == 0:
        raise ValueError("the selection is empty: draw a lasso or box around some cells")
    if n_in == n_cells:
        raise ValueError("the selection holds every cell, so there is no rest to compare with")
    return mask


def velocity_drivers(
    velocity: np.ndarray,
    mask: np.ndarray,
    coherence: np.ndarray | None = None,
    velocity_totals: Moments | None = None,
    coherence_totals: Moments | None = None,
) -> pd.DataFrame:
    """Genes ranked by how much their velocity (and coherence) in ``mask`` differ from the rest.

    ``velocity`` and ``coherence`` (per-cell Δ ⊙ v, optional) are (N, G); ``mask`` (N,) bool.
    Returns one row per gene (index = column position), sorted by ``score`` (best first, NaN
    last): ``velocity_in``, ``velocity_out`` (means), ``t_velocity``, ``p_velocity``,
    ``q_velocity``, then the same five for coherence when given, and ``score`` =
    sqrt(t_velocity² + max(t_coherence, 0)²) (|t_velocity| without coherence).
    """
    vel = compare_selection(velocity, mask, velocity_totals)
    coh = None if coherence is None else compare_selection(coherence, mask, coherence_totals)
    return drivers_frame(vel, coh)


def drivers_frame(vel: Comparison, coh: Comparison | None = None) -> pd.DataFrame:
    """The ranked drivers table of :func:`velocity_drivers` from the velocity (and coherence)
    comparisons."""
    columns = {
        "velocity_in": vel.mean_in,
        "velocity_out": vel.mean_out,
        "t_velocity": vel.t,
        "p_velocity": vel.p,
        "q_velocity": vel.q,
    }
    score = np.abs(vel.t)
    if coh is not None:
        columns.update(
            coherence_in=coh.mean_in,
            coherence_out=coh.mean_out,
            t_coherence=coh.t,
            p_coherence=coh.p,
            q_coherence=coh.q,
        )
        # A NaN coherence test leaves the velocity evidence alone.
        score = np.sqrt(vel.t**2 + np.nan_to_num(np.maximum(coh.t, 0.0)) ** 2)
    columns["score"] = score
    return rank_drivers(pd.DataFrame(columns), "score")


def rank_drivers(table: pd.DataFrame, by: str = "score") -> pd.DataFrame:
    """``table`` from :func:`velocity_drivers` sorted by ``by``: ``"score"`` (descending),
    ``"velocity"`` (|t_velocity| descending) or ``"coherence"`` (t_coherence descending); NaN
    last, ties in gene order. Raises ValueError for another ranking or a missing column."""
    if by not in RANKINGS:
        raise ValueError(f"unknown ranking {by!r}; choose from {', '.join(RANKINGS)}")
    key = {"score": "score", "velocity": "t_velocity", "coherence": "t_coherence"}[by]
    if key not in table:
        raise ValueError(f"cannot rank by {by}: the table has no {key} column")
    values = table[key].to_numpy(dtype=np.float64)
    values = np.abs(values) if by == "velocity" else values
    order = np.argsort(np.where(np.isnan(values), np.inf, -values), kind="stable")
    return table.iloc[order]


@dataclass(frozen=True)
class ValueSummary:
    """Median, minimum and maximum of one per-cell value inside and outside a selection
    (NaN values ignored; NaN when a side has no finite value)."""

    median_in: float
    median_out: float
    min_in: float
    max_in: float
    min_out: float
    max_out: float


def summarise_values(values: np.ndarray, mask: np.ndarray) -> ValueSummary:
    """:class:`ValueSummary` of ``values`` (N,) inside and outside ``mask`` (N,) bool."""

    def stats_of(x: np.ndarray) -> tuple[float, float, float]:
        x = x[np.isfinite(x)]
        if x.size == 0:
            return (np.nan, np.nan, np.nan)
        return float(np.median(x)), float(x.min()), float(x.max())

    mask = np.asarray(mask, dtype=bool)
    med_in, lo_in, hi_in = stats_of(values[mask])
    med_out, lo_out, hi_out = stats_of(values[~mask])
    return ValueSummary(med_in, med_out, lo_in, hi_in, lo_out, hi_out)


def group_counts(
    codes: np.ndarray, mask: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cells per group (codes (N,) in [0, n_groups); -1 = unlabelled, not counted) inside
    ``mask`` and in total: two int64 arrays (n_groups,)."""
    codes = np.asarray(codes)
    valid = codes >= 0
    inside = np.bincount(codes[valid & mask], minlength=n_groups)
    total = np.bincount(codes[valid], minlength=n_groups)
    return inside, total
