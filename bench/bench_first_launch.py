"""First launch: from ``make run`` on an empty cache to the sample's velocity stream in a browser.

Starts ``make run`` (the README's command) with ``VELODASH_CACHE_DIR`` pointing at a fresh
empty folder, so the bundled sample is fitted from scratch in the background, and drives a
headless Chromium (Debian ``chromium`` + ``chromium-driver``, Selenium) to the velocity page,
reloading it until the UMAP with its streamlines has rendered. Reports the seconds from
``make run`` to that moment and the fit's own stage timings. Target: ≤ 120 s on 2 cores.

Run:  .venv/bin/python bench/bench_first_launch.py   (the .venv must exist: make install)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from selenium import webdriver

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "bench" / "out"
#: True once the velocity page shows the cells and at least one streamline trace.
STREAMS_DRAWN = """
const g = document.querySelector('#stream-graph .js-plotly-plot');
if (!g || !g._fullData) { return false; }
const lines = g._fullData.filter(t => (t.mode || '').includes('lines') && t.x && t.x.length > 50);
const cells = g._fullData.filter(t => (t.mode || '').includes('markers') && t.x && t.x.length);
return lines.length > 0 && cells.length > 0;
"""


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def browser() -> webdriver.Chrome:
    """Headless Debian Chromium at 1280×800."""
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--window-size=1280,800",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(options=options)


def main() -> None:
    """Launch, wait for the drawn stream, print and store the timings."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--out", default="first_launch")
    args = parser.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="velodash-first-launch-"))
    port = free_port()
    env = {**os.environ, "VELODASH_CACHE_DIR": str(cache)}
    started = time.perf_counter()
    server = subprocess.Popen(
        ["make", "run", f"RUN_ARGS=--port {port}"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    driver = browser()
    drawn_at = None
    try:
        url = f"http://127.0.0.1:{port}/stream?ds=sample"
        while time.perf_counter() - started < args.timeout:
            try:
                driver.get(url)
            except Exception:  # the server is not listening yet
                time.sleep(1)
                continue
            deadline = time.perf_counter() + 15
            while time.perf_counter() < deadline:
                if driver.execute_script(STREAMS_DRAWN):
                    drawn_at = time.perf_counter() - started
                    break
                time.sleep(0.5)
            if drawn_at is not None:
                break
    finally:
        driver.quit()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    results = sorted((cache / "results").glob("*.h5ad"))
    timings = {}
    if results:
        import anndata

        info = anndata.read_h5ad(results[0], backed="r").uns["velodash"]
        timings = {k: float(v) for k, v in info["timings"].items()}
    payload = {
        "seconds_to_stream": drawn_at,
        "results_files": [p.name for p in (cache / "results").iterdir()],
        "fit_stages_s": timings,
        "load_at_end": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(payload, indent=2))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / f"{args.out}.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
