"""Directional statistics / intrinsic and extrinsic uncertainty against independent oracles."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scvelo as scv
import torch
from sklearn.neighbors import kneighbors_graph

from core import graph, uncertainty
from core.uncertainty import (
    STATISTICS,
    add_uncertainty_to_adata,
    directional_statistics,
    extrinsic_uncertainty,
    intrinsic_uncertainty,
)


def reference_statistics(samples: np.ndarray) -> pd.DataFrame:
    """veloVI's ``_directional_statistics_per_cell`` as a plain per-cell numpy loop (the oracle)."""

    def centred_unit(v: np.ndarray) -> np.ndarray:
        v = v - np.mean(v)
        return v / np.linalg.norm(v)

    rows = []
    for cell in range(samples.shape[1]):
        tensor = samples[:, cell, :]
        mean = tensor.mean(0)
        cos = np.array(
            [np.clip(centred_unit(x) @ centred_unit(mean), -1, 1) for x in tensor], dtype=float
        )
        angle = np.arccos(cos)
        rows.append(
            [
                np.var(cos),
                np.percentile(cos, 95) - np.percentile(cos, 5),
                np.mean(cos),
                np.var(angle),
                np.percentile(angle, 95) - np.percentile(angle, 5),
            ]
        )
    return pd.DataFrame(rows, columns=list(STATISTICS))


def test_matches_reference_loop_on_random_data(monkeypatch):
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(30, 1, 12)) + 0.7 * rng.normal(size=(30, 40, 12))
    # force several cell chunks so the chunk loop is exercised
    monkeypatch.setattr(uncertainty, "_MAX_CHUNK_ELEMENTS", 30 * 12 * 7)
    ours = directional_statistics(torch.from_numpy(samples))
    expected = reference_statistics(samples)
    pd.testing.assert_frame_equal(ours, expected, rtol=1e-10, atol=1e-12)
    # float32 input and numpy input give the same answer to float32 precision
    ours32 = directional_statistics(samples.astype(np.float32))
    np.testing.assert_allclose(ours32.to_numpy(), expected.to_numpy(), rtol=1e-4, atol=1e-5)


def test_float32_samples_of_real_size_match_the_float64_reference_loop():
    """Float32 velocity samples (100 draws × 2,000 genes, as the uncertainty stage) are reduced
    over genes in float32: every statistic stays within 2e-5 (relative) of the float64 loop."""
    rng = np.random.default_rng(4)
    direction = rng.normal(size=(1, 20, 2000))
    samples = (direction + 0.8 * rng.normal(size=(100, 20, 2000))).astype(np.float32)
    ours = directional_statistics(torch.from_numpy(samples))
    expected = reference_statistics(samples.astype(np.float64))
    np.testing.assert_allclose(ours.to_numpy(), expected.to_numpy(), rtol=2e-5)


def test_identical_samples_have_zero_spread():
    rng = np.random.default_rng(1)
    one = rng.normal(size=(1, 15, 20))
    stats = intrinsic_uncertainty(np.repeat(one, 8, axis=0))
    np.testing.assert_allclose(stats["cosine_variance"], 0.0, atol=1e-14)
    np.testing.assert_allclose(stats["cosine_difference"], 0.0, atol=1e-14)
    np.testing.assert_allclose(stats["cosine_mean"], 1.0, atol=1e-12)
    np.testing.assert_allclose(stats["angle_difference"], 0.0, atol=1e-6)


def test_known_cosine_variance():
    """Samples at angles ±θ_k around a centred direction e1 have centred cosines cos θ_k exactly.

    Per-sample scales (equal within a ± pair) and constant offsets over genes must not matter.
    """
    n_genes = 10
    basis, _ = np.linalg.qr(
        np.column_stack([np.ones(n_genes), np.arange(n_genes) ** 2, np.eye(n_genes)[:, :3]])
    )
    e1, e2 = basis[:, 1], basis[:, 2]  # orthonormal, orthogonal to the all-ones vector
    theta = np.array([0.1, 0.4, 0.9, 1.3])
    angles = np.concatenate([theta, -theta])
    scales = np.tile([1.0, 2.5, 0.3, 4.0], 2)
    offsets = np.linspace(-3, 5, angles.size)
    samples = (
        scales[:, None] * (np.cos(angles)[:, None] * e1 + np.sin(angles)[:, None] * e2)
        + offsets[:, None]
    )[:, None, :]
    stats = directional_statistics(samples).iloc[0]
    cos = np.cos(angles)
    assert stats["cosine_variance"] == pytest.approx(np.var(cos), rel=1e-10)
    assert stats["cosine_mean"] == pytest.approx(cos.mean(), rel=1e-10)
    assert stats["angle_variance"] == pytest.approx(np.var(np.abs(angles)), rel=1e-9)
    assert stats["cosine_difference"] == pytest.approx(
        np.percentile(cos, 95) - np.percentile(cos, 5), rel=1e-10
    )


