"""Take a screenshot of every dashboard view with headless Chromium (Selenium), at 1920 × 1080
(``docs/screenshots/<view>.png``, used by the README) and 1280 × 800
(``docs/screenshots/1280x800/<view>.png``), each of the whole page.

Usage: ``.venv/bin/python docs/screenshots/make_screenshots.py [RESULTS.h5ad] [--gene NAME]
[--sizes 1920x1080 1280x800] [--views stream heatmap …]``. Without RESULTS it opens the bundled
sample's cached fit (``.velodash/results``; run ``velodash run`` once to make it). The selection
views save a selection (the cells of one cell type, in a temporary cache) first. Needs Debian
``chromium`` and ``chromium-driver``.
"""

from __future__ import annotations

import argparse
import base64
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from selenium import webdriver
from werkzeug.serving import make_server

from dashboard.config import AppConfig
from dashboard.data.datasets import DatasetRegistry
from dashboard.data.results import load_results
from dashboard.data.selections import SelectionStore
from dashboard.web.app import create_app

OUT = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
SIZES = ("1920x1080", "1280x800")
#: view -> (path, query (formatted with ds, gene, sel), graph that must have rendered)
VIEWS = {
    "home": ("/", "", "training-curve"),
    "stream": ("/stream", "", "stream-graph"),
    "stream_compare": ("/stream", "&source=both&fade=1", "stream-agreement"),
    "selection": ("/stream", "&sel={sel}", "stream-graph"),
    "uncertainty": ("/uncertainty", "&sel={sel}", "uncertainty-maps"),
    "genes": ("/genes", "&gene={gene}", "phase-portrait"),
    "coherence": ("/coherence", "", "coherence-cdf"),
    "permutation": ("/permutation", "", "permutation-heatmap"),
    "portraits": ("/portraits", "", "portraits-grid"),
    "heatmap": ("/heatmap", "", "heatmap-graph"),
}
RENDERED = (
    "const g = document.querySelector(arguments[0] + ' .js-plotly-plot');"
    "return Boolean(g && g._fullData && g._fullData.length);"
)
PAGE_HEIGHT = "return Math.ceil(document.documentElement.scrollHeight);"
ALL_RENDERED = (
    "const graphs = [...document.querySelectorAll('.dash-graph')];"
    "return graphs.every((d) => { const g = d.querySelector('.js-plotly-plot');"
    " return g && g._fullLayout; });"
)


def _driver(width: int, height: int) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(options=options)
    # The window size includes browser chrome even headless; make the viewport exact.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    return driver


def _full_page(driver: webdriver.Chrome, path: Path, width: int) -> None:
    """A screenshot of the whole page at the current viewport's layout."""
    height = driver.execute_script(PAGE_HEIGHT)
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        },
    )
    path.write_bytes(base64.b64decode(shot["data"]))


def _saved_selection(config: AppConfig, ds: str, results_path: Path) -> str:
    """Save the cells of the second-to-last cell type (a mature lineage in the sample) as a
    selection in the app's cache and return its id."""
    results = load_results(results_path)
    target = results.cell_types[-2] if len(results.cell_types) > 1 else results.cell_types[0]
    mask = results.cell_type_codes == results.cell_types.index(target)
    if mask.all():
        mask = np.arange(results.n_cells) < results.n_cells // 3
    saved = SelectionStore(config.cache_dir).save(ds, target, mask, results.cell_ids, "local")
    return saved.id


def main() -> None:
    """Serve the app on a free port and write a screenshot per view and size."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", nargs="?", type=Path, help="a results .h5ad (default: sample)")
    parser.add_argument("--gene", help="gene for the gene page (default: best permutation score)")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), help="WIDTHxHEIGHT ...")
    parser.add_argument("--views", nargs="+", default=list(VIEWS), choices=list(VIEWS))
    args = parser.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="velodash-shots-"))
    if args.results:
        config = AppConfig(data=(args.results,), cache_dir=cache, auto_fit_sample=False)
    else:
        default = AppConfig(auto_fit_sample=False)
        # the sample's cached fit is found through the default cache dir
        shutil.copytree(default.cache_dir / "results", cache / "results", dirs_exist_ok=True)
        config = AppConfig(cache_dir=cache, auto_fit_sample=False)
    registry = DatasetRegistry(config)
    ds = registry.default_id()
    results_path = registry.results_for(registry.get(ds)) if ds else None
    if results_path is None:
        raise SystemExit("no results to show: run `velodash run` once (it fits the sample)")
    sel = _saved_selection(config, ds, results_path)
    server = make_server("127.0.0.1", 0, create_app(config).server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for size in args.sizes:
            width, height = (int(v) for v in size.split("x"))
            folder = OUT if size == SIZES[0] else OUT / size
            folder.mkdir(exist_ok=True)
            driver = _driver(width, height)
            try:
                for name in args.views:
                    path, query, graph_id = VIEWS[name]
                    query = query.format(sel=sel, gene=args.gene or "")
                    query = query.replace("&gene=", "") if query == "&gene=" else query
                    driver.get(f"http://127.0.0.1:{server.port}{path}?ds={ds}{query}")
                    deadline = time.time() + 120
                    while not driver.execute_script(RENDERED, f"#{graph_id}"):
                        if time.time() > deadline:
                            raise SystemExit(f"{path}: #{graph_id} did not render within 120 s")
                        time.sleep(0.3)
                    while not driver.execute_script(ALL_RENDERED) and time.time() < deadline:
                        time.sleep(0.3)
                    time.sleep(2.0)  # let WebGL finish drawing
                    _full_page(driver, folder / f"{name}.png", width)
                    print(f"wrote {folder / f'{name}.png'}")
            finally:
                driver.quit()
    finally:
        server.shutdown()
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
