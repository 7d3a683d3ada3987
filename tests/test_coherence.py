"""Velocity coherence against a constructed 1-D flow and a naive per-cell loop."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from core.coherence import add_coherence_to_adata, velocity_coherence


def naive_coherence(
    T: sp.spmatrix, Ms: np.ndarray, V: np.ndarray, codes: np.ndarray, n_groups: int
):
    """The paper notebook's recipe, one cell and one neighbour at a time."""
    dense = T.toarray()
    n_cells, n_genes = Ms.shape
    per_cell = np.zeros((n_cells, n_genes))
    for i in range(n_cells):
        future = np.zeros(n_genes)
        for j in range(n_cells):
            if j != i:  # T.setdiag(0), rows not renormalised
                future += dense[i, j] * Ms[j]
        per_cell[i] = (future - Ms[i]) * V[i]
    per_type = np.full((n_genes, n_groups), np.nan)
    for c in range(n_groups):
        if np.any(codes == c):
            per_type[:, c] = per_cell[codes == c].mean(axis=0)
    return per_cell, per_type


def flow_line(n_cells: int = 40, n_genes: int = 5):
    """Cells ordered along x with expression rising in x and each cell moving to the next one."""
    x = np.linspace(0.0, 1.0, n_cells)
    Ms = 0.2 + np.outer(x, np.linspace(0.5, 2.0, n_genes))
    T = sp.diags(np.ones(n_cells - 1), offsets=1, format="csr")  # i -> i + 1; the last row is empty
    codes = (x > 0.5).astype(np.int64)
    codes[-1] = -1  # the last cell has no successor: leave it unlabelled
    return T, Ms, codes


def test_flow_towards_higher_expression_is_coherent_and_reversed_velocity_is_not():
    T, Ms, codes = flow_line()
    V = np.ones_like(Ms)
    per_cell, per_type = velocity_coherence(T, Ms, V, codes, 2)
    assert per_type.shape == (Ms.shape[1], 2)
    assert np.all(per_cell[:-1] > 0) and np.all(per_type > 0)
    _, reversed_type = velocity_coherence(T, Ms, -V, codes, 2)
    np.testing.assert_allclose(reversed_type, -per_type)
    assert np.all(reversed_type < 0)


def test_equals_naive_loop_with_self_transitions_and_empty_group():
    rng = np.random.default_rng(0)
    n_cells, n_genes = 30, 6
    dense = rng.random((n_cells, n_cells)) * (rng.random((n_cells, n_cells)) < 0.3)
    dense -= 0.3 * (rng.random((n_cells, n_cells)) < 0.1) * dense  # a few negative weights
    np.fill_diagonal(dense, rng.random(n_cells))  # self transitions must be dropped
    dense /= np.abs(dense).sum(axis=1, keepdims=True)
    T = sp.csr_matrix(dense)
    Ms, V = rng.random((n_cells, n_genes)), rng.normal(size=(n_cells, n_genes))
    codes = rng.integers(0, 3, n_cells)
    codes[:2] = -1
    per_cell, per_type = velocity_coherence(T, Ms, V, codes, 4)  # group 3 is empty
    expected_cell, expected_type = naive_coherence(T, Ms, V, codes, 4)
    np.testing.assert_allclose(per_cell, expected_cell, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(per_type, expected_type, rtol=1e-12, atol=1e-14)
    assert np.isnan(per_type[:, 3]).all()
    assert T.diagonal().any()  # the caller's matrix is left untouched


def test_bad_input_and_adata_writer():
    T, Ms, codes = flow_line(6, 3)
    with pytest.raises(ValueError, match="equal shape"):
        velocity_coherence(T, Ms, Ms[:, :2], codes, 2)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        velocity_coherence(T, Ms, Ms, codes, 1)
    per_cell, per_type = velocity_coherence(T, Ms, Ms, codes, 2)
    adata = ad.AnnData(np.zeros(Ms.shape, dtype=np.float32))
    add_coherence_to_adata(adata, per_cell, per_type)
    np.testing.assert_allclose(adata.layers["velocity_coherence"], per_cell, rtol=1e-6)
    np.testing.assert_array_equal(adata.varm["coherence"], per_type)
