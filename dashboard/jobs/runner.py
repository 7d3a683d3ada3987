"""The fit job body: a plain function of serialisable arguments around `core.pipeline.fit_file`.

`run_fit` is called by a queue worker (`dashboard.jobs.worker`: the local queue or a Celery task),
never by a web process. It runs the pipeline in a fresh Python interpreter
(``python -m dashboard.jobs.runner``), so torch and CUDA are only ever initialised there (``device=
"auto"`` is resolved by `core`), and no OpenMP/numba thread pool is inherited through a fork (a
forked fit that reused its parent's pools hung). This module imports nothing heavy at the top:
a worker that only supervises fits stays small.

It returns a small JSON dict, reports throttled progress dicts (with the ELBO history so far),
turns bad input into a user-facing message, and stops the fit when `should_stop()` becomes
true. The interpreter dies with the thread that started it (Linux parent-death signal), so a
killed worker leaves no orphan fit behind. The fit lands its results stage by stage
(`core.staged_results`); a cancelled fit leaves nothing behind, one that died after its first
landing keeps what landed (pages say the fit stopped), and a results file whose late stage
failed is fitted again when asked for.
Two jobs for the same output file serialise on a lock file; the second reuses the results.
After writing, the fit interpreter builds the results' default views into ``cache_dir/views``
(`dashboard.data.warm`), so the first visit of each page does not wait for them.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core.progress import ProgressClock

Report = Callable[[dict[str, Any]], None]

#: Prefix of the fit worker's protocol lines on its stdout (anything else is passed through).
PROTOCOL_PREFIX = "velodash-job "

#: Minimum seconds between two progress reports inside one stage (each one is a store write).
REPORT_INTERVAL_S = 0.3
#: How often a running fit checks `should_stop`, and how long it waits after SIGTERM.
STOP_POLL_S = 0.25
STOP_GRACE_S = 5.0
#: The pid of the process that started this one, for `end_with_parent` (set by `child_env`).
ENV_PARENT_PID = "VELODASH_PARENT_PID"
_PR_SET_PDEATHSIG = 1


class ProgressRelay:
    """Turns progress events into throttled JSON progress dicts with the ELBO history so far.

    Events are `core.params.ProgressEvent`s or their dicts. The dict sent has ``stage,
    fraction, message, epoch, max_epochs`` and the lists ``elbo_train``, ``elbo_validation``
    (one value per epoch reported), enough to draw a live training curve, and the wall-clock
    times (Unix seconds) ``started`` (first event) and ``stage_started`` with the overall
    ``stage_fraction`` the stage began at, from which `jobview.remaining` estimates the time
    left. The first event of a stage and the last epoch are always sent; others at most every
    `interval_s` seconds.
    """

    def __init__(self, report: Report, interval_s: float = REPORT_INTERVAL_S) -> None:
        self.report = report
        self.interval_s = interval_s
        self.clock = ProgressClock()
        self.state: dict[str, Any] = {"message": "starting"}
        self.state.update(elbo_train=[], elbo_validation=[])
        self.state.update(self.clock.state)
        self._last = 0.0

    def __call__(self, event: Any) -> None:
        """Record one event and forward it unless another was sent moments ago."""
        event = event if isinstance(event, Mapping) else dataclasses.asdict(event)
        new_stage = self.clock.observe(
            event["stage"], event["fraction"], event.get("epoch"), event.get("max_epochs")
        )
        self.state.update(self.clock.state)
        # Everyone watching sees the message: the last one names the server-side file.
        self.state["message"] = "results ready" if event["stage"] == "done" else event["message"]
        if event.get("epoch") is not None:
            self.state["elbo_train"].append(event["elbo_train"])
            self.state["elbo_validation"].append(event["elbo_validation"])
        now = time.monotonic()
        last_epoch = event.get("epoch") is not None and event["epoch"] == event["max_epochs"]
        if new_stage or last_epoch or now - self._last >= self.interval_s:
            self._last = now
            self.report({k: list(v) if isinstance(v, list) else v for k, v in self.state.items()})


class FitFailed(RuntimeError):
    """The fit worker reported an error; `bad_input` when the data or options were at fault."""

    def __init__(self, message: str, bad_input: bool) -> None:
        super().__init__(message)
        self.bad_input = bad_input


def _device_and_fit_time(path: Path) -> tuple[str, float | None]:
    """The device a results file was fitted on and its fit time (s, the sum of its stage
    timings, as the home page's summary shows it; None when not recorded)."""
    import h5py

    with h5py.File(path, "r") as fh:
        value = fh["uns/velodash/device"][()] if "uns/velodash/device" in fh else b"unknown"
        timings = fh.get("uns/velodash/timings")
        seconds = sum(float(timings[k][()]) for k in timings) if timings is not None else None
    return (value.decode() if isinstance(value, bytes) else str(value)), seconds


def remove_partial_results(output: Path) -> None:
    """Delete temp files an interrupted atomic write of `output` may have left behind."""
    for tmp in output.parent.glob(f".{output.name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def run_fit(
    input_path: str,
    output_path: str,
    params: dict[str, Any],
    report: Report | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Fit `input_path` into `output_path` (a content-addressed results file) and summarise.

    `params` is a `FitParams` dict (unknown keys ignored). Returns a JSON dict: on success
    ``{"status": "done", "results": <file stem>, "device": "cpu"|"cuda:0", "seconds", "reused",
    "fit_seconds"}`` (seconds: this call's wall time; fit_seconds: the results' stage timings);
    ``{"status": "cancelled"}`` when `should_stop()` became true; on bad input or failure
    ``{"status": "error", "message": <what went wrong and how to fix it>}``.
    """
    from core.stage_files import is_complete, remove_stages

    relay = ProgressRelay(report or (lambda _: None))
    should_stop = should_stop or (lambda: False)
    output = Path(output_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    fitting = False  # whether this call ran the fit (and so may clean up after it)
    try:
        with open(output.with_suffix(".lock"), "w") as lock:
            if is_complete(output):
                reused = True
            else:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    relay(
                        {"stage": "queued", "fraction": 0.0, "message": "waiting for another fit"}
                    )
                    while True:
                        with contextlib.suppress(BlockingIOError):
                            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                            break
                        if should_stop():
                            return {"status": "cancelled"}
                        time.sleep(STOP_POLL_S)
                reused = is_complete(output)
                fitting = not reused
                if fitting and not _fit_in_fresh_interpreter(
                    Path(input_path), output, params, relay, should_stop
                ):
                    remove_stages(output)  # a cancelled fit leaves nothing behind
                    return {"status": "cancelled"}
    except FitFailed as err:
        prefix = "" if err.bad_input else "The fit failed: "
        return {"status": "error", "message": prefix + str(err)}
    except Exception as err:  # a job must report, never die silently in a worker
        traceback.print_exc()
        return {"status": "error", "message": f"The fit failed: {type(err).__name__}: {err}"}
    finally:
        if fitting and not output.exists():
            remove_partial_results(output)
    device, fit_seconds = _device_and_fit_time(output)
    return {
        "status": "done",
        "results": output.stem,
        "device": device,
        "seconds": round(time.perf_counter() - start, 2),
        "reused": reused,
        "fit_seconds": fit_seconds,
    }


def _stop_when_asked(
    worker: subprocess.Popen, should_stop: Callable[[], bool], finished: threading.Event
) -> threading.Event:
    """Watch `should_stop` while `worker` runs; terminate it (then kill) when asked."""
    stopped = threading.Event()

    def watch() -> None:
        while not finished.wait(STOP_POLL_S):
            if should_stop():
                stopped.set()
                worker.terminate()
                try:
                    worker.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    worker.kill()
                return

    threading.Thread(target=watch, name="velodash-fit-stop", daemon=True).start()
    return stopped


def _fit_in_fresh_interpreter(
    input_path: Path,
    output: Path,
    params: dict[str, Any],
    progress: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], bool],
) -> bool:
    """Run `fit_file` in a new Python process and relay its progress events.

    Returns False when the fit was stopped on request. Raises `FitFailed` with the worker's
    message when it reports an error or dies.
    """
    command = [sys.executable, "-m", "dashboard.jobs.runner", str(input_path), str(output)]
    finished = threading.Event()
    with subprocess.Popen(
        [*command, json.dumps(params)], stdout=subprocess.PIPE, text=True, env=child_env()
    ) as worker:
        stopped = _stop_when_asked(worker, should_stop, finished)
        failure: dict[str, str] | None = None
        try:
            for line in worker.stdout:
                if not line.startswith(PROTOCOL_PREFIX):
                    sys.stdout.write(line)
                    continue
                message = json.loads(line[len(PROTOCOL_PREFIX) :])
                if "error" in message:
                    failure = message
                else:
                    progress(message)
        finally:
            finished.set()
    if stopped.is_set():
        return False
    if failure is not None:
        raise FitFailed(failure["error"], bad_input=failure["kind"] == "DatasetError")
    if worker.returncode != 0:
        raise FitFailed(f"the fit worker exited with status {worker.returncode}", bad_input=False)
    return True


def child_env() -> dict[str, str]:
    """This process's environment with `ENV_PARENT_PID` naming it: for a child process that
    calls `end_with_parent`."""
    return {**os.environ, ENV_PARENT_PID: str(os.getpid())}


def end_with_parent(sig: signal.Signals) -> None:
    """In a process started with `child_env`: ask Linux to send `sig` to it when the thread
    that started it ends, and exit now if that already happened (so no orphan is left behind:
    a fit whose queue worker was killed, a local queue worker whose server stopped)."""
    parent = os.environ.get(ENV_PARENT_PID)
    if parent is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    if os.getppid() != int(parent):
        sys.exit(1)


def _worker_main(argv: list[str]) -> int:
    """Entry of the fit worker: ``python -m dashboard.jobs.runner INPUT OUTPUT PARAMS_JSON``."""
    end_with_parent(signal.SIGKILL)
    from core.io import DatasetError
    from core.params import FitParams
    from core.pipeline import fit_file
    from core.staged_results import StageFailed
    from dashboard.data.datasets import reference_file
    from dashboard.data.warm import warm_results_file

    input_path, output, params = argv

    def emit(payload: dict[str, Any]) -> None:
        print(PROTOCOL_PREFIX + json.dumps(payload), flush=True)

    try:
        options = FitParams.from_dict(json.loads(params))
        reference = None
        if options.predicts_splicing:
            reference = reference_file(output, options.splicing_reference_sha256)
            if reference is None:
                raise DatasetError("the splicing reference of this fit is no longer offered")
        fit_file(
            input_path,
            output,
            options,
            progress=lambda event: emit(dataclasses.asdict(event)),
            splicing_reference=reference,
        )
    except (DatasetError, ValueError, TypeError) as err:
        emit({"error": str(err), "kind": "DatasetError"})
        return 2
    except StageFailed as err:  # the other stages' results were written: warm them too
        emit({"error": str(err), "kind": "StageFailed"})
        warm_results_file(output)
        return 1
    except Exception as err:
        traceback.print_exc()
        emit({"error": f"{type(err).__name__}: {err}", "kind": type(err).__name__})
        return 1
    # the first visit of each page then reads its views instead of building them
    warm_results_file(output)
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
