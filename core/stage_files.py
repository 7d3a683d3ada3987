"""Where a fit's landings live and how they stand, read without loading them: the stages
folder ``OUT.stages/`` and its files, the fit's ``status.json``, whether the fit still runs,
and the failed stages a finished file records. Light (os, json, h5py on demand): the job
runner and the web process read it; writing the landings is :mod:`core.staged_results`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: The first landing: posterior and velocity graph (what the streams, genes, portraits and
#: heatmap need).
BASE = "base"
#: Stages that land after it, each in its own file, in the order the fit runs them.
LATE_STAGES = ("uncertainty", "coherence", "permutation", "baseline")
STATUS_FILE = "status.json"
#: Suffix of a fit's stages folder, and the name of its first landing.
STAGES_SUFFIX = ".stages"
BASE_FILE = f"{BASE}.h5ad"
#: Seconds between two heartbeats of a running fit, and after which a silent one is stopped.
HEARTBEAT_S = 20.0
STALE_S = 180.0


def stages_dir(output: str | os.PathLike) -> Path:
    """The folder where the fit writing ``output`` lands its stages (``OUT.stages``)."""
    output = Path(output)
    return output.with_name(output.name + STAGES_SUFFIX)


def stage_file(folder: Path, stage: str) -> Path:
    """The file stage ``stage`` (``BASE`` or a late stage) lands in."""
    return folder / f"{stage}.h5ad"


def read_status(folder: str | os.PathLike) -> dict[str, Any] | None:
    """``status.json`` of a stages folder, or None when it is absent or unreadable."""
    try:
        return json.loads((Path(folder) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def writer_alive(status: Mapping[str, Any], now: float | None = None) -> bool:
    """Whether the fit that writes ``status`` still runs: its heartbeat is under
    :data:`STALE_S` seconds old and, on this host, its process exists (a fit killed here
    reads as stopped at once)."""
    now = time.time() if now is None else now
    if now - float(status.get("heartbeat") or 0) >= STALE_S:
        return False
    if status.get("host") == socket.gethostname() and status.get("pid"):
        try:
            os.kill(int(status["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


def failed_stages(path: str | os.PathLike) -> dict[str, str]:
    """The late stages recorded as failed in results file ``path`` (stage -> message; empty
    for a complete file), read without loading the file."""
    import h5py

    with h5py.File(path, "r") as f:
        group = f.get("uns/velodash/stages/failed")
        if group is None:
            return {}
        values = {key: node[()] for key, node in group.items()}
    return {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in values.items()}


def is_complete(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a results file with every stage it planned (a file whose late stage
    failed is fitted again when asked for)."""
    return Path(path).is_file() and not failed_stages(path)


def remove_stages(output: str | os.PathLike) -> None:
    """Delete the stages folder of ``output`` (a cancelled or broken fit's partial results)."""
    shutil.rmtree(stages_dir(output), ignore_errors=True)
