"""The exploring views in a real headless Chromium: a lasso drawn with the mouse finds the planted
driver gene, selections are saved, shared and downloaded; the portrait grid, the heatmap and the
veloVI/scVelo toggle work; figures export as SVG; and no legend overlaps an axis title, tick
labels, a colour bar or a title on any page, at 1280 × 800 and 1920 × 1080.

Run: ``pytest -m browser tests/test_browser_explore.py`` (Debian ``chromium`` and
``chromium-driver``). Uses a fake results file whose lineage "Alpha" has a known driver gene.
"""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from dash.testing.wait import until
from selenium.webdriver.common.action_chains import ActionChains
from test_browser import CHROMIUM
from test_browser import dash_duo as dash_duo  # the headless dash_duo fixture

from dashboard.config import AppConfig
from dashboard.data.datasets import DatasetRegistry
from dashboard.web.app import create_app

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() or shutil.which("chromedriver") is None,
        reason="needs Chromium: apt-get install chromium chromium-driver",
    ),
]

DRIVER = "DriverA"
#: Fake results (600 cells, 40 genes) whose "Alpha" lineage has the driver gene DRIVER.
FAKE_RESULTS = dict(n_cells=600, n_genes=40, seed=7, planted_driver=DRIVER)
#: page -> a graph that shows it has rendered (shared by the browser tests that walk the pages)
PAGE_GRAPHS = {
    "/": "training-curve",
    "/stream": "stream-graph",
    "/uncertainty": "uncertainty-maps",
    "/genes": "phase-portrait",
    "/coherence": "coherence-cdf",
    "/permutation": "permutation-heatmap",
    "/portraits": "portraits-grid",
    "/heatmap": "heatmap-graph",
}
#: the pages measured here, the velocity page with both sources (its agreement map too)
PAGES = {
    **{page: graph for page, graph in PAGE_GRAPHS.items() if page != "/stream"},
    "/stream?source=both&fade=1": "stream-agreement",
}

# Every rendered plot on the page: boxes (viewport px) of its legend, axis titles, tick labels,
# colour bars and titles, and of the figure itself.
MEASURE = """
const out = [];
for (const gd of document.querySelectorAll('.js-plotly-plot')) {
  if (!gd._fullLayout) continue;
  const boxes = (sel) => Array.from(gd.querySelectorAll(sel))
    .map((e) => e.getBoundingClientRect())
    .filter((r) => r.width > 0 && r.height > 0)
    .map((r) => [r.left, r.top, r.right, r.bottom]);
  const fig = gd.getBoundingClientRect();
  out.push({
    id: gd.parentElement.id || gd.id,
    figure: [fig.left, fig.top, fig.right, fig.bottom],
    legend: boxes('.legend .bg'),
    axis_title: boxes('.g-xtitle text, .g-ytitle text, [class*="g-x"][class$="title"] text,'
      + ' [class*="g-y"][class$="title"] text'),
    tick: boxes('.xtick text, .ytick text, [class*="xtick"] text, [class*="ytick"] text'),
    colorbar: boxes('.colorbar .cbbg'),
    title: boxes('.g-gtitle text, .annotation-text'),
  });
}
return out;
"""


def _intersect(a, b, tol: float = 1.0) -> bool:
    return not (
        a[2] <= b[0] + tol or b[2] <= a[0] + tol or a[3] <= b[1] + tol or b[3] <= a[1] + tol
    )


def layout_problems(plots: list[dict]) -> list[str]:
    """What overlaps or is cut off in measured plots (empty when the layout is clean)."""
    problems = []
    for plot in plots:
        for legend in plot["legend"]:
            for kind in ("axis_title", "tick", "colorbar", "title"):
                for box in plot[kind]:
                    if _intersect(legend, box):
                        problems.append(f"{plot['id']}: legend overlaps a {kind}")
        for colorbar in plot["colorbar"]:
            for box in plot["axis_title"] + plot["title"]:
                if _intersect(colorbar, box):
                    problems.append(f"{plot['id']}: colour bar overlaps a title")
        fig = plot["figure"]
        for box in plot["tick"] + plot["axis_title"]:
            if box[0] < fig[0] - 1 or box[2] > fig[2] + 1:
                problems.append(f"{plot['id']}: a label is cut off at the figure's edge")
    return sorted(set(problems))


