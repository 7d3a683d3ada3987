"""core.graph against scVelo itself (velocity_graph, get_transition_matrix) and the embedding
projection (core.streams.velocity_embedding, through add_velocity_graph) against
velocity_embedding, on the same scVelo-preprocessed simulation and the same neighbours."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
import torch

from core import graph
from core.streams import velocity_embedding

scv = pytest.importorskip("scvelo")
scv.settings.verbosity = 0


@pytest.fixture(scope="module")
def simulated():
    """scVelo simulation: normalise, log, PCA, 15-NN (gauss), moments, deterministic velocity;
    a fake 2-D 'umap' (first two PCs) and a second velocity layer 'vrand' (random, with two
    zero-velocity cells, a NaN gene, a gene subset, stochastic mode → sqrt transform)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = scv.datasets.simulation(n_obs=300, n_vars=40, random_seed=0)
        scv.pp.filter_and_normalize(adata, min_shared_counts=0)
        sc.pp.log1p(adata)
        sc.pp.pca(adata, n_comps=10)
        sc.pp.neighbors(adata, n_neighbors=15, use_rep="X_pca", method="gauss")
        scv.pp.moments(adata, n_neighbors=None)
        scv.tl.velocity(adata, mode="deterministic")
    adata.obsm["X_umap"] = adata.obsm["X_pca"][:, :2].copy()
    rng = np.random.default_rng(1)
    vrand = rng.normal(size=adata.shape).astype(np.float32)
    vrand[:2] = 0.0
    vrand[5, 3] = np.nan
    adata.layers["vrand"] = vrand
    adata.var["vrand_genes"] = rng.random(adata.n_vars) < 0.8
    adata.uns["vrand_params"] = {"mode": "stochastic"}
    return adata


def scvelo_graph(adata, vkey):
    """scVelo's velocity graph (exact cosines, one job) on a copy."""
    ref = adata.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scv.tl.velocity_graph(ref, vkey=vkey, approx=False, n_jobs=1, show_progress_bar=False)
    return ref


def assert_same_sparse(ours: sp.spmatrix, ref: sp.spmatrix, atol: float) -> None:
    """Same stored pattern and entries within atol."""
    ours, ref = sp.csr_matrix(ours), sp.csr_matrix(ref)
    assert ours.shape == ref.shape
    assert ((ours != 0) != (ref != 0)).nnz == 0
    assert abs(ours - ref).max() <= atol


def test_candidates_match_scvelo_recursion(simulated):
    from scvelo.tools.utils import get_indices, get_iterative_indices

    distances = simulated.obsp["distances"].tolil()
    distances[0, 7] = 9.0  # one row with an extra (farthest) neighbour: truncated like scVelo
    distances = distances.tocsr()
    indices = get_indices(distances)[0]
    for recurse in (1, 2):
        ours = graph.candidate_neighbors(distances, n_recurse_neighbors=recurse)
        for cell in range(distances.shape[0]):
            expected = get_iterative_indices(indices, cell, recurse)
            np.testing.assert_array_equal(ours[cell].indices, expected)


@pytest.mark.parametrize("vkey", ["velocity", "vrand"])
def test_velocity_graph_matches_scvelo(simulated, vkey, monkeypatch):
    monkeypatch.setattr(graph, "CPU_CHUNK_BYTES", 200_000)  # many chunks
    ref = scvelo_graph(simulated, vkey)
    ours = simulated.copy()
    graph.add_velocity_graph(ours, vkey=vkey, basis=None)
    for key in (f"{vkey}_graph", f"{vkey}_graph_neg"):
        assert_same_sparse(ours.uns[key], ref.uns[key], atol=1e-5)
    np.testing.assert_allclose(
        ours.obs[f"{vkey}_self_transition"], ref.obs[f"{vkey}_self_transition"], atol=1e-5
    )
    if vkey == "vrand":  # zero-velocity cells have no edges, as in scVelo
        assert ours.uns["vrand_graph"][:2].nnz == 0
        assert ours.uns["vrand_graph_neg"][:2].nnz == 0
        assert ours.uns["vrand_params"]["mode"] == "stochastic"


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"use_negative_cosines": True},
        {"self_transitions": False},
        {"scale": 3.0, "use_negative_cosines": True, "self_transitions": False},
        {"perc": 30},
        {"threshold": 2.0, "backward": True},
    ],
)
def test_transition_matrix_matches_scvelo(simulated, options):
    ref = scvelo_graph(simulated, "velocity")
    vgraph = graph.VelocityGraph(
        ref.uns["velocity_graph"],
        ref.uns["velocity_graph_neg"],
        ref.obs["velocity_self_transition"].to_numpy(),
        graph.candidate_neighbors(ref),
    )
    expected = scv.utils.get_transition_matrix(ref, **options)
    assert_same_sparse(graph.transition_matrix(vgraph, **options), expected, atol=1e-6)


