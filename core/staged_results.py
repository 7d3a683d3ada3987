"""Results that land stage by stage while a fit runs.

A fit writing ``OUT`` keeps, until it ends, a folder ``OUT.stages/`` (the names and how to
read them without loading anything: :mod:`core.stage_files`):

- ``base.h5ad``: everything up to the posterior and the velocity graph (embedding, velocity,
  latent time, fitted kinetics, projected velocity), a results file of the contract without
  the late analyses, written as soon as the graph is done;
- ``<stage>.h5ad`` for each late stage (``LATE_STAGES``) once it is done: the slots that
  stage added (obs/var columns, obsm/varm/layers/uns entries), in the same gene-chunked layout;
- ``spill/``: until the base lands, the posterior's layers but the velocity, written a block
  of cells at a time as they are made (:class:`core.row_spill.RowSpill`), so that the fit
  does not hold them all in memory;
- ``status.json``: the planned stages, those landed, the one running, a failure, the fit's
  progress (the fields :func:`core.progress.seconds_left` reads), and the writer's pid, host
  and heartbeat.

Every file is written to a temp name and renamed, so a reader sees a stage whole or not at
all. When the fit ends the whole results are written to ``OUT`` (one ordinary ``.h5ad``) and the
folder is removed. A late stage that fails is recorded (``uns['velodash']['stages']['failed']``
in ``OUT``: stage -> message) and what it wrote is dropped; the other stages are kept.
Nothing here imports the dashboard.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anndata as ad
import pandas as pd

from core.progress import ProgressClock
from core.results_io import extend_results, write_results
from core.row_spill import RowSpill
from core.stage_files import BASE, HEARTBEAT_S, STATUS_FILE, stage_file, stages_dir

#: Sub-folder of the stages folder holding the posterior's spilled layers until the base lands.
SPILL_DIR = "spill"
#: Least seconds between two progress writes of ``status.json``.
STATUS_INTERVAL_S = 2.0


def slot_keys(adata: ad.AnnData) -> dict[str, set[str]]:
    """The keys of each container of ``adata`` (and of ``uns['velodash']``): what a stage's
    additions are measured against (:func:`added_since`)."""
    keys = {
        "obs": set(adata.obs.columns),
        "var": set(adata.var.columns),
        "obsm": set(adata.obsm.keys()),
        "varm": set(adata.varm.keys()),
        "layers": set(adata.layers.keys()),
        "uns": set(adata.uns.keys()),
    }
    keys["velodash"] = set(adata.uns.get("velodash", {}))
    return keys


def added_since(adata: ad.AnnData, before: Mapping[str, set[str]]) -> ad.AnnData:
    """An AnnData over the same cells and genes holding only the slots added to ``adata``
    since ``before`` (:func:`slot_keys`); new ``uns['velodash']`` entries go under
    ``uns['velodash']``."""
    after = slot_keys(adata)
    new = {kind: sorted(after[kind] - before[kind]) for kind in after}
    velodash = adata.uns.get("velodash", {})
    uns = {k: adata.uns[k] for k in new["uns"]}
    if new["velodash"]:
        uns["velodash"] = {k: velodash[k] for k in new["velodash"]}
    return ad.AnnData(
        obs=pd.DataFrame({k: adata.obs[k] for k in new["obs"]}, index=adata.obs_names),
        var=pd.DataFrame({k: adata.var[k] for k in new["var"]}, index=adata.var_names),
        obsm={k: adata.obsm[k] for k in new["obsm"]},
        varm={k: adata.varm[k] for k in new["varm"]},
        layers={k: adata.layers[k] for k in new["layers"]},
        uns=uns,
    )


class StageWriter:
    """Lands a fit's stages in :func:`stages_dir` of ``output`` and keeps ``status.json``
    current (progress at most every :data:`STATUS_INTERVAL_S`, a heartbeat every
    :data:`HEARTBEAT_S` from a thread). Use as a context manager: leaving it stops the
    heartbeat; :meth:`finish` writes ``output`` whole and removes the folder."""

    def __init__(self, output: str | os.PathLike, planned: list[str]) -> None:
        """Start (afresh) the stages folder of ``output`` for ``planned`` landings
        (``BASE`` first, then the late stages the fit runs)."""
        self.output = Path(output)
        self.folder = stages_dir(self.output)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.clock = ProgressClock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last_write = 0.0
        self._base_keys: dict[str, set[str]] | None = None
        self._spill: RowSpill | None = None
        self.status: dict[str, Any] = {
            "format": 1,
            "output": self.output.name,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "heartbeat": time.time(),
            "planned": list(planned),
            "landed": [],
            "failed": {},
            "progress": self.clock.state,
        }
        self._write_status()
        self._beat = threading.Thread(target=self._heartbeat, name="velodash-stages", daemon=True)
        self._beat.start()

    def __enter__(self) -> StageWriter:
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._write_status()

    def _write_status(self) -> None:
        with self._lock:
            self.status["heartbeat"] = time.time()
            tmp = self.folder / f".{STATUS_FILE}.{uuid.uuid4().hex}.tmp"
            try:
                tmp.write_text(json.dumps(self.status, default=str))
                os.replace(tmp, self.folder / STATUS_FILE)
            except OSError:  # the folder went (the fit finished or was cleaned up)
                tmp.unlink(missing_ok=True)
            self._last_write = time.monotonic()

    def progress(
        self, stage: str, fraction: float, epoch: int | None = None, max_epochs: int | None = None
    ) -> None:
        """Record a progress event; written at once for a new stage, else throttled."""
        new_stage = self.clock.observe(stage, fraction, epoch, max_epochs)
        if new_stage or time.monotonic() - self._last_write >= STATUS_INTERVAL_S:
            self._write_status()

    def row_spill(self, shape: tuple[int, int]) -> RowSpill:
        """A :class:`RowSpill` of (cells, genes) ``shape`` in the stages folder, for layers the
        base landing writes (with ``adata``'s own) and then deletes."""
        self._spill = RowSpill(self.folder / SPILL_DIR, shape)
        return self._spill

    def land(self, stage: str, adata: ad.AnnData, before: Mapping[str, set[str]] | None) -> None:
        """Write stage ``stage`` atomically: ``adata`` whole for ``BASE`` (``before`` None),
        with the layers of :meth:`row_spill` if any, else the slots it gained since ``before``
        (:func:`added_since`)."""
        part = adata if before is None else added_since(adata, before)
        spill = self._spill if before is None else None
        write_results(part, stage_file(self.folder, stage), spill)
        if before is None:
            self._base_keys = slot_keys(adata)
            if spill is not None:
                spill.remove()
                self._spill = None
        self.status["landed"].append(stage)
        self._write_status()

    def fail(self, stage: str, message: str) -> None:
        """Record that late stage ``stage`` failed with ``message`` (the fit goes on)."""
        self.status["failed"][stage] = message
        self._write_status()

    def abandon(self, message: str) -> None:
        """The fit raised ``message`` (or was cancelled): remove the folder when nothing has
        landed, else record the stage it stopped in as failed, keeping what landed."""
        self._stop.set()
        if not self.status["landed"]:
            with self._lock:
                shutil.rmtree(self.folder, ignore_errors=True)
            return
        self.status["failed"][self.clock.state["stage"]] = message
        self._write_status()

    def finish(self, adata: ad.AnnData) -> Path:
        """Write the whole results to ``output`` (atomically: a copy of the base landing plus
        the slots added since, :func:`core.results_io.extend_results`) and remove the stages
        folder."""
        base = stage_file(self.folder, BASE)
        if self._base_keys is None:
            path = write_results(adata, self.output)
        elif base.is_file():
            added = added_since(adata, self._base_keys)
            path = extend_results(base, adata, added, self.output)
        else:  # the base's layers may live only there (core.analyses.release_landed_layers)
            raise FileNotFoundError(
                f"the base landing {base} disappeared before the results were written; fit "
                "again (nothing else touches a running fit's stages folder)."
            )
        self._stop.set()
        with self._lock:
            shutil.rmtree(self.folder, ignore_errors=True)
        return path


class StageFailed(RuntimeError):
    """Late stages of a fit failed (``failed``: stage -> message); the results of the others
    were written to ``path``."""

    def __init__(self, failed: Mapping[str, str], path: Path) -> None:
        names = ", ".join(failed)
        reasons = "; ".join(
            message if len(failed) == 1 else f"{stage}: {message}"
            for stage, message in failed.items()
        )
        super().__init__(
            f"the {names} stage{'s' if len(failed) > 1 else ''} failed ({reasons}); the results "
            f"of the other stages were written to {path.name} and can be browsed. Fit again to "
            "retry."
        )
        self.failed, self.path = dict(failed), path


def discard_added(adata: ad.AnnData, before: Mapping[str, set[str]]) -> None:
    """Remove (in place) every slot ``adata`` gained since ``before`` (:func:`slot_keys`): what
    a stage that failed half way had written."""
    added = added_since(adata, before)
    adata.obs.drop(columns=list(added.obs.columns), inplace=True)
    adata.var.drop(columns=list(added.var.columns), inplace=True)
    for kind in ("obsm", "varm", "layers"):
        for key in list(getattr(added, kind).keys()):
            del getattr(adata, kind)[key]
    for key in set(added.uns) - {"velodash"}:
        del adata.uns[key]
    for key in added.uns.get("velodash", {}):
        del adata.uns["velodash"][key]
