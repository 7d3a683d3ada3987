"""The exploring pages' callbacks called directly (no browser): bad input gives a message, not a
stack trace; saved selections become colourings; gene choices resolve."""

from __future__ import annotations

from contextvars import copy_context
from pathlib import Path

import numpy as np
import pytest
from dash._callback_context import context_value
from dash._utils import AttributeDict
from fake_results import make_fake_results

from dashboard.config import AppConfig
from dashboard.data.datasets import DatasetRegistry
from dashboard.data.results import load_results
from dashboard.web import selection_panel
from dashboard.web.app import create_app
from dashboard.web.multigene import LIST, resolve_genes

#: The results the app serves (conftest's served).
FAKE_RESULTS = dict(n_cells=200, n_genes=20, planted_driver="Drv")


def _call(app, fn, *args, trigger: str = "x.n_clicks"):
    """Run a callback body inside a request and callback context."""

    def run():
        context_value.set(AttributeDict(triggered_inputs=[{"prop_id": trigger, "value": 1}]))
        return fn(*args)

    with app.server.test_request_context():
        return copy_context().run(run)


def test_panel_explains_bad_selections_instead_of_failing(served):
    app, ds, results = served
    empty = {"geometry": {"kind": "box", "x": [1e6, 1e6 + 1], "y": [1e6, 1e6 + 1]}}
    bad_shape = {"geometry": {"kind": "lasso", "x": [0, 1], "y": [0, 1]}}
    everything = {"geometry": {"kind": "box", "x": [-1e6, 1e6], "y": [-1e6, 1e6]}}
    for active, expected in (
        (empty, "No cells in the selection"),
        (bad_shape, "at least three points"),
        (everything, "no rest to compare with"),
        ({"id": "../secret"}, "not a selection id"),
        ({"id": "0123456789"}, "No saved selection"),
        ({"geometry": "junk"}, "unknown selection shape"),
    ):
        body, message = _call(app, selection_panel.selection_view, results, ds, active, "score")
        assert expected in str(message), (active, message)
    whole = {"geometry": {"kind": "box", "x": [-1e6, 1e6], "y": [-1e6, 0]}}
    body, message = _call(app, selection_panel.selection_view, results, ds, whole, "velocity")
    assert message is None and "cells selected" in str(body)


def test_saved_selection_is_a_colouring_and_a_shareable_id(served):
    from dashboard.web.pages import stream

    app, ds, results = served
    mask = np.zeros(results.n_cells, bool)
    mask[:30] = True
    saved = _call(
        app, lambda: selection_panel.store().save(ds, "first 30", mask, results.cell_ids, "local")
    )
    color = f"sel:{saved.id}"
    assert stream.split_color(results, color) == (color, None)
    values = _call(app, stream.selection_colors, results, ds, color)
    assert values.categories == ["other cells", "first 30"]
    np.testing.assert_array_equal(values.values == 1, mask)
    options = _call(app, stream.color_options, results, ds)
    assert {"label": "selection: first 30 (30 cells)", "value": color} in options
    figure, message = _call(app, stream._resolve_color, results, ds, "sel:ffffffffff")
    assert figure is None and "No saved selection" in str(message)


def test_gene_choices_resolve_with_messages(served):
    _, _, results = served
    genes, message, query = resolve_genes(results, "likelihood", 3, None, 16, (4, 48))
    assert len(genes) == 4 and message is None and query == {"rank": "likelihood", "n": "4"}
    genes, message, query = resolve_genes(results, LIST, 3, "drv, nope", 16, (4, 48))
    assert genes == ["Drv"] and "nope" in message and query == {"genes": "Drv"}
    genes, message, _ = resolve_genes(results, LIST, 3, "", 16, (4, 48))
    assert genes == [] and "Type or paste" in message
    genes, message, _ = resolve_genes(results, "magic", 3, None, 16, (4, 48))
    assert genes == [] and "unknown ranking" in message


def test_clicks_on_the_grid_and_heatmap_open_the_gene(served):
    from dash.exceptions import PreventUpdate

    from dashboard.web.pages import heatmap, portraits

    app, ds, results = served
    gene = results.gene_names[5]
    click = {"points": [{"customdata": [12.0, 5.0]}]}
    assert _call(app, portraits.open_gene, click, ds) == f"/genes?ds={ds}&gene={gene}"
    assert _call(app, heatmap.open_gene, {"points": [{"y": gene}]}, ds).endswith(gene)
    for bad_call in (
        lambda: portraits.open_gene({"points": [{"customdata": None}]}, ds),
        lambda: heatmap.open_gene({"points": [{"y": "cell type"}]}, ds),
        lambda: heatmap.open_gene(None, ds),
    ):
        with pytest.raises(PreventUpdate):
            _call(app, bad_call)


