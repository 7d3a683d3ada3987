"""core.simulate: determinism, structure, and ground truth against a numerical ODE solve."""

from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pytest
from scipy import sparse
from scipy.integrate import solve_ivp

from core.simulate import (
    CELL_TYPES,
    T_ALWAYS,
    T_BRANCH,
    T_MAX,
    simulate_branching,
    write_sample_data,
)
from core.simulation_truth import (
    expected_abundances,
    has_truth,
    kinetics_from_adata,
    true_velocity,
)
from dashboard.config import SAMPLE_PATH

SAMPLE = SAMPLE_PATH


@pytest.fixture(scope="module")
def sim() -> ad.AnnData:
    return simulate_branching(n_cells=600, n_genes=120, seed=3)


def _assert_same(a: ad.AnnData, b: ad.AnnData, bitwise: bool = True) -> None:
    """Identical counts, labels and names. The float truth (velocity, rates, times, library
    size) is bit-identical within one build; across builds and CPUs the order of a sum or
    libm's exp may change the last bits (seen: 1e-15 on a velocity of 1e-7), so it is then
    compared to 1e-9 of its own scale."""

    def same(x: np.ndarray, y: np.ndarray) -> None:
        if bitwise or x.dtype.kind != "f":
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9 * np.abs(y).max())

    for key in ("spliced", "unspliced"):
        assert (a.layers[key] != b.layers[key]).nnz == 0
    same(a.layers["true_velocity"], b.layers["true_velocity"])
    for frame_a, frame_b in ((a.obs, b.obs), (a.var, b.var)):
        assert list(frame_a.columns) == list(frame_b.columns)
        assert frame_a.index.equals(frame_b.index)
        for column in frame_a:
            same(frame_a[column].to_numpy(), frame_b[column].to_numpy())
    assert set(a.varm) == set(b.varm)
    for key in a.varm:
        same(a.varm[key], b.varm[key])


def test_deterministic_per_seed(sim, tmp_path):
    _assert_same(sim, simulate_branching(n_cells=600, n_genes=120, seed=3))
    written = ad.read_h5ad(write_sample_data(tmp_path / "s.h5ad", 600, 120, seed=3))
    _assert_same(sim, written)
    other = simulate_branching(n_cells=600, n_genes=120, seed=4)
    assert (other.layers["spliced"] != sim.layers["spliced"]).nnz > 0


def test_cell_blocks_draw_the_same_data(sim, monkeypatch):
    """Large simulations are built a block of cells at a time (bounded memory); the blocks
    draw the same random stream in the same order, so the data are identical."""
    import core.simulate as module

    monkeypatch.setattr(module, "_BLOCK_ELEMENTS", 70 * 120)  # 70 cells: 9 blocks, last partial
    assert len(module.blocks_within(600, 120, module._BLOCK_ELEMENTS)) == 9
    _assert_same(sim, simulate_branching(n_cells=600, n_genes=120, seed=3))


def test_shapes_types_and_counts(sim):
    assert sim.shape == (600, 120)
    for key in ("spliced", "unspliced"):
        counts = sim.layers[key]
        assert sparse.issparse(counts) and counts.dtype == np.float32
        assert counts.data.min() >= 0 and np.all(counts.data == np.round(counts.data))
    assert (sim.X != sim.layers["spliced"]).nnz == 0
    assert sim.obs["clusters"].dtype == "category"
    assert list(sim.obs["clusters"].cat.categories) == [name for name, *_ in CELL_TYPES]
    assert sim.obs["clusters"].value_counts().min() > 0
    assert sim.uns["simulation"]["seed"] == 3
    assert "X_umap" not in sim.obsm


def test_branching_structure(sim):
    obs = sim.obs
    assert set(obs["true_lineage"]) == {"trunk", "A", "B"}
    trunk = obs["true_lineage"] == "trunk"
    assert obs.loc[trunk, "true_t"].max() < T_BRANCH <= obs.loc[~trunk, "true_t"].min()
    progenitor = obs["clusters"] == "Progenitor"
    assert obs.loc[progenitor, "true_t"].max() < obs.loc[~progenitor, "true_t"].min()
    for lineage in ("A", "B"):
        types = set(obs.loc[obs["true_lineage"] == lineage, "clusters"])
        assert types == {f"Early {lineage}", f"Mature {lineage}"}
    # lineage-specific genes are silent in the other lineage and expressed in their own
    spliced = sim.layers["spliced"].toarray()
    own = (sim.var["true_programme"] == "lineage") & (sim.var["true_gene_lineage"] == "A")
    in_b = (obs["true_lineage"] == "B").to_numpy()
    in_a = (obs["true_lineage"] == "A").to_numpy()
    assert spliced[np.ix_(in_b, own.to_numpy())].sum() == 0
    assert spliced[np.ix_(in_a, own.to_numpy())].sum() > 0


def _lineage_index(adata: ad.AnnData) -> np.ndarray:
    return np.maximum(adata.obs["true_lineage"].cat.codes.to_numpy() - 1, 0)


