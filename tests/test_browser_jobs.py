# ruff: noqa: F811 - pytest fixtures imported from test_browser are used as arguments
"""The shared job queue, sign-in and sharing in a real headless Chromium.

Fits run the real pipeline on a tiny simulated dataset through the local queue (a
`LocalWorker` in the test process, each fit in its own fresh interpreter), as `velodash run`
does. Also: "Copy link", HTML in labels shown as text, and a viewer's view of a signed-in app.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from dash.testing.wait import until
from fake_results import QUICK_FIT, make_fake_results, write_fake_results
from test_browser import (  # noqa: F401 - fixtures
    CHROMIUM,
    _config,
    _figure_points,
    _job_processes,
    dash_duo,
    pytestmark,
)

from dashboard.data.datasets import DatasetRegistry
from dashboard.hosting.users import add_user
from dashboard.web.app import create_app, start_local_queue


@pytest.fixture
def local_app(tmp_path):
    """Build an app for a config and run its local queue in this process; stops it after."""
    workers = []

    def build(config):
        app = create_app(config)
        workers.append(start_local_queue(app))
        return app

    yield build
    for worker in workers:
        worker.stop()


def _text(duo, selector: str) -> str:
    found = duo.driver.find_elements("css selector", selector)
    return found[0].text if found else ""


def test_cancel_stops_a_running_fit(dash_duo, tmp_path, tiny_counts, local_app):
    config = _config(tmp_path, data=(tiny_counts,), fit_overrides={**QUICK_FIT, "max_epochs": 5000})
    dash_duo.start_server(local_app(config))
    dash_duo.wait_for_contains_text("#home-summary", "has not been fitted", timeout=20)
    dash_duo.find_element("#fit-btn").click()
    dash_duo.wait_for_style_to_equal("#job-bar", "display", "flex", timeout=20)
    until(lambda: dash_duo.find_element("#fit-btn").get_attribute("disabled"), timeout=10)
    # While it is fitting, the summary says so instead of "not fitted yet".
    dash_duo.wait_for_contains_text("#home-summary", "Fitting", timeout=60)
    dash_duo.find_element("#cancel-fit").click()
    dash_duo.wait_for_contains_text("#job-cancelled", "cancelled by local", timeout=20)
    dash_duo.wait_for_style_to_equal("#job-bar", "display", "none", timeout=20)
    until(lambda: not dash_duo.find_element("#fit-btn").get_attribute("disabled"), timeout=10)
    until(lambda: not _job_processes(), timeout=15)  # the fit's interpreter was stopped
    assert not list((config.cache_dir / "results").glob("*.h5ad"))
    assert not list((config.cache_dir / "results").glob(".*.tmp"))
    assert not list((config.cache_dir / "results").glob("*.stages"))  # nothing landed is kept


@pytest.mark.slow
def test_first_launch_fits_the_sample_and_every_page_follows_it(
    dash_duo, tmp_path, tiny_counts, local_app
):
    # No DATA: the (tiny) sample is queued at start-up and fitted with no browser involved.
    fit = {**QUICK_FIT, "max_epochs": 300, "early_stopping": False}  # long enough to watch
    config = _config(tmp_path, sample_path=tiny_counts, fit_overrides=fit)
    dash_duo.start_server(local_app(config))
    driver = dash_duo.driver
    home = driver.current_window_handle
    seen, widths, shown = [], [], []
    snapshot = (  # one consistent reading of the bar
        "const bar = document.getElementById('job-bar');"
        "return [getComputedStyle(bar).display, document.getElementById('job-message').innerText,"
        " document.getElementById('job-progress-fill').style.width,"
        " document.getElementById('job-alert').innerText];"
    )

    def sample() -> str:
        """Record the bar as the home page shows it; returns the alert text."""
        display, message, width, alert = driver.execute_script(snapshot)
        seen.append(message)
        shown.append(display)
        if display == "flex" and width.endswith("%"):
            widths.append(float(width[:-1]))
        return alert

    # Generous: on a fresh virtualenv the fit's interpreter also compiles numba on first use.
    until(lambda: sample() is not None and "epoch" in seen[-1], timeout=420, poll=0.2)
    # A second visitor opening another page of the sample sees the same live job instead of
    # "not fitted yet"; no process is started for them.
    processes = len(_job_processes())
    driver.switch_to.new_window("tab")
    driver.get(f"{dash_duo.server_url}/stream?ds=sample")
    dash_duo.wait_for_contains_text(".job-pending", "Fitting", timeout=20)
    first = _text(dash_duo, ".job-pending")
    assert "has not been fitted" not in driver.find_element("css selector", "main").text
    assert len(_job_processes()) == processes

    def live_or_opened() -> bool:
        text = _text(dash_duo, ".job-pending")
        return bool(text and text != first) or _figure_points(dash_duo, "stream-graph") > 0

    until(live_or_opened, timeout=60)  # the notice follows the fit (or the fit is done)
    stream = driver.current_window_handle

    driver.switch_to.window(home)
    until(lambda: "Fit finished" in sample(), timeout=420, poll=0.2)
    assert any("epoch" in text and "validation ELBO" in text for text in seen), seen
    # The bar only moves forward and never blinks out while the fit runs.
    assert widths == sorted(widths) and len(set(widths)) >= 3, widths
    first_flex, last_flex = shown.index("flex"), len(shown) - shown[::-1].index("flex")
    assert "none" not in shown[first_flex:last_flex], shown
    dash_duo.wait_for_contains_text("#summary-stats", "200", timeout=20)
    until(lambda: _figure_points(dash_duo, "training-curve") > 0, timeout=10)
    assert len(list((config.cache_dir / "results").glob("*.h5ad"))) == 1
    # The waiting page opened by itself once the fit was done.
    driver.switch_to.window(stream)
    until(lambda: _figure_points(dash_duo, "stream-graph") > 0, timeout=60)
    assert dash_duo.get_logs() == []


def test_copy_link_copies_the_current_view(dash_duo, tmp_path, local_app):
    results = write_fake_results(tmp_path / "fit.h5ad", n_cells=120, n_genes=12)
    app = local_app(_config(tmp_path, data=(results,)))
    dash_duo.start_server(app)
    ds = DatasetRegistry(app.server.config["VELODASH_CONFIG"]).default_id()
    dash_duo.driver.get(f"{dash_duo.server_url}/genes?ds={ds}&gene=Gene003&color_by=state")
    dash_duo.wait_for_text_to_equal("#gene-title", "Gene003", timeout=20)
    dash_duo.find_element("#copy-link").click()
    status = "return document.getElementById('copy-link-status').textContent"
    copied = until(lambda: dash_duo.driver.execute_script(status), timeout=10)
    assert copied == f"Link copied: {dash_duo.driver.current_url}"
    assert "gene=Gene003" in copied and "color_by=state" in copied
    dash_duo.wait_for_text_to_equal("#copy-link", "Copy link", timeout=10)  # label restored
    # The copied link reproduces the view in a fresh page.
    dash_duo.driver.get(copied.removeprefix("Link copied: "))
    dash_duo.wait_for_text_to_equal("#gene-title", "Gene003", timeout=20)
    assert dash_duo.find_element("#gene-color-by input[value=state]").is_selected()


HOSTILE_TYPE = "<img src=x onerror=\"window.__xss='celltype'\">"
HOSTILE_LINK = "<a href=\"javascript:window.__xss='link'\">click</a>"
HOSTILE_GENE = "<script>window.__xss='gene'</script>"
HOSTILE_FILE = "<img src=x onerror=window.__xss=1>.h5ad"


def _hostile_results(folder: Path) -> Path:
    """Fake results whose cell types, genes and file name are HTML/JS."""
    adata = make_fake_results(n_cells=150, n_genes=10, n_types=3)
    names = [HOSTILE_TYPE, HOSTILE_LINK, "plain"]
    adata.obs["clusters"] = adata.obs["clusters"].cat.rename_categories(names)
    adata.uns["velodash"]["cell_types"] = names
    adata.var_names = [HOSTILE_GENE, *adata.var_names[1:]]
    folder.mkdir()
    path = folder / HOSTILE_FILE
    adata.write_h5ad(path)
    return path


def test_html_in_labels_gene_names_and_file_names_renders_as_text(dash_duo, tmp_path, local_app):
    app = local_app(_config(tmp_path, data_dir=_hostile_results(tmp_path / "data").parent))
    dash_duo.start_server(app)
    ds = DatasetRegistry(app.server.config["VELODASH_CONFIG"]).default_id()
    dash_duo.wait_for_contains_text("#dataset-list", HOSTILE_FILE, timeout=20)
    assert HOSTILE_TYPE in dash_duo.find_element("#home-summary").text
    pages = {
        f"/stream?ds={ds}": "stream-graph",
        f"/uncertainty?ds={ds}": "uncertainty-maps",
        f"/coherence?ds={ds}": "coherence-cdf",
        f"/permutation?ds={ds}": "permutation-heatmap",
    }
    for path, graph in pages.items():
        dash_duo.driver.get(dash_duo.server_url + path)
        until(lambda g=graph: _figure_points(dash_duo, g) > 0, timeout=30)
    # The gene table lists the hostile gene name as text; clicking shows it as the title.
    dash_duo.driver.get(f"{dash_duo.server_url}/genes?ds={ds}")
    dash_duo.wait_for_contains_text("#gene-table", HOSTILE_GENE, timeout=20)
    cell = next(
        c
        for c in dash_duo.find_elements('#gene-table td[data-dash-column="gene"]')
        if c.text == HOSTILE_GENE
    )
    cell.click()
    dash_duo.wait_for_text_to_equal("#gene-title", HOSTILE_GENE, timeout=20)
    until(lambda: _figure_points(dash_duo, "phase-portrait") > 0, timeout=30)
    script = "return [window.__xss, document.querySelectorAll('a[href^=javascript]').length]"
    assert dash_duo.driver.execute_script(script) == [None, 0]
    assert dash_duo.get_logs() == []


def _sign_in(duo, user: str, password: str) -> None:
    """Send Basic credentials with every request of this browser (as after a sign-in)."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    duo.driver.execute_cdp_cmd("Network.enable", {})
    duo.driver.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
    )


