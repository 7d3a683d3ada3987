"""The velocity page in a real headless Chromium (issue 15, item 10): the UMAP fills the plot's
width at 1280 × 800 and 1920 × 1080 instead of a third of it; picking a gene names it in
"Colour by" and swaps the cell-type legend for the gene's colour bar; picking a column again
clears the gene.

Run: ``pytest -m browser tests/test_browser_stream.py`` (Debian ``chromium`` and
``chromium-driver``).
"""

from __future__ import annotations

import time

import pytest
from dash.testing.wait import until
from selenium.webdriver.common.keys import Keys
from test_browser import dash_duo as dash_duo  # the headless dash_duo fixture
from test_browser import pytestmark as browser_marks
from test_browser_explore import _query, _rendered, _start, _viewport

pytestmark = browser_marks

#: Width / height of the test embedding: about the pancreas UMAP's (1.31).
ASPECT = 1.3

# The plot area (px) and the pixel extent of the cell points (traces with customdata: the
# velocity and legend-key traces have none) on the velocity map; its legend entries.
MEASURE = """
const gd = document.querySelector('#stream-graph .js-plotly-plot');
const fl = gd._fullLayout, xa = fl.xaxis, ya = fl.yaxis;
let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
for (const t of gd._fullData) {
  if (!t.customdata || t.mode !== 'markers') continue;
  for (let i = 0; i < t.x.length; i++) {
    const px = xa.l2p(t.x[i]), py = ya.l2p(t.y[i]);
    x0 = Math.min(x0, px); x1 = Math.max(x1, px); y0 = Math.min(y0, py); y1 = Math.max(y1, py);
  }
}
return {width: fl._size.w, height: fl._size.h, x: [x0, x1], y: [y0, y1],
        legend: [...gd.querySelectorAll('.legend .traces .legendtext')].map((e) => e.textContent),
        colorbars: gd.querySelectorAll('.colorbar').length};
"""


FAKE_RESULTS = dict(n_cells=500, n_genes=30, seed=11)


@pytest.fixture(scope="module")
def adata(adata):
    """The fake results with their UMAP (and projected velocity) turned on its side and scaled
    to ``ASPECT``: a wide embedding like the pancreas one."""
    for key in ("X_umap", "velocity_umap"):
        adata.obsm[key] = adata.obsm[key][:, ::-1].copy()
    span = adata.obsm["X_umap"].max(0) - adata.obsm["X_umap"].min(0)
    squeeze = ASPECT * span[1] / span[0]
    for key in ("X_umap", "velocity_umap"):
        adata.obsm[key][:, 0] *= squeeze
    return adata


def _measure(duo) -> dict:
    return duo.driver.execute_script(MEASURE)


def _pick(duo, dropdown: str, text: str) -> None:
    """Open ``dropdown``, type ``text`` into its search box and take the first match."""
    duo.find_element(dropdown).click()
    box = duo.find_element(".dash-dropdown-search")
    box.send_keys(text)
    box.send_keys(Keys.ARROW_DOWN, Keys.ENTER)


@pytest.mark.parametrize("size", [(1280, 800), (1920, 1080)])
def test_the_umap_fills_the_plot_and_a_gene_replaces_the_legend(
    dash_duo, tmp_path, adata, results_path, size
):
    cell_types = list(adata.obs["clusters"].cat.categories)
    gene = "Gene007"
    ds = _start(dash_duo, tmp_path, results_path)
    _viewport(dash_duo, *size)
    dash_duo.driver.get(f"{dash_duo.server_url}/stream?ds={ds}")
    until(lambda: _rendered(dash_duo, "stream-graph"), timeout=30)
    time.sleep(0.5)  # the graph settles at its final size
    shown = _measure(dash_duo)
    x_fill = (shown["x"][1] - shown["x"][0]) / shown["width"]
    y_fill = (shown["y"][1] - shown["y"][0]) / shown["height"]
    # The cells span most of the width (a third before) and the plot is as tall as the window
    # allows; the axes stay equal, so one direction binds: it is filled.
    assert x_fill > 0.6, shown
    assert max(x_fill, y_fill) > 0.85, shown
    assert shown["height"] > 0.6 * size[1], shown
    assert shown["legend"] == ["velocity streams", *cell_types]
    assert "cell type (clusters)" in dash_duo.find_element("#stream-color").text
    # A gene: "Colour by" names it, the cell-type legend goes, the colour bar comes.
    _pick(dash_duo, "#stream-gene", gene)
    dash_duo.wait_for_contains_text("#stream-color", f"gene: {gene}", timeout=30)
    until(lambda: _measure(dash_duo)["legend"] == ["velocity streams"], timeout=20)
    assert _measure(dash_duo)["colorbars"] == 1
    until(lambda: _query(dash_duo).get("color") == gene, timeout=10)
    # A column picked in "Colour by" clears the gene.
    _pick(dash_duo, "#stream-color", "latent")
    dash_duo.wait_for_contains_text("#stream-color", "latent time", timeout=30)
    until(lambda: gene not in dash_duo.find_element("#stream-gene").text, timeout=20)
    until(lambda: _query(dash_duo).get("color") == "latent_time", timeout=10)
    assert dash_duo.find_elements("#stream-gene-link p") == []
    assert dash_duo.get_logs() == []
