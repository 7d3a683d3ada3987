"""The browser at 10k–200k cells (issue 16, item 7): the JSON each page sends and its time to
interactive in headless Chromium, the time a zoom takes to show the cells in the window at full
resolution, and the bytes of a recolour Patch.

Per size, a fake results file (``tests/fake_results.py``, 50 genes: only per-cell arrays
matter here) is written once into ``--folder``; then ``velodash run`` serves it in a fresh
process (``--budget`` sets ``dashboard.data.overview.POINT_BUDGET`` there; ``all`` draws every
cell, as before the overview existed) and one headless Chromium (software WebGL, 1280 × 900)
opens each page ``--loads`` times (the first load builds the server's views; the table reports
the median of the later ones):

* **JSON**: the decoded bytes of every ``_dash-layout``/``_dash-update-component`` response of
  the load (Resource Timing ``decodedBodySize``);
* **interactive**: ms from navigation start until the page's cell scatter is drawn, no Dash
  callback is pending and the browser's main thread has painted two frames after it;
* **zoom** (stream page): ms from a ``Plotly.relayout`` to a window holding about 5 % of the
  cells until the graph shows the server's points for it (absent when nothing is sent);
* **recolour**: bytes of the Patch that recolours the stream page by a gene (server-side JSON).

Run:  .venv/bin/python bench/bench_browser_scale.py --budget all --out browser_scale_before
      .venv/bin/python bench/bench_browser_scale.py --out browser_scale_after
Writes bench/out/<out>.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

from selenium import webdriver  # noqa: E402

PAGES = {"stream": "stream-graph", "uncertainty": "uncertainty-maps", "genes": "gene-velocity-umap"}

SERVER = """
import sys
try:
    from dashboard.data import overview
    overview.POINT_BUDGET = int(sys.argv[1]) if sys.argv[1] != "all" else 10**9
except ImportError:
    pass
from dashboard.cli import main
sys.exit(main(["run", sys.argv[2], "--port", sys.argv[3], "--cache-dir", sys.argv[4],
               "--no-upload"]))
"""

#: Points drawn in the page's cell scatter (traces with customdata), or null before it is drawn
#: or while a callback is pending.
POINTS = """
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
if (!gd || !gd._fullData || document.querySelector('[data-dash-is-loading="true"]')) return null;
let n = 0;
for (const t of gd._fullData) if (t.customdata && t.x) n += t.x.length;
return n || null;
"""

TWO_FRAMES = """
const done = arguments[arguments.length - 1];
requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now())));
"""

JSON_BYTES = """
return performance.getEntriesByType('resource')
  .filter((e) => /_dash-(layout|update-component)/.test(e.name))
  .reduce((a, e) => [a[0] + e.decodedBodySize, a[1] + e.transferSize], [0, 0]);
"""


def fake_results(folder: Path, n_cells: int, n_genes: int) -> Path:
    """The fake results file of ``n_cells`` cells, written once."""
    from fake_results import write_fake_results

    path = folder / f"fake_{n_cells}.h5ad"
    if not path.exists():
        write_fake_results(path, n_cells=n_cells, n_genes=n_genes, n_types=9, seed=0)
    return path


def serve(results: Path, port: int, cache: Path, budget: str) -> subprocess.Popen:
    """``velodash run`` on ``results`` in a fresh process, once it answers."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, budget, str(results), str(port), str(cache)],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the dashboard did not start")


def browser() -> webdriver.Chrome:
    """Headless Chromium with software WebGL at 1280 × 900."""
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("DASH_TEST_CHROMEPATH", "/usr/bin/chromium")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",
        "--window-size=1280,900",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(options=options)


def wait_points(driver, selector: str, timeout: float = 120, changed_from=None) -> int:
    """Points drawn in ``selector``'s scatter once it is drawn (and differs from
    ``changed_from``)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        n = driver.execute_script(POINTS, selector)
        if n and n != changed_from:
            return n
        time.sleep(0.05)
    raise TimeoutError(f"{selector} was not drawn in {timeout} s")


def load_page(driver, url: str, graph: str) -> dict:
    """Open ``url`` and measure it (see the module docstring)."""
    driver.get(url)
    points = wait_points(driver, f"#{graph}")
    interactive = driver.execute_async_script(TWO_FRAMES)
    decoded, transfer = driver.execute_script(JSON_BYTES)
    return {
        "interactive_ms": interactive,
        "json_bytes": decoded,
        "transfer_bytes": transfer,
        "points": points,
    }


def zoom(driver, graph: str, results_path: Path) -> dict | None:
    """Zoom the stream page's UMAP to a window of about 5 % of the cells around their median;
    ms until the server's points for it are drawn (None when the points do not change)."""
    import anndata as ad
    import numpy as np

    xy = ad.read_h5ad(results_path, backed="r").obsm["X_umap"][:, :2]
    centre = np.median(xy, 0)
    half = np.quantile(np.abs(xy - centre).max(1), 0.05)
    before = driver.execute_script(POINTS, f"#{graph}")
    started = driver.execute_script(
        "const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');"
        "Plotly.relayout(gd, {'xaxis.range': arguments[1], 'yaxis.range': arguments[2]});"
        "return performance.now();",
        f"#{graph}",
        [float(centre[0] - half), float(centre[0] + half)],
        [float(centre[1] - half), float(centre[1] + half)],
    )
    try:
        points = wait_points(driver, f"#{graph}", timeout=30, changed_from=before)
    except TimeoutError:
        return None
    return {"zoom_ms": driver.execute_async_script(TWO_FRAMES) - started, "points": points}


