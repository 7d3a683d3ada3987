"""Seconds per (sample, cell, gene) of the uncertainty stage (100 velocity draws per cell, the
intrinsic and extrinsic statistics) for several cell-chunk sizes, on one trained model of a
simulation; each size runs twice, interleaved, so that machine noise shows as spread.

Run:  OMP_NUM_THREADS=2 .venv/bin/python bench/bench_uncertainty_chunks.py --chunks 5,2,1
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from core import posterior
from core.graph import add_velocity_graph
from core.preprocess import PreprocessConfig, preprocess
from core.simulate import simulate_branching
from core.train import TrainConfig
from core.uncertainty import uncertainty_from_sample_chunks
from core.velovi import ModelConfig, VeloVI


def main() -> None:
    """Print each run's seconds, nanoseconds per element and the load average."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=3000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--chunks", default="5,2,1", help="cells per chunk, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    adata = preprocess(simulate_branching(args.cells, args.genes, seed=0), PreprocessConfig())
    model = VeloVI(adata.layers["Ms"], adata.layers["Mu"], ModelConfig(), seed=0)
    model.train(TrainConfig(max_epochs=2))
    adata.layers["velocity"] = model.posterior(n_samples=5).velocity
    candidates = add_velocity_graph(adata).candidates
    spliced, unspliced = model._tensors(None, None)
    n_elements = 100 * spliced.shape[0] * spliced.shape[1]
    print(f"{spliced.shape[0]} cells × {spliced.shape[1]} genes", flush=True)
    for _ in range(2):
        for size in (int(k) for k in args.chunks.split(",")):
            chunks = posterior.velocity_sample_chunks(
                model.module, spliced, unspliced, 100, size, model._generator(3)
            )
            start = time.perf_counter()
            uncertainty_from_sample_chunks(chunks, adata.layers["Ms"], candidates, n_extrinsic=25)
            seconds = time.perf_counter() - start
            print(
                f"chunk {size}: {seconds:.1f} s, {seconds / n_elements * 1e9:.1f} ns/element, "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
