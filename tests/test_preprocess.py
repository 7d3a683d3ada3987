"""core.preprocess against independent oracles: kNN-mean moments, min-max scaling, scVelo."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scvelo as scv
from scipy import sparse

from core.io import DatasetError
from core.preprocess import PREPROCESS_UNS_KEY, PreprocessConfig, preprocess


@pytest.fixture(scope="module")
def pancreas(pancreas_path):
    """(input, output) of the default preprocessing on the real pancreas subset (no UMAP)."""
    raw = ad.read_h5ad(pancreas_path)
    return raw, preprocess(raw, PreprocessConfig(compute_umap=False))


@pytest.fixture(scope="module")
def simulation():
    """scVelo's simulated (already continuous, un-normalised) counts: 300 cells × 20 genes."""
    return scv.datasets.simulation(n_obs=300, n_vars=20, random_seed=0)


def _knn_mean_operator(adata: ad.AnnData) -> sparse.csr_matrix:
    """Oracle: binarised kNN graph plus self-loops, rows normalised to sum 1."""
    adjacency = (adata.obsp["connectivities"] > 0).astype(np.float64)
    adjacency = adjacency.tolil()
    adjacency.setdiag(1.0)
    adjacency = adjacency.tocsr()
    return sparse.diags(1.0 / np.asarray(adjacency.sum(axis=1)).ravel()) @ adjacency


def test_pancreas_genes_layers_and_bookkeeping(pancreas):
    raw, out = pancreas
    stats = out.uns[PREPROCESS_UNS_KEY]
    assert 0 < out.n_vars == stats["n_genes_velocity"]
    assert stats["n_genes_input"] == raw.n_vars
    assert stats["n_genes_input"] >= stats["n_genes_filtered"] >= stats["n_genes_hvg"]
    assert stats["n_genes_hvg"] == 2000 >= stats["n_genes_velocity"]
    assert out.n_obs == raw.n_obs == stats["n_cells"]
    for layer in ("Ms", "Mu", "Ms_raw", "Mu_raw", "spliced", "unspliced"):
        assert out.layers[layer].dtype == np.float32, layer
    assert out.obs["clusters"].dtype == "category"
    assert list(out.obs["clusters"].cat.categories) == list(raw.obs["clusters"].cat.categories)
    assert (out.var["velocity_r2"] > 0).all() and (out.var["velocity_gamma"] > 0).all()
    assert "velocity" not in out.layers and "velocity_params" not in out.uns
    assert out.obsm["X_pca"].shape == (out.n_obs, 30)
    # the input is untouched
    assert raw.n_vars == 7192 and set(raw.layers) == {"spliced", "unspliced"}
    assert float(raw.layers["spliced"].data.max()) % 1 == 0  # still raw integer counts


def test_pancreas_moments_are_knn_means_of_normalised_counts(pancreas):
    _, out = pancreas
    mean = _knn_mean_operator(out)
    for layer, moment in (("spliced", "Ms_raw"), ("unspliced", "Mu_raw")):
        expected = mean @ out.layers[layer].astype(np.float64)
        np.testing.assert_allclose(out.layers[moment], expected.toarray(), rtol=1e-5, atol=1e-6)


def test_pancreas_moments_match_scvelo_on_same_neighbours(pancreas):
    _, out = pancreas
    reference = out.copy()
    del reference.layers["Ms"], reference.layers["Mu"]
    scv.pp.moments(reference, n_neighbors=None)
    np.testing.assert_allclose(out.layers["Ms_raw"], reference.layers["Ms"], rtol=1e-6)
    np.testing.assert_allclose(out.layers["Mu_raw"], reference.layers["Mu"], rtol=1e-6)


def test_pancreas_min_max_scaling(pancreas):
    _, out = pancreas
    for moment in ("Ms", "Mu"):
        raw = out.layers[f"{moment}_raw"].astype(np.float64)
        low, high = raw.min(axis=0), raw.max(axis=0)
        np.testing.assert_allclose(out.layers[moment], (raw - low) / (high - low), atol=1e-6)
        assert out.layers[moment].min() >= 0 and out.layers[moment].max() <= 1
        np.testing.assert_allclose(out.layers[moment].max(axis=0), 1.0, atol=1e-6)


def test_pancreas_normalisation_to_median_library_size(pancreas):
    raw, out = pancreas
    for layer in ("spliced", "unspliced"):
        totals = np.asarray(raw.layers[layer].sum(axis=1), dtype=np.float64).ravel()
        counts = raw[:, out.var_names].layers[layer].toarray().astype(np.float64)
        expected = counts * (np.median(totals) / totals)[:, None]
        np.testing.assert_allclose(out.layers[layer].toarray(), expected, rtol=1e-5)


def test_unnormalised_path_uses_layers_as_given(simulation):
    before = simulation.copy()
    out = preprocess(simulation, PreprocessConfig(normalize=False, compute_umap=False))
    stats = out.uns[PREPROCESS_UNS_KEY]
    assert stats["n_genes_filtered"] == stats["n_genes_hvg"] == simulation.n_vars
    assert 0 < out.n_vars <= simulation.n_vars
    kept = simulation[:, out.var_names]
    np.testing.assert_array_equal(out.layers["spliced"], kept.layers["spliced"].astype(np.float32))
    expected = _knn_mean_operator(out) @ kept.layers["unspliced"]
    np.testing.assert_allclose(out.layers["Mu_raw"], expected, rtol=1e-5, atol=1e-6)
    assert "X_umap" not in out.obsm
    np.testing.assert_array_equal(simulation.layers["spliced"], before.layers["spliced"])
    assert set(simulation.layers) == set(before.layers)


