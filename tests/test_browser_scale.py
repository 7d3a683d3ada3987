"""The UMAPs at many cells in a real headless Chromium (issue 16, item 7): above the point
budget the velocity map draws the budgeted subsample and says so; zooming in draws exactly the
cells inside the window (full resolution), a gene recolour colours exactly the drawn cells with
their values, and a double-click brings the overview back. The uncertainty maps zoom the same
way, and so does the gene page's velocity UMAP.

Run: ``pytest -m browser tests/test_browser_scale.py`` (Debian ``chromium`` and
``chromium-driver``).
"""

from __future__ import annotations

import numpy as np
import pytest
from dash.testing import errors
from dash.testing.wait import until
from test_browser import dash_duo as dash_duo  # the headless dash_duo fixture
from test_browser import pytestmark as browser_marks
from test_browser_explore import _rendered, _start, _viewport
from test_browser_stream import _pick

from dashboard.data import overview

pytestmark = browser_marks

FAKE_RESULTS = dict(n_cells=30_000, n_genes=20, n_types=9, seed=5)
BUDGET = 8_000

#: The drawn cells of a graph's cell traces (those with customdata): their indices, colours
#: (numbers, or null for a category colour) and the text of its subtitle and annotations.
DRAWN = """
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
if (!gd || !gd._fullData || document.querySelector('[data-dash-is-loading="true"]')) return null;
const cells = [], colors = [];
for (const t of gd._fullData) {
  if (!t.customdata || t.mode !== 'markers') continue;
  for (let i = 0; i < t.x.length; i++) {
    cells.push(t.customdata[i][0]);
    const c = t.marker.color;
    colors.push(typeof c === 'string' ? null : c[i]);
  }
}
return {cells: cells, colors: colors,
        notes: [gd._fullLayout.title.subtitle.text,
                ...(gd.layout.annotations || []).map((a) => a.text)].join(' | ')};
"""


@pytest.fixture
def budget(monkeypatch):
    """A point budget below the 30,000 cells: the setting every figure reads (the test's
    server runs in this process)."""
    monkeypatch.setattr(overview, "POINT_BUDGET", BUDGET)
    return BUDGET


def _drawn(duo, graph: str) -> dict | None:
    return duo.driver.execute_script(DRAWN, f"#{graph}")


def _relayout(duo, graph: str, update: dict) -> None:
    duo.driver.execute_script(
        "Plotly.relayout(document.querySelector(arguments[0] + ' .js-plotly-plot'), arguments[1])",
        f"#{graph}",
        update,
    )


def _wait_cells(duo, graph: str, expected: np.ndarray, timeout: float = 30) -> dict:
    """The drawn cells once they are exactly ``expected`` (sorted indices)."""
    state = {}

    def drawn_expected() -> bool:
        state["now"] = _drawn(duo, graph)
        cells = state["now"] and np.sort(np.asarray(state["now"]["cells"], dtype=int))
        return cells is not None and np.array_equal(cells, expected)

    try:
        until(drawn_expected, timeout=timeout)
    except errors.TestingTimeoutError:
        now = state.get("now") or {"cells": [], "notes": "nothing drawn"}
        raise AssertionError(
            f"{graph} drew {len(now['cells'])} cells, not the {len(expected)} expected; "
            f"notes: {now['notes']}"
        ) from None
    return state["now"]


def _window(results, share: float) -> tuple[list[float], np.ndarray]:
    """A square window around the cells' median holding about ``share`` of them, and the
    indices of the cells inside it."""
    xy = results.umap
    centre = np.median(xy, 0)
    half = float(np.quantile(np.abs(xy - centre).max(1), share))
    window = [centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half]
    return [float(v) for v in window], overview.inside(xy, window)