def test_constant_cell_is_nan_and_bad_shapes_raise():
    samples = np.random.default_rng(2).normal(size=(5, 3, 6))
    samples[:, 1, :] = 2.0  # no direction after centring
    stats = directional_statistics(samples)
    assert stats.loc[1].isna().all() and stats.drop(index=1).notna().all().all()
    with pytest.raises(ValueError, match="n_samples, n_cells, n_genes"):
        directional_statistics(samples[0])
    with pytest.raises(ValueError, match="at least 2 samples"):
        directional_statistics(samples[:1])


def test_add_uncertainty_to_adata_writes_contract_columns():
    adata = ad.AnnData(np.zeros((4, 3), dtype=np.float32))
    frame = pd.DataFrame(np.arange(20.0).reshape(4, 5), columns=list(STATISTICS))
    adata.obs["keep"] = 1
    add_uncertainty_to_adata(adata, frame, frame * 2)
    np.testing.assert_array_equal(adata.obs["intrinsic_uncertainty"], frame["cosine_variance"])
    np.testing.assert_array_equal(adata.obs["extrinsic_uncertainty"], 2 * frame["cosine_variance"])
    np.testing.assert_array_equal(
        adata.obs["extrinsic_angle_difference"], 2 * frame["angle_difference"]
    )
    assert "keep" in adata.obs and "intrinsic_cosine_variance" not in adata.obs
    with pytest.raises(ValueError, match="4 rows"):
        add_uncertainty_to_adata(adata, frame.iloc[:3])


def _knn_adata(n_obs: int, n_vars: int, seed: int) -> ad.AnnData:
    """scVelo's simulation with Ms = log1p(spliced) and a plain sklearn kNN graph in scanpy's
    layout (avoids the slow numba UMAP connectivities)."""
    adata = scv.datasets.simulation(n_obs=n_obs, n_vars=n_vars, random_seed=seed)
    n_neighbors = 15
    adata.layers["Ms"] = np.log1p(adata.layers["spliced"]).astype(np.float32)
    adata.obsp["distances"] = kneighbors_graph(adata.layers["Ms"], n_neighbors - 1, mode="distance")
    adata.obsp["connectivities"] = (adata.obsp["distances"] > 0).astype(float)
    adata.uns["neighbors"] = {
        "params": {"n_neighbors": n_neighbors, "method": "umap"},
        "distances_key": "distances",
        "connectivities_key": "connectivities",
    }
    return adata


def _tutorial_extrinsic(adata: ad.AnnData, samples: np.ndarray) -> pd.DataFrame:
    """The reference tutorial's ``compute_extrinisic_uncertainty`` on given velocity samples:
    per sample ``scv.tl.velocity_graph(sqrt_transform=False, approx=True)``,
    ``get_transition_matrix(self_transitions=True, use_negative_cosines=True)``, T·Ms; then
    veloVI's per-cell directional statistics (the oracle loop above)."""
    futures = []
    for i, v in enumerate(samples):
        adata.layers[f"v{i}"] = v.astype(np.float32)
        scv.tl.velocity_graph(
            adata, vkey=f"v{i}", sqrt_transform=False, approx=True, show_progress_bar=False
        )
        T = scv.utils.get_transition_matrix(
            adata, vkey=f"v{i}", self_transitions=True, use_negative_cosines=True
        )
        futures.append(np.asarray(T @ adata.layers["Ms"]))
    return reference_statistics(np.stack(futures))


@pytest.mark.parametrize("n_vars", [12, 150], ids=["genes (G <= 100)", "PCA space (G > 100)"])
def test_extrinsic_equals_the_reference_tutorial_on_the_same_samples(n_vars):
    """Given identical velocity samples and the same neighbour graph, our extrinsic statistics
    equal the reference procedure's (scVelo's graph with approx=True, which works in a
    30-component PCA of Ms above 100 genes and over genes below) to within 1e-4."""
    adata = _knn_adata(150, n_vars, seed=0)
    Ms = adata.layers["Ms"]
    rng = np.random.default_rng(3)
    base = np.log1p(adata.layers["unspliced"]) - 0.5 * Ms
    samples = base[None] + 0.3 * np.abs(base).mean() * rng.normal(size=(4, *Ms.shape))
    samples = samples.astype(np.float32)
    expected = _tutorial_extrinsic(adata, samples)
    ours = extrinsic_uncertainty(samples, Ms, graph.candidate_neighbors(adata))
    np.testing.assert_allclose(ours.to_numpy(), expected.to_numpy(), atol=1e-4)
    np.testing.assert_allclose(
        ours["cosine_variance"], expected["cosine_variance"], rtol=1e-2, atol=1e-9
    )
    # the future states are not the samples: extrinsic differs from intrinsic
    assert not np.allclose(
        ours["cosine_variance"], intrinsic_uncertainty(samples)["cosine_variance"]
    )
    if n_vars > graph.APPROX_MIN_GENES:  # and the PCA space is what makes it agree
        over_genes = extrinsic_uncertainty(
            samples, Ms, graph.candidate_neighbors(adata), approx=False
        )
        assert not np.allclose(over_genes["cosine_variance"], expected["cosine_variance"], rtol=0.1)


