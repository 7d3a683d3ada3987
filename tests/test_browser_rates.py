"""The two transcription-rate fits on the gene page in a real headless Chromium (issue 18): the
portrait overlays the constant fit (solid) and the α(t) fit (dashed), α(t) is drawn under it,
and a gene in the comparison card opens that gene.

Run: ``pytest -m browser tests/test_browser_rates.py`` (Debian ``chromium`` and
``chromium-driver``). Fake results and their planted α(t) twin: `test_rate_models.write_pair`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dash.testing.wait import until
from test_browser import CHROMIUM
from test_browser import dash_duo as dash_duo  # the headless dash_duo fixture
from test_browser_explore import _viewport
from test_rate_models import write_pair

from dashboard.config import AppConfig
from dashboard.data.datasets import DatasetRegistry
from dashboard.data.rate_models import mse_comparison
from dashboard.data.results import load_results
from dashboard.web.app import create_app

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() or shutil.which("chromedriver") is None,
        reason="needs Chromium: apt-get install chromium chromium-driver",
    ),
]

FIT_LINES = """
const g = document.querySelector('#phase-portrait .js-plotly-plot');
if (!g || !g._fullData) { return null; }
return g._fullData.filter(t => t.mode === 'lines' && t.name.includes('('))
    .map(t => [t.name, t.line.dash]);
"""
TRACE_NAMES = """
const g = document.querySelector(arguments[0] + ' .js-plotly-plot');
return g && g._fullData ? g._fullData.map(t => t.name) : null;
"""


def test_the_portrait_overlays_both_rates_and_a_compared_gene_opens(dash_duo, tmp_path):
    files = write_pair(tmp_path)
    config = AppConfig(data=(files.constant,), cache_dir=files.cache, sample_path=tmp_path / "x")
    dash_duo.start_server(create_app(config))
    ds = DatasetRegistry(config).default_id()
    _viewport(dash_duo, 1280, 800)
    table = mse_comparison(load_results(files.constant), load_results(files.twin))
    gene = table["gene"].iloc[len(table) // 2]
    dash_duo.driver.get(f"{dash_duo.server_url}/genes?ds={ds}&gene={gene}")
    until(lambda: dash_duo.driver.execute_script(FIT_LINES), timeout=30)
    assert sorted(dash_duo.driver.execute_script(FIT_LINES)) == [
        ["induction (constant α)", "solid"],
        ["induction (α(t))", "dash"],
        ["repression (constant α)", "solid"],
        ["repression (α(t))", "dash"],
    ]
    until(lambda: dash_duo.driver.execute_script(TRACE_NAMES, "#gene-rate"), timeout=20)
    assert set(dash_duo.driver.execute_script(TRACE_NAMES, "#gene-rate")) == {
        "constant α",
        "α(t)",
    }
    dash_duo.wait_for_contains_text("#gene-models-ratio", "log10 MSE ratio", timeout=20)
    until(lambda: dash_duo.driver.execute_script(TRACE_NAMES, "#rate-models"), timeout=20)
    # the gene α(t) helps most, from the card's list, opens its gene view
    best = table["gene"].iloc[0]
    link = dash_duo.driver.find_element("css selector", "#rate-top-genes a")
    assert link.text == best
    link.click()
    dash_duo.wait_for_contains_text("#gene-title", best, timeout=20)
    assert f"gene={best}" in dash_duo.driver.current_url
    assert dash_duo.get_logs() == []
