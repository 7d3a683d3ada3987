"""The background fit job: a plain function of serialisable arguments around `core.pipeline`.

It runs in a job process (DiskcacheManager subprocess or Celery worker), never in the web
process, so torch and CUDA are only ever initialised here (``device="auto"`` is resolved by
`core`). It returns a small JSON dict (never a model), reports progress as JSON dicts, and
turns bad input into a user-facing error message. Two jobs for the same output file (two
tabs, two workers) serialise on a lock file; the second finds the results and returns at once.
"""

from __future__ import annotations

import fcntl
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py

from core.io import DatasetError
from core.pipeline import FitParams, ProgressEvent, fit_file

Report = Callable[[dict[str, Any]], None]

#: Minimum seconds between two progress reports inside one stage (each one is a cache write).
REPORT_INTERVAL_S = 0.3


class ProgressRelay:
    """Turns `ProgressEvent`s into throttled JSON progress dicts with the ELBO history so far.

    The dict has ``stage, fraction, message, epoch, max_epochs`` and the lists ``elbo_train``,
    ``elbo_validation`` (one value per epoch reported), enough to draw a live training curve.
    """

    def __init__(self, report: Report, interval_s: float = REPORT_INTERVAL_S) -> None:
        self.report = report
        self.interval_s = interval_s
        self.state: dict[str, Any] = {
            "stage": "queued",
            "fraction": 0.0,
            "message": "starting",
            "epoch": None,
            "max_epochs": None,
            "elbo_train": [],
            "elbo_validation": [],
        }
        self._last = 0.0

    def __call__(self, event: ProgressEvent) -> None:
        """Record one event and forward it unless another was sent moments ago."""
        new_stage = event.stage != self.state["stage"]
        self.state.update(stage=event.stage, fraction=round(event.fraction, 4))
        self.state["message"] = event.message
        if event.epoch is not None:
            self.state.update(epoch=event.epoch, max_epochs=event.max_epochs)
            self.state["elbo_train"].append(event.elbo_train)
            self.state["elbo_validation"].append(event.elbo_validation)
        now = time.monotonic()
        last_epoch = event.epoch is not None and event.epoch == event.max_epochs
        if new_stage or last_epoch or now - self._last >= self.interval_s:
            self._last = now
            self.report({k: list(v) if isinstance(v, list) else v for k, v in self.state.items()})


def _device_used(path: Path) -> str:
    with h5py.File(path, "r") as fh:
        value = fh["uns/velodash/device"][()] if "uns/velodash/device" in fh else b"unknown"
    return value.decode() if isinstance(value, bytes) else str(value)


def run_fit(
    input_path: str,
    output_path: str,
    params: dict[str, Any],
    report: Report | None = None,
) -> dict[str, Any]:
    """Fit `input_path` into `output_path` (a content-addressed results file) and summarise.

    `params` is a `FitParams` dict (unknown keys ignored). Returns a JSON dict: on success
    ``{"status": "done", "results": <file stem>, "device": "cpu"|"cuda:0", "seconds", "reused"}``;
    on bad input or failure ``{"status": "error", "message": <what went wrong and how to fix it>}``.
    """
    relay = ProgressRelay(report or (lambda _: None))
    output = Path(output_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        fit_params = FitParams.from_dict(params)
        with open(output.with_suffix(".lock"), "w") as lock:
            if output.exists():
                reused = True
            else:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    relay(ProgressEvent("queued", 0.0, "waiting for another fit of the same data"))
                    fcntl.flock(lock, fcntl.LOCK_EX)
                reused = output.exists()
                if not reused:
                    fit_file(input_path, output, fit_params, progress=relay)
    except (DatasetError, ValueError) as err:
        return {"status": "error", "message": str(err)}
    except Exception as err:  # a job must report, never die silently in a worker
        traceback.print_exc()
        return {"status": "error", "message": f"The fit failed: {type(err).__name__}: {err}"}
    return {
        "status": "done",
        "results": output.stem,
        "device": _device_used(output),
        "seconds": round(time.perf_counter() - start, 2),
        "reused": reused,
    }