def _start(duo, tmp_path: Path, results: Path) -> str:
    config = AppConfig(
        data=(results,), cache_dir=tmp_path / "cache", sample_path=tmp_path / "none.h5ad"
    )
    duo.start_server(create_app(config))
    return DatasetRegistry(config).default_id()


def _viewport(duo, width: int, height: int) -> None:
    duo.driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


def _rendered(duo, graph_id: str) -> bool:
    return duo.driver.execute_script(
        "const g = document.querySelector(arguments[0] + ' .js-plotly-plot');"
        "return Boolean(g && g._fullData && g._fullData.length);",
        f"#{graph_id}",
    )


def _query(duo) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(duo.driver.current_url).query).items()}


def _downloaded(folder: Path, suffix: str, timeout: float = 20) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = [p for p in folder.glob(f"*{suffix}") if p.stat().st_size > 0]
        if done:
            return done[0]
        time.sleep(0.2)
    raise AssertionError(f"no {suffix} file was downloaded to {folder}")


def _draw_lasso(duo, graph_id: str, points: np.ndarray) -> None:
    """Pick plotly's lasso tool and drag the mouse through ``points`` (data coordinates)."""
    duo.find_element(f'#{graph_id} .modebar-btn[data-val="lasso"]').click()
    # The whole plot area in view: the mouse cannot draw outside the window (the velocity
    # map is as tall as the window, below the controls).
    duo.driver.execute_script(
        "document.querySelector(arguments[0] + ' .nsewdrag').scrollIntoView({block: 'center'})",
        f"#{graph_id}",
    )
    pixels = duo.driver.execute_script(
        "const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');"
        "const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;"
        "const r = gd.querySelector('.nsewdrag').getBoundingClientRect();"
        "const cx = r.left + r.width / 2, cy = r.top + r.height / 2;"
        "return arguments[1].map(([x, y]) => [r.left + xa.l2p(x) - cx, r.top + ya.l2p(y) - cy]);",
        f"#{graph_id}",
        points.tolist(),
    )
    area = duo.find_element(f"#{graph_id} .nsewdrag")
    # From the plot area's centre (the meaning of element offsets changed across Selenium 4
    # versions; plain relative moves did not).
    chain = ActionChains(duo.driver).move_to_element(area)
    chain.move_by_offset(*pixels[0]).click_and_hold()
    previous = pixels[0]
    for x, y in [*pixels[1:], pixels[0]]:
        chain.move_by_offset(x - previous[0], y - previous[1])
        previous = [x, y]
    chain.release().perform()


