"""End-to-end pipeline: raw counts → results file of the DESIGN.md contract."""

from __future__ import annotations

from pathlib import Path

import anndata
import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from core.baseline import scvelo_velocity
from core.io import DatasetError, file_fingerprint
from core.params import FitParams, results_key
from core.pipeline import fit_file
from core.results_io import read_results
from core.simulate import simulate_branching
from core.train import TrainingCancelled

# Small but complete: every analysis runs, with few samples so the suite stays fast.
SMALL = dict(
    max_epochs=15,
    n_samples=5,
    n_samples_intrinsic=10,
    n_samples_extrinsic=5,
    n_top_genes=200,
    n_neighbors=15,
)

CONTRACT_LAYERS = [
    "Ms",
    "Mu",
    "Ms_raw",
    "Mu_raw",
    "velocity",
    "velocity_var",
    "fit_t",
    "fit_s",
    "fit_u",
    "state_assignment",
    "velocity_coherence",
    "velocity_baseline",
    "true_velocity",
]
CONTRACT_VAR = [
    "fit_alpha",
    "fit_beta",
    "fit_gamma",
    "fit_t_",
    "fit_scaling",
    "velocity_genes",
    "fit_mse",
    "fit_likelihood",
    "permutation_score",
    "baseline_sign_agreement",
    "baseline_pearson",
]
CONTRACT_OBS = ["latent_time", "intrinsic_uncertainty", "extrinsic_uncertainty"]
CONTRACT_OBSM = ["X_umap", "velocity_umap", "X_velovi", "velocity_baseline_umap"]
CONTRACT_UNS = ["velocity_graph", "velocity_graph_neg", "velocity_params", "velodash"]


@pytest.fixture(scope="module")
def raw_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("raw") / "small.h5ad"
    simulate_branching(n_cells=400, n_genes=80, seed=3).write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def events() -> list:
    return []


@pytest.fixture(scope="module")
def result_path(raw_path, tmp_path_factory, events) -> Path:
    out = tmp_path_factory.mktemp("results") / "small.velodash.h5ad"
    return fit_file(raw_path, out, FitParams(**SMALL), progress=events.append)


@pytest.fixture(scope="module")
def result(result_path) -> anndata.AnnData:
    return read_results(result_path)  # as scVelo/CellRank users read it (raw moments restored)


def test_results_file_has_every_contract_slot(result):
    missing = (
        [f"layers[{k!r}]" for k in CONTRACT_LAYERS if k not in result.layers]
        + [f"var[{k!r}]" for k in CONTRACT_VAR if k not in result.var]
        + [f"obs[{k!r}]" for k in CONTRACT_OBS if k not in result.obs]
        + [f"obsm[{k!r}]" for k in CONTRACT_OBSM if k not in result.obsm]
        + [f"uns[{k!r}]" for k in CONTRACT_UNS if k not in result.uns]
        + [f"varm[{k!r}]" for k in ("coherence", "permutation_effect") if k not in result.varm]
    )
    assert not missing, f"results file lacks {missing}"


def test_contract_values_are_consistent(result):
    n, g = result.shape
    info = result.uns["velodash"]
    n_types = len(info["cell_types"])
    assert list(result.obs[info["groupby"]].cat.categories) == list(info["cell_types"])
    assert result.varm["coherence"].shape == (g, n_types)
    assert result.varm["permutation_effect"].shape == (g, n_types)
    states = result.layers["state_assignment"]
    assert states.dtype == np.int8 and set(np.unique(states)) <= {0, 1, 2, 3}
    assert result.obs["latent_time"].between(0, 1).all()
    assert (result.layers["velocity_var"] >= 0).all()
    assert ((result.layers["fit_t"] >= 0) & (result.layers["fit_t"] <= 20 + 1e-4)).all()
    assert result.var["velocity_genes"].dtype == bool
    assert sp.issparse(result.uns["velocity_graph"])
    assert result.uns["velocity_graph"].shape == (n, n)
    assert result.obsm["velocity_umap"].shape == (n, 2)
    assert np.isfinite(result.layers["velocity"]).all()


def test_file_leaves_out_what_its_other_slots_rebuild(result_path, raw_path, result):
    with h5py.File(result_path) as f:
        stored = set(f["layers"])
        assert f["layers/state_assignment"].dtype == np.int8
        assert "X" not in f  # log1p of the spliced layer: rebuilt on reading
    assert {"velocity_baseline", "true_velocity", "Ms_raw", "Mu_raw"}.isdisjoint(stored)
    assert sp.issparse(result.X) and result.X.shape == result.shape
    # restored bit for bit: the simulation's own true velocity of these genes...
    raw = anndata.read_h5ad(raw_path)
    truth = raw[:, result.var_names].layers["true_velocity"]
    np.testing.assert_array_equal(result.layers["true_velocity"], truth)
    # ... and scVelo's steady-state velocity of the same moments
    np.testing.assert_array_equal(result.layers["velocity_baseline"], scvelo_velocity(result)[0])


