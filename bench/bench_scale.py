"""Scale: ``velodash simulate`` N × G raw counts, then the whole ``velodash fit`` with defaults.

Records, per size: the simulation's seconds, the fit's exit status and message (an
out-of-memory fit must end with velodash's fix-it message, exit 3), wall time and per-stage
seconds (from ``uns['velodash']['timings']``), epochs and stop reason, **peak RSS** of the fit
process (``os.wait4``'s rusage ``ru_maxrss``, exact) with an RSS timeline sampled every
second (psutil, the process and its children), the results file's size, and whether scVelo
opens it (``scv.read`` and the layers scVelo's plotting uses). Writes bench/out/<out>.json.

Run:  .venv/bin/python bench/bench_scale.py --sizes 50000x2000,100000x2000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "bench" / "out"
VELODASH = [sys.executable, "-m", "dashboard.cli"]


def _tree_rss(process: psutil.Process) -> int:
    """Resident bytes of ``process`` and its children (0 once it is gone)."""
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass
    return total


def _sample_rss(pid: int, timeline: list[tuple[float, int]], stop: threading.Event) -> None:
    """Append (seconds since start, tree RSS bytes) every second until ``stop`` is set."""
    process = psutil.Process(pid)
    started = time.perf_counter()
    while not stop.wait(1.0):
        timeline.append((round(time.perf_counter() - started, 1), _tree_rss(process)))


def simulate(path: Path, cells: int, genes: int, seed: int) -> float:
    """Write the raw counts with ``velodash simulate`` unless ``path`` exists; seconds taken."""
    if path.exists():
        return 0.0
    started = time.perf_counter()
    command = [*VELODASH, "simulate", str(path), "--n-cells", str(cells), "--n-genes", str(genes)]
    subprocess.run([*command, "--seed", str(seed)], check=True, cwd=REPO_ROOT)
    return time.perf_counter() - started


def fit(raw: Path, results: Path, threads: int) -> dict[str, Any]:
    """``velodash fit RAW`` with defaults: exit status, wall time, peak RSS and an RSS timeline."""
    env = dict(os.environ, VELODASH_THREADS=str(threads))
    command = [*VELODASH, "fit", str(raw), "--out", str(results), "--quiet"]
    timeline: list[tuple[float, int]] = []
    stop = threading.Event()
    started = time.perf_counter()
    child = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    sampler = threading.Thread(target=_sample_rss, args=(child.pid, timeline, stop), daemon=True)
    sampler.start()
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage: its exact peak RSS
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    sampler.join()
    return {
        "exit_code": child.returncode,
        "output_tail": output[-2000:],
        "wall_s": seconds,
        "peak_rss_gb": usage.ru_maxrss / 2**20,
        "rss_timeline_gb": [(t, rss / 2**30) for t, rss in timeline[::5]],
        "load_after": os.getloadavg(),
    }


def inspect_results(results: Path) -> dict[str, Any]:
    """File size, stage seconds and epochs from the results, and whether scVelo opens it."""
    import scvelo as scv

    started = time.perf_counter()
    adata = scv.read(results)
    info = adata.uns["velodash"]
    needed = ("velocity", "Ms", "Mu", "fit_t")
    return {
        "file_gb": results.stat().st_size / 2**30,
        "shape": list(adata.shape),
        "stages_s": {k: float(v) for k, v in info["timings"].items()},
        "epochs": int(info["history"]["stopped_epoch"]),
        "stop_reason": str(info["history"].get("stop_reason", "")),
        "scvelo_read_s": time.perf_counter() - started,
        "scvelo_layers_present": all(k in adata.layers for k in needed)
        and "velocity_umap" in adata.obsm,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50000x2000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/velodash-scale"))
    parser.add_argument("--keep-results", action="store_true")
    parser.add_argument("--out", default="scale")
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for size in args.sizes.split(","):
        cells, genes = (int(x) for x in size.lower().split("x"))
        raw = args.data_dir / f"sim_{cells}x{genes}_s{args.seed}.h5ad"
        results = args.data_dir / f"fit_{cells}x{genes}_s{args.seed}.h5ad"
        run: dict[str, Any] = {"cells": cells, "genes": genes, "threads": args.threads}
        run["load_before"] = os.getloadavg()
        run["simulate_s"] = simulate(raw, cells, genes, args.seed)
        run["raw_file_gb"] = raw.stat().st_size / 2**30
        run["fit"] = fit(raw, results, args.threads)
        if run["fit"]["exit_code"] == 0:
            run["results"] = inspect_results(results)
            if not args.keep_results:
                results.unlink()
        print(json.dumps({k: v for k, v in run.items() if k != "fit"}, indent=1), flush=True)
        print({k: v for k, v in run["fit"].items() if k != "rss_timeline_gb"}, flush=True)
        runs.append(run)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{args.out}.json"
    path.write_text(json.dumps({"runs": runs}, indent=2, default=float))
    print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