def test_lasso_finds_the_planted_driver_and_the_selection_is_saved_shared_and_downloaded(
    dash_duo, tmp_path, adata, results_path
):
    ds = _start(dash_duo, tmp_path, results_path)
    _viewport(dash_duo, 1280, 800)
    dash_duo.driver.get(f"{dash_duo.server_url}/stream?ds={ds}&mode=none")
    until(lambda: _rendered(dash_duo, "stream-graph"), timeout=30)
    # A polygon around the Alpha lineage (its cells' bounding box, padded), in data units.
    alpha = adata.obs["clusters"].astype(str).str.startswith("Alpha").to_numpy()
    xy = adata.obsm["X_umap"][alpha]
    lo, hi = xy.min(0) - 0.3, xy.max(0) + 0.3
    polygon = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
    steps = np.linspace(0, 1, 6)[:-1, None]
    corners = zip(polygon, np.roll(polygon, -1, 0), strict=True)
    path = np.concatenate([a + steps * (b - a) for a, b in corners])
    _draw_lasso(dash_duo, "stream-graph", path)
    dash_duo.wait_for_contains_text("#stream-sel-body", "cells selected", timeout=30)
    first = dash_duo.find_element("#stream-sel-body table.drivers tbody tr td a")
    assert first.text == DRIVER
    assert first.get_attribute("href").endswith(f"/genes?ds={ds}&gene={DRIVER}")
    types = dash_duo.find_element("#stream-sel-body table.simple").text
    for name in ("Alpha 1", "Alpha 2"):  # every cell of the lineage is inside the box
        assert next(line for line in types.splitlines() if line.startswith(name)).endswith("100%")
    # Cell ids as CSV: the cells inside the lasso (server-side resolution of the polygon).
    dash_duo.find_element("#stream-sel-cells-csv").click()
    cells_csv = _downloaded(Path(dash_duo.download_path), "_cells.csv")
    with cells_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    umap = adata.obsm["X_umap"]

    def in_box(pad: float) -> set[str]:
        inside = (umap >= lo - pad).all(1) & (umap <= hi + pad).all(1)
        return set(adata.obs_names[inside])

    got = {r["cell_id"] for r in rows}
    # the drawn polygon is the box up to the mouse's pixel rounding
    assert in_box(-0.05) <= got <= in_box(0.05)
    # Save it under a name: the URL gets its id; the link reopens panel and colouring.
    dash_duo.find_element("#stream-sel-name").send_keys("alpha lineage")
    dash_duo.find_element("#stream-sel-save").click()
    dash_duo.wait_for_contains_text("#stream-sel-status", "Saved", timeout=20)
    until(lambda: "sel" in _query(dash_duo), timeout=10)
    sel = _query(dash_duo)["sel"]
    # The message gives the full link (with a copy button); the address bar (what "Copy link"
    # copies) and that link both open the selection highlighted, for a colleague too.
    shared = dash_duo.find_element("#stream-sel-status .sel-link").text
    assert shared == f"{dash_duo.server_url}/stream?ds={ds}&sel={sel}"
    assert dash_duo.driver.find_elements("css selector", "#stream-sel-status .sel-copy")
    for link in (dash_duo.driver.current_url, shared):
        dash_duo.driver.get(link)
        dash_duo.wait_for_contains_text("#stream-sel-body", "alpha lineage", timeout=30)
        until(lambda: "alpha lineage" in _title(dash_duo, "stream-graph"), timeout=20)
    # A tampered link explains itself instead of failing.
    dash_duo.driver.get(f"{dash_duo.server_url}/uncertainty?ds={ds}&sel=../../etc")
    dash_duo.wait_for_contains_text("#uncertainty-sel-message", "not a selection id", timeout=30)
    assert dash_duo.get_logs() == []


def _title(duo, graph_id: str) -> str:
    return duo.driver.execute_script(
        "const g = document.querySelector(arguments[0] + ' .js-plotly-plot');"
        "return g && g.layout && g.layout.title ? String(g.layout.title.text || '') : '';",
        f"#{graph_id}",
    )


def _n_panels(duo, graph_id: str) -> int:
    return duo.driver.execute_script(
        "const g = document.querySelector(arguments[0] + ' .js-plotly-plot');"
        "return g ? Object.keys(g._fullLayout).filter((k) => /^xaxis\\d*$/.test(k)).length : 0;",
        f"#{graph_id}",
    )


