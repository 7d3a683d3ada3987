"""End to end: ``velodash fit`` with its defaults vs the reference veloVI's default pipeline.

For each size and seed, scVelo's simulation (per-gene kinetics, ground truth) is written as a
raw counts file, then:

- **velodash**: ``velodash fit RAW --no-normalize`` in its own process with every default
  (preprocessing incl. UMAP, training with its stopping rule, posterior, velocity graph,
  intrinsic and extrinsic uncertainty, coherence, permutation score, scVelo baseline, writing
  the results file); wall time of the whole command;
- **reference** (scvi-tools ``VELOVI``, in this process): the same preprocessing
  (``core.preprocess``, no UMAP: the reference draws none), ``VELOVI.train()`` defaults,
  ``get_velocity(25)``, ``get_latent_time(25)``, ``get_directional_uncertainty(100)`` (the
  paper's intrinsic), the tutorial's 25-sample extrinsic loop and ``get_permutation_scores``.

Both use ``--threads`` torch threads and ``--device`` (``cuda``: velodash ``--device cuda``, the
reference's Lightning ``accelerator="gpu"``). The speed-ups reported: end to end, training, and
posterior + every analysis (velodash's includes its scVelo baseline, which the reference lacks).
Ground truth: median per-gene Spearman(fit_t, true t) and
Pearson(velocity, β u − γ s), from the results file (velodash) and the 25-sample queries
(reference). Writes bench/out/<out>.json.

Run:  .venv-bench/bin/python bench/bench_e2e.py --sizes 3000x500,1500x500 --seeds 0,1,2
GPU:  python bench/bench_e2e.py --sizes 20000x2000 --seeds 0 --device cuda --runs velodash
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
from bench_analyses import reference_extrinsic
from common import (
    REPO_ROOT,
    environment,
    ground_truth_metrics,
    load,
    parse_sizes,
    set_threads,
    simulate,
    write_json,
)
from reference import TRAINER_KWARGS, reference_model

from core.preprocess import PreprocessConfig, preprocess


def run_velodash(raw: Path, out: Path, threads: int, device: str) -> dict[str, Any]:
    """``velodash fit`` with defaults in a fresh process; wall time, stages and ground truth."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS")}
    env["VELODASH_THREADS"] = str(threads)
    command = [sys.executable, "-m", "dashboard.cli", "fit", str(raw), "--out", str(out)]
    command += ["--device", device]
    started = time.perf_counter()
    subprocess.run([*command, "--no-normalize", "--quiet"], check=True, cwd=REPO_ROOT, env=env)
    seconds = time.perf_counter() - started
    result = ad.read_h5ad(out)
    info = result.uns["velodash"]
    return {
        "total_s": seconds,
        "load": load(),
        "stages_s": {k: float(v) for k, v in info["timings"].items()},
        "epochs": int(info["history"]["stopped_epoch"]),
        "stop_reason": str(info["history"].get("stop_reason", "")),
        "ground_truth": ground_truth_metrics(
            result.layers["fit_t"], result.layers["velocity"], result
        ),
        "median_intrinsic": float(np.nanmedian(result.obs["intrinsic_uncertainty"])),
        "median_extrinsic": float(np.nanmedian(result.obs["extrinsic_uncertainty"])),
    }


def run_reference(raw_adata: ad.AnnData, seed: int, device: str) -> dict[str, Any]:
    """The reference's default pipeline, stage by stage, in this process."""
    stages: dict[str, float] = {}

    def timed(name: str, fn):
        started = time.perf_counter()
        value = fn()
        stages[name] = time.perf_counter() - started
        print(f"    reference {name:<12} {stages[name]:8.1f} s  load {load():.2f}", flush=True)
        return value

    adata = timed(
        "preprocess",
        lambda: preprocess(raw_adata, PreprocessConfig(normalize=False, compute_umap=False)),
    )
    model = reference_model(adata.copy(), seed)
    accelerator = {"accelerator": "gpu" if device == "cuda" else "cpu"}
    timed("train", lambda: model.train(**{**TRAINER_KWARGS, **accelerator}))
    velocity = timed("velocity", lambda: np.asarray(model.get_velocity(n_samples=25)))
    fit_t = timed("latent_time", lambda: np.asarray(model.get_latent_time(n_samples=25)))
    intrinsic, _ = timed("intrinsic", lambda: model.get_directional_uncertainty(n_samples=100))
    extrinsic = timed("extrinsic", lambda: reference_extrinsic(adata.copy(), model, 25))
    timed("permutation", lambda: model.get_permutation_scores(labels_key="clusters"))
    return {
        "total_s": sum(stages.values()),
        "load": load(),
        "stages_s": stages,
        "epochs": len(model.history["elbo_train"]),
        "ground_truth": ground_truth_metrics(fit_t, velocity, adata),
        "median_intrinsic": float(np.nanmedian(intrinsic["directional_cosine_sim_variance"])),
        "median_extrinsic": float(np.nanmedian(extrinsic)),
    }


def main() -> None:
    """Run both pipelines for every size and seed; print and store times, ratios, ground truth."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="3000x500,1500x500")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--runs", default="velodash,reference")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="for both")
    parser.add_argument("--out", default="e2e")
    args = parser.parse_args()
    set_threads(args.threads)
    payload: dict[str, Any] = {"args": vars(args), "environment": environment(), "runs": {}}
    folder = Path(tempfile.mkdtemp(prefix="velodash-e2e-"))
    for n_cells, n_genes in parse_sizes(args.sizes):
        for seed in (int(s) for s in args.seeds.split(",")):
            key = f"{n_cells}x{n_genes}/seed{seed}"
            print(f"== {key} (load {load():.2f})", flush=True)
            raw = simulate(n_cells, n_genes, seed)
            raw_path = folder / f"raw_{n_cells}_{seed}.h5ad"
            raw.write_h5ad(raw_path)
            entry: dict[str, Any] = {}
            if "velodash" in args.runs:
                entry["velodash"] = run_velodash(
                    raw_path,
                    folder / f"fit_{key.replace('/', '_')}.h5ad",
                    args.threads,
                    args.device,
                )
                print(f"  velodash: {entry['velodash']}", flush=True)
            if "reference" in args.runs:
                entry["reference"] = run_reference(raw, seed, args.device)
                print(f"  reference: {entry['reference']}", flush=True)
            if len(entry) == 2:
                entry["speedup"] = entry["reference"]["total_s"] / entry["velodash"]["total_s"]
                ref_stages, ours_stages = (
                    entry["reference"]["stages_s"],
                    entry["velodash"]["stages_s"],
                )
                entry["train_speedup"] = ref_stages["train"] / ours_stages["train"]
                entry["analyses_speedup"] = sum(
                    v for k, v in ref_stages.items() if k not in ("preprocess", "train")
                ) / sum(v for k, v in ours_stages.items() if k not in ("preprocess", "train"))
                print(
                    f"  -> end-to-end {entry['speedup']:.1f}x, training "
                    f"{entry['train_speedup']:.1f}x, posterior + analyses "
                    f"{entry['analyses_speedup']:.1f}x",
                    flush=True,
                )
            payload["runs"][key] = entry
            payload["environment"]["load_at_end"] = load()
            write_json(args.out, payload)


if __name__ == "__main__":
    main()
