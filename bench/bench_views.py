"""Derived views shared across processes (issue 16, item 3): how long a fresh web process
takes to draw the velocity page's figures when another process already built the views.

Each run is a fresh interpreter (``--runs``, the first builds, the rest read): it opens the
results, points the view cache at ``CACHE/views`` and draws the streamlines, then the arrow
grid::

    .venv/bin/python bench/bench_views.py RESULTS.h5ad --cache /tmp/views --runs 3

The cache folder is emptied first.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

ONE_RUN = """
import sys, time
from pathlib import Path
from dashboard import figures
from dashboard.data import view_cache
from dashboard.data.results import load_results
view_cache.use(Path(sys.argv[1]), 1024)
results = load_results(sys.argv[2])
start = time.perf_counter()
figures.embedding_figure(results, velocity="streams")
middle = time.perf_counter()
figures.embedding_figure(results, velocity="arrows")
print(f"{middle - start:.2f} {time.perf_counter() - middle:.2f}")
"""


def main() -> None:
    """Run the fresh processes one after the other and print their timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    shutil.rmtree(args.cache, ignore_errors=True)
    print(f"{args.results.name}; load {os.getloadavg()[0]:.1f}")
    for run in range(args.runs):
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", ONE_RUN, str(args.cache / "views"), str(args.results)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        what = "builds" if run == 0 else "reads"
        print(
            f"process {run + 1} ({what}): streams {out[0]} s, arrows {out[1]} s "
            f"(whole process {time.perf_counter() - started:.1f} s)"
        )


if __name__ == "__main__":
    main()
