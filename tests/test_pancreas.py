"""The real pancreas subset (../shared/data) fitted with the defaults reproduces the veloVI
paper's findings: the endocrine ordering in latent time, transient cell-cycle genes leading the
permutation scores, and the flow from Ngn3-high progenitors into the endocrine types."""

from __future__ import annotations

import anndata
import numpy as np
import pytest

from dashboard.cli import main

#: Cell-cycle genes with transient dynamics in cycling ductal / Ngn3-low cells (paper, Fig. 4).
CELL_CYCLE = {
    "Top2a", "Mki67", "Lmnb1", "Shcbp1", "Tyms", "Racgap1", "Melk", "Ect2", "Ncapd2", "Tpx2",
    "Prc1", "Kif23", "Cenpf", "Smc2", "Hmgb2", "Ccnb1", "Cdk1", "Birc5", "Nusap1", "Ube2c",
    "Aurkb", "Cdca8", "Kif11", "Kif20b", "Ccna2", "Rrm2", "Pbk", "Cdkn3", "Hells", "Mcm3",
}  # fmt: skip
ENDOCRINE = ("Alpha", "Beta", "Delta", "Epsilon")


@pytest.fixture(scope="module")
def pancreas_result(pancreas_path, tmp_path_factory) -> anndata.AnnData:
    """The pancreas subset fitted with every default (stopping rule, 25/100/25 samples)."""
    out = tmp_path_factory.mktemp("pancreas") / "pancreas.velodash.h5ad"
    assert main(["fit", str(pancreas_path), "--out", str(out), "--quiet"]) == 0
    return anndata.read_h5ad(out)


@pytest.mark.slow
def test_pancreas_fits_end_to_end(pancreas_result):
    result = pancreas_result
    info = result.uns["velodash"]
    assert result.n_obs == 739
    assert 100 < result.n_vars <= 2000
    assert info["groupby"] == "clusters"
    progenitors = {"Ductal", "Ngn3 low EP", "Ngn3 high EP", "Pre-endocrine"}
    assert set(info["cell_types"]) == progenitors | set(ENDOCRINE)
    history = info["history"]
    assert history["stop_reason"] == "converged" and history["stopped_epoch"] < 500
    assert min(history["elbo_validation"][-5:]) < history["elbo_validation"][0]
    for key in ("intrinsic_uncertainty", "extrinsic_uncertainty", "latent_time"):
        assert np.isfinite(result.obs[key]).all(), key
    assert np.isfinite(result.var["permutation_score"]).sum() > 0.9 * result.n_vars


@pytest.mark.slow
def test_latent_time_orders_the_endocrine_lineage(pancreas_result):
    median = pancreas_result.obs.groupby("clusters", observed=True)["latent_time"].median()
    assert median["Ductal"] < median["Ngn3 high EP"] < median["Pre-endocrine"]
    assert median["Ngn3 low EP"] < median["Ngn3 high EP"]
    assert all(median["Pre-endocrine"] < median[t] for t in ENDOCRINE)


@pytest.mark.slow
def test_cell_cycle_genes_lead_the_permutation_scores(pancreas_result):
    scores = pancreas_result.var["permutation_score"].sort_values(ascending=False)
    top = set(scores.index[:25])
    assert len(top & CELL_CYCLE) >= 5, sorted(top)
    assert scores.index.get_loc("Top2a") < 0.05 * len(scores)
    assert pancreas_result.uns["velodash"]["permutation"]["skewness"] > 0.5


@pytest.mark.slow
def test_streams_flow_from_progenitors_into_endocrine_types(pancreas_result):
    umap, velocity = pancreas_result.obsm["X_umap"], pancreas_result.obsm["velocity_umap"]
    types = pancreas_result.obs["clusters"].to_numpy()
    centre = {t: umap[types == t].mean(0) for t in np.unique(types)}

    def flow(source: str, target: str) -> float:
        v, d = velocity[types == source].mean(0), centre[target] - centre[source]
        return float(v @ d / np.linalg.norm(v) / np.linalg.norm(d))

    assert flow("Ngn3 high EP", "Pre-endocrine") > 0.5
    assert flow("Pre-endocrine", "Beta") > 0.5