def test_provenance_is_recorded(result, raw_path):
    info = result.uns["velodash"]
    assert info["fingerprint"] == file_fingerprint(raw_path)
    assert info["device"] == "cpu"
    assert info["params"]["max_epochs"] == SMALL["max_epochs"]
    history = info["history"]
    assert len(history["elbo_train"]) == len(history["elbo_validation"]) >= 1
    assert len(history["elbo_validation"]) <= SMALL["max_epochs"]
    for stage in ("preprocess", "train", "posterior", "graph", "uncertainty"):
        assert info["timings"][stage] > 0
    for stage in ("coherence", "permutation", "baseline"):
        assert stage in info["timings"]


def test_progress_reports_epochs_then_done(events, result):
    train = [e for e in events if e.stage == "train" and e.epoch is not None]
    assert [e.epoch for e in train] == list(range(1, len(train) + 1))
    assert all(np.isfinite(e.elbo_validation) for e in train)
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions)
    assert events[-1].stage == "done" and events[-1].fraction == 1.0


def test_graph_matches_scvelo_on_the_results_file(result):
    """The stored velocity graph is what scVelo computes from the same file."""
    import scvelo as scv

    ours = result.uns["velocity_graph"].toarray() + result.uns["velocity_graph_neg"].toarray()
    check = result.copy()
    scv.tl.velocity_graph(check, approx=False, n_jobs=1, show_progress_bar=False)
    theirs = check.uns["velocity_graph"].toarray() + check.uns["velocity_graph_neg"].toarray()
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_skipping_the_graph_skips_what_needs_it(raw_path, tmp_path):
    params = FitParams(**{**SMALL, "max_epochs": 3}, skip=("graph", "permutation", "baseline"))
    out = fit_file(raw_path, tmp_path / "r.h5ad", params)
    result = anndata.read_h5ad(out)
    assert "velocity_graph" not in result.uns
    assert "extrinsic_uncertainty" not in result.obs and "coherence" not in result.varm
    assert "intrinsic_uncertainty" in result.obs
    assert list(result.uns["velodash"]["analyses"]) == ["intrinsic"]


def test_dataset_without_cell_types_gets_one_group(raw_path, tmp_path):
    adata = anndata.read_h5ad(raw_path)
    adata.obs = adata.obs.drop(columns=["clusters"])
    path = tmp_path / "nogroups.h5ad"
    adata.write_h5ad(path)
    params = FitParams(**{**SMALL, "max_epochs": 3}, skip=("extrinsic", "baseline"))
    result = anndata.read_h5ad(fit_file(path, tmp_path / "r.h5ad", params))
    assert list(result.uns["velodash"]["cell_types"]) == ["all cells"]
    assert "one group" in result.uns["velodash"]["notes"][0]
    assert result.varm["coherence"].shape == (result.n_vars, 1)


def test_cancelled_fit_writes_nothing(raw_path, tmp_path):
    out = tmp_path / "never.h5ad"
    with pytest.raises(TrainingCancelled):
        fit_file(raw_path, out, FitParams(**SMALL), should_stop=lambda: True)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_bad_input_raises_dataset_error_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.h5ad"
    bad.write_text("this is not an AnnData file")
    with pytest.raises(DatasetError):
        fit_file(bad, tmp_path / "out.h5ad")
    assert not (tmp_path / "out.h5ad").exists()


def test_results_key_is_a_content_address():
    a = results_key("abc", FitParams())
    assert a == results_key("abc", FitParams())
    assert a != results_key("abd", FitParams())
    assert a != results_key("abc", FitParams(max_epochs=10))


def test_unknown_skip_is_rejected():
    with pytest.raises(ValueError, match="unknown analysis"):
        FitParams(skip=("nonsense",))


def test_a_time_dependent_fit_records_its_rate_and_scvelo_reads_it(raw_path, tmp_path):
    """The results contract of an α(t) fit (issue 18): α₁ and λ per gene in ``var``, the option
    in the provenance, and scVelo computes the same velocity graph from the file."""
    import scvelo as scv

    params = FitParams(
        **{**SMALL, "max_epochs": 4},
        time_dependent_rate=True,
        skip=("intrinsic", "extrinsic", "coherence", "permutation", "baseline"),
    )
    result = anndata.read_h5ad(fit_file(raw_path, tmp_path / "td.h5ad", params))
    var = result.var
    assert result.uns["velodash"]["params"]["time_dependent_rate"]
    lam, alpha_1 = var["fit_lambda_alpha"].to_numpy(), var["fit_alpha_1"].to_numpy()
    assert np.isfinite(lam).all() and np.isfinite(alpha_1).all()
    assert (lam > 0).all()  # softplus rates: a constant-rate fit writes λ = 0
    assert not np.allclose(alpha_1, var["fit_alpha"].to_numpy())
    ours = result.uns["velocity_graph"].toarray() + result.uns["velocity_graph_neg"].toarray()
    check = result.copy()
    scv.tl.velocity_graph(check, approx=False, n_jobs=1, show_progress_bar=False)
    theirs = check.uns["velocity_graph"].toarray() + check.uns["velocity_graph_neg"].toarray()
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
