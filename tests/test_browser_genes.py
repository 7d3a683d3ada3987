"""The gene page in a real headless Chromium (issue 15, item 11): a linked gene opens on its table
page with its row highlighted; every cell type's legend entry is visible (no legend scrolls) at
1280 × 800 and 1920 × 1080; a header click sorts on the server; the column chooser is an app
button whose menu lies above the table; a name that was not fitted says why in place of the table.

Run: ``pytest -m browser tests/test_browser_genes.py`` (Debian ``chromium`` and
``chromium-driver``). Uses a fake results file with 8 cell types and a preprocessing record.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from dash.testing.wait import until
from selenium.webdriver.common.keys import Keys
from test_browser import CHROMIUM
from test_browser import dash_duo as dash_duo  # the headless dash_duo fixture
from test_browser_explore import _start, _viewport

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() or shutil.which("chromedriver") is None,
        reason="needs Chromium: apt-get install chromium chromium-driver",
    ),
]

N_GENES = 60
HIGHLIGHT = "rgb(230, 240, 255)"  # the selected row's background (#e6f0ff)


FAKE_RESULTS = dict(n_cells=300, n_genes=N_GENES, n_types=8, seed=11)


@pytest.fixture(scope="module")
def adata(adata):
    """The fake results (8 cell types, 60 genes) with a preprocessing record that removed "Sst"
    at the highly-variable-gene step."""
    adata.uns["velodash_preprocess"] = {
        "n_cells": adata.n_obs,
        "n_genes_input": 90,
        "n_genes_filtered": 75,
        "n_genes_hvg": 70,
        "n_genes_velocity": N_GENES,
        "dropped_genes": {
            "min_shared_counts": np.asarray([f"Low{i}" for i in range(15)], dtype=object),
            "highly_variable": np.asarray(["Sst", *(f"Flat{i}" for i in range(4))], dtype=object),
            "velocity_genes": np.asarray([f"Noisy{i}" for i in range(10)], dtype=object),
        },
    }
    return adata


def _order(adata: ad.AnnData, column: str, descending: bool) -> list[str]:
    """Oracle: gene names by a var column of the results."""
    values = adata.var[column].to_numpy(dtype=float)
    return list(adata.var_names[np.argsort(-values if descending else values, kind="stable")])


def _visible_genes(duo) -> list[str]:
    """Gene names in the table's rendered rows (the frozen column repeats them: once each)."""
    cells = duo.find_elements('#gene-table td[data-dash-column="gene"]')
    return list(dict.fromkeys(c.text for c in cells if c.text))


def _page_shown(duo) -> str:
    """The page number in the table's pager (an input whose placeholder shows the page)."""
    pager = duo.find_element("#gene-table .current-page")
    return pager.get_attribute("value") or pager.get_attribute("placeholder")


def _has_colour_bar(duo) -> bool:
    return duo.driver.execute_script(
        "return Boolean(document.querySelector('#phase-portrait .colorbar'));"
    )


def _row_background(duo, gene: str) -> str:
    return duo.driver.execute_script(
        "const cell = [...document.querySelectorAll('#gene-table td[data-dash-column=gene]')]"
        "  .find((c) => c.textContent === arguments[0]);"
        "return cell ? getComputedStyle(cell).backgroundColor : null;",
        gene,
    )


def _retype(box, text: str) -> None:
    """Replace the text of input `box` with `text` and press Enter (one key call per step:
    a modifier stays held until its call ends)."""
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(text, Keys.ENTER)