def test_overview_zoom_recolour_and_reset_on_the_velocity_map(
    dash_duo, tmp_path, results, results_path, budget
):
    ds = _start(dash_duo, tmp_path, results_path)
    _viewport(dash_duo, 1280, 900)
    dash_duo.driver.get(f"{dash_duo.server_url}/stream?ds={ds}&mode=none")
    until(lambda: _rendered(dash_duo, "stream-graph"), timeout=60)
    first = _wait_cells(dash_duo, "stream-graph", overview.overview(results).cells)
    assert len(first["cells"]) == budget
    assert "showing 8,000 of 30,000 cells" in first["notes"]
    # every cell type is drawn
    drawn_types = set(results.cell_type_codes[np.asarray(first["cells"], dtype=int)])
    assert drawn_types == set(range(len(results.cell_types)))

    # zoomed to a window of ~5 % of the cells: every one of them, no other
    window, inside = _window(results, 0.05)
    assert 0 < len(inside) < budget
    _relayout(dash_duo, "stream-graph", {"xaxis.range": window[:2], "yaxis.range": window[2:]})
    zoomed = _wait_cells(dash_duo, "stream-graph", inside)
    assert f"all {len(inside):,} cells in view" in zoomed["notes"]

    # a gene recolour: one value per drawn cell, the gene's value of that cell
    gene = results.gene_names[3]
    _pick(dash_duo, "#stream-gene", gene)
    dash_duo.wait_for_contains_text("#stream-color", f"gene: {gene}", timeout=30)
    values = results.color_values(gene).values

    def recoloured() -> bool:
        now = _drawn(dash_duo, "stream-graph")
        return bool(now) and None not in now["colors"] and len(now["cells"]) == len(inside)

    until(recoloured, timeout=30, msg="the gene colouring never reached the drawn cells")
    now = _drawn(dash_duo, "stream-graph")
    cells = np.asarray(now["cells"], dtype=int)
    assert np.allclose(np.asarray(now["colors"], dtype=np.float32), values[cells], equal_nan=True)

    # a wider window holds more cells than the budget: the budget's worth, all inside it
    wide, inside_wide = _window(results, 0.6)
    _relayout(dash_duo, "stream-graph", {"xaxis.range": wide[:2], "yaxis.range": wide[2:]})
    expected = overview.window_view(results, results.umap, wide).cells
    assert len(expected) == budget < len(inside_wide)
    now = _wait_cells(dash_duo, "stream-graph", expected)
    cells = np.asarray(now["cells"], dtype=int)
    assert np.allclose(np.asarray(now["colors"], dtype=np.float32), values[cells], equal_nan=True)
    assert f"of the {len(inside_wide):,} cells in view" in now["notes"]

    # double-click (autorange): the overview again, still coloured by the gene
    _relayout(dash_duo, "stream-graph", {"xaxis.autorange": True, "yaxis.autorange": True})
    back = _wait_cells(dash_duo, "stream-graph", overview.overview(results).cells)
    assert None not in back["colors"] and "showing 8,000 of 30,000" in back["notes"]
    assert dash_duo.get_logs() == []


def test_uncertainty_maps_zoom_to_full_resolution(
    dash_duo, tmp_path, results, results_path, budget
):
    ds = _start(dash_duo, tmp_path, results_path)
    _viewport(dash_duo, 1280, 900)
    dash_duo.driver.get(f"{dash_duo.server_url}/uncertainty?ds={ds}")
    until(lambda: _rendered(dash_duo, "uncertainty-maps"), timeout=60)
    both = np.sort(np.tile(overview.overview(results).cells, 2))  # two panels, same cells
    first = _wait_cells(dash_duo, "uncertainty-maps", both)
    assert "showing 8,000 of 30,000 cells" in first["notes"]
    window, inside = _window(results, 0.05)
    _relayout(dash_duo, "uncertainty-maps", {"xaxis.range": window[:2], "yaxis.range": window[2:]})
    _wait_cells(dash_duo, "uncertainty-maps", np.sort(np.tile(inside, 2)))
    assert dash_duo.get_logs() == []


def test_gene_velocity_umap_zooms_to_full_resolution(
    dash_duo, tmp_path, results, results_path, budget
):
    gene = results.gene_names[2]
    ds = _start(dash_duo, tmp_path, results_path)
    _viewport(dash_duo, 1280, 900)
    dash_duo.driver.get(f"{dash_duo.server_url}/genes?ds={ds}&gene={gene}")
    until(lambda: _rendered(dash_duo, "gene-velocity-umap"), timeout=60)
    first = _wait_cells(dash_duo, "gene-velocity-umap", overview.overview(results).cells)
    assert "showing 8,000 of 30,000 cells" in first["notes"]
    window, inside = _window(results, 0.05)
    _relayout(
        dash_duo, "gene-velocity-umap", {"xaxis.range": window[:2], "yaxis.range": window[2:]}
    )
    zoomed = _wait_cells(dash_duo, "gene-velocity-umap", inside)
    velocity = results.gene_arrays(gene).velocity
    cells = np.asarray(zoomed["cells"], dtype=int)
    assert np.allclose(np.asarray(zoomed["colors"], dtype=np.float32), velocity[cells])
    assert f"all {len(inside):,} cells in view" in zoomed["notes"]
    assert dash_duo.get_logs() == []
