"""scVelo baseline: reproduces scv.tl.velocity; agreement metrics against numpy oracles."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scvelo as scv

from core import baseline
from core.baseline import add_baseline_to_adata, scvelo_velocity, velocity_agreement
from core.derived_layers import drop_rebuildable, restore


@pytest.fixture(scope="module")
def simulated() -> ad.AnnData:
    adata = scv.datasets.simulation(n_obs=300, n_vars=12, random_seed=0)
    scv.pp.moments(adata, n_pcs=10, n_neighbors=20)
    adata.layers["Mu"] = adata.layers["Mu"] / adata.layers["Mu"].max(0)  # veloVI-style scaling
    adata.layers["Ms"] = adata.layers["Ms"] / adata.layers["Ms"].max(0)
    return adata


@pytest.mark.parametrize("genes_per_block", [None, 5])
def test_steady_state_reproduces_scvelo_velocity(simulated, genes_per_block, monkeypatch):
    if genes_per_block:  # scVelo run a block of genes at a time (bounded memory): same numbers
        monkeypatch.setattr(baseline, "_BLOCK_ELEMENTS", genes_per_block * simulated.n_obs)
    ours, ours_gamma = scvelo_velocity(simulated, mode="steady_state")
    direct = simulated.copy()
    scv.tl.velocity(direct, mode="deterministic")
    np.testing.assert_allclose(ours, direct.layers["velocity"], rtol=1e-6, atol=1e-8)
    # the steady-state model's velocity is u - γ s on the same moments, with scVelo's γ
    gamma = direct.var["velocity_gamma"].to_numpy()
    np.testing.assert_allclose(ours_gamma, gamma, rtol=1e-6)
    np.testing.assert_allclose(
        ours, simulated.layers["Mu"] - gamma * simulated.layers["Ms"], rtol=1e-5, atol=1e-7
    )
    assert "velocity" not in simulated.layers  # the input is left untouched


def test_agreement_of_velocity_with_itself_and_its_negation():
    v = np.random.default_rng(0).normal(size=(50, 4))
    v[:10, 0] = 0.0  # cells where both are zero are ignored
    sign, pearson = velocity_agreement(v, v)
    np.testing.assert_allclose(sign, 1.0)
    np.testing.assert_allclose(pearson, 1.0)
    sign, pearson = velocity_agreement(v, -v)
    np.testing.assert_allclose(sign, 0.0)
    np.testing.assert_allclose(pearson, -1.0)


@pytest.mark.parametrize("genes_per_block", [None, 2])
def test_agreement_matches_numpy_oracles_and_handles_constant_and_nan(genes_per_block, monkeypatch):
    if genes_per_block:
        monkeypatch.setattr(baseline, "_BLOCK_ELEMENTS", genes_per_block * 60)
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(60, 5)), rng.normal(size=(60, 5)) + 0.5 * rng.normal(size=(60, 5))
    b[:, 1] = 3.0  # constant column: correlation undefined
    a[5, 2] = np.nan  # NaN entries are ignored pairwise
    sign, pearson = velocity_agreement(a, b)
    for g in (0, 2, 3, 4):
        ok = ~np.isnan(a[:, g])
        assert pearson[g] == pytest.approx(np.corrcoef(a[ok, g], b[ok, g])[0, 1], rel=1e-10)
        assert sign[g] == pytest.approx(np.mean(np.sign(a[ok, g]) == np.sign(b[ok, g])))
    assert np.isnan(pearson[1])


def test_add_baseline_to_adata(simulated):
    adata = simulated.copy()
    adata.layers["velocity"] = scvelo_velocity(adata)[0]
    adata.uns["velodash"] = {"version": "x"}
    result = add_baseline_to_adata(adata)
    np.testing.assert_allclose(adata.var["baseline_pearson"], 1.0)
    np.testing.assert_allclose(adata.var["baseline_sign_agreement"], 1.0)
    assert adata.layers["velocity_baseline"].shape == adata.shape
    # the stored γ rebuilds the layer bit for bit, so a results file leaves it out
    stored = adata.layers["velocity_baseline"].copy()
    assert drop_rebuildable(adata) == ["velocity_baseline"]
    assert "velocity_baseline" not in adata.layers
    assert restore(adata) == ["velocity_baseline"]
    np.testing.assert_array_equal(adata.layers["velocity_baseline"], stored)
    assert adata.uns["velodash"] == {"version": "x", "baseline": {"mode": "steady_state"}}
    assert result.mode == "steady_state"
    with pytest.raises(ValueError, match="layers"):
        add_baseline_to_adata(ad.AnnData(np.zeros((3, 2))))
