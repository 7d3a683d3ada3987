"""Running queued fits: the part shared by the local queue and the Celery workers.

`execute` runs one claimed job to its end: it calls `runner.run_fit`, writes throttled progress
and a heartbeat into the store every `HEARTBEAT_S`, stops the fit as soon as the job is no
longer *running* in the store (cancelled, or declared lost), and records the outcome. A
worker that dies stops beating; `reap_stale` (run by web processes and workers) then marks its
job failed and removes any partial results file, so no fit stays "running" forever. Such a job
is failed rather than run again: a fit that took its worker down would take the next one down
too, and the user sees at once what happened and can fit again.

`LocalWorker` is the local queue's executor: a loop that claims queued jobs from the SQLite
store, at most `concurrency` at a time, each supervised by one thread (the fit itself runs in
its own fresh interpreter). `velodash run` runs one in-process; `velodash worker` without
`redis_url` runs one as a process.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from dashboard.jobs.runner import remove_partial_results, run_fit
from dashboard.jobs.sqlite_store import SqliteJobStore
from dashboard.jobs.store import Job, JobStore, QueueUnavailable

log = logging.getLogger(__name__)

#: Seconds between heartbeats of a running job, and silence after which it counts as lost.
HEARTBEAT_S = 2.0
STALE_AFTER_S = 15.0
#: How long a finished fit keeps trying to record its outcome while the store is unreachable.
RECORD_PATIENCE_S = 120.0


def worker_name() -> str:
    """`host:pid:thread` of the calling thread (recorded on the job it runs)."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def _worker_gone(worker: str | None) -> bool:
    """Whether `worker` (host:pid:thread) names a process of this machine that has ended."""
    host, _, rest = (worker or "").partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def reap_stale(store: JobStore, now: float | None = None) -> list[str]:
    """Mark running jobs whose worker went silent (or, on this machine, has ended) as failed;
    returns their ids."""
    now = time.time() if now is None else now
    reaped = []
    for job in store.active():
        silent = now - (job.heartbeat or job.started or job.created)
        if job.state != "running" or (silent < STALE_AFTER_S and not _worker_gone(job.worker)):
            continue
        error = (
            f"The worker running this fit stopped (last sign of life {silent:.0f} s ago): it "
            "was killed, crashed or lost its machine. Fit again to retry."
        )
        if store.transition(job.id, ("running",), "failed", error=error, finished=now):
            remove_partial_results(Path(job.output_path))
            log.warning("job %s (%s) marked failed: worker lost", job.id, job.label)
            reaped.append(job.id)
    return reaped


def _record(store: JobStore, job_id: str, to: str, **values: Any) -> None:
    """`store.transition(job_id, running → to)`, retrying while the store is unreachable."""
    deadline = time.monotonic() + RECORD_PATIENCE_S
    while True:
        try:
            store.transition(job_id, ("running",), to, **values)
            return
        except QueueUnavailable:
            if time.monotonic() > deadline:
                log.error("could not record job %s as %s: job store unreachable", job_id, to)
                return
            time.sleep(1.0)


