"""Size and read speed of each layer of a results file in the layout ``velodash fit`` writes
(issue 16, item 2).

For each results file given: converts it (``core.results_io.write_results``) into a temporary
copy when it is not already in the gene-chunked layout, then per dense layer reports its raw
size (N × G × 4 bytes), its stored size (HDF5's allocated storage), the compression ratio, the
median time to read one gene's column (20 random genes, cold: each read decompresses its chunk)
and the speed of streaming the whole layer by gene blocks (as selection statistics do). Also
the whole file's size against the raw sum, the stored size of every other slot (X, each
obsp/uns/obsm entry, the sparse counts), and which slots were left out as exactly rebuildable
(X, the raw moments, the derived layers of ``core.derived_layers``).

Run:  .venv/bin/python bench/bench_results_size.py /tmp/results/pancreas_now.h5ad [more.h5ad …]
Raw numbers: bench/out/results_size.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from core.results_io import LAYOUT, RAW_MOMENTS, convert_results  # noqa: E402
from dashboard.data.store import ResultsStore  # noqa: E402

OUT = REPO_ROOT / "bench" / "out" / "results_size.json"


def layer_table(path: Path) -> dict:
    """Per dense layer: raw and stored MiB, ratio, column read ms, streaming MB/s."""
    store = ResultsStore(path)
    rng = np.random.default_rng(0)
    rows = {}
    with h5py.File(path, "r") as f:
        for name, info in store.layers.items():
            if not info.dense or info.derived:
                continue
            ds = f["layers"][name]
            raw = ds.size * ds.dtype.itemsize
            stored = ds.id.get_storage_size()
            genes = rng.choice(info.shape[1], min(20, info.shape[1]), replace=False)
            times = []
            for j in genes:
                t = time.perf_counter()
                store.column(name, int(j))
                times.append(1e3 * (time.perf_counter() - t))
            t = time.perf_counter()
            for _ in store.blocks(name):
                pass
            seconds = time.perf_counter() - t
            rows[name] = {
                "raw_mib": raw / 2**20,
                "stored_mib": stored / 2**20,
                "ratio": raw / max(stored, 1),
                "compression": ds.compression,
                "chunks": list(ds.chunks or ()),
                "column_ms": float(np.median(times)),
                "stream_mb_s": raw / 1e6 / seconds,
            }
    return rows


def slot_sizes(path: Path) -> dict[str, float]:
    """Stored MiB of each slot (``layers/Ms``, ``uns/velocity_graph``, ``X``, ``obs`` …): the
    HDF5 storage of its datasets, summed."""
    sizes: dict[str, int] = {}
    with h5py.File(path, "r") as f:

        def visit(name: str, node: h5py.Dataset | h5py.Group) -> None:
            if isinstance(node, h5py.Dataset):
                parts = name.split("/")
                slot = (
                    "/".join(parts[:2])
                    if parts[0] in ("layers", "obsp", "obsm", "uns")
                    else parts[0]
                )
                sizes[slot] = sizes.get(slot, 0) + node.id.get_storage_size()

        f.visititems(visit)
    return {slot: size / 2**20 for slot, size in sorted(sizes.items(), key=lambda kv: -kv[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path)
    args = parser.parse_args()
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for source in args.results:
            path = source
            if ResultsStore(source).adata.uns["velodash"].get("layout") != LAYOUT:
                path = convert_results(source, Path(tmp) / source.name)
            rows = layer_table(path)
            store = ResultsStore(path)
            with h5py.File(path, "r") as f:
                left_out = [k for k in RAW_MOMENTS if k not in f["layers"]]
                left_out += [k for k, info in store.layers.items() if info.derived]
                left_out += ["X"] * ("X" not in f)
            report[str(source)] = {
                "before_mib": source.stat().st_size / 2**20,
                "after_mib": path.stat().st_size / 2**20,
                "left_out": left_out,
                "layers": rows,
                "slots_mib": slot_sizes(path),
                "load_1min": os.getloadavg()[0],
            }
            print(source, json.dumps(report[str(source)], indent=1), flush=True)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