def test_gene_blocks_change_no_moment_or_scaling(simulation, monkeypatch):
    """Moments and min-max scaling are formed a block of genes at a time (bounded memory at
    50,000 cells); blocks of 3 genes (7 blocks, the last partial) give the same layers."""
    import core.preprocess as module

    config = PreprocessConfig(normalize=False, compute_umap=False)
    whole = preprocess(simulation, config)
    monkeypatch.setattr(module, "_SMOOTH_BLOCK_ELEMENTS", 3 * simulation.n_obs)
    blocks = preprocess(simulation, config)
    assert blocks.n_vars == whole.n_vars
    for key in ("Ms", "Mu", "Ms_raw", "Mu_raw"):
        np.testing.assert_array_equal(blocks.layers[key], whole.layers[key])
    assert blocks.layers["Ms"].min() == 0.0 and blocks.layers["Ms"].max() == 1.0


def test_seeded_umap_and_existing_umap_kept(simulation):
    config = PreprocessConfig(normalize=False, compute_umap=True, filter_on_r2=False)
    first, second = preprocess(simulation, config), preprocess(simulation, config)
    assert first.obsm["X_umap"].shape == (simulation.n_obs, 2)
    assert np.isfinite(first.obsm["X_umap"]).all()
    for key in ("X_pca", "X_umap"):
        np.testing.assert_array_equal(first.obsm[key], second.obsm[key])
    np.testing.assert_array_equal(first.layers["Ms"], second.layers["Ms"])
    assert first.n_vars == simulation.n_vars  # filter_on_r2=False keeps every gene
    given = simulation.copy()
    given.obsm["X_umap"] = np.arange(2 * given.n_obs, dtype=np.float32).reshape(-1, 2)
    np.testing.assert_array_equal(preprocess(given, config).obsm["X_umap"], given.obsm["X_umap"])


def test_too_few_cells(simulation):
    with pytest.raises(DatasetError, match=r"20 cell\(s\).*min_cells=30"):
        preprocess(simulation[:20].copy(), PreprocessConfig(normalize=False))


def test_too_few_genes_names_step_and_option(pancreas_path):
    raw = ad.read_h5ad(pancreas_path)[:, :300].copy()
    with pytest.raises(DatasetError, match=r"gene filtering \(min_shared_counts=10000\)"):
        preprocess(raw, PreprocessConfig(min_shared_counts=10_000))


def test_invalid_counts_rejected(simulation):
    broken = simulation.copy()
    del broken.layers["unspliced"]
    with pytest.raises(DatasetError, match="unspliced"):
        preprocess(broken)


def test_approximate_knn_path_works_with_current_scipy():
    """From 8192 cells scanpy reads pynndescent's graph with .getnnz (absent on csr_array)."""
    from core.preprocess import APPROXIMATE_KNN_FROM, CsrNNDescentTransformer, knn_transformer

    assert knn_transformer(APPROXIMATE_KNN_FROM - 1, 15, 0) is None
    transformer = knn_transformer(APPROXIMATE_KNN_FROM, 15, 0)
    assert isinstance(transformer, CsrNNDescentTransformer)
    rng = np.random.default_rng(0)
    adata = ad.AnnData(rng.normal(size=(300, 20)).astype(np.float32))
    # The sparse-graph path scanpy takes for large data, forced on small data.
    sc.pp.neighbors(adata, n_neighbors=15, use_rep="X", transformer=transformer)
    exact = ad.AnnData(adata.X.copy())
    sc.pp.neighbors(exact, n_neighbors=15, use_rep="X")
    ours = adata.obsp["distances"].toarray() > 0
    truth = exact.obsp["distances"].toarray() > 0
    assert (ours == truth).mean() > 0.99  # nearest-neighbour descent is near-exact here


@pytest.mark.parametrize("signal", ["simulated", "noise"])
def test_the_blockwise_steady_state_fit_is_scvelos(simulation, monkeypatch, signal):
    """The r² gene filter's steady-state fit runs on blocks of genes (bounded memory); its
    var columns equal ``scv.tl.velocity(mode='deterministic')`` on the whole matrix, also when
    too few genes pass and scVelo lowers the r² threshold over all genes (noise)."""
    import core.preprocess as module

    if signal == "simulated":
        moments = preprocess(simulation, PreprocessConfig(normalize=False, filter_on_r2=False))
        Ms, Mu = moments.layers["Ms"], moments.layers["Mu"]
    else:
        rng = np.random.default_rng(0)
        Ms, Mu = (rng.random((300, 40), dtype=np.float32) for _ in range(2))
    data = ad.AnnData(
        obs={"cell": np.arange(Ms.shape[0])},
        var={"highly_variable": np.ones(Ms.shape[1], dtype=bool)},
        layers={"Ms": Ms, "Mu": Mu},
    )
    theirs = data.copy()
    scv.tl.velocity(theirs, mode="deterministic")
    monkeypatch.setattr(module, "_SMOOTH_BLOCK_ELEMENTS", 5 * Ms.shape[0])  # blocks of 5 genes
    module._steady_state_fit(data)
    assert list(data.var.columns) == list(theirs.var.columns)
    for column in theirs.var.columns:
        np.testing.assert_array_equal(data.var[column], theirs.var[column], err_msg=column)
    if signal == "noise":  # the low-signal rule was exercised
        assert theirs.var["velocity_genes"].sum() == round(0.2 * Ms.shape[1])