def test_viewer_sees_the_app_but_cannot_fit_upload_or_list_users(dash_duo, tmp_path, tiny_counts):
    users = tmp_path / "users.json"
    add_user(users, "vera", "viewer", "viewer-password")
    config = _config(
        tmp_path, data=(tiny_counts,), auth="basic", users_file=users, allow_upload=True
    )
    dash_duo.start_server(create_app(config), navigate=False)
    _sign_in(dash_duo, "vera", "viewer-password")
    dash_duo.server_url = dash_duo.server.url
    dash_duo.wait_for_text_to_equal("#nav-user", "vera · viewer", timeout=20)
    dash_duo.wait_for_contains_text("#home-summary", "has not been fitted", timeout=20)
    assert dash_duo.find_element("#fit-btn").get_attribute("disabled")
    assert "Uploading needs the editor role" in dash_duo.find_element("main").text
    assert not dash_duo.driver.find_elements("css selector", "#upload")
    dash_duo.find_element("#nav-jobs").click()
    dash_duo.wait_for_contains_text("main", "No fits yet", timeout=20)
    assert not dash_duo.driver.find_elements("css selector", "#users-table")
    assert dash_duo.get_logs() == []


@pytest.mark.browser
def test_viewer_browses_selections_but_cannot_save_them(dash_duo, tmp_path):
    """Issue 15, role rule on selections: a viewer's selection panel has no Save control and
    says why; the lasso/box panel and the CSV downloads still work for them."""
    users = tmp_path / "users.json"
    add_user(users, "vera", "viewer", "viewer-password")
    results = write_fake_results(tmp_path / "fit.h5ad", n_cells=300, n_genes=20)
    config = _config(tmp_path, data=(results,), auth="basic", users_file=users)
    ds = DatasetRegistry(config).default_id()
    dash_duo.start_server(create_app(config), navigate=False)
    _sign_in(dash_duo, "vera", "viewer-password")
    dash_duo.server_url = dash_duo.server.url
    dash_duo.driver.get(f"{dash_duo.server_url}/stream?ds={ds}")
    dash_duo.wait_for_contains_text("main", "Saving selections needs the editor role", timeout=30)
    assert not dash_duo.driver.find_elements("css selector", "#stream-sel-save")
    assert dash_duo.driver.find_elements("css selector", "#stream-sel-cells-csv")
    assert dash_duo.get_logs() == []
