"""Peak memory of the preprocessing (``core.preprocess.preprocess``) by step (issue 16, item 6).

Reads a raw counts file, then preprocesses it with every default while a thread samples the
process's RSS every 50 ms; each sample is charged to the step running then (the steps are
wrapped: filter/normalise/HVG, embedding and moments, min-max scaling, the steady-state fit and
gene selection). Prints the peak RSS per step, the overall peak and the seconds.

Run:  .venv/bin/velodash simulate /tmp/raw20k.h5ad --n-cells 20000 --n-genes 2000
      OMP_NUM_THREADS=2 .venv/bin/python bench/bench_preprocess_memory.py /tmp/raw20k.h5ad
"""

from __future__ import annotations

import argparse
import functools
import os
import threading
import time

import anndata as ad
import psutil

import core.preprocess as P

#: The preprocessing steps whose peaks are reported, in the order they run.
STEPS = ("_filter_normalize_hvg", "_embed_and_smooth", "_min_max_scaled", "_steady_state_fit",
         "_subset_genes")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", help="raw counts (.h5ad with spliced/unspliced layers)")
    args = parser.parse_args()
    process = psutil.Process()
    current, peaks, done = ["read"], {}, threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss = process.memory_info().rss
            peaks[current[0]] = max(peaks.get(current[0], 0), rss)
            time.sleep(0.05)

    def charged(name, fn):
        @functools.wraps(fn)
        def run(*a, **k):
            before, current[0] = current[0], name
            try:
                return fn(*a, **k)
            finally:
                current[0] = before

        return run

    for name in STEPS:
        setattr(P, name, charged(name, getattr(P, name)))
    threading.Thread(target=sample, daemon=True).start()
    adata = ad.read_h5ad(args.raw)
    current[0] = "preprocess (other)"
    start = time.perf_counter()
    out = P.preprocess(adata)
    seconds = time.perf_counter() - start
    done.set()
    print(f"{args.raw}: {adata.n_obs} cells × {adata.n_vars} genes → {out.n_vars} genes kept")
    for name, peak in peaks.items():
        print(f"  {name:24s} peak {peak / 2**30:.2f} GiB")
    print(f"  overall peak {max(peaks.values()) / 2**30:.2f} GiB, {seconds:.0f} s, "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