def test_true_velocity_rebuilds_bit_for_bit_from_the_stored_truth(sim):
    """What a results file relies on to leave the layer out: any block of genes (one gene, a
    scattered few, all) rebuilds from obs/var/varm equal to the stored layer, also on a gene
    subset (as preprocessing keeps; the round trip through a fit's file: test_pipeline)."""
    assert has_truth(sim)
    stored = sim.layers["true_velocity"]
    for genes in (slice(0, sim.n_vars), slice(7, 8), np.array([3, 90, 11])):
        np.testing.assert_array_equal(true_velocity(sim, genes), stored[:, genes])
    subset = sim[:, 40:70].copy()
    np.testing.assert_array_equal(true_velocity(subset, slice(None)), stored[:, 40:70])
    assert not has_truth(ad.AnnData(obs=sim.obs[["true_t"]], var=sim.var))


def test_true_velocity_is_ds_dt(sim):
    """β u − γ s from the closed forms equals a central difference of s(t) along true time."""
    kinetics = kinetics_from_adata(sim)
    t = sim.obs["true_t"].to_numpy()
    lineage = _lineage_index(sim)
    u, s = expected_abundances(t, lineage, kinetics)
    velocity = kinetics.beta * u - kinetics.gamma * s
    np.testing.assert_allclose(sim.layers["true_velocity"], velocity, rtol=1e-5, atol=1e-4)
    h = 1e-5
    # stay away from switch times, where ds/dt is continuous but d²s/dt² jumps
    switches = np.stack([kinetics.t_on[:, lineage].T, kinetics.t_off[:, lineage].T])
    smooth = np.all(np.abs(t[None, :, None] - switches) > 10 * h, axis=0)
    _, s_plus = expected_abundances(t + h, lineage, kinetics)
    _, s_minus = expected_abundances(t - h, lineage, kinetics)
    slope = (s_plus - s_minus) / (2 * h)
    np.testing.assert_allclose(slope[smooth], velocity[smooth], rtol=1e-4, atol=1e-4)


def test_closed_forms_match_ode_solver(sim):
    """The noiseless state equals scipy's solve_ivp of du/dt = α(t) − βu, ds/dt = βu − γs."""
    kinetics = kinetics_from_adata(sim)
    t_eval = np.linspace(0.0, T_MAX - 1e-3, 9)
    programmes = kinetics.programme
    genes = [int(np.flatnonzero(programmes == name)[0]) for name in np.unique(programmes)]
    for lineage in (0, 1):
        u, s = expected_abundances(t_eval, np.full(t_eval.size, lineage), kinetics)
        for g in genes:
            alpha, beta, gamma = kinetics.alpha[g], kinetics.beta[g], kinetics.gamma[g]
            on, off = kinetics.t_on[g, lineage], kinetics.t_off[g, lineage]
            state, start = np.zeros(2), T_ALWAYS
            stops = sorted({x for x in (on, off) if T_ALWAYS < x < T_MAX} | {T_MAX})
            numeric = np.empty((2, t_eval.size))
            for stop in stops:  # integrate piecewise so the solver never crosses a switch
                rate = alpha if on <= start < off else 0.0
                result = solve_ivp(
                    lambda _, y, a=rate, b=beta, c=gamma: [a - b * y[0], b * y[0] - c * y[1]],
                    (start, stop),
                    state,
                    dense_output=True,
                    rtol=1e-10,
                    atol=1e-10,
                    method="LSODA",
                )
                inside = (t_eval >= start) & (t_eval < stop)
                numeric[:, inside] = result.sol(t_eval[inside])
                state, start = result.y[:, -1], stop
            np.testing.assert_allclose(u[:, g], numeric[0], rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(s[:, g], numeric[1], rtol=1e-6, atol=1e-6)


def test_counts_follow_expected_abundances(sim):
    kinetics = kinetics_from_adata(sim)
    u, s = expected_abundances(sim.obs["true_t"].to_numpy(), _lineage_index(sim), kinetics)
    library = sim.obs["true_library_size"].to_numpy()[:, None]
    for layer, mean in (("unspliced", u), ("spliced", s)):
        observed = sim.layers[layer].toarray().mean(axis=0)
        expected = (library * mean).mean(axis=0)
        assert np.corrcoef(observed, expected)[0, 1] > 0.99
        np.testing.assert_allclose(observed.sum(), expected.sum(), rtol=0.02)


def test_committed_sample_is_the_generator_output():
    if not SAMPLE.exists():
        pytest.fail(f"{SAMPLE} is missing; run `velodash simulate {SAMPLE}`")
    committed = ad.read_h5ad(SAMPLE)
    params = committed.uns["simulation"]
    assert committed.n_obs >= 2000 and committed.n_vars >= 300
    assert SAMPLE.stat().st_size <= 10 * 2**20
    regenerated = simulate_branching(
        n_cells=int(params["n_cells"]), n_genes=int(params["n_genes"]), seed=int(params["seed"])
    )
    _assert_same(committed, regenerated, bitwise=False)
    with h5py.File(SAMPLE) as handle:
        assert handle["layers/spliced/data"].compression == "gzip"
