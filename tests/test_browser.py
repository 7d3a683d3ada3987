"""The dashboard in a real headless Chromium (dash[testing]'s `dash_duo`, Selenium).

Run: ``pytest -m browser tests/test_browser.py`` (Debian packages `chromium` and
`chromium-driver`; another Chrome via ``DASH_TEST_CHROMEPATH``). The `dash_duo` fixture here
replaces the plugin's so the browser is always headless, with or without ``--headless``.
Pages are checked on a fake results file; the fit tests (through the job queue) are in
test_browser_jobs.py and use the fixtures and helpers defined here.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import psutil
import pytest
from dash.testing.composite import DashComposite
from dash.testing.wait import until
from fake_results import write_fake_results

from dashboard.config import AppConfig
from dashboard.data.datasets import DatasetRegistry
from dashboard.data.results import load_results
from dashboard.web.app import create_app

CHROMIUM = os.environ.get("DASH_TEST_CHROMEPATH", "/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() or shutil.which("chromedriver") is None,
        reason="needs Chromium: apt-get install chromium chromium-driver",
    ),
]

#: conftest's results_path: contract-complete fake results (300 cells, 30 genes, 5 cell types).
FAKE_RESULTS = dict(n_cells=300, n_genes=30)
PAGE_FIGURES = {
    "/stream": "stream-graph",
    "/uncertainty": "uncertainty-maps",
    "/coherence": "coherence-cdf",
    "/permutation": "permutation-heatmap",
    "/genes": "phase-portrait",
}


@pytest.fixture
def dash_duo(request, dash_thread_server, tmp_path, monkeypatch) -> DashComposite:
    """dash[testing]'s `dash_duo` (threaded server + Selenium), always headless Chromium."""
    monkeypatch.setenv("DASH_TEST_CHROMEPATH", CHROMIUM)
    with DashComposite(
        server=dash_thread_server,
        browser="Chrome",
        headless=True,
        options=request.config.hook.pytest_setup_options(),
        download_path=str(tmp_path / "download"),
        percy_run=False,
        percy_finalize=False,
    ) as composite:
        yield composite


def _config(tmp_path: Path, **kwargs) -> AppConfig:
    defaults = {"cache_dir": tmp_path / "cache", "sample_path": tmp_path / "no_sample.h5ad"}
    return AppConfig(**{**defaults, **kwargs})


def _figure_points(duo, graph_id: str) -> int:
    """Number of x (or heatmap z) values over all rendered traces of dcc.Graph `graph_id`."""
    return duo.driver.execute_script(
        "const g = document.querySelector(arguments[0] + ' .js-plotly-plot');"
        "if (!g || !g._fullData) return 0;"
        "const size = (t) => (t.x && t.x.length) || (t.z && t.z.length) || 0;"
        "return g._fullData.reduce((n, t) => n + size(t), 0);",
        f"#{graph_id}",
    )


def _figure_title(duo, graph_id: str) -> str:
    return duo.driver.execute_script(
        "const g = document.querySelector(arguments[0] + ' .js-plotly-plot');"
        "return g && g.layout && g.layout.title ? String(g.layout.title.text || '') : '';",
        f"#{graph_id}",
    )


def _job_processes() -> list[psutil.Process]:
    """Python child processes of this test process (background jobs; chromedriver excluded);
    a child that ends while it is being looked at is not counted."""
    alive = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "python" in proc.name().lower():
                alive.append(proc)
        except psutil.NoSuchProcess:
            continue
    return alive


def _query(duo) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(duo.driver.current_url).query).items()}


def test_every_page_renders_its_figure_without_console_errors(dash_duo, tmp_path, results_path):
    app = create_app(_config(tmp_path, data=(results_path,)))
    dash_duo.start_server(app)
    ds = DatasetRegistry(app.server.config["VELODASH_CONFIG"]).default_id()
    dash_duo.wait_for_contains_text("#summary-stats", "300", timeout=20)
    for path, graph_id in PAGE_FIGURES.items():
        dash_duo.driver.get(f"{dash_duo.server_url}{path}?ds={ds}")
        until(lambda g=graph_id: _figure_points(dash_duo, g) > 0, timeout=30)
    assert dash_duo.get_logs() == []


