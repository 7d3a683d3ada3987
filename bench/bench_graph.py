"""Velocity graph: core.graph vs scv.tl.velocity_graph (exact cosines, one job), single graph
and 25 posterior-like samples, on an scVelo simulation. Not a test; prints seconds.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_graph.py --cells 3000 --genes 500
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import scanpy as sc
import scvelo as scv
import torch

from core import graph


def simulated(n_cells: int, n_genes: int):
    """scVelo simulation, 30-NN, moments, deterministic velocity on all genes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = scv.datasets.simulation(n_obs=n_cells, n_vars=n_genes, random_seed=0)
        scv.pp.filter_and_normalize(adata, min_shared_counts=0)
        sc.pp.log1p(adata)
        sc.pp.pca(adata, n_comps=30)
        sc.pp.neighbors(adata, n_neighbors=30, use_rep="X_pca", method="gauss")
        scv.pp.moments(adata, n_neighbors=None)
        scv.tl.velocity(adata, mode="deterministic")
    adata.var["velocity_genes"] = True
    return adata


def seconds(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=3000)
    parser.add_argument("--genes", type=int, default=500)
    parser.add_argument("--samples", type=int, default=25)
    parser.add_argument("--scvelo-calls", type=int, default=2, help="timed scVelo calls")
    args = parser.parse_args()
    torch.set_num_threads(1)
    scv.settings.verbosity = 0
    adata = simulated(args.cells, args.genes)
    X, V = adata.layers["Ms"], adata.layers["velocity"]
    print(f"{adata.n_obs} cells x {adata.n_vars} genes")

    def scvelo_graph() -> None:
        scv.tl.velocity_graph(adata, approx=False, n_jobs=1, show_progress_bar=False)

    t_scvelo = min(seconds(scvelo_graph) for _ in range(args.scvelo_calls))
    t_approx = seconds(
        lambda: scv.tl.velocity_graph(adata, approx=True, n_jobs=1, show_progress_bar=False)
    )
    candidates = {}
    t_candidates = seconds(lambda: candidates.setdefault("c", graph.candidate_neighbors(adata)))
    c = candidates["c"]
    t_ours = seconds(lambda: graph.velocity_graph(V, X, c, device="cpu"))
    print(f"candidates: {c.nnz / adata.n_obs:.0f} per cell, built in {t_candidates:.2f} s")
    print(f"one graph: scVelo {t_scvelo:.2f} s, ours {t_ours:.2f} s (+ candidates once)")
    print(f"scVelo approx=True (30 PCs, as the veloVI extrinsic notebook): {t_approx:.2f} s")

    rng = np.random.default_rng(0)
    samples = V[None] + 0.1 * np.nanstd(V) * rng.normal(size=(args.samples, *V.shape))
    samples = torch.from_numpy(samples.astype(np.float32))
    t_samples = seconds(lambda: graph.velocity_graph_samples(samples, X, c, device="cpu"))
    print(
        f"{args.samples} graphs: scVelo {args.samples} x {t_scvelo:.2f} = "
        f"{args.samples * t_scvelo:.1f} s (extrapolated), ours {t_samples:.2f} s"
    )


if __name__ == "__main__":
    main()
