"""Fit benchmark: reference veloVI (scvi.external.VELOVI) vs velodash's VeloVI on the CPU.

For each size (cells × genes of scVelo's simulation, one shared preprocessing) it measures,
alternating reference and velodash runs so both see similar machine load:

1. seconds per epoch: ``--epochs`` epochs, early stopping off, after a 1-epoch warm-up call,
   median of ``--repeats`` (whole ``train`` call / epochs, validation included for both);
2. for the sizes in ``--converge-sizes``: the fit to convergence with early stopping (patience
   45, at most ``--max-epochs``, default the reference's 500), its wall time and epochs;
3. posterior time on the converged models (reference: get_velocity + get_latent_time with
   ``--n-samples``, get_expression_fit, get_state_assignment; velodash: ``posterior``), median
   of ``--repeats``;
4. ground truth: median per-gene Spearman(fit_t, true_t) and Pearson(velocity, β u − γ s).

``--profile`` adds torch.profiler tables of both models' training epochs (where the time goes).

Run:  .venv-bench/bin/python bench/bench_fit.py --sizes 3000x500,3000x2000
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from common import (
    environment,
    ground_truth_metrics,
    load,
    parse_sizes,
    report,
    set_threads,
    simulated_dataset,
    summary,
    timed,
    write_json,
)
from reference import reference_model, reference_posterior, train_reference

from core.train import TrainConfig
from core.velovi import VeloVI


def ours_model(adata, seed: int) -> VeloVI:
    """velodash's model on the same min-max scaled Ms/Mu as the reference."""
    return VeloVI(adata.layers["Ms"], adata.layers["Mu"], device="cpu", seed=seed)


def train_ours(model: VeloVI, max_epochs: int, early_stopping: bool) -> int:
    """``model.train`` with velodash's defaults; ``early_stopping=False`` turns every stopping
    rule off (fixed epochs, for s/epoch). Returns the epochs run."""
    config = TrainConfig(max_epochs=max_epochs, early_stopping=early_stopping)
    if not early_stopping:
        config = TrainConfig(max_epochs=max_epochs, early_stopping=False, convergence=None)
    return model.train(config).stopped_epoch


def per_epoch(adata, epochs: int, repeats: int, seed: int) -> dict[str, Any]:
    """Seconds per epoch of both models (fixed epochs, no early stopping, after warm-up)."""
    models = {"reference": reference_model(adata.copy(), seed), "velodash": ours_model(adata, seed)}
    trainers = {"reference": train_reference, "velodash": train_ours}
    for name, model in models.items():
        _, timing = timed(lambda m=model, n=name: trainers[n](m, 1, False))
        report(f"{name} warm-up epoch", timing)
    timings: dict[str, list] = {name: [] for name in models}
    for repeat in range(repeats):
        for name, model in models.items():
            _, timing = timed(lambda m=model, n=name: trainers[n](m, epochs, False))
            timing.seconds /= epochs
            timings[name].append(timing)
            report(f"{name} s/epoch (repeat {repeat + 1}, {epochs} epochs)", timing)
    result = {name: summary(t) for name, t in timings.items()}
    result["speedup"] = result["reference"]["median_s"] / result["velodash"]["median_s"]
    print(f"  -> per-epoch speed-up {result['speedup']:.1f}x", flush=True)
    return result