def test_gene_table_click_and_deep_link(dash_duo, tmp_path, results_path):
    app = create_app(_config(tmp_path, data=(results_path,)))
    dash_duo.start_server(app)
    ds = DatasetRegistry(app.server.config["VELODASH_CONFIG"]).default_id()
    shared = load_results(results_path).gene_names[7]
    # A shared link opens the gene it names.
    dash_duo.driver.get(f"{dash_duo.server_url}/genes?ds={ds}&gene={shared}")
    dash_duo.wait_for_text_to_equal("#gene-title", shared, timeout=20)
    until(lambda: shared in _figure_title(dash_duo, "phase-portrait"), timeout=20)
    # Clicking another row selects that gene: title, portrait and URL follow.
    cells = dash_duo.find_elements('#gene-table td[data-dash-column="gene"]')
    target = next(c for c in cells if c.text != shared)
    gene = target.text
    target.click()
    dash_duo.wait_for_text_to_equal("#gene-title", gene, timeout=20)
    until(lambda: gene in _figure_title(dash_duo, "phase-portrait"), timeout=20)
    until(lambda: _query(dash_duo).get("gene") == gene, timeout=10)
    assert _query(dash_duo)["ds"] == ds
    # Reloading the URL restores the view.
    dash_duo.driver.refresh()
    dash_duo.wait_for_text_to_equal("#gene-title", gene, timeout=20)
    assert dash_duo.get_logs() == []


def test_stream_colour_by_gene_from_url(dash_duo, tmp_path, results_path):
    app = create_app(_config(tmp_path, data=(results_path,)))
    dash_duo.start_server(app)
    ds = DatasetRegistry(app.server.config["VELODASH_CONFIG"]).default_id()
    gene = load_results(results_path).gene_names[3]
    dash_duo.driver.get(f"{dash_duo.server_url}/stream?ds={ds}&color={gene}&mode=arrows")
    until(lambda: gene in _figure_title(dash_duo, "stream-graph"), timeout=30)
    dash_duo.wait_for_contains_text("#stream-gene-link", gene, timeout=10)
    assert _query(dash_duo) == {"ds": ds, "color": gene, "mode": "arrows"}
    assert dash_duo.get_logs() == []


def test_gene_search_keeps_every_keystroke(dash_duo, tmp_path, results_path):
    """Issue 15: typing a gene name at full speed dropped characters ("Gcg" became "Gg"), as
    each key went to the server and the box re-rendered. The whole name, typed in one go,
    then Enter, colours by that gene."""
    from selenium.webdriver.common.keys import Keys

    app = create_app(_config(tmp_path, data=(results_path,)))
    dash_duo.start_server(app)
    ds = DatasetRegistry(app.server.config["VELODASH_CONFIG"]).default_id()
    gene = load_results(results_path).gene_names[5]
    dash_duo.driver.get(f"{dash_duo.server_url}/stream?ds={ds}")
    until(lambda: _figure_title(dash_duo, "stream-graph") != "", timeout=30)
    # Record the body of every callback request from now on (the renderer uses fetch): the
    # shell's job poll may fire meanwhile, but no request may concern the gene box.
    dash_duo.driver.execute_script(
        "window.__callbacks = []; const send = window.fetch;"
        "window.fetch = (url, options) => {"
        " if (String(url).includes('_dash-update-component'))"
        "  window.__callbacks.push(String((options || {}).body));"
        " return send(url, options); };"
    )
    gene_box = "return window.__callbacks.filter((b) => b.includes('stream-gene')).length;"
    dash_duo.find_element("#stream-gene").click()  # opens the list and its search box
    box = dash_duo.find_element(".dash-dropdown-search")
    box.send_keys(gene)  # one call: no pause between the keys
    assert box.get_attribute("value") == gene
    time.sleep(0.5)  # a request per key would have gone out by now
    assert dash_duo.driver.execute_script(gene_box) == 0  # filtered in the browser
    options = dash_duo.driver.find_elements("css selector", ".dash-options-list-option-checkbox")
    genes = set(load_results(results_path).gene_names)  # the page's radio items share the class
    assert [o.get_attribute("value") for o in options if o.get_attribute("value") in genes] == [
        gene
    ]
    box.send_keys(Keys.ARROW_DOWN, Keys.ENTER)
    until(lambda: gene in _figure_title(dash_duo, "stream-graph"), timeout=30)
    assert dash_duo.driver.execute_script(gene_box) >= 1  # the recorder sees the pick
    until(lambda: _query(dash_duo).get("color") == gene, timeout=10)
    assert dash_duo.get_logs() == []