def test_extrinsic_in_small_blocks_still_equals_the_reference_tutorial(monkeypatch):
    """The candidate cosines written block by block into one (S, nnz) array and the
    self-transition confidence taken a few rows at a time (bounded memory at 100,000 cells)
    give the tutorial's statistics, and the same numbers as one block."""
    adata = _knn_adata(150, 150, seed=0)
    Ms = adata.layers["Ms"]
    rng = np.random.default_rng(3)
    base = np.log1p(adata.layers["unspliced"]) - 0.5 * Ms
    samples = base[None] + 0.3 * np.abs(base).mean() * rng.normal(size=(4, *Ms.shape))
    samples = samples.astype(np.float32)
    candidates = graph.candidate_neighbors(adata)
    whole = extrinsic_uncertainty(samples, Ms, candidates)
    monkeypatch.setattr(graph, "CPU_CHUNK_BYTES", 4 * 30 * 40)  # ~1 cell per cosine block
    monkeypatch.setattr(uncertainty, "_FUTURE_BLOCK_BYTES", 4 * 4 * 100)  # 100 entries a block
    blocks = list(uncertainty._row_blocks(candidates.indptr, 100))
    assert len(blocks) > 10
    blocked = extrinsic_uncertainty(samples, Ms, candidates)
    pd.testing.assert_frame_equal(blocked, whole, rtol=1e-5, atol=1e-6)  # float32 block shapes
    expected = _tutorial_extrinsic(adata, samples)
    np.testing.assert_allclose(blocked.to_numpy(), expected.to_numpy(), atol=1e-4)


def test_row_blocks_cover_every_row_within_the_entry_budget():
    """Row blocks of a CSR pattern: consecutive, covering every row once, each at most the
    budget of stored entries unless one row alone exceeds it."""
    counts = np.array([3, 0, 5, 2, 9, 1, 1, 0, 4])
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    blocks = list(uncertainty._row_blocks(indptr, 5))
    assert blocks[0].start == 0 and blocks[-1].stop == len(counts)
    for block in blocks:
        entries = counts[block].sum()
        assert entries <= 5 or block.stop - block.start == 1
    assert [(b.start, b.stop) for b in blocks] == [(0, 2), (2, 3), (3, 4), (4, 5), (5, 8), (8, 9)]


def test_approx_velocity_graph_equals_scvelo():
    """core.graph.velocity_graph(approx=True) gives scVelo's approx=True graph: cosines in the
    same 30-component PCA of Ms, velocities projected as scVelo projects them."""
    adata = _knn_adata(120, 140, seed=1)
    V = (np.log1p(adata.layers["unspliced"]) - 0.4 * adata.layers["Ms"]).astype(np.float32)
    V[5] = 0.0  # a cell without velocity gets no cosines
    adata.layers["v"] = V
    scv.tl.velocity_graph(
        adata, vkey="v", sqrt_transform=False, approx=True, show_progress_bar=False
    )
    ours = graph.velocity_graph(
        V, adata.layers["Ms"], graph.candidate_neighbors(adata), approx=True
    )
    expected = (adata.uns["v_graph"] + adata.uns["v_graph_neg"]).toarray()
    np.testing.assert_allclose((ours.graph + ours.graph_neg).toarray(), expected, atol=1e-4)
    np.testing.assert_allclose(ours.self_transition, adata.obs["v_self_transition"], atol=1e-4)
    assert graph.pca_space(adata.layers["Ms"][:, :100]) is None  # scVelo keeps genes up to 100


@pytest.mark.parametrize("n_genes", [14, 120], ids=["genes", "PCA space"])
def test_one_stream_of_sample_chunks_equals_the_separate_analyses(n_genes):
    """The pipeline's single pass over chunks of samples (intrinsic from all S samples,
    extrinsic from the first few) equals the two analyses on the concatenated samples; in the
    PCA space the chunks' projections are centred by each sample's mean over all cells."""
    rng = np.random.default_rng(11)
    n_cells = 90
    Ms = rng.random((n_cells, n_genes)).astype(np.float32)
    distances = kneighbors_graph(Ms, 8, mode="distance")
    candidates = graph.candidate_neighbors(distances)
    samples = torch.from_numpy(rng.normal(size=(12, n_cells, n_genes)).astype(np.float32))
    for step in (7, 90):
        chunks = (
            (slice(i, min(i + step, n_cells)), samples[:, i : i + step])
            for i in range(0, n_cells, step)
        )
        intrinsic, extrinsic = uncertainty.uncertainty_from_sample_chunks(
            chunks, Ms, candidates, n_extrinsic=5
        )
        pd.testing.assert_frame_equal(intrinsic, intrinsic_uncertainty(samples), rtol=1e-6)
        pd.testing.assert_frame_equal(
            extrinsic, extrinsic_uncertainty(samples[:5], Ms, candidates), rtol=1e-5
        )
    shuffled = [(slice(10, 20), samples[:, 10:20]), (slice(0, 10), samples[:, :10])]
    with pytest.raises(ValueError, match="in order"):
        uncertainty.uncertainty_from_sample_chunks(shuffled, Ms, candidates)
