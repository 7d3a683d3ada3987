# ruff: noqa: F811 - pytest fixtures imported from test_browser are used as arguments
"""A dataset without spliced/unspliced counts, fitted through the home page with a splicing
reference picked (SplicedVAE), in a real headless Chromium: every page then carries the
"S/U predicted" badge and the home page the validation panel."""

from __future__ import annotations

from pathlib import Path

import anndata
import pytest
from fake_results import QUICK_FIT, write_raw_counts
from test_browser import _config, dash_duo, pytestmark  # noqa: F401 - fixtures
from test_browser_jobs import local_app  # noqa: F401 - fixture

from dashboard.data.datasets import DatasetRegistry


def _without_splicing(source: Path, target: Path) -> Path:
    """`source`'s cells with their total counts in X and no spliced/unspliced layers."""
    adata = anndata.read_h5ad(source)
    adata.X = adata.layers["spliced"] + adata.layers["unspliced"]
    del adata.layers["spliced"], adata.layers["unspliced"]
    adata.write_h5ad(target)
    return target


@pytest.fixture
def pair(tmp_path):
    reference = write_raw_counts(tmp_path / "reference.h5ad", n_cells=200, n_genes=240, seed=0)
    counts = write_raw_counts(tmp_path / "counts.h5ad", n_cells=150, n_genes=240, seed=1)
    query = _without_splicing(counts, tmp_path / "no_splicing.h5ad")
    fit = {**QUICK_FIT, "splicing_epochs": 5}
    return _config(tmp_path, data=(query, reference), fit_overrides=fit), query


def test_a_fit_without_spliced_unspliced_through_the_page_carries_the_badge(
    dash_duo, local_app, pair
):
    config, query = pair
    registry = DatasetRegistry(config)
    ds = next(d.id for d in registry.datasets() if d.path == query.resolve())
    dash_duo.start_server(local_app(config))
    dash_duo.driver.get(f"{dash_duo.server_url}/?ds={ds}")
    dash_duo.wait_for_contains_text("#fit-reference-box", "Predict splicing", timeout=30)
    dash_duo.wait_for_contains_text("#fit-reference", "reference.h5ad", timeout=10)
    dash_duo.find_element("#fit-btn").click()
    # (not "Fit queued.": that note goes as soon as the worker takes the job, which a loaded
    # machine's polling can miss.) The summary redraws when the fit is done: the validation
    # panel, then the badge.
    dash_duo.wait_for_element("#splicing-ratio", timeout=600)
    dash_duo.wait_for_element("#splicing-cosine", timeout=30)
    dash_duo.wait_for_contains_text(
        "#splicing-badge", "S/U predicted (SplicedVAE, reference reference.h5ad; held-out R =", 30
    )
    for page in ("stream", "uncertainty", "genes"):
        dash_duo.driver.get(f"{dash_duo.server_url}/{page}?ds={ds}")
        dash_duo.wait_for_contains_text("#splicing-badge", "S/U predicted (SplicedVAE", 30)
    dash_duo.driver.get(f"{dash_duo.server_url}/uncertainty?ds={ds}")
    dash_duo.wait_for_contains_text("#uncertainty-splicing-note", "do not include", 30)
    # the reference itself has its own counts: no picker, no badge
    reference_id = next(d.id for d in registry.datasets() if d.path != query.resolve())
    dash_duo.driver.get(f"{dash_duo.server_url}/?ds={reference_id}")
    dash_duo.wait_for_element("#fit-btn", timeout=30)
    box = dash_duo.find_element("#fit-reference-box")
    assert box.value_of_css_property("display") == "none"
    assert dash_duo.find_element("#splicing-badge").text == ""
