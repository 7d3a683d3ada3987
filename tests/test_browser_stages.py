# ruff: noqa: F811 - pytest fixtures imported from test_browser are used as arguments
"""Stage-by-stage results in a real headless Chromium (issue 16, item 4).

The stages of a real fit of a small simulation are landed into the app's results folder one
by one, as a running fit lands them (a status whose writer, this test process, is alive): the
pages of the dataset open on the posterior and graph alone, say which stage is computing, and
draw each stage's views in place when it lands, with no reload of the browser page.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from dash.testing.wait import until
from test_browser import _config, _figure_points, dash_duo, pytestmark  # noqa: F401 - fixtures
from test_staged_results import STAGED, Snapshots

from core.params import FitParams
from core.pipeline import fit_file
from core.stage_files import STATUS_FILE
from dashboard.data.datasets import DatasetRegistry
from dashboard.web.app import create_app


@pytest.fixture(scope="module")
def landings(tiny_counts, tmp_path_factory) -> Path:
    """The stages folder of a real fit of ``tiny_counts``, copied just before its final write."""
    folder = tmp_path_factory.mktemp("landings")
    snapshots = Snapshots(folder / "out.h5ad", folder / "landed")
    fit_file(tiny_counts, folder / "out.h5ad", FitParams.from_dict(STAGED), progress=snapshots)
    return folder / "landed"


def _land(landed: Path, folder: Path, stage: str) -> None:
    """Land ``stage`` as the fit does: a temp file renamed into place."""
    tmp = folder / f".{stage}.h5ad.tmp"
    shutil.copy(landed / f"{stage}.h5ad", tmp)
    os.replace(tmp, folder / f"{stage}.h5ad")


def _status(folder: Path, **changes) -> None:
    """Change the fit's status as the fit does: a temp file renamed into place."""
    status = json.loads((folder / STATUS_FILE).read_text())
    status.update({"heartbeat": time.time(), **changes})
    (folder / ".status.tmp").write_text(json.dumps(status))
    os.replace(folder / ".status.tmp", folder / STATUS_FILE)


def _visible_text(duo) -> str:
    return duo.driver.execute_script("return document.body.innerText")


def _annotations(duo, graph_id: str) -> str:
    """The texts of the annotations plotly drew in graph ``graph_id`` (SVG)."""
    return duo.driver.execute_script(
        "const g = document.querySelector(arguments[0]);"
        "return g ? Array.from(g.querySelectorAll('.annotation-text'))"
        ".map(t => t.textContent).join(' ') : '';",
        f"#{graph_id}",
    )


def test_stages_appear_in_place_as_they_land(dash_duo, tmp_path, tiny_counts, landings):
    config = _config(tmp_path, data=(tiny_counts,))
    folder = config.cache_dir / "results" / "running.h5ad.stages"
    folder.mkdir(parents=True)
    shutil.copy(landings / "base.h5ad", folder)
    progress = {"stage": "uncertainty", "fraction": 0.8, "stage_fraction": 0.78}
    progress |= {"started": time.time() - 600, "stage_started": time.time() - 60}
    shutil.copy(landings / STATUS_FILE, folder)
    _status(folder, pid=os.getpid(), progress=progress, failed={})
    app = create_app(config)
    ds = DatasetRegistry(config).default_id()
    dash_duo.start_server(app)

    dash_duo.wait_for_page(f"{dash_duo.server_url}/uncertainty?ds={ds}")
    until(
        lambda: (
            "Computing: stage 2 of 5 (uncertainty)" in _annotations(dash_duo, "uncertainty-maps")
        ),
        30,
    )
    assert "min left" in _annotations(dash_duo, "uncertainty-maps")
    dash_duo.driver.execute_script("window.velodashNoReload = 42;")
    _land(landings, folder, "uncertainty")
    until(lambda: "Computing" not in _annotations(dash_duo, "uncertainty-maps"), 30)
    until(lambda: _figure_points(dash_duo, "uncertainty-maps") > 0, 10)
    assert dash_duo.driver.execute_script("return window.velodashNoReload") == 42

    # the coherence page waits for its stage, then draws its figures in place
    dash_duo.find_element("#nav-coherence").click()
    until(lambda: "Computing: stage 3 of 5 (velocity coherence)" in _visible_text(dash_duo), 30)
    _land(landings, folder, "coherence")
    dash_duo.wait_for_element("#coherence-cdf .js-plotly-plot", timeout=30)
    assert dash_duo.driver.execute_script("return window.velodashNoReload") == 42

    # a stage that fails says so; the ones landed stay
    dash_duo.find_element("#nav-permutation").click()
    until(lambda: "Computing: stage 4 of 5" in _visible_text(dash_duo), 30)
    _status(folder, failed={"permutation": "MemoryError: injected"})
    until(lambda: "The permutation scores stage failed (MemoryError" in _visible_text(dash_duo), 30)
    # the dataset list says the fit is still landing its stages; once its process is gone,
    # that it landed only part of them
    dash_duo.find_element("#nav-home").click()
    until(lambda: "fitting" in _visible_text(dash_duo), 30)
    _status(folder, heartbeat=time.time() - 3600)
    dash_duo.driver.refresh()
    until(lambda: "partly fitted" in _visible_text(dash_duo), 30)
    assert dash_duo.get_logs() == []