def converged(adata, max_epochs: int, n_samples: int, repeats: int, seed: int) -> dict[str, Any]:
    """Fit both to convergence (early stopping), then time the posterior and score it."""
    ref = reference_model(adata.copy(), seed)
    ours = ours_model(adata, seed)
    result: dict[str, Any] = {"max_epochs": max_epochs}
    epochs, timing = timed(lambda: train_reference(ref, max_epochs, True))
    report("reference fit to convergence", timing, f"{epochs} epochs")
    result["reference"] = {"fit_s": timing.seconds, "fit_load": timing.load, "epochs": epochs}
    epochs, timing = timed(lambda: train_ours(ours, max_epochs, True))
    report("velodash fit to convergence", timing, f"{epochs} epochs")
    result["velodash"] = {"fit_s": timing.seconds, "fit_load": timing.load, "epochs": epochs}

    posterior_timings: dict[str, list] = {"reference": [], "velodash": []}
    outputs: dict[str, Any] = {}
    for repeat in range(repeats):
        outputs["reference"], timing = timed(lambda: reference_posterior(ref, n_samples))
        posterior_timings["reference"].append(timing)
        report(f"reference posterior (repeat {repeat + 1})", timing)
        outputs["velodash"], timing = timed(lambda: ours.posterior(n_samples=n_samples))
        posterior_timings["velodash"].append(timing)
        report(f"velodash posterior (repeat {repeat + 1})", timing)
    for name in ("reference", "velodash"):
        result[name]["posterior"] = summary(posterior_timings[name])
    result["reference"]["ground_truth"] = ground_truth_metrics(
        outputs["reference"]["fit_t"], outputs["reference"]["velocity"], adata
    )
    result["velodash"]["ground_truth"] = ground_truth_metrics(
        outputs["velodash"].fit_t, outputs["velodash"].velocity, adata
    )
    result["fit_speedup"] = result["reference"]["fit_s"] / result["velodash"]["fit_s"]
    result["posterior_speedup"] = (
        result["reference"]["posterior"]["median_s"] / result["velodash"]["posterior"]["median_s"]
    )
    for name in ("reference", "velodash"):
        print(f"  {name} ground truth: {result[name]['ground_truth']}", flush=True)
    print(
        f"  -> fit speed-up {result['fit_speedup']:.1f}x, posterior speed-up "
        f"{result['posterior_speedup']:.1f}x",
        flush=True,
    )
    return result


def profile_epochs(adata, epochs: int, seed: int, rows: int = 20) -> dict[str, str]:
    """torch.profiler tables (self CPU time) of ``epochs`` training epochs of both models."""
    models = {"reference": reference_model(adata.copy(), seed), "velodash": ours_model(adata, seed)}
    trainers = {"reference": train_reference, "velodash": train_ours}
    tables = {}
    for name, model in models.items():
        trainers[name](model, 1, False)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            trainers[name](model, epochs, False)
        tables[name] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
        print(f"  {name}: {epochs} epochs profiled\n{tables[name]}", flush=True)
    return tables


def main() -> None:
    """Parse options, run every measurement, print them with the load, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="3000x500,3000x2000", help="CELLSxGENES,...")
    parser.add_argument(
        "--converge-sizes",
        default="3000x500",
        help="sizes also fitted to convergence ('' for none)",
    )
    parser.add_argument("--epochs", type=int, default=20, help="epochs per s/epoch repeat")
    parser.add_argument("--max-epochs", type=int, default=500, help="cap of the converged fit")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-samples", type=int, default=25, help="posterior samples")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="torch.profiler of both")
    parser.add_argument("--out", default="fit", help="bench/out/<out>.json")
    args = parser.parse_args()

    set_threads(args.threads)
    converge = set(parse_sizes(args.converge_sizes)) if args.converge_sizes else set()
    payload: dict[str, Any] = {"args": vars(args), "environment": environment()}
    for n_cells, n_genes in parse_sizes(args.sizes):
        key = f"{n_cells}x{n_genes}"
        print(f"== {key} (load {load():.2f})", flush=True)
        adata, timing = timed(lambda c=n_cells, g=n_genes: simulated_dataset(c, g, args.seed))
        report(f"simulate + preprocess ({adata.n_vars} genes kept)", timing)
        entry: dict[str, Any] = {"n_cells": n_cells, "n_genes_kept": int(adata.n_vars)}
        entry["per_epoch"] = per_epoch(adata, args.epochs, args.repeats, args.seed)
        if (n_cells, n_genes) in converge:
            entry["converged"] = converged(
                adata, args.max_epochs, args.n_samples, args.repeats, args.seed
            )
        if args.profile:
            entry["profile"] = profile_epochs(adata, args.epochs, args.seed)
        payload[key] = entry
        payload["environment"]["load_at_end"] = load()
        write_json(args.out, payload)


if __name__ == "__main__":
    main()
