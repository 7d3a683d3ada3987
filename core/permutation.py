"""Permutation score (veloVI paper, Methods "Permutation scoring"; reference notes §5).

Within each cell type, spliced and unspliced abundances are shuffled across cells
independently per gene; the trained model's fit of the permuted data (no retraining: the
encoder is amortised) is compared with its fit of the original data by a per-(gene, type)
Student t statistic on the absolute fit errors. Genes whose fit worsens (large t) carry
transient, time-dependent information; steady-state genes are insensitive.

Departure from the reference: the at most ``n_cells`` cells per type entering the t-test are a
seeded random subset, not the first ``n_cells`` in obs order, and all randomness comes from one
seeded ``numpy.random.Generator``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.stats
from anndata import AnnData

from core.groups import group_indicator, validate_group_codes

ExpressionFit = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""``(spliced (N,G), unspliced (N,G)) -> (fit_s, fit_u)`` (N,G) each: VeloVI.expression_fit."""


@dataclass(frozen=True)
class PermutationResult:
    """Outcome of :func:`permutation_scores`.

    ``effect`` (G, C): t statistic per gene and cell type (NaN where undefined, e.g. < 2 cells);
    ``score`` (G,): nanmax of ``effect`` over types; ``skewness``/``kurtosis``: of the score
    distribution (``scipy.stats.skew``/``kurtosis``, Fisher, NaN scores omitted);
    ``n_cells_used`` (C,): cells per type in the t-tests; ``n_cells``: the cap; ``seed``.
    """

    effect: np.ndarray
    score: np.ndarray
    skewness: float
    kurtosis: float
    n_cells_used: np.ndarray
    n_cells: int
    seed: int


