"""Per-epoch cost of the time-dependent transcription rate against the constant one (issue 18).

One process, one torch thread, the same preprocessed data: the constant-rate model, the
time-dependent model with the closed-form three-rate convolution (`core.kinetics`), and the
time-dependent model with the matrix-exponential route it replaced (kept in the tests as the
oracle), alternating, each trained for ``--epochs`` epochs without early stopping::

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_time_dependent.py --epochs 20 --repeats 3

Data: the pancreas subset (../shared/data/pancreas_739.h5ad) when present, else the sample.
Raw numbers go to ``bench/out/time_dependent.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import torch
from common import REPO_ROOT, environment, load, write_json

from core import kinetics
from core.model import ModelConfig
from core.preprocess import preprocess
from core.train import TrainConfig
from core.velovi import VeloVI
from dashboard.config import SAMPLE_PATH

PANCREAS = REPO_ROOT.parent / "shared" / "data" / "pancreas_739.h5ad"


def matrix_route(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, t: torch.Tensor):
    """The replaced three-rate convolution: exp(−tD)[0, 2], D = bidiag(a, b, c; 1)."""
    a, b, c, t = torch.broadcast_tensors(a, b, c, t)
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    rows = [torch.stack(r, dim=-1) for r in ([a, one, zero], [zero, b, one], [zero, zero, c])]
    return torch.linalg.matrix_exp(-t[..., None, None] * torch.stack(rows, dim=-2))[..., 0, 2]


@contextmanager
def convolution(kind: str):
    """Use the closed form ("closed") or the matrix route ("matrix") inside the block."""
    closed = kinetics.exp_convolution3
    kinetics.exp_convolution3 = closed if kind == "closed" else matrix_route
    try:
        yield
    finally:
        kinetics.exp_convolution3 = closed


def epoch_seconds(adata: ad.AnnData, time_dependent: bool, epochs: int) -> float:
    """Seconds per training epoch (model built outside the timing)."""
    model = VeloVI(
        adata.layers["Ms"],
        adata.layers["Mu"],
        ModelConfig(time_dependent_rate=time_dependent),
        device="cpu",
    )
    config = TrainConfig(max_epochs=epochs, patience=10 * epochs)
    start = time.perf_counter()
    model.train(config)
    return (time.perf_counter() - start) / epochs


def main() -> None:
    """Run the comparison and print per-epoch seconds and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=PANCREAS if PANCREAS.exists() else SAMPLE_PATH)
    args = parser.parse_args()
    torch.set_num_threads(1)
    adata = preprocess(ad.read_h5ad(args.data))
    print(f"data: {args.data.name}, {adata.n_obs} cells × {adata.n_vars} genes; load {load():.1f}")
    runs: dict[str, list[float]] = {"constant": [], "time-dependent": [], "matrix route": []}
    load_before = load()
    for _ in range(args.repeats):
        runs["constant"].append(epoch_seconds(adata, False, args.epochs))
        with convolution("closed"):
            runs["time-dependent"].append(epoch_seconds(adata, True, args.epochs))
        with convolution("matrix"):
            runs["matrix route"].append(epoch_seconds(adata, True, args.epochs))
    medians = {name: statistics.median(values) for name, values in runs.items()}
    for name, value in medians.items():
        ratio = value / medians["constant"]
        print(f"{name:15s} {value * 1000:8.1f} ms/epoch  ({ratio:.2f}× constant)")
    write_json(
        "time_dependent",
        {
            "data": str(args.data.name),
            "shape": [int(adata.n_obs), int(adata.n_vars)],
            "epochs": args.epochs,
            "seconds_per_epoch": runs,
            "median": medians,
            "ratio_to_constant": {k: v / medians["constant"] for k, v in medians.items()},
            "load": [load_before, load()],
            "environment": environment(),
        },
    )


if __name__ == "__main__":
    main()
