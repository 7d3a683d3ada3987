"""Opening and browsing a results file at atlas scale (issue 16, item 1): the lazy reader.

Builds a results file of N cells × G genes in the layout ``velodash fit`` writes
(``core.results_io``): the per-cell parts and 100 genes of fake results (tests/fake_results.py,
every slot of the contract), the genes tiled to G, each layer written chunk-aligned a block at a
time so that building it never holds a whole layer. Then, in a fresh process per size (its RSS
is the web process's), with an empty view cache:

* **open**: ``load_results`` (validation, obs/var/obsm/varm/uns), seconds and RSS after;
* **gene click**: 20 genes never seen before, ``phase_portrait_figure`` + its JSON, ms each;
* **stream page, first build**: ``embedding_figure`` with streams + JSON (cold view cache),
  then the same in a second process that finds the view in the machine's cache;
* **every page**: the figures of every page and a selection's statistics (drivers over all
  genes), then the RSS growth since before opening.

Run:  OMP_NUM_THREADS=1 .venv/bin/python bench/bench_lazy_results.py --sizes 50000x2000,100000x2000
(``--reuse`` measures the files an earlier run left in ``--data-dir`` again.)
Raw numbers: bench/out/lazy_results.json. Targets (100,000 × 2,000): open ≤ 2 s, RSS growth
≤ 1 GB after every page, gene click ≤ 150 ms, stream first build ≤ 3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))
OUT = REPO_ROOT / "bench" / "out" / "lazy_results.json"
BASE_GENES = 100


def build(path: Path, n_cells: int, n_genes: int, seed: int = 0) -> float:
    """Write the tiled fake results file; returns its size in GiB."""
    import anndata as ad
    import pandas as pd
    from anndata.io import write_elem
    from fake_results import make_fake_results

    from core.results_io import layer_storage

    small = make_fake_results(n_cells=n_cells, n_genes=BASE_GENES, n_types=8, seed=seed)
    reps = -(-n_genes // BASE_GENES)
    tile = np.tile(np.arange(BASE_GENES), reps)[:n_genes]
    var = small.var.iloc[tile].copy()
    var.index = pd.Index([f"{g}_{k // BASE_GENES}" for k, g in enumerate(var.index)])
    skeleton = ad.AnnData(
        obs=small.obs,
        var=var,
        # velodash fit stores the baseline's projection too (here a stand-in of that shape)
        obsm={**small.obsm, "velocity_baseline_umap": 0.8 * small.obsm["velocity_umap"]},
        varm={k: np.asarray(v)[tile] for k, v in small.varm.items()},
        obsp=dict(small.obsp),
        uns={**small.uns, "velodash": {**small.uns["velodash"], "layout": "gene-chunked-1"}},
    )
    skeleton.write_h5ad(path, compression="gzip", compression_opts=1)
    with h5py.File(path, "a") as f:
        layers = f.require_group("layers")
        for key, values in small.layers.items():
            kwargs = layer_storage(key, (n_cells, n_genes))
            width = kwargs["chunks"][1]
            write_elem(layers, key, np.zeros((n_cells, 0), np.float32))  # encoding attrs
            attrs = dict(layers[key].attrs)
            del layers[key]
            ds = layers.create_dataset(key, shape=(n_cells, n_genes), dtype="float32", **kwargs)
            ds.attrs.update(attrs)
            step = max(width, (64 << 20) // (4 * n_cells) // width * width)
            for start in range(0, n_genes, step):
                stop = min(start + step, n_genes)
                noise = np.float32(1e-4) * np.float32(start // BASE_GENES)
                ds[:, start:stop] = values[:, tile[start:stop]] + noise
    return path.stat().st_size / 2**30


MEASURE = r"""
import json, os, sys, time
import numpy as np, psutil
from plotly.io.json import to_json_plotly
from dashboard.data import view_cache
view_cache.use(sys.argv[2], 1024)
proc = psutil.Process()
rss = lambda: proc.memory_info().rss
from dashboard.data.results import load_results
from dashboard.data.selections import summarise
from dashboard.figures import coherence, embedding, genes, heatmap, permutation, portraits
from dashboard.figures import uncertainty
out = {"rss_before_mb": rss() / 2**20}
t = time.perf_counter(); r = load_results(sys.argv[1]); out["open_s"] = time.perf_counter() - t
out["rss_open_mb"] = rss() / 2**20
t = time.perf_counter(); fig = embedding.embedding_figure(r); payload = to_json_plotly(fig)
out["stream_first_build_s"] = time.perf_counter() - t
out["stream_json_mb"] = len(payload) / 2**20
rng = np.random.default_rng(1)
clicks = []
for j in rng.choice(r.n_genes, 20, replace=False):
    t = time.perf_counter()
    to_json_plotly(genes.phase_portrait_figure(r, r.gene_names[j]))
    clicks.append(1e3 * (time.perf_counter() - t))
