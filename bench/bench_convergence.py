"""Ground truth against training epochs and wall time, reference veloVI vs velodash.

On one scVelo simulation (the fit benchmark's data and preprocessing) each model is trained
while, every ``--eval-every`` epochs, its default posterior estimator (reference: Monte Carlo;
velodash: Rao-Blackwellised) with ``--eval-samples`` draws is scored
against the simulation's ground truth: median per-gene Spearman(latent time, true time) and
Pearson(velocity, true velocity). Evaluation time is excluded from the wall-time axis and its
random draws do not disturb training (forked RNG, train/eval mode restored). After training,
each model's *default* posterior (25 samples) is scored too.

Runs (``--runs``, comma-separated):

- ``reference``: ``scvi.external.VELOVI.train()`` with its defaults (early stopping);
- ``velodash``: ``core.velovi.VeloVI`` with velodash's defaults (its stopping rule);
- ``velodash-full``: velodash's defaults but no stopping rule (the whole 500-epoch curve);
- ``velodash-expected``: velodash with the faster expected-π estimator (the default before
  the uncertainty fix).

Writes bench/out/<out>.json and, with ``--plot PATH``, a 2 × 2 PNG (metric × epoch / seconds).

Run:  .venv-bench/bin/python bench/bench_convergence.py --size 3000x500 --plot docs/convergence.png
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import (
    environment,
    ground_truth_metrics,
    load,
    parse_sizes,
    set_threads,
    simulated_dataset,
    write_json,
)

from core.posterior import posterior_pass
from core.train import TrainConfig
from core.velovi import VeloVI


class Recorder:
    """Collects (epoch, training seconds so far, ground truth) with evaluation time excluded."""

    def __init__(self, adata, every: int, evaluate: Callable[[], tuple[np.ndarray, np.ndarray]]):
        self.adata, self.every, self.evaluate = adata, every, evaluate
        self.started = time.perf_counter()
        self.eval_seconds = 0.0
        self.points: list[dict[str, float]] = []

    def epoch_done(self, epoch: int) -> None:
        """Score the model after ``epoch`` (1-based) when it is an evaluation epoch."""
        if epoch % self.every and epoch != 1:
            return
        began = time.perf_counter()
        seconds = began - self.started - self.eval_seconds
        with torch.random.fork_rng():
            fit_t, velocity = self.evaluate()
        metrics = ground_truth_metrics(fit_t, velocity, self.adata)
        self.eval_seconds += time.perf_counter() - began
        self.points.append({"epoch": epoch, "seconds": seconds, **metrics})
        print(f"    epoch {epoch:4d}  {seconds:7.1f} s  {metrics}  load {load():.2f}", flush=True)

    def train_seconds(self) -> float:
        """Seconds since the start, minus evaluation."""
        return time.perf_counter() - self.started - self.eval_seconds


def run_velodash(adata, args, variant: str) -> dict[str, Any]:
    """Train velodash (``variant`` picks the options) and record its convergence."""
    model = VeloVI(adata.layers["Ms"], adata.layers["Mu"], device="cpu", seed=args.seed)
    s, u = (torch.from_numpy(x) for x in (model.spliced, model.unspliced))

    def evaluate() -> tuple[np.ndarray, np.ndarray]:
        was_training = model.module.training
        post = posterior_pass(model.module, s, u, n_samples=args.eval_samples)
        model.module.train(was_training)
        return post.fit_t, post.velocity

    recorder = Recorder(adata, args.eval_every, evaluate)
    full = variant == "velodash-full"
    config = TrainConfig(
        max_epochs=args.max_epochs,
        early_stopping=not full,
        pi_estimator="expected" if variant == "velodash-expected" else "sampled",
        seed=args.seed,
        **({"convergence": None} if full else {}),
    )
    history = model.train(config, progress=lambda report: recorder.epoch_done(report.epoch))
    seconds = recorder.train_seconds()
    post = model.posterior(n_samples=25)
    return {
        "train_s": seconds,
        "epochs": history.stopped_epoch,
        "best_epoch": history.best_epoch,
        "stop_reason": history.stop_reason,
        "drift": history.drift,
        "elbo_validation": history.elbo_validation,
        "curve": recorder.points,
        "final": ground_truth_metrics(post.fit_t, post.velocity, adata),
    }


def run_reference(adata, args) -> dict[str, Any]:
    """Train the reference with its defaults and record its convergence (Lightning callback)."""
    from lightning.pytorch.callbacks import Callback
    from reference import TRAINER_KWARGS, reference_model

    model = reference_model(adata.copy(), args.seed)

    def evaluate() -> tuple[np.ndarray, np.ndarray]:
        was_training = model.module.training
        model.module.eval()
        fit_t = np.asarray(model.get_latent_time(n_samples=args.eval_samples))
        velocity = np.asarray(model.get_velocity(n_samples=args.eval_samples))
        model.module.train(was_training)
        return fit_t, velocity

    recorder = Recorder(adata, args.eval_every, evaluate)

    class Evaluate(Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            recorder.epoch_done(trainer.current_epoch + 1)

    model.train(max_epochs=args.max_epochs, callbacks=[Evaluate()], **TRAINER_KWARGS)
    seconds = recorder.train_seconds()
    velocity = model.get_velocity(n_samples=25, velo_statistic="mean")
    fit_t = model.get_latent_time(n_samples=25)
    return {
        "train_s": seconds,
        "epochs": len(model.history["elbo_train"]),
        "elbo_validation": model.history["elbo_validation"]["elbo_validation"].tolist(),
        "curve": recorder.points,
        "final": ground_truth_metrics(np.asarray(fit_t), np.asarray(velocity), adata),
    }


def plot(results: dict[str, Any], path: str, title: str) -> None:
    """Ground truth (rows) against epoch and training seconds (columns), one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = {
        "median_spearman_time": "latent time: median Spearman",
        "median_pearson_velocity": "velocity: median Pearson",
    }
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    for name, run in results.items():
        curve = run["curve"]
        for row, (key, label) in enumerate(metrics.items()):
            for col, x in enumerate(("epoch", "seconds")):
                ax = axes[row, col]
                ax.plot([p[x] for p in curve], [p[key] for p in curve], label=name)
                ax.set_xlabel("epoch" if x == "epoch" else "training wall time (s)")
                ax.set_ylabel(label)
                if col == 1:
                    ax.set_xscale("log")
    axes[0, 0].legend()
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", flush=True)


