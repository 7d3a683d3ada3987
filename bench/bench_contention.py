"""Contention: how a fit slows down when it shares the machine, under each thread policy.

Every scenario runs real processes: ``velodash fit`` on one simulated dataset (fixed epochs,
every analysis), alone and next to a competitor, and reports the fit's wall time and the ratio
to its solo time (target ≤ 2.5 on a 2-core machine):

- ``solo``: the fit alone;
- ``two-fits``: two identical fits started together (what two Celery workers on one host or
  two users' jobs do);
- ``fit+streams``: the fit while another process keeps drawing velocity streams the way the
  dashboard does (``dashboard.figures.embedding_figure`` with fresh stream settings in a loop).

Each scenario runs under the thread policies in ``--policies``: ``passive`` (velodash's default:
``OMP_WAIT_POLICY=PASSIVE``, all cores), ``active`` (libgomp's spinning default, all cores) and
``one-thread`` (``VELODASH_THREADS=1``).

Run:  .venv/bin/python bench/bench_contention.py --size 3000x500 --epochs 40
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "bench" / "out"

POLICIES = {
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "active": {"OMP_WAIT_POLICY": "ACTIVE"},
    "one-thread": {"OMP_WAIT_POLICY": "PASSIVE", "VELODASH_THREADS": "1"},
}

STREAMS_LOOP = """
import itertools, sys
from dashboard import figures
from dashboard.data.results import load_results
results = load_results(sys.argv[1])
for i in itertools.count():
    figures.embedding_figure(results, density=1.0 + (i % 40) / 20, smooth=0.3 + (i % 7) / 10)
"""


def load() -> float:
    """1-minute load average (not common.load: importing common changes the numba threads that
    the child processes would inherit)."""
    return os.getloadavg()[0]


def simulated_input(n_cells: int, n_genes: int, folder: Path) -> Path:
    """Raw counts of the sample-data simulation (``velodash simulate``), written once."""
    path = folder / f"sim_{n_cells}x{n_genes}.h5ad"
    if not path.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "dashboard.cli",
                "simulate",
                str(path),
                "--n-cells",
                str(n_cells),
                "--n-genes",
                str(n_genes),
            ],
            check=True,
            cwd=REPO_ROOT,
            capture_output=True,
        )
    return path


def fit_command(data: Path, out: Path, epochs: int) -> list[str]:
    """``velodash fit`` with a fixed number of epochs (so solo and shared runs do equal work)."""
    return [
        sys.executable,
        "-m",
        "dashboard.cli",
        "fit",
        str(data),
        "--out",
        str(out),
        "--max-epochs",
        str(epochs),
        "--patience",
        str(10 * epochs),
        "--quiet",
    ]


def run_scenario(
    name: str, policy: dict[str, str], data: Path, results: Path, epochs: int, folder: Path
) -> list[float]:
    """Wall seconds of the fit(s) of one scenario under one thread policy."""
    env = {**os.environ, **policy}
    fits = 2 if name == "two-fits" else 1
    helper = None
    if name == "fit+streams":
        helper = subprocess.Popen(
            [sys.executable, "-c", STREAMS_LOOP, str(results)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(8)  # let it import and start drawing
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            fit_command(data, folder / f"{name}_{i}.h5ad", epochs),
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(fits)
    ]
    seconds = []
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"{name}: velodash fit failed:\n{err.decode()[-2000:]}")
        seconds.append(time.perf_counter() - started)
    if helper is not None:
        helper.kill()
        helper.wait()
    return seconds


def main() -> None:
    """Run every scenario under every policy; print and store wall times and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="3000x500", help="CELLSxGENES of the simulation")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--policies", default="passive,active,one-thread")
    parser.add_argument("--scenarios", default="solo,two-fits,fit+streams")
    parser.add_argument("--out", default="contention")
    args = parser.parse_args()
    n_cells, n_genes = (int(x) for x in args.size.lower().split("x"))
    folder = Path(tempfile.mkdtemp(prefix="velodash-contention-"))
    data = simulated_input(n_cells, n_genes, folder)
    results = folder / "reference_fit.h5ad"  # a results file for the streams loop
    subprocess.run(fit_command(data, results, 5), check=True, cwd=REPO_ROOT, capture_output=True)
    payload: dict[str, Any] = {"args": vars(args), "cpu_count": os.cpu_count(), "runs": {}}
    for policy in args.policies.split(","):
        solo = None
        for scenario in args.scenarios.split(","):
            seconds = run_scenario(scenario, POLICIES[policy], data, results, args.epochs, folder)
            worst = max(seconds)
            solo = worst if scenario == "solo" else solo
            ratio = worst / solo if solo else float("nan")
            payload["runs"][f"{policy}/{scenario}"] = {
                "seconds": seconds,
                "ratio_to_solo": ratio,
                "load": load(),
            }
            print(
                f"{policy:>10} {scenario:>12}: {', '.join(f'{s:.1f}' for s in seconds)} s "
                f"(x{ratio:.2f} of solo, load {load():.2f})",
                flush=True,
            )
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            (OUT_DIR / f"{args.out}.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