def test_upload_keeps_its_name_and_a_duplicate_says_what_it_matches(
    dash_duo, tmp_path, results_path
):
    """Issue 15: uploads were listed under their content hash, and an identical file under a
    new name switched silently while a second copy was stored."""
    app = create_app(_config(tmp_path, data=(results_path,)))
    dash_duo.start_server(app)
    dash_duo.wait_for_contains_text("#summary-stats", "300", timeout=20)
    first = DatasetRegistry(app.server.config["VELODASH_CONFIG"]).default_id()
    mine = tmp_path / "pancreas_600_lab.h5ad"
    shutil.copy(results_path, mine)
    twin = tmp_path / "another name.h5ad"
    other = write_fake_results(tmp_path / "other.h5ad", n_cells=60, n_genes=5, seed=4)
    shutil.copy(other, mine)
    shutil.copy(other, twin)

    def upload(path: Path) -> None:
        """Choose the file in the drop zone's picker (assets/upload.js streams it)."""
        dash_duo.driver.find_element("css selector", "#upload-file").send_keys(str(path))

    upload(mine)
    # the app opens the upload, listed under its name, never the hash, and says so (the
    # message lives in the shell, so the page's re-render for the new dataset keeps it)
    dash_duo.wait_for_contains_text("#dataset-list", "pancreas_600_lab.h5ad", timeout=20)
    dash_duo.wait_for_contains_text("#notice", "Uploaded pancreas_600_lab.h5ad.", timeout=20)
    until(lambda: _query(dash_duo).get("ds") not in (None, first), timeout=20)
    opened = _query(dash_duo)["ds"]
    uploads = sorted((tmp_path / "cache" / "uploads").iterdir())
    dash_duo.driver.get(f"{dash_duo.server_url}/?ds={first}")  # back to the first dataset
    dash_duo.wait_for_contains_text("#summary-stats", "300", timeout=20)
    upload(twin)
    # the identical file opens the existing dataset, says which, and stores nothing new
    until(lambda: _query(dash_duo).get("ds") == opened, timeout=20)
    dash_duo.wait_for_contains_text(
        "#notice",
        "'another name.h5ad' is identical to pancreas_600_lab.h5ad (already fitted): "
        "opened that instead.",
        timeout=20,
    )
    time.sleep(2)  # the notice outlives the page's re-render for the dataset it opened
    assert "is identical to" in dash_duo.find_element("#notice").text
    assert sorted((tmp_path / "cache" / "uploads").iterdir()) == uploads
    assert "another name" not in dash_duo.driver.execute_script(
        "return document.getElementById('dataset-list').innerText;"
    )
    assert dash_duo.get_logs() == []


def test_bad_upload_shows_error_and_app_keeps_working(dash_duo, tmp_path, results_path):
    app = create_app(_config(tmp_path, data=(results_path,)))
    dash_duo.start_server(app)
    dash_duo.wait_for_contains_text("#summary-stats", "300", timeout=20)
    bad = tmp_path / "corrupt.h5ad"
    bad.write_bytes(b"this is not an HDF5 file")
    dash_duo.driver.find_element("css selector", "#upload-file").send_keys(str(bad))
    dash_duo.wait_for_contains_text("#upload-error", "not an HDF5 file", timeout=20)
    dash_duo.find_element("#nav-genes").click()
    until(lambda: _figure_points(dash_duo, "phase-portrait") > 0, timeout=30)
