"""The real pancreas subset (../shared/data) fits end to end through the CLI entry point."""

from __future__ import annotations

import anndata
import numpy as np
import pytest

from dashboard.cli import main

# Short training keeps this test near a minute on 2 cores; the full default fit (early
# stopping, up to 500 epochs) is in the closing note and bench/RESULTS.md.
EPOCHS = 40


@pytest.fixture(scope="module")
def pancreas_result(pancreas_path, tmp_path_factory) -> anndata.AnnData:
    out = tmp_path_factory.mktemp("pancreas") / "pancreas.velodash.h5ad"
    argv = ["fit", str(pancreas_path), "--out", str(out), "--max-epochs", str(EPOCHS), "--quiet"]
    assert main(argv) == 0
    return anndata.read_h5ad(out)


@pytest.mark.slow
def test_pancreas_fits_end_to_end(pancreas_result):
    result = pancreas_result
    info = result.uns["velodash"]
    assert result.n_obs == 739
    assert 100 < result.n_vars <= 2000
    assert info["groupby"] == "clusters"
    assert set(info["cell_types"]) == {
        "Ductal",
        "Ngn3 low EP",
        "Ngn3 high EP",
        "Pre-endocrine",
        "Beta",
        "Alpha",
        "Delta",
        "Epsilon",
    }
    assert len(info["history"]["elbo_validation"]) == EPOCHS
    for key in ("intrinsic_uncertainty", "extrinsic_uncertainty", "latent_time"):
        assert np.isfinite(result.obs[key]).all(), key
    assert np.isfinite(result.var["permutation_score"]).sum() > 0.9 * result.n_vars
    assert result.obsm["X_umap"].shape == (739, 2)


@pytest.mark.slow
def test_pancreas_validation_elbo_improves(pancreas_result):
    history = pancreas_result.uns["velodash"]["history"]["elbo_validation"]
    assert min(history[-5:]) < history[0]
