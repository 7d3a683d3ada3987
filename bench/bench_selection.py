"""Server time of a lasso selection: polygon → cells → the selection panel (no browser).

A results AnnData with N cells × G genes of random velocity and coherence (float32), cells
uniform on a square UMAP; a 200-vertex lasso (a circle) around the requested share of cells.
Timed, per selection, exactly what the panel callback does: resolve the polygon against every
cell (``mask_from_geometry``), summarise it (cell types, uncertainties, latent time, velocity
drivers: Welch tests of velocity and coherence over all genes), build the panel's components
and serialise them to JSON. "first" is the first selection after the file is opened (it also
computes the per-gene totals, memoised per file); "later" is the median of the next ones.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_selection.py [--cells 50000 100000]
[--genes 2000] [--share 0.1 0.5 0.9]`` (prints a Markdown table; JSON in bench/out/).
Target: < 300 ms per selection of 50 000 cells.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from statistics import median

import anndata as ad
import numpy as np
import pandas as pd
from plotly.utils import PlotlyJSONEncoder

from dashboard.data.results import Results
from dashboard.data.selections import mask_from_geometry
from dashboard.web.selection_panel import panel_body

OUT = Path(__file__).resolve().parent / "out"
N_TYPES = 8
N_TRIALS = 5


def synthetic_results(n_cells: int, n_genes: int, seed: int = 0) -> Results:
    """Just enough of a results file for the panel; Ms/Mu/fit_t share one array (not used)."""
    rng = np.random.default_rng(seed)
    velocity = rng.standard_normal((n_cells, n_genes), dtype=np.float32)
    coherence = rng.standard_normal((n_cells, n_genes), dtype=np.float32)
    types = [f"type {k}" for k in range(N_TYPES)]
    obs = pd.DataFrame(
        {
            "clusters": pd.Categorical.from_codes(rng.integers(0, N_TYPES, n_cells), types),
            "latent_time": rng.random(n_cells, dtype=np.float32),
            "intrinsic_uncertainty": rng.lognormal(-3, 0.5, n_cells).astype(np.float32),
            "extrinsic_uncertainty": rng.lognormal(-2, 0.5, n_cells).astype(np.float32),
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(
        {k: np.ones(n_genes) for k in ("fit_alpha", "fit_beta", "fit_gamma", "fit_t_")},
        index=[f"gene{j}" for j in range(n_genes)],
    )
    adata = ad.AnnData(
        obs=obs,
        var=var,
        layers={
            "velocity": velocity,
            "velocity_coherence": coherence,
            "Ms": velocity,
            "Mu": velocity,
            "fit_t": velocity,
        },
        obsm={"X_umap": rng.uniform(-10, 10, (n_cells, 2)).astype(np.float32)},
    )
    adata.uns["velodash"] = {"groupby": "clusters", "cell_types": types}
    return Results(adata)


def lasso(share: float, n_vertices: int = 200) -> dict:
    """A circle holding ``share`` of cells uniform on [-10, 10]²."""
    radius = np.sqrt(share * 400 / np.pi)
    angle = np.linspace(0, 2 * np.pi, n_vertices, endpoint=False)
    return {
        "kind": "lasso",
        "x": (radius * np.cos(angle)).tolist(),
        "y": (radius * np.sin(angle)).tolist(),
    }


def panel_ms(results: Results, geometry: dict) -> tuple[float, int]:
    """Milliseconds of the panel callback's work, and the number of selected cells."""
    start = time.perf_counter()
    mask = mask_from_geometry(results.umap, geometry)
    body = panel_body(results, "bench", mask, None, "score")
    json.dumps(body, cls=PlotlyJSONEncoder)
    return 1e3 * (time.perf_counter() - start), int(mask.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, nargs="+", default=[50_000, 100_000])
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--share", type=float, nargs="+", default=[0.1, 0.5, 0.9])
    args = parser.parse_args()
    rows = []
    load_before = os.getloadavg()
    for n_cells in args.cells:
        results = synthetic_results(n_cells, args.genes)
        for k, share in enumerate(args.share):
            first = None
            if k == 0:
                first, _ = panel_ms(results, lasso(share))  # includes the per-gene totals
            times = [panel_ms(results, lasso(share)) for _ in range(N_TRIALS)]
            rows.append(
                {
                    "cells": n_cells,
                    "genes": args.genes,
                    "selected": times[0][1],
                    "first_ms": first,
                    "later_ms": median(t for t, _ in times),
                }
            )
            print(rows[-1], flush=True)
        del results
    load_after = os.getloadavg()
    print(f"\nload average (1, 5, 15 min): before {load_before}, after {load_after}")
    print("\n| cells | genes | selected cells | first selection (ms) | later selections (ms) |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        first = f"{r['first_ms']:.0f}" if r["first_ms"] is not None else "–"
        print(
            f"| {r['cells']:,} | {r['genes']:,} | {r['selected']:,} | {first} | "
            f"{r['later_ms']:.0f} |"
        )
    OUT.mkdir(exist_ok=True)
    record = {"rows": rows, "load_before": load_before, "load_after": load_after}
    (OUT / "selection.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
