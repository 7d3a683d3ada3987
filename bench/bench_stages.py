"""When each stage of a fit becomes browsable (issue 16, item 4).

Runs ``core.pipeline.fit_file`` on INPUT and records, from the fit's start: when each stage
began (its first progress event), when each landing file appeared in ``OUT.stages/`` (its
mtime) and its size, when the whole file was written, and the seconds the landings cost
(``timings['write']`` less the final write, both from the file). Prints a JSON summary and
writes it to ``--out``.

    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_stages.py ../shared/data/pancreas_739.h5ad
    .venv/bin/python bench/bench_stages.py RAW20K.h5ad --no-normalize --max-epochs 3 \\
        --skip intrinsic --skip extrinsic
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

from core.params import FitParams
from core.pipeline import fit_file
from core.stage_files import is_complete, stages_dir

OUT_DIR = Path(__file__).resolve().parent / "out"


def _watch(folder: Path, seen: dict[str, dict], stop: threading.Event) -> None:
    """Note each landing file's mtime and size as it appears (the folder goes at the end)."""
    while not stop.wait(0.2):
        for path in folder.glob("*.h5ad") if folder.is_dir() else ():
            if path.name not in seen:
                try:
                    stat = path.stat()
                except FileNotFoundError:  # the fit ended and removed the folder
                    continue
                seen[path.name] = {"landed": stat.st_mtime, "mb": round(stat.st_size / 1e6, 2)}


def main() -> None:
    """Fit INPUT with the given options and report when each stage landed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("--no-normalize", action="store_true")
    parser.add_argument("--max-epochs", type=int)
    parser.add_argument("--skip", action="append", default=[])
    parser.add_argument("--out", type=Path, default=OUT_DIR / "stages.json")
    args = parser.parse_args()
    options = {"skip": args.skip}
    if args.no_normalize:
        options["normalize"] = False
    if args.max_epochs:
        options["max_epochs"] = args.max_epochs
    params = FitParams.from_dict(options)

    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "results.h5ad"
        began: dict[str, float] = {}
        landed: dict[str, dict] = {}
        stop = threading.Event()
        watcher = threading.Thread(target=_watch, args=(stages_dir(output), landed, stop))
        watcher.start()
        start = time.time()
        fit_file(
            args.input,
            output,
            params,
            progress=lambda event: began.setdefault(event.stage, time.time()),
        )
        written = time.time()
        stop.set()
        watcher.join()
        import anndata as ad

        timings = dict(ad.read_h5ad(output, backed="r").uns["velodash"]["timings"])
        size_mb = round(output.stat().st_size / 1e6, 2)
        assert is_complete(output)
    summary = {
        "input": args.input.name,
        "options": options,
        "load_average": os.getloadavg(),
        "stage_began_s": {k: round(v - start, 1) for k, v in began.items()},
        "landed_s": {k: round(v["landed"] - start, 1) for k, v in landed.items()},
        "landing_mb": {k: v["mb"] for k, v in landed.items()},
        "whole_file_s": round(written - start, 1),
        "whole_file_mb": size_mb,
        "landing_write_s": timings.get("write"),
        "timings": timings,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