def execute(store: JobStore, job: Job, shutdown: threading.Event | None = None) -> str:
    """Run `job` (already *running* in the store) to its end; returns what became of it.

    Returns "done", "failed", "cancelled" (the store no longer said *running*: cancelled by a
    user or declared lost) or "interrupted" (`shutdown` was set: the job goes back to *queued*,
    where the local queue's next start claims it and, hosted, `celery_app.republish_lost`
    gives it a message).
    """
    gone = threading.Event()  # the store no longer lists the job as running
    finished = threading.Event()
    last: dict[str, Any] = dict(job.progress)

    def write(progress: dict[str, Any] | None) -> None:
        try:
            if not store.report(job.id, time.time(), progress):
                gone.set()
        except QueueUnavailable:
            pass  # keep fitting through a store outage; the outcome is recorded later

    def report(progress: dict[str, Any]) -> None:
        last.clear()
        last.update(progress)
        write(progress)

    def beat() -> None:
        while not finished.wait(HEARTBEAT_S):
            write(None)

    write({"stage": "starting", "fraction": 0.0, "message": "starting the fit"})
    threading.Thread(target=beat, name=f"velodash-heartbeat-{job.id[:8]}", daemon=True).start()
    stopping = shutdown or threading.Event()
    try:
        result = run_fit(
            job.input_path,
            job.output_path,
            job.params,
            report,
            lambda: gone.is_set() or stopping.is_set(),
        )
    finally:
        finished.set()
    now = time.time()
    if result["status"] == "done":
        progress = {**last, "stage": "done", "fraction": 1.0, "message": "results ready"}
        progress["fit_seconds"] = result["fit_seconds"]
        values = {"device": result["device"], "reused": result["reused"], "progress": progress}
        _record(store, job.id, "done", finished=now, **values)
        return "done"
    if result["status"] == "cancelled":
        if stopping.is_set() and not gone.is_set():
            requeued = {"stage": "queued", "fraction": 0.0, "message": "interrupted by a restart"}
            store.transition(job.id, ("running",), "queued", progress=requeued)
            return "interrupted"
        return "cancelled"
    _record(store, job.id, "failed", finished=now, error=_without_paths(result["message"], job))
    return "failed"


def _without_paths(message: str, job: Job) -> str:
    """`message` with the job's server-side paths replaced (every signed-in user may read it)."""
    results_dir = str(Path(job.output_path).parent)
    return message.replace(job.input_path, job.label).replace(results_dir + os.sep, "")


class LocalWorker:
    """Runs the local queue: claims queued jobs and executes them, `concurrency` at a time."""

    def __init__(self, store: SqliteJobStore, concurrency: int = 1, poll_s: float = 0.5) -> None:
        self.store = store
        self.concurrency = concurrency
        self.poll_s = poll_s
        self._shutdown = threading.Event()
        self._running: list[threading.Thread] = []
        self._loop: threading.Thread | None = None

    def start(self) -> LocalWorker:
        """Run the loop in a background thread (for `velodash run` and tests)."""
        self._loop = threading.Thread(target=self.run, name="velodash-local-queue", daemon=True)
        self._loop.start()
        return self

    def run(self) -> None:
        """Claim and run jobs until `stop()`; store outages are waited out."""
        while not self._shutdown.is_set():
            try:
                reap_stale(self.store)
                self._running = [t for t in self._running if t.is_alive()]
                while len(self._running) < self.concurrency and not self._shutdown.is_set():
                    job = self.store.claim(worker_name(), self.concurrency)
                    if job is None:
                        break
                    thread = threading.Thread(
                        target=self._execute, args=(job,), name=f"velodash-job-{job.id[:8]}"
                    )
                    thread.start()
                    self._running.append(thread)
            except QueueUnavailable as err:
                log.warning("local queue: %s", err)
            except Exception:  # the loop must outlive any surprise; say what happened
                log.exception("local queue: unexpected error (continuing)")
            self._shutdown.wait(self.poll_s)

    def _execute(self, job: Job) -> None:
        """`execute` a claimed job; an unexpected error fails the job instead of vanishing."""
        try:
            execute(self.store, job, self._shutdown)
        except Exception as err:
            log.exception("local queue: job %s failed unexpectedly", job.id)
            _record(
                self.store, job.id, "failed", finished=time.time(), error=f"Internal error: {err}"
            )

    def stop(self, timeout: float = 15.0) -> None:
        """Stop claiming, stop running fits (they go back to the queue) and wait for them."""
        self._shutdown.set()
        deadline = time.monotonic() + timeout
        for thread in [*self._running, *([self._loop] if self._loop else [])]:
            thread.join(max(0.0, deadline - time.monotonic()))