def permute_within_groups(
    X: np.ndarray,
    codes: np.ndarray,
    rng: np.random.Generator,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Shuffle each column of X (N, G) across the cells of each group, independently per column.

    Returns the shuffled matrix at ``rows`` (default: every cell, i.e. a full within-group
    permutation). For a subset the rows of group c receive, per column, values drawn without
    replacement from that column's values in group c: the restriction of a full permutation,
    without materialising it.
    """
    rows = np.arange(X.shape[0]) if rows is None else np.asarray(rows)
    out = np.empty((rows.size, X.shape[1]), dtype=X.dtype)
    for code in np.unique(codes[rows]):
        members = np.flatnonzero(codes == code)
        targets = np.flatnonzero(codes[rows] == code)
        source = np.argsort(rng.random((members.size, X.shape[1])), axis=0)[: targets.size]
        out[targets] = np.take_along_axis(X[members], source, axis=0)
    return out


def subsample_per_group(codes: np.ndarray, n_cells: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask (N,) keeping a random subset of at most ``n_cells`` labelled cells per group."""
    order = np.lexsort((rng.random(codes.size), codes))
    sorted_codes = codes[order]
    group_start = np.searchsorted(sorted_codes, sorted_codes, side="left")
    rank = np.arange(codes.size) - group_start
    keep = np.zeros(codes.size, dtype=bool)
    keep[order] = (rank < n_cells) & (sorted_codes >= 0)
    return keep


def paired_group_t_statistics(
    a: np.ndarray, b: np.ndarray, codes: np.ndarray, n_groups: int
) -> np.ndarray:
    """Student t (equal variances, ``scipy.stats.ttest_ind`` default) of a vs b per gene and group.

    ``a``, ``b`` (N, G) hold two samples measured on the same cells; for group c and gene g the
    two samples are ``a[codes == c, g]`` and ``b[codes == c, g]``. Returns (G, C); NaN where a
    group has fewer than 2 cells or both samples have zero variance and equal means.
    """
    indicator = group_indicator(codes, n_groups)
    n = np.asarray(indicator.sum(axis=0)).ravel()  # (C,)
    labelled = np.maximum(codes, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means, sq_dev = [], []
        for sample in (a, b):
            mean = np.asarray(indicator.T @ sample) / n[:, None]  # (C, G)
            deviation = (sample - mean[labelled]) ** 2
            means.append(mean)
            sq_dev.append(np.asarray(indicator.T @ deviation))
        pooled_var = (sq_dev[0] + sq_dev[1]) / (2 * n[:, None] - 2)
        t = (means[0] - means[1]) / np.sqrt(pooled_var * 2 / n[:, None])
    t[n < 2] = np.nan
    return t.T


def permutation_scores(
    expression_fit: ExpressionFit,
    spliced: np.ndarray,
    unspliced: np.ndarray,
    group_codes: np.ndarray,
    n_groups: int,
    n_cells: int = 200,
    seed: int = 0,
) -> PermutationResult:
    """Permutation effect per (gene, cell type) and permutation score per gene.

    ``spliced``, ``unspliced`` (N, G): the abundances the model was fitted on (min-max scaled
    ``Ms``/``Mu``). ``expression_fit`` maps abundances to fitted values (no retraining).
    ``group_codes`` (N,) integer cell-type codes in [0, n_groups) (-1 = unlabelled, excluded).
    Error per cell and gene: |ŝ − s| + |û − u|; effect = t(permuted error, original error) on at
    most ``n_cells`` seeded-random cells per type (the same cells for both samples). The
    amortised model fits each cell on its own, so only those cells are fitted, in the original
    and in the within-type shuffled data.
    """
    spliced = np.asarray(spliced)
    unspliced = np.asarray(unspliced)
    if spliced.ndim != 2 or unspliced.shape != spliced.shape:
        raise ValueError(
            f"spliced and unspliced must be (cells, genes) arrays of equal shape, got "
            f"{spliced.shape} and {unspliced.shape}; pass adata.layers['Ms'] and ['Mu']."
        )
    if n_cells < 2:
        raise ValueError(f"n_cells must be at least 2 for a t-test, got {n_cells}.")
    codes = validate_group_codes(group_codes, spliced.shape[0], n_groups)
    rng = np.random.default_rng(seed)

    def fit_error(s: np.ndarray, u: np.ndarray) -> np.ndarray:
        fit_s, fit_u = expression_fit(s, u)
        s, u = s.astype(np.float64), u.astype(np.float64)
        return np.abs(np.asarray(fit_s, dtype=np.float64) - s) + np.abs(
            np.asarray(fit_u, dtype=np.float64) - u
        )

    keep = subsample_per_group(codes, n_cells, rng)
    rows = np.flatnonzero(keep)
    error_original = fit_error(spliced[rows], unspliced[rows])
    error_permuted = fit_error(
        permute_within_groups(spliced, codes, rng, rows),
        permute_within_groups(unspliced, codes, rng, rows),
    )
    effect = paired_group_t_statistics(error_permuted, error_original, codes[keep], n_groups)

    finite_rows = ~np.all(np.isnan(effect), axis=1)
    score = np.full(effect.shape[0], np.nan)
    score[finite_rows] = np.nanmax(effect[finite_rows], axis=1)
    return PermutationResult(
        effect=effect,
        score=score,
        skewness=float(scipy.stats.skew(score, nan_policy="omit")),
        kurtosis=float(scipy.stats.kurtosis(score, nan_policy="omit")),
        n_cells_used=np.bincount(codes[keep], minlength=n_groups),
        n_cells=n_cells,
        seed=seed,
    )


def add_permutation_to_adata(adata: AnnData, result: PermutationResult) -> None:
    """Write ``var['permutation_score']``, ``varm['permutation_effect']`` (G, C) and
    ``uns['velodash']['permutation']`` = {skewness, kurtosis, n_cells, n_cells_used, seed},
    in place, keeping any other ``uns['velodash']`` content."""
    if result.effect.shape[0] != adata.n_vars:
        raise ValueError(
            f"the permutation result covers {result.effect.shape[0]} genes but adata has "
            f"{adata.n_vars}; compute it on the same genes."
        )
    adata.var["permutation_score"] = result.score
    adata.varm["permutation_effect"] = result.effect
    adata.uns.setdefault("velodash", {})["permutation"] = {
        "skewness": result.skewness,
        "kurtosis": result.kurtosis,
        "n_cells": result.n_cells,
        "n_cells_used": result.n_cells_used,
        "seed": result.seed,
    }