def test_embedding_matches_scvelo(simulated):
    ref = scvelo_graph(simulated, "velocity")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scv.tl.velocity_embedding(ref, basis="umap")
    ours = simulated.copy()
    graph.add_velocity_graph(ours)
    np.testing.assert_allclose(
        ours.obsm["velocity_umap"], ref.obsm["velocity_umap"], rtol=1e-5, atol=1e-7
    )
    # the bookkeeping scVelo's plotting checks before reusing obsm['velocity_umap']
    from scvelo.plotting.utils import velocity_embedding_changed

    assert not velocity_embedding_changed(ours, basis="umap", vkey="velocity")
    assert ours.uns["velocity_params"]["mode"] == "deterministic"


def test_embedding_of_cells_without_transitions_is_nan():
    T = sp.csr_matrix(np.array([[0.0, 0.6, 0.4], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    V = velocity_embedding(T, X, autoscale=False)
    # cell 0: 0.6·(1,0) + 0.4·(0,1) − mean(0.6, 0.4)·((1,0) + (0,1)); cell 2 has only itself
    np.testing.assert_allclose(V[:2], [[0.1, -0.1], [0.0, 0.0]], atol=1e-12)
    assert np.isnan(V[2]).all()


def test_samples_equal_separate_graphs_and_accept_tensors(simulated):
    genes = simulated.var["velocity_genes"].to_numpy()
    X = simulated.layers["Ms"][:, genes]
    V = simulated.layers["velocity"][:, genes]
    candidates = graph.candidate_neighbors(simulated)
    rng = np.random.default_rng(0)
    samples = np.stack([V, V + rng.normal(scale=0.1, size=V.shape), -V]).astype(np.float32)
    batched = graph.velocity_graph_samples(torch.from_numpy(samples), X, candidates)
    for sample, vgraph in zip(samples, batched, strict=True):
        single = graph.velocity_graph(sample, X, candidates)
        assert_same_sparse(vgraph.graph, single.graph, atol=1e-6)
        assert_same_sparse(vgraph.graph_neg, single.graph_neg, atol=1e-6)
        assert vgraph.candidates is candidates
    # reversing the velocity swaps positive and negative cosines
    assert_same_sparse(batched[2].graph, -batched[0].graph_neg, atol=1e-6)


def test_bad_inputs_say_how_to_fix(simulated):
    adata = simulated.copy()
    with pytest.raises(KeyError, match="layer 'nope' not found"):
        graph.add_velocity_graph(adata, vkey="nope")
    with pytest.raises(KeyError, match="X_tsne"):
        graph.add_velocity_graph(adata, basis="tsne")
    del adata.obsp["distances"]
    with pytest.raises(KeyError, match="compute neighbours first"):
        graph.candidate_neighbors(adata)
    candidates = graph.candidate_neighbors(simulated)
    with pytest.raises(ValueError, match="matching shape"):
        graph.velocity_graph(np.zeros((300, 5)), np.zeros((300, 6)), candidates)
    with pytest.raises(ValueError, match="candidate_neighbors on the same cells"):
        graph.velocity_graph(np.zeros((10, 5)), np.zeros((10, 5)), candidates)
