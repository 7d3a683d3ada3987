"""Where the uncertainty stage's time goes, per (sample, cell, gene): the log-gamma sampler, the
velocity draws with 1 and 2 chunk workers (and their page faults), and the whole stage (draws,
intrinsic and extrinsic statistics), on one trained model of a simulation. With ``--chunks``,
the whole stage for each cell-chunk size instead, each twice, interleaved (machine noise
shows as spread).

Run:  OMP_NUM_THREADS=2 .venv/bin/python bench/bench_uncertainty_draws.py --cells 6000
      OMP_NUM_THREADS=2 .venv/bin/python bench/bench_uncertainty_draws.py --chunks 5,2,1
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import torch

from core import gamma, posterior
from core.graph import add_velocity_graph
from core.preprocess import PreprocessConfig, preprocess
from core.simulate import simulate_branching
from core.train import TrainConfig
from core.uncertainty import uncertainty_from_sample_chunks
from core.velovi import ModelConfig, VeloVI

N_SAMPLES = 100


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _sampler_ns(generator: torch.Generator) -> float:
    """ns per log-gamma draw, one thread, shapes spread like a trained model's (80 % below 1)."""
    shapes = torch.exp(torch.randn(100, 5, 3, 2000, generator=generator) * 1.2 - 1.0)
    gamma.log_standard_gamma(shapes, generator)
    start = time.perf_counter()
    for _ in range(10):
        gamma.log_standard_gamma(shapes, generator)
    return (time.perf_counter() - start) / 10 / shapes.numel() * 1e9


def main() -> None:
    """Print each measurement with the load average."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=6000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunks", help="cells per chunk, comma-separated: the stage per size")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"log-gamma sampler: {_sampler_ns(torch.Generator().manual_seed(0)):.1f} ns per draw")
    torch.set_num_threads(args.threads)
    adata = preprocess(simulate_branching(args.cells, args.genes, seed=0), PreprocessConfig())
    model = VeloVI(adata.layers["Ms"], adata.layers["Mu"], ModelConfig(), seed=0)
    model.train(TrainConfig(max_epochs=1))
    adata.layers["velocity"] = model.posterior(n_samples=5).velocity
    candidates = add_velocity_graph(adata).candidates
    spliced, unspliced = model._tensors(None, None)
    n_elements = N_SAMPLES * spliced.shape[0] * spliced.shape[1]
    print(f"{spliced.shape[0]} cells × {spliced.shape[1]} genes", flush=True)

    def chunks(workers: int | None = None, size: int | None = None):
        return posterior.velocity_sample_chunks(
            model.module,
            spliced,
            unspliced,
            N_SAMPLES,
            size,
            generator=model._generator(3),
            workers=workers,
        )

    def stage(label: str, size: int | None = None) -> None:
        start = time.perf_counter()
        uncertainty_from_sample_chunks(
            chunks(size=size), adata.layers["Ms"], candidates, n_extrinsic=25
        )
        seconds = time.perf_counter() - start
        print(
            f"{label}: {seconds:.1f} s, {seconds / n_elements * 1e9:.1f} ns/element, "
            f"load {os.getloadavg()[0]:.2f}",
            flush=True,
        )

    if args.chunks:
        for _ in range(2):
            for size in (int(k) for k in args.chunks.split(",")):
                stage(f"whole stage, chunks of {size} cells", size)
        return
    keep_thread_heaps = posterior.keep_thread_heaps
    # glibc's default heaps first (mallopt cannot be undone), then kept as the stage keeps them
    runs = [(1, "default"), (args.threads, "default"), (args.threads, "kept")]
    for workers, heaps in runs:
        posterior.keep_thread_heaps = keep_thread_heaps if heaps == "kept" else lambda: False
        faults, start = _faults(), time.perf_counter()
        for _ in chunks(workers):
            pass
        seconds = time.perf_counter() - start
        print(
            f"draws, {workers} worker(s), {heaps} heaps: {seconds / n_elements * 1e9:.1f} "
            f"ns/element, {_faults() - faults} page faults, load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    stage("whole stage")


if __name__ == "__main__":
    main()