def test_home_report_shows_the_uncertainty_calibration_when_the_data_carry_a_truth(tmp_path):
    """The home page's "Uncertainty against the truth" card shows the numbers the figure layer
    computes (two digits); without a true velocity there is no such card."""
    from dashboard import figures
    from dashboard.web import run_report

    plain = make_fake_results(n_cells=200, n_genes=20, seed=1)
    truth = plain.copy()
    rng = np.random.default_rng(0)
    truth.obs["true_t"] = truth.obs["latent_time"].to_numpy() + rng.normal(0, 0.05, 200)
    truth.layers["true_velocity"] = truth.layers["velocity"] + rng.normal(0, 0.5, (200, 20))
    plain.write_h5ad(tmp_path / "plain.h5ad")
    truth.write_h5ad(tmp_path / "truth.h5ad")
    config = AppConfig(
        data=(tmp_path / "plain.h5ad", tmp_path / "truth.h5ad"),
        cache_dir=tmp_path / "cache",
        sample_path=tmp_path / "none.h5ad",
    )
    app = create_app(config)
    registry = DatasetRegistry(config)
    ids = {Path(d.path).name: d.id for d in registry.datasets()}
    with app.server.test_request_context():
        shown = str(run_report.sections(ids["truth.h5ad"]))
        assert "Uncertainty against the truth" in shown and "calibration-stats" in shown
        expected = figures.uncertainty_calibration_summary(load_results(tmp_path / "truth.h5ad"))
        for scores in expected.values():
            assert f"{scores['auroc']:.2f}" in shown and f"{scores['spearman']:.2f}" in shown
        assert "Uncertainty against the truth" not in str(run_report.sections(ids["plain.h5ad"]))


def test_only_editors_save_selections_and_viewers_are_told_why(served):
    """Issue 15: viewers browse. The server refuses a viewer's save (whatever the browser
    sends) and writes nothing; a viewer's panel has no Save control but says why; an editor's
    save records them as its owner."""
    import flask

    from dashboard.hosting.users import User

    app, ds, _ = served
    box = {"geometry": {"kind": "box", "x": [-1e6, 1e6], "y": [-1e6, 0]}}

    def as_user(user: User, fn, *args):
        def run():
            flask.g.velodash_user = user
            return fn(*args)

        return _call(app, run)

    viewer, editor = User("vera", "viewer"), User("ed", "editor")
    before = as_user(viewer, lambda: selection_panel.store().list(ds))
    saved, message = as_user(viewer, selection_panel.save_selection, ds, box, "mine", "stream")
    assert saved is None
    assert "Saving a selection needs the editor role; you are signed in as a viewer" in str(message)
    assert as_user(viewer, lambda: selection_panel.store().list(ds)) == before
    panel = str(as_user(viewer, selection_panel.panel, "stream", ds))
    assert "Saving selections needs the editor role" in panel and "stream-sel-save" not in panel
    saved, message = as_user(editor, selection_panel.save_selection, ds, box, "mine", "stream")
    assert saved is not None and saved.owner == "ed" and "Saved" in str(message)
    assert f"http://localhost/stream?ds={ds}&sel={saved.id}" in str(message)  # the full link
    assert "stream-sel-save" in str(as_user(editor, selection_panel.panel, "stream", ds))


def test_summary_lists_the_stages_in_the_order_the_fit_ran_them(served):
    """Issue 15: the results file keeps the stage timings alphabetically ("baseline …
    train"); the summary lists them in pipeline order."""
    from core.options import STAGES
    from dashboard.web.pages import home

    app, ds, _ = served
    text = str(_call(app, home.summary_view, ds))
    stages = text[text.index("Stages: ") :].split("'")[0]
    names = [part.split()[0] for part in stages.removeprefix("Stages: ").split(", ")]
    assert len(names) >= 3 and names == [s for s in STAGES if s in names]


def test_every_slider_shows_its_value(served):
    """Issue 15: the portraits' "How many" and the heatmap's smoothing showed no value."""
    from dash import dcc

    from dashboard.web.pages import heatmap, portraits, stream

    app, ds, _ = served

    def sliders(component) -> list:
        found = [component] if isinstance(component, dcc.Slider) else []
        children = getattr(component, "children", None)
        for child in children if isinstance(children, list | tuple) else [children]:
            if child is not None and not isinstance(child, str | int | float):
                found += sliders(child)
        return found

    # (the permutation page's wide slider shows Dash's own number box beside it)
    for page in (portraits, heatmap, stream):
        found = sliders(_call(app, page.layout, ds))
        assert found, page.__name__
        for slider in found:
            assert slider.tooltip and slider.tooltip.get("always_visible"), slider.id


def test_gene_and_portrait_downloads_name_each_cells_type(served):
    import io

    import pandas as pd

    from dashboard.web.pages import genes, portraits

    app, ds, results = served
    gene = results.gene_names[1]
    obs = results.adata.obs
    types = dict(zip(obs.index, obs["clusters"].astype(str), strict=True))
    for sent in (
        _call(app, genes.download_gene, 1, gene, ds),
        _call(app, portraits.download, 1, [gene], ds),
    ):
        table = pd.read_csv(io.StringIO(sent["content"]))
        assert len(table) > 0
        assert table["cell_type"].tolist() == [types[c] for c in table["cell_id"]]