out["gene_click_ms"] = {"median": float(np.median(clicks)), "max": float(np.max(clicks))}
top = r.gene_names[:40]
t = time.perf_counter()
for fig in (
    embedding.embedding_figure(r, color=r.gene_names[3]),
    genes.gene_over_time_figure(r, top[1]), genes.permutation_effect_figure(r, top[1]),
    genes.baseline_agreement_figure(r, top[1]), portraits.portrait_grid_figure(r, top[:12]),
    heatmap.heatmap_figure(r, top), coherence.coherence_cdf_figure(r),
    permutation.permutation_density_figure(r), permutation.permutation_heatmap_figure(r),
    uncertainty.uncertainty_figures(r), embedding.agreement_figure(r),
):
    to_json_plotly(fig)
out["other_pages_s"] = time.perf_counter() - t
mask = np.zeros(r.n_cells, bool); mask[: r.n_cells // 5] = True
t = time.perf_counter(); summarise(r, mask); out["selection_first_s"] = time.perf_counter() - t
mask[: r.n_cells // 4] = True
t = time.perf_counter(); summarise(r, mask); out["selection_next_s"] = time.perf_counter() - t
out["rss_after_mb"] = rss() / 2**20
out["rss_growth_mb"] = out["rss_after_mb"] - out["rss_before_mb"]
print(json.dumps(out))
"""

WARM = r"""
import json, sys, time
from plotly.io.json import to_json_plotly
from dashboard.data import view_cache
view_cache.use(sys.argv[2], 1024)
from dashboard.data.results import load_results
from dashboard.figures import embedding
r = load_results(sys.argv[1])
t = time.perf_counter(); to_json_plotly(embedding.embedding_figure(r))
print(json.dumps({"stream_build_cached_s": time.perf_counter() - t}))
"""


def measure(path: Path, cache: Path) -> dict:
    """Run the measuring script and then the warm-cache one in fresh processes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = {}
    for script in (MEASURE, WARM):
        run = subprocess.run(
            [sys.executable, "-c", script, str(path), str(cache)],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            env=env,
            check=True,
        )
        result.update(json.loads(run.stdout.strip().splitlines()[-1]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50000x2000,100000x2000")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/velodash-lazy"))
    parser.add_argument(
        "--reuse", action="store_true", help="measure files an earlier run built (same name)"
    )
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    rows = {}
    for size in args.sizes.split(","):
        n_cells, n_genes = (int(x) for x in size.split("x"))
        path = args.data_dir / f"results_{size}.h5ad"
        t = time.perf_counter()
        reused = args.reuse and path.exists()
        gib = path.stat().st_size / 2**30 if reused else build(path, n_cells, n_genes)
        row = {"file_gib": gib, "build_s": None if reused else time.perf_counter() - t}
        with tempfile.TemporaryDirectory() as cache:
            row.update(measure(path, Path(cache)))
        row["load_1min"] = os.getloadavg()[0]
        rows[size] = row
        print(size, json.dumps(row, indent=1), flush=True)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