def test_portraits_heatmap_baseline_toggle_and_svg_export(dash_duo, tmp_path, results_path):
    ds = _start(dash_duo, tmp_path, results_path)
    _viewport(dash_duo, 1280, 800)
    # Portrait grid: 16 panels by default; a typed list (with a typo) shows those genes.
    dash_duo.driver.get(f"{dash_duo.server_url}/portraits?ds={ds}")
    until(lambda: _n_panels(dash_duo, "portraits-grid") == 16, timeout=30)
    dash_duo.find_element("#portraits-rank input[value='list']").click()
    box = dash_duo.find_element("#portraits-genes")
    box.clear()
    box.send_keys(f"{DRIVER}, gene001, NoSuchGene")
    dash_duo.find_element("#portraits-show").click()
    dash_duo.wait_for_contains_text("#portraits-message", "NoSuchGene", timeout=20)
    until(lambda: _n_panels(dash_duo, "portraits-grid") == 2, timeout=20)
    until(lambda: _query(dash_duo).get("genes") == f"{DRIVER},Gene001", timeout=10)
    # Heatmap: 30 rows, the cell-type bar on top.
    dash_duo.driver.get(f"{dash_duo.server_url}/heatmap?ds={ds}&n=12")
    until(lambda: _rendered(dash_duo, "heatmap-graph"), timeout=30)
    rows = dash_duo.driver.execute_script(
        "const g = document.querySelector('#heatmap-graph .js-plotly-plot');"
        "return [g._fullData[0].y.length, g._fullData[1].y.length];"
    )
    assert rows == [1, 12]
    # Velocity page: the scVelo baseline, then both, with the agreement map.
    dash_duo.driver.get(f"{dash_duo.server_url}/stream?ds={ds}")
    until(lambda: _rendered(dash_duo, "stream-graph"), timeout=30)
    dash_duo.find_element("#stream-source input[value='both']").click()
    dash_duo.wait_for_style_to_equal("#stream-agreement-card", "display", "block", timeout=30)
    until(lambda: _rendered(dash_duo, "stream-agreement"), timeout=60)
    groups = dash_duo.driver.execute_script(
        "const g = document.querySelector('#stream-graph .js-plotly-plot');"
        "return [...new Set(g._fullData.map((t) => t.legendgroup))];"
    )
    assert {"velocity", "velocity-scvelo"} <= set(groups)
    until(lambda: _query(dash_duo).get("source") == "both", timeout=10)
    # Export: the modebar's SVG button saves <dataset>_<view>.svg (here: a figure that was in
    # the page's first layout), next to the PNG camera at 3x.
    dash_duo.driver.get(f"{dash_duo.server_url}/uncertainty?ds={ds}")
    until(lambda: _rendered(dash_duo, "uncertainty-maps"), timeout=30)
    config = dash_duo.driver.execute_script(
        "return document.querySelector('#uncertainty-maps .js-plotly-plot')"
        "._context.toImageButtonOptions;"
    )
    name = f"{results_path.stem}_uncertainty"  # named after the dataset file and the view
    assert config == {"format": "png", "scale": 3, "filename": name}
    dash_duo.find_element(
        '#uncertainty-maps .modebar-btn[data-title="Download plot as SVG"]'
    ).click()
    svg = _downloaded(Path(dash_duo.download_path), ".svg")
    assert svg.name == f"{name}.svg" and svg.read_text().startswith("<svg")
    assert dash_duo.get_logs() == []


@pytest.mark.parametrize("size", [(1280, 800), (1920, 1080)])
def test_no_legend_overlaps_a_title_or_label_on_any_page(dash_duo, tmp_path, results_path, size):
    ds = _start(dash_duo, tmp_path, results_path)
    _viewport(dash_duo, *size)
    problems, measured = {}, []
    for page, graph_id in PAGES.items():
        sep = "&" if "?" in page else "?"
        dash_duo.driver.get(f"{dash_duo.server_url}{page}{sep}ds={ds}")
        until(lambda g=graph_id: _rendered(dash_duo, g), timeout=60)
        time.sleep(0.5)  # the page's other figures
        plots = dash_duo.driver.execute_script(MEASURE)
        measured += plots
        if found := layout_problems(plots):
            problems[page] = found
    assert problems == {}
    # The check measured something: legends, axis titles and colour bars were found.
    counts = {k: sum(len(p[k]) for p in measured) for k in ("legend", "axis_title", "colorbar")}
    assert len(measured) >= 15 and min(counts.values()) >= 5, counts
    assert dash_duo.get_logs() == []


def test_layout_check_catches_overlaps():
    plot = {
        "id": "p",
        "figure": [0, 0, 500, 400],
        "legend": [[50, 350, 300, 390]],
        "axis_title": [[200, 360, 260, 380]],
        "tick": [[-5, 100, 20, 110]],
        "colorbar": [],
        "title": [],
    }
    assert layout_problems([plot]) == [
        "p: a label is cut off at the figure's edge",
        "p: legend overlaps a axis_title",
    ]
