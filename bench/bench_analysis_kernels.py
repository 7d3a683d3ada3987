"""Kernel timing: vectorised analyses vs reference-style loops on synthetic arrays (not a test).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_analysis_kernels.py [--cells 3000]``.
Compares (1) ``directional_statistics`` with veloVI's per-cell loop, (2) ``extrinsic_uncertainty``
with S calls of ``scv.tl.velocity_graph`` + ``get_transition_matrix`` (timed on a few samples
and scaled to S), (3) the permutation t statistics with the G × C ``ttest_ind`` loop.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scanpy as sc
import scipy.stats
import scvelo as scv
import torch
from anndata import AnnData

from core import graph
from core.permutation import paired_group_t_statistics
from core.uncertainty import directional_statistics, extrinsic_uncertainty


def reference_directional(samples: np.ndarray) -> np.ndarray:
    """veloVI's ``_directional_statistics_per_cell`` loop (sequential; n_jobs=1)."""

    def centred_unit(v):
        v = v - np.mean(v)
        return v / np.linalg.norm(v)

    out = []
    for cell in range(samples.shape[1]):
        tensor = samples[:, cell, :]
        mean = tensor.mean(0)
        cos = [np.clip(centred_unit(x) @ centred_unit(mean), -1, 1) for x in tensor]
        angle = np.arccos(cos)
        out.append(
            [
                np.var(cos),
                np.percentile(cos, 95) - np.percentile(cos, 5),
                np.mean(cos),
                np.var(angle),
                np.percentile(angle, 95) - np.percentile(angle, 5),
            ]
        )
    return np.array(out)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def synthetic(n_cells: int, n_genes: int, n_samples: int, seed: int = 0):
    """Low-rank positive Ms with a scanpy kNN graph, and noisy velocity samples."""
    rng = np.random.default_rng(seed)
    latent = np.cumsum(rng.normal(size=(n_cells, 5)), axis=0) / np.sqrt(n_cells)
    Ms = np.exp(latent @ rng.normal(size=(5, n_genes)) * 0.5).astype(np.float32)
    Ms /= Ms.max(0)
    adata = AnnData(Ms.copy(), layers={"Ms": Ms})
    sc.pp.pca(adata, n_comps=30)
    sc.pp.neighbors(adata, n_neighbors=30, use_rep="X_pca")
    mean_v = rng.normal(size=(n_cells, n_genes)).astype(np.float32)
    samples = mean_v[None] + 0.5 * rng.normal(size=(n_samples, n_cells, n_genes)).astype(np.float32)
    return adata, samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=3000)
    parser.add_argument("--genes", type=int, default=500)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--extrinsic-samples", type=int, default=25)
    parser.add_argument("--scvelo-samples", type=int, default=2, help="scVelo calls timed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    scv.settings.verbosity = 0
    adata, samples = synthetic(args.cells, args.genes, args.samples)
    print(f"{args.cells} cells x {args.genes} genes, torch threads = {torch.get_num_threads()}")

    ours, t_ours = timed(directional_statistics, torch.from_numpy(samples))
    ref, t_ref = timed(reference_directional, samples)
    err = np.nanmax(np.abs(ours.to_numpy() - ref))
    print(
        f"intrinsic S={args.samples}: ours {t_ours:.2f} s, per-cell loop {t_ref:.2f} s "
        f"(x{t_ref / t_ours:.0f}); max |diff| {err:.1e}"
    )

    S = args.extrinsic_samples
    ext = samples[:S]
    candidates, t_cand = timed(graph.candidate_neighbors, adata)
    _, t_ext = timed(extrinsic_uncertainty, ext, adata.layers["Ms"], candidates)
    print(f"extrinsic S={S}: candidates once {t_cand:.2f} s + ours {t_ext:.2f} s")
    for approx in (False, True):
        start = time.perf_counter()
        for i in range(args.scvelo_samples):
            adata.layers["v"] = ext[i]
            scv.tl.velocity_graph(
                adata,
                vkey="v",
                xkey="Ms",
                sqrt_transform=False,
                approx=approx,
                show_progress_bar=False,
            )
            T = scv.utils.get_transition_matrix(
                adata, vkey="v", self_transitions=True, use_negative_cosines=True
            )
            np.asarray(T @ adata.layers["Ms"])
        per_call = (time.perf_counter() - start) / args.scvelo_samples
        print(
            f"  scVelo velocity_graph(approx={approx}) + transition: {per_call:.2f} s/sample, "
            f"x{S} = {per_call * S:.1f} s (x{per_call * S / (t_cand + t_ext):.0f})"
        )

    rng = np.random.default_rng(1)
    n_types, n_cap = 8, 200
    codes = rng.integers(0, n_types, args.cells)
    err_orig = rng.gamma(2.0, size=(args.cells, args.genes))
    err_perm = rng.gamma(2.0, size=(args.cells, args.genes)) * 1.1
    keep = np.zeros(args.cells, bool)
    for c in range(n_types):  # first n_cap cells of each type, like the reference
        keep[np.flatnonzero(codes == c)[:n_cap]] = True
    ours_t, t_vec = timed(
        paired_group_t_statistics, err_perm[keep], err_orig[keep], codes[keep], n_types
    )
    start = time.perf_counter()
    loop_t = np.empty((args.genes, n_types))
    for c in range(n_types):
        rows = np.flatnonzero(codes == c)[:n_cap]
        for g in range(args.genes):
            loop_t[g, c] = scipy.stats.ttest_ind(err_perm[rows, g], err_orig[rows, g])[0]
    t_loop = time.perf_counter() - start
    print(
        f"permutation t-tests G x C = {args.genes} x {n_types}: ours {t_vec * 1e3:.1f} ms, "
        f"ttest_ind loop {t_loop:.2f} s (x{t_loop / t_vec:.0f}); "
        f"max |diff| {np.abs(ours_t - loop_t).max():.1e}"
    )


if __name__ == "__main__":
    main()