# Per graph with a legend: the boxes (viewport px) of the graph div, the legend's background,
# any legend scrollbar, and each legend entry's text.
LEGENDS = """
const out = {};
for (const id of arguments[0]) {
  const div = document.getElementById(id);
  const gd = div && div.querySelector('.js-plotly-plot');
  const legend = gd && gd.querySelector('.legend');
  if (!legend) { out[id] = null; continue; }
  const box = (e) => { const r = e.getBoundingClientRect();
                       return [r.left, r.top, r.right, r.bottom]; };
  out[id] = {
    graph: box(div),
    legend: box(legend.querySelector('.bg')),
    scrollbar: [...legend.querySelectorAll('.scrollbar')]
      .map((e) => e.getBoundingClientRect().height).filter((h) => h > 0).length,
    entries: Object.fromEntries([...legend.querySelectorAll('.legendtext')]
      .map((t) => [t.textContent, box(t)])),
  };
}
return out;
"""


def _inside(inner, outer, tol: float = 1.0) -> bool:
    return (
        inner[0] >= outer[0] - tol
        and inner[1] >= outer[1] - tol
        and inner[2] <= outer[2] + tol
        and inner[3] <= outer[3] + tol
    )


def _legend_problems(duo, cell_types: list[str], timeout: float) -> list[str]:
    """What hides a cell type's legend entry in the graphs with a cell-type legend, once the
    figures have settled (polled up to `timeout` s; [] when every entry shows)."""
    deadline = time.monotonic() + timeout
    while (problems := _measure_legends(duo, cell_types)) and time.monotonic() < deadline:
        time.sleep(0.3)
    return problems


def _measure_legends(duo, cell_types: list[str]) -> list[str]:
    problems = []
    graphs = ["phase-portrait", "gene-baseline"]
    for graph, found in duo.driver.execute_script(LEGENDS, graphs).items():
        if found is None:
            problems.append(f"{graph}: no legend")
            continue
        if not _inside(found["legend"], found["graph"]):
            problems.append(f"{graph}: the legend reaches outside the graph")
        if found["scrollbar"]:
            problems.append(f"{graph}: the legend scrolls")
        for name in cell_types:
            box = found["entries"].get(name)
            if box is None or not _inside(box, found["legend"]):
                problems.append(f"{graph}: legend entry {name!r} is not visible")
    return problems


#: The gene's figures that do not depend on the portrait's colouring.
OTHER_FIGURES = ["gene-over-time", "gene-velocity-umap", "gene-permutation", "gene-baseline"]
KEEP_DRAWN = f"""
for (const id of {OTHER_FIGURES!r}) {{
  const gd = document.querySelector('#' + id + ' .js-plotly-plot');
  gd.__drawn = gd.data;
}}
"""
#: The figures among OTHER_FIGURES still showing the data of KEEP_DRAWN's time (not redrawn).
STILL_DRAWN = f"""
return {OTHER_FIGURES!r}.filter((id) => {{
  const gd = document.querySelector('#' + id + ' .js-plotly-plot');
  return gd.__drawn === gd.data;
}});
"""


def test_linked_gene_lands_on_its_page_and_every_legend_entry_shows(
    dash_duo, tmp_path, adata, results_path
):
    cell_types = list(adata.uns["velodash"]["cell_types"])
    assert len(cell_types) == 8
    ds = _start(dash_duo, tmp_path, results_path)
    gene = _order(adata, "permutation_score", descending=True)[37]  # page 3 of 4
    for width, height in ((1280, 800), (1920, 1080)):
        _viewport(dash_duo, width, height)
        dash_duo.driver.get(f"{dash_duo.server_url}/genes?ds={ds}&gene={gene}")
        dash_duo.wait_for_text_to_equal("#gene-title", gene, timeout=20)
        until(lambda: gene in _visible_genes(dash_duo), timeout=10)
        assert _page_shown(dash_duo) == "3"
        assert _row_background(dash_duo, gene) == HIGHLIGHT
        assert len(_visible_genes(dash_duo)) == 15
        for colour, colour_bar in (("latent time", True), ("cell type", False)):
            dash_duo.driver.execute_script(KEEP_DRAWN)
            dash_duo.driver.find_element("xpath", f"//label[normalize-space()='{colour}']").click()
            # measure the new figure: latent time has a colour bar, cell type none
            until(lambda c=colour_bar: _has_colour_bar(dash_duo) == c, timeout=20)
            in_url = colour != "cell type"
            until(lambda u=in_url: ("latent_time" in dash_duo.driver.current_url) == u, timeout=10)
            # the colouring redrew the portrait alone: the other figures keep their data
            assert dash_duo.driver.execute_script(STILL_DRAWN) == OTHER_FIGURES
            problems = _legend_problems(dash_duo, cell_types, timeout=20)
            assert problems == [], f"{width}x{height}, coloured by {colour}"
    assert dash_duo.get_logs() == []


