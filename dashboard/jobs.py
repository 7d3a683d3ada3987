"""The background fit job: a plain function of serialisable arguments around `core.pipeline`.

It runs in a job process (DiskcacheManager subprocess or Celery worker), never in the web
process, so torch and CUDA are only ever initialised here (``device="auto"`` is resolved by
`core`). It returns a small JSON dict (never a model), reports progress as JSON dicts, and
turns bad input into a user-facing error message. Two jobs for the same output file (two
tabs, two workers) serialise on a lock file; the second finds the results and returns at once.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py

from core.io import DatasetError
from core.pipeline import FitParams, ProgressEvent, fit_file

Report = Callable[[dict[str, Any]], None]

#: Prefix of the fit worker's protocol lines on its stdout (anything else is passed through).
PROTOCOL_PREFIX = "velodash-job "

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
                    _fit_in_fresh_interpreter(Path(input_path), output, fit_params, relay)
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


def _fit_in_fresh_interpreter(
    input_path: Path, output: Path, params: FitParams, progress: Callable[[ProgressEvent], None]
) -> None:
    """Run `fit_file` in a new Python process and relay its progress events.

    Job processes are forked from the web process (DiskcacheManager) or a Celery worker. A fork
    inherits OpenMP/numba thread pools that the parent may have started (e.g. while drawing
    stream plots), and a forked child that uses them again can hang; a fresh interpreter cannot.
    Killing the job (cancel) kills this child with it. Raises `DatasetError` with the worker's
    message for bad input, `RuntimeError` for any other failure.
    """
    command = [sys.executable, "-m", "dashboard.jobs", str(input_path), str(output)]
    with subprocess.Popen(
        [*command, json.dumps(params.to_dict())], stdout=subprocess.PIPE, text=True
    ) as worker:
        failure: dict[str, str] | None = None
        for line in worker.stdout:
            if not line.startswith(PROTOCOL_PREFIX):
                sys.stdout.write(line)
                continue
            message = json.loads(line[len(PROTOCOL_PREFIX) :])
            if "error" in message:
                failure = message
            else:
                progress(ProgressEvent(**message))
    if failure is not None:
        error = DatasetError if failure["kind"] == "DatasetError" else RuntimeError
        raise error(failure["error"])
    if worker.returncode != 0:
        raise RuntimeError(f"the fit worker exited with status {worker.returncode}")


def _worker_main(argv: list[str]) -> int:
    """Entry of the fit worker: ``python -m dashboard.jobs INPUT OUTPUT PARAMS_JSON``."""
    input_path, output, params = argv

    def emit(payload: dict[str, Any]) -> None:
        print(PROTOCOL_PREFIX + json.dumps(payload), flush=True)

    try:
        fit_file(
            input_path,
            output,
            FitParams.from_dict(json.loads(params)),
            progress=lambda event: emit(dataclasses.asdict(event)),
        )
    except (DatasetError, ValueError) as err:
        emit({"error": str(err), "kind": "DatasetError"})
        return 2
    except Exception as err:
        traceback.print_exc()
        emit({"error": f"{type(err).__name__}: {err}", "kind": type(err).__name__})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
