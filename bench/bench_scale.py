"""Scale: ``velodash simulate`` N × G raw counts, then the whole ``velodash fit`` with defaults.

Records, per size: the simulation's seconds, the fit's exit status and message (an
out-of-memory fit must end with velodash's fix-it message, exit 3), wall time and per-stage
seconds (from ``uns['velodash']['timings']``), epochs and stop reason, **peak RSS** of the fit
process (``os.wait4``'s rusage ``ru_maxrss``, exact) with an RSS timeline sampled every
second (psutil, the process and its children), each stage's peak and end RSS (the stage is
read from the fit's progress lines), the results file's size, and whether scVelo opens it
(``scv.read`` and the layers scVelo's plotting uses). Writes bench/out/<out>.json.

Run:  .venv/bin/python bench/bench_scale.py --sizes 50000x2000,100000x2000
Memory by stage in minutes rather than hours (training cut short; not a result to report):
      .venv/bin/python bench/bench_scale.py --sizes 10000x2000 --max-epochs 2 --out scale_10k_smoke
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


#: The fit's stage lines ("[ 70%] posterior: 25 samples") → the stage names of its timings.
_STAGE_PREFIXES = {
    "preprocessing": "preprocess",
    "training": "train",
    "posterior": "posterior",
    "velocity graph": "graph",
    "uncertainty": "uncertainty",
    "velocity coherence": "coherence",
    "permutation": "permutation",
    "scVelo": "baseline",
    "writing": "write",
}


def _stage_of(line: str) -> str | None:
    """The stage a progress line of ``velodash fit`` starts, or None for other lines."""
    if not line.startswith("[") or "] " not in line:
        return None
    message = line.split("] ", 1)[1]
    return next((v for k, v in _STAGE_PREFIXES.items() if message.startswith(k)), None)


class _RssSampler(threading.Thread):
    """Samples the tree RSS of ``pid`` every ``period`` seconds, tagged with the current stage."""

    def __init__(self, pid: int, period: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.period = period
        self.stage = "start"
        self.timeline: list[tuple[float, int]] = []
        self.by_stage: dict[str, list[int]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        started = time.perf_counter()
        while not self.stop.wait(self.period):
            rss = _tree_rss(self.process)
            self.timeline.append((round(time.perf_counter() - started, 1), rss))
            self.by_stage.setdefault(self.stage, []).append(rss)

    def stage_summary(self) -> dict[str, dict[str, float]]:
        """Per stage, in order: peak and last sampled RSS (GB)."""
        return {
            stage: {"peak_gb": max(values) / 2**30, "end_gb": values[-1] / 2**30}
            for stage, values in self.by_stage.items()
            if values
        }


def simulate(path: Path, cells: int, genes: int, seed: int) -> float:
    """Write the raw counts with ``velodash simulate`` unless ``path`` exists; seconds taken."""
    if path.exists():
        return 0.0
    started = time.perf_counter()
    command = [*VELODASH, "simulate", str(path), "--n-cells", str(cells), "--n-genes", str(genes)]
    subprocess.run([*command, "--seed", str(seed)], check=True, cwd=REPO_ROOT)
    return time.perf_counter() - started


def fit(raw: Path, results: Path, threads: int, max_epochs: int | None) -> dict[str, Any]:
    """``velodash fit RAW`` with defaults (``max_epochs``: cut training short): exit status, wall
    time, peak RSS, RSS by stage and an RSS timeline."""
    env = dict(os.environ, VELODASH_THREADS=str(threads))
    command = [*VELODASH, "fit", str(raw), "--out", str(results)]
    if max_epochs is not None:
        command += ["--max-epochs", str(max_epochs)]
    started = time.perf_counter()
    child = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    sampler = _RssSampler(child.pid)
    sampler.start()
    lines: list[str] = []
    for line in child.stdout:  # universal newlines: the training bar's \r updates are lines
        stage = _stage_of(line)
        if stage is not None:
            sampler.stage = stage
            print(f"{time.perf_counter() - started:8.1f} s  {line.rstrip()}", flush=True)
        lines.append(line)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage: its exact peak RSS
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    sampler.stop.set()
    sampler.join()
    return {
        "exit_code": child.returncode,
        "output_tail": "".join(lines[-20:])[-2000:],
        "wall_s": seconds,
        "peak_rss_gb": usage.ru_maxrss / 2**20,
        "rss_by_stage_gb": sampler.stage_summary(),
        "rss_timeline_gb": [(t, rss / 2**30) for t, rss in sampler.timeline[::10]],
        "load_after": os.getloadavg(),
    }


def inspect_results(results: Path) -> dict[str, Any]:
    """File size, stage seconds and epochs from the results, and whether scVelo works on it:
    read as scVelo 0.3.4 reads (``anndata.read_h5ad``; ``scv.read`` is gone), then
    ``scv.tl.velocity_embedding`` from the stored graph, compared with our ``velocity_umap``."""
    import anndata as ad
    import numpy as np
    import scvelo as scv

    started = time.perf_counter()
    adata = ad.read_h5ad(results)
    read_s = time.perf_counter() - started
    info = adata.uns["velodash"]
    needed = ("velocity", "Ms", "Mu", "fit_t")
    ours = np.asarray(adata.obsm["velocity_umap"]).copy()
    started = time.perf_counter()
    scv.tl.velocity_embedding(adata, basis="umap")
    theirs = adata.obsm["velocity_umap"]
    cosine = np.sum(ours * theirs, 1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1) + 1e-12
    )
    return {
        "file_gb": results.stat().st_size / 2**30,
        "shape": list(adata.shape),
        "stages_s": {k: float(v) for k, v in info["timings"].items()},
        "epochs": int(info["history"]["stopped_epoch"]),
        "stop_reason": str(info["history"].get("stop_reason", "")),
        "read_s": read_s,
        "scvelo_layers_present": all(k in adata.layers for k in needed),
        "scvelo_embedding_s": time.perf_counter() - started,
        "scvelo_embedding_median_cosine": float(np.median(cosine)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50000x2000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/velodash-scale"))
    parser.add_argument("--keep-results", action="store_true")
    parser.add_argument(
        "--max-epochs", type=int, default=None, help="cut training short (memory checks only)"
    )
    parser.add_argument("--out", default="scale")
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for size in args.sizes.split(","):
        cells, genes = (int(x) for x in size.lower().split("x"))
        raw = args.data_dir / f"sim_{cells}x{genes}_s{args.seed}.h5ad"
        results = args.data_dir / f"fit_{cells}x{genes}_s{args.seed}.h5ad"
        run: dict[str, Any] = {"cells": cells, "genes": genes, "threads": args.threads}
        run["max_epochs"] = args.max_epochs
        run["load_before"] = os.getloadavg()
        run["simulate_s"] = simulate(raw, cells, genes, args.seed)
        run["raw_file_gb"] = raw.stat().st_size / 2**30
        run["fit"] = fit(raw, results, args.threads, args.max_epochs)
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