def recolour_bytes(results_path: Path, budget: str) -> int:
    """Bytes of the JSON Patch content that recolours the stream page by the first gene."""
    from plotly.utils import PlotlyJSONEncoder

    from dashboard import figures
    from dashboard.data.results import load_results

    try:
        from dashboard.data import overview

        overview.POINT_BUDGET = int(budget) if budget != "all" else 10**9
    except ImportError:
        pass
    results = load_results(results_path)
    update = figures.recolor_patch(results, results.gene_names[0], results.groupby)
    return len(json.dumps(update, cls=PlotlyJSONEncoder))


def dataset_id(results: Path, cache: Path) -> str:
    """The id ``velodash run`` gives the results file."""
    from dashboard.config import AppConfig
    from dashboard.data.datasets import DatasetRegistry

    config = AppConfig(data=(results,), cache_dir=cache, sample_path=cache / "none.h5ad")
    return DatasetRegistry(config).default_id()


def measure(path: Path, budget: str, loads: int, port: int) -> dict:
    """Every measurement of one results file."""
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        server = serve(path, port, cache, budget)
        driver = browser()
        try:
            ds = dataset_id(path, cache)
            out: dict = {}
            for page, graph in PAGES.items():
                url = f"http://127.0.0.1:{port}/{page}?ds={ds}"
                runs = [load_page(driver, url, graph) for _ in range(loads)]
                later = runs[1:] or runs
                out[page] = {
                    "first": runs[0],
                    **{k: statistics.median(r[k] for r in later) for k in runs[0]},
                    "points": runs[-1]["points"],
                }
                if page == "stream":
                    out[page]["zoom"] = zoom(driver, graph, path)
        finally:
            driver.quit()
            server.terminate()
            server.wait(30)
    out["recolour_patch_bytes"] = recolour_bytes(path, budget)
    return out


def main() -> None:
    """Measure every size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000,100000,200000")
    parser.add_argument("--genes", type=int, default=50)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/velodash_browser_scale"))
    parser.add_argument("--budget", default="default", help="points per scatter, or 'all'")
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--port", type=int, default=8093)
    parser.add_argument("--out", default="browser_scale")
    args = parser.parse_args()
    if args.budget == "default":
        from dashboard.data.overview import POINT_BUDGET

        args.budget = str(POINT_BUDGET)
    args.folder.mkdir(parents=True, exist_ok=True)
    report = {"budget": args.budget, "load_before": os.getloadavg(), "sizes": {}}
    print(f"budget {args.budget}; load {os.getloadavg()[0]:.2f}")
    print("cells    page         points  JSON MB  interactive s (first)  zoom s (points)")
    for n_cells in (int(s) for s in args.sizes.split(",")):
        path = fake_results(args.folder, n_cells, args.genes)
        result = measure(path, args.budget, args.loads, args.port)
        report["sizes"][n_cells] = result
        for page in PAGES:
            r = result[page]
            z = r.get("zoom")
            zoomed = f"{z['zoom_ms'] / 1000:.2f} ({z['points']:,})" if z else "-"
            print(
                f"{n_cells:>7,}  {page:<11} {r['points']:>7,}  {r['json_bytes'] / 1e6:7.2f}  "
                f"{r['interactive_ms'] / 1000:6.2f} ({r['first']['interactive_ms'] / 1000:.2f})"
                f"          {zoomed if page == 'stream' else ''}"
            )
        print(f"{n_cells:>7,}  recolour Patch {result['recolour_patch_bytes'] / 1e3:.0f} kB")
    report["load_after"] = os.getloadavg()
    out = REPO_ROOT / "bench" / "out" / f"{args.out}.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"load {os.getloadavg()[0]:.2f}; wrote {out}")


if __name__ == "__main__":
    main()