def test_header_click_sorts_on_the_server_and_columns_button_opens_above_the_table(
    dash_duo, tmp_path, adata, results_path
):
    ds = _start(dash_duo, tmp_path, results_path)
    _viewport(dash_duo, 1280, 800)
    dash_duo.driver.get(f"{dash_duo.server_url}/genes?ds={ds}")
    by_score = _order(adata, "permutation_score", descending=True)
    until(lambda: _visible_genes(dash_duo) == by_score[:15], timeout=20)
    dash_duo.find_element('#gene-table th[data-dash-column="fit_mse"] .column-header--sort').click()
    by_mse = _order(adata, "fit_mse", descending=False)
    until(lambda: _visible_genes(dash_duo) == by_mse[:15], timeout=20)
    # "Toggle Columns" looks like the app's outline buttons
    button = dash_duo.find_element("#gene-table .show-hide")
    style = dash_duo.driver.execute_script(
        "const s = getComputedStyle(arguments[0]);"
        "return [s.backgroundColor, s.color, s.borderTopColor, s.borderTopLeftRadius];",
        button,
    )
    assert style == ["rgb(255, 255, 255)", "rgb(47, 111, 222)", "rgb(47, 111, 222)", "6px"]
    button.click()
    # its menu is on top of the table's frozen gene column: a click there reaches the menu
    on_top = dash_duo.driver.execute_script(
        "const label = [...document.querySelectorAll('#gene-table .show-hide-menu-item label')]"
        "  .find((l) => l.textContent === 'alpha');"
        "const r = label.getBoundingClientRect();"
        "const hit = document.elementFromPoint(r.left + 3, (r.top + r.bottom) / 2);"
        "return Boolean(hit && hit.closest('.show-hide-menu'));"
    )
    assert on_top
    dash_duo.driver.find_element(
        "xpath", "//div[contains(@class,'show-hide-menu-item')][label[text()='alpha']]/input"
    ).click()
    dash_duo.wait_for_element('#gene-table th[data-dash-column="alpha"]', timeout=10)
    assert dash_duo.get_logs() == []


def test_search_says_why_a_gene_was_not_fitted_and_clearing_restores_the_table(
    dash_duo, tmp_path, results_path
):
    ds = _start(dash_duo, tmp_path, results_path)
    dash_duo.driver.get(f"{dash_duo.server_url}/genes?ds={ds}")
    dash_duo.wait_for_element("#gene-table td", timeout=20)
    box = dash_duo.find_element("#gene-search")
    _retype(box, "Sst")
    dash_duo.wait_for_contains_text(
        "#gene-search-message",
        "Sst is not among the fitted genes: it was filtered out at 'highly variable genes' "
        "(70 of 75 genes kept).",
        timeout=15,
    )
    assert not dash_duo.find_element("#gene-table-box").is_displayed()
    _retype(box, "Gene0O7")
    dash_duo.wait_for_contains_text(
        "#gene-search-message", "No gene named 'Gene0O7' in this dataset.", timeout=15
    )
    assert "Did you mean Gene007" in dash_duo.find_element("#gene-search-message").text
    _retype(box, "")
    until(lambda: dash_duo.find_element("#gene-table-box").is_displayed(), timeout=15)
    until(lambda: len(_visible_genes(dash_duo)) == 15, timeout=15)
    assert dash_duo.find_element("#gene-search-message").text == ""
    assert dash_duo.get_logs() == []