def main() -> None:
    """Parse options, run each model, write JSON (and the PNG)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="3000x500", help="CELLSxGENES")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="reference,velodash", help="comma-separated")
    parser.add_argument("--max-epochs", type=int, default=500)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--eval-samples", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both")
    parser.add_argument("--plot", help="write the PNG here")
    parser.add_argument("--out", default="convergence")
    parser.add_argument(
        "--reuse",
        help="an earlier JSON of the same size and seed to take --reuse-runs from (e.g. the "
        "15-minute reference curve); they are marked with where they came from",
    )
    parser.add_argument("--reuse-runs", default="reference", help="comma-separated")
    args = parser.parse_args()
    set_threads(args.threads)
    ((n_cells, n_genes),) = parse_sizes(args.size)
    adata = simulated_dataset(n_cells, n_genes, args.seed)
    payload: dict[str, Any] = {"args": vars(args), "environment": environment(), "runs": {}}
    if args.reuse:
        earlier = json.loads(Path(args.reuse).read_text())
        if (earlier["args"]["size"], earlier["args"]["seed"]) != (args.size, args.seed):
            raise SystemExit(f"{args.reuse} is for another size or seed; rerun every model.")
        for name, run in earlier["runs"].items():
            if name in args.reuse_runs.split(",") and name not in args.runs.split(","):
                payload["runs"][name] = {**run, "reused_from": earlier["environment"]}
    for name in args.runs.split(","):
        print(f"== {name} ({adata.n_obs} cells × {adata.n_vars} genes, load {load():.2f})")
        run = run_reference(adata, args) if name == "reference" else run_velodash(adata, args, name)
        print(f"  {name}: {run['epochs']} epochs, {run['train_s']:.1f} s, final {run['final']}")
        payload["runs"][name] = run
        write_json(args.out, payload)
    if args.plot:
        plot(payload["runs"], args.plot, f"{args.size} (scVelo simulation, seed {args.seed})")


if __name__ == "__main__":
    main()
