"""Take a screenshot of every dashboard page with headless Chromium (Selenium).

Usage: ``.venv/bin/python docs/screenshots/make_screenshots.py [RESULTS.h5ad] [--gene NAME]``.
Without RESULTS it opens the bundled sample's cached fit (``.velodash/results``; run
``velodash run`` once to make it). Needs Debian ``chromium`` and ``chromium-driver``.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from selenium import webdriver
from werkzeug.serving import make_server

from dashboard.app import create_app
from dashboard.config import AppConfig
from dashboard.datasets import SAMPLE_ID, DatasetRegistry

OUT = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
PAGES = {
    "home": ("/", "training-curve"),
    "stream": ("/stream", "stream-graph"),
    "uncertainty": ("/uncertainty", "uncertainty-maps"),
    "genes": ("/genes", "phase-portrait"),
    "coherence": ("/coherence", "coherence-cdf"),
    "permutation": ("/permutation", "permutation-heatmap"),
}
RENDERED = (
    "const g = document.querySelector(arguments[0] + ' .js-plotly-plot');"
    "return Boolean(g && g._fullData && g._fullData.length);"
)


def _driver() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1500,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options)


def main() -> None:
    """Serve the app on a free port, visit each page and write docs/screenshots/<page>.png."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", nargs="?", type=Path, help="a results .h5ad (default: sample)")
    parser.add_argument("--gene", help="gene for the gene page (default: best permutation score)")
    args = parser.parse_args()
    if args.results:
        config = AppConfig(
            data=(args.results,), cache_dir=Path(tempfile.mkdtemp()), auto_fit_sample=False
        )
    else:
        config = AppConfig(auto_fit_sample=False)
    registry = DatasetRegistry(config)
    ds = registry.default_id() if args.results else SAMPLE_ID
    if registry.results_for(registry.get(ds)) is None:
        raise SystemExit("no results to show: run `velodash run` once (it fits the sample)")
    server = make_server("127.0.0.1", 0, create_app(config).server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    driver = _driver()
    try:
        for name, (path, graph_id) in PAGES.items():
            query = f"?ds={ds}" + (f"&gene={args.gene}" if name == "genes" and args.gene else "")
            driver.get(f"http://127.0.0.1:{server.port}{path}{query}")
            deadline = time.time() + 60
            while not driver.execute_script(RENDERED, f"#{graph_id}"):
                if time.time() > deadline:
                    raise SystemExit(f"{path}: #{graph_id} did not render within 60 s")
                time.sleep(0.3)
            time.sleep(1.5)  # let WebGL finish drawing
            driver.save_screenshot(str(OUT / f"{name}.png"))
            print(f"wrote {OUT / f'{name}.png'}")
    finally:
        driver.quit()
        server.shutdown()


if __name__ == "__main__":
    main()
