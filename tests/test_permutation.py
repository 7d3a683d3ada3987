"""Permutation score: t statistics against scipy, a constructed transient-vs-steady dataset."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.stats

from core.permutation import (
    add_permutation_to_adata,
    paired_group_t_statistics,
    permutation_scores,
    permute_within_groups,
    subsample_per_group,
)


def test_t_statistics_equal_scipy_ttest_ind_per_gene_and_group():
    rng = np.random.default_rng(0)
    n_cells, n_genes, n_groups = 90, 7, 4
    codes = rng.integers(0, 3, n_cells)
    codes[0] = 3  # group 3 has a single cell: t is undefined
    codes[1] = -1  # unlabelled cells are ignored
    a = rng.gamma(2.0, size=(n_cells, n_genes))
    b = rng.gamma(2.0, size=(n_cells, n_genes)) + 0.2 * rng.random(n_genes)
    ours = paired_group_t_statistics(a, b, codes, n_groups)
    assert ours.shape == (n_genes, n_groups)
    for c in range(3):
        for g in range(n_genes):
            expected = scipy.stats.ttest_ind(a[codes == c, g], b[codes == c, g]).statistic
            assert ours[g, c] == pytest.approx(expected, rel=1e-10)
    assert np.isnan(ours[:, 3]).all()


def test_permutation_keeps_group_marginals_and_subsample_caps_groups():
    rng = np.random.default_rng(1)
    codes = np.repeat([2, 0, 1, -1], [20, 35, 5, 3])
    rng.shuffle(codes)
    X = rng.normal(size=(codes.size, 6))
    permuted = permute_within_groups(X, codes, np.random.default_rng(2))
    for c in (-1, 0, 1, 2):
        np.testing.assert_array_equal(
            np.sort(permuted[codes == c], axis=0), np.sort(X[codes == c], axis=0)
        )
    assert not np.array_equal(permuted, X)
    # columns are shuffled independently
    order = [np.argsort(permuted[codes == 0, g]) for g in range(6)]
    assert not all(np.array_equal(order[0], o) for o in order[1:])
    keep = subsample_per_group(codes, 10, np.random.default_rng(3))
    np.testing.assert_array_equal(np.bincount(codes[keep], minlength=3), [10, 5, 10])
    assert not keep[codes == -1].any()


def transient_and_steady_data(n_per_type: int = 150, seed: int = 0):
    """Type 0 traverses gene 0's induction (u = t, s = t²); gene 1 sits at a steady state.

    Type 1 is at steady state for both genes. The analytic ``expression_fit`` reads the cell's
    time from its unspliced gene-0 value, so the fit of gene 0 is exact on the original data and
    breaks when u and s are shuffled independently; gene 1's fit is a constant.
    """
    rng = np.random.default_rng(seed)
    t = rng.random(n_per_type)
    noise = lambda n: 0.01 * rng.normal(size=n)  # noqa: E731
    s = np.zeros((2 * n_per_type, 2))
    u = np.zeros_like(s)
    u[:n_per_type, 0], s[:n_per_type, 0] = t, t**2
    u[n_per_type:, 0], s[n_per_type:, 0] = 1.0 + noise(n_per_type), 1.0 + noise(n_per_type)
    u[:, 1], s[:, 1] = 0.5 + noise(2 * n_per_type), 0.5 + noise(2 * n_per_type)
    codes = np.repeat([0, 1], n_per_type)

    def expression_fit(spliced, unspliced):
        fit_s, fit_u = np.full(spliced.shape, 0.5), np.full(spliced.shape, 0.5)
        fit_u[:, 0] = unspliced[:, 0]
        fit_s[:, 0] = unspliced[:, 0] ** 2
        return fit_s, fit_u

    return expression_fit, s, u, codes


def test_transient_gene_scores_higher_than_steady_gene():
    expression_fit, s, u, codes = transient_and_steady_data()
    result = permutation_scores(expression_fit, s, u, codes, 2, n_cells=200, seed=0)
    assert result.effect.shape == (2, 2)
    assert result.effect[0, 0] > 10  # type 0 traverses gene 0: shuffling breaks the fit
    # gene 1's fit is constant, so with all cells used the permuted errors are a
    # reordering of the original ones: the effect is exactly zero
    np.testing.assert_allclose(result.effect[1], 0.0, atol=1e-9)
    assert result.score[0] > 10 > abs(result.score[1])
    np.testing.assert_array_equal(result.n_cells_used, [150, 150])


def test_deterministic_by_seed_and_capped_sample():
    expression_fit, s, u, codes = transient_and_steady_data(seed=1)
    first = permutation_scores(expression_fit, s, u, codes, 2, n_cells=40, seed=7)
    again = permutation_scores(expression_fit, s, u, codes, 2, n_cells=40, seed=7)
    other = permutation_scores(expression_fit, s, u, codes, 2, n_cells=40, seed=8)
    np.testing.assert_array_equal(first.effect, again.effect)
    assert not np.array_equal(first.effect, other.effect)
    np.testing.assert_array_equal(first.n_cells_used, [40, 40])
    np.testing.assert_array_equal(first.score, np.nanmax(first.effect, axis=1))
    assert first.skewness == pytest.approx(scipy.stats.skew(first.score))


def test_adata_writer_keeps_other_velodash_content_and_bad_input_raises():
    expression_fit, s, u, codes = transient_and_steady_data(n_per_type=20)
    result = permutation_scores(expression_fit, s, u, codes, 2, n_cells=200, seed=3)
    adata = ad.AnnData(np.zeros(s.shape, dtype=np.float32))
    adata.uns["velodash"] = {"version": "x"}
    add_permutation_to_adata(adata, result)
    assert adata.uns["velodash"]["version"] == "x"
    assert adata.uns["velodash"]["permutation"]["seed"] == 3
    np.testing.assert_array_equal(adata.var["permutation_score"], result.score)
    assert adata.varm["permutation_effect"].shape == (2, 2)
    with pytest.raises(ValueError, match="one integer code per cell"):
        permutation_scores(expression_fit, s, u, codes[:-1], 2)
    with pytest.raises(ValueError, match="equal shape"):
        permutation_scores(expression_fit, s, u[:, :1], codes, 2)


def test_permuting_a_subset_of_rows_draws_without_replacement_uniformly():
    codes = np.repeat([0, 1], [6, 4])
    X = np.arange(20, dtype=float).reshape(10, 2) + 0.5  # distinct values
    rows = np.array([0, 2, 7])  # two cells of group 0, one of group 1
    counts = np.zeros((3, 10))
    rng = np.random.default_rng(0)
    for _ in range(3000):
        out = permute_within_groups(X, codes, rng, rows)
        for g in range(2):
            column = list(X[:, g])
            sources = [column.index(v) for v in out[:, g]]
            assert set(codes[sources]) <= {0} | {codes[7]} and codes[sources[2]] == 1
            assert sources[0] != sources[1]  # without replacement within a column
            counts[np.arange(3), sources] += 1
    # every source of the right group is equally likely for every target
    np.testing.assert_allclose(counts[:2, :6] / 6000, 1 / 6, atol=0.02)
    np.testing.assert_allclose(counts[2, 6:] / 6000, 1 / 4, atol=0.02)
