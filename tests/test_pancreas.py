"""The real pancreas subset (../shared/data) fitted with the defaults reproduces the veloVI
paper's findings: the endocrine ordering in latent time, transient cell-cycle genes leading the
permutation scores, the flow from Ngn3-high progenitors into the endocrine types, and the
uncertainty picture of Fig. 4a; its uncertainty per cell type agrees with the reference veloVI's
(values committed in tests/data, with the command that computed them)."""

from __future__ import annotations

import json
from pathlib import Path

import anndata
import numpy as np
import pytest
from scipy.stats import spearmanr

from dashboard.cli import main

#: The reference veloVI's per-type uncertainty on this subset, several seeds
#: (``bench/bench_uncertainty.py --write-reference``; its "command" says how it was made).
REFERENCE = Path(__file__).parent / "data" / "pancreas_uncertainty_reference.json"

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
    # 739 cells are 3 steps per epoch: like the reference (500 epochs on every seed) the fit may
    # use all 500; either way its velocity, time and spread have settled to within 1 % a check
    assert history["stop_reason"] in ("converged", "max epochs")
    assert max(history["drift"][-1][1:]) < 0.01
    assert min(history["elbo_validation"][-5:]) < history["elbo_validation"][0]
    for key in ("intrinsic_uncertainty", "extrinsic_uncertainty", "latent_time"):
        assert np.isfinite(result.obs[key]).all(), key
    assert np.isfinite(result.var["permutation_score"]).sum() > 0.9 * result.n_vars


@pytest.mark.slow
def test_latent_time_orders_the_endocrine_lineage(pancreas_result):
    median = pancreas_result.obs.groupby("clusters", observed=True)["latent_time"].median()
    assert median["Ductal"] < median["Ngn3 high EP"] < median["Pre-endocrine"]
    assert median["Ngn3 low EP"] < median["Ngn3 high EP"]
    # Epsilon (27 cells) sits at Pre-endocrine's level in the reference veloVI too (4 seeds:
    # 0.60–0.64 vs 0.62–0.68), so only the three large endocrine types are ordered
    assert all(median["Pre-endocrine"] < median[t] for t in ("Alpha", "Beta", "Delta"))


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


def _type_medians(result: anndata.AnnData, kind: str, types: list[str]) -> np.ndarray:
    """log10 of the median ``obs['<kind>_uncertainty']`` of each cell type, in ``types`` order."""
    values = result.obs[f"{kind}_uncertainty"].to_numpy()
    clusters = result.obs["clusters"].to_numpy()
    return np.log10([np.median(values[clusters == t]) for t in types])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["intrinsic", "extrinsic"])
def test_uncertainty_per_cell_type_agrees_with_the_reference(pancreas_result, kind):
    """Per cell type, velodash's median uncertainty lies as close to the reference veloVI's
    (the mean of its seeds, log10) as each reference seed lies to the others', at the same
    level; for extrinsic, whose types span two decades, it also ranks them at least as
    faithfully. (Intrinsic type medians span 0.12 log10, so their rank order is seed noise:
    ρ 0.67–0.86 among the reference's own seeds.) The expected-π estimator (issue 13) is
    0.24 / 0.42 log10 away per type, the gene-space extrinsic 1.04."""
    reference = json.loads(REFERENCE.read_text())
    ours = _type_medians(pancreas_result, kind, reference["types"])
    seeds = np.asarray(reference[kind]["log10_medians"])
    mean = seeds.mean(0)
    distance = np.mean(np.abs(ours - mean))
    assert distance <= 1.5 * max(reference[kind]["band_mean_abs_log10_difference"]), ours - mean
    offsets = [np.mean(seed - np.delete(seeds, i, 0).mean(0)) for i, seed in enumerate(seeds)]
    assert abs(np.mean(ours - mean)) <= max(np.abs(offsets)) + 0.05, ours - mean
    if kind == "extrinsic":
        assert spearmanr(ours, mean)[0] >= min(reference[kind]["band_spearman"]), ours - mean


@pytest.mark.slow
def test_uncertainty_reproduces_the_paper(pancreas_result):
    """Fig. 4a: intrinsic uncertainty is elevated in Ductal and Ngn3-low progenitors over the
    transient Ngn3-high and Pre-endocrine cells; extrinsic is lowest in those transient types
    and high in the terminal Alpha and Beta cells ("backflow", no successors)."""
    types = ["Ductal", "Ngn3 low EP", "Ngn3 high EP", "Pre-endocrine", *ENDOCRINE]
    intrinsic = dict(zip(types, _type_medians(pancreas_result, "intrinsic", types), strict=True))
    extrinsic = dict(zip(types, _type_medians(pancreas_result, "extrinsic", types), strict=True))
    transient = ("Ngn3 high EP", "Pre-endocrine")
    assert min(intrinsic["Ductal"], intrinsic["Ngn3 low EP"]) > max(intrinsic[t] for t in transient)
    assert min(extrinsic["Alpha"], extrinsic["Beta"]) > extrinsic["Ngn3 high EP"]
    others = [t for t in types if t not in transient]
    assert max(extrinsic[t] for t in transient) < min(extrinsic[t] for t in others)
