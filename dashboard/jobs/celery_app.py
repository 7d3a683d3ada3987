"""Celery over Redis for hosted fits: the app, the one task, and how web processes send to it.

The broker message carries only the job id; the job's record (dataset, options, progress,
state) lives in the `RedisJobStore` on the same Redis, where every web process reads it. The
task claims the job (queued → running) or does nothing when it was cancelled meanwhile, then
`dashboard.jobs.worker.execute` runs it. Workers use Celery's thread pool: a task only supervises
a fit that runs in its own fresh interpreter, so a thread per concurrent fit is enough and
nothing is forked from a process that may have touched CUDA or thread pools. Messages are
acknowledged when a task starts and one task is reserved per thread: the queue order in Redis
is the order fits start, and a killed worker's job is reported failed by the heartbeat check
rather than silently re-run.

Run a worker with ``velodash worker --config FILE`` (or ``celery -A
dashboard.hosting.server:celery_app worker --pool threads`` with ``VELODASH_CONFIG`` set).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from dashboard.jobs.devices import keep_announcing, local_cuda, record_worker, worker_id
from dashboard.jobs.store import RedisJobStore
from dashboard.jobs.worker import execute, reap_stale, worker_name

FIT_TASK = "velodash.fit"
QUEUE = "velodash-fits"
#: Publishing a job gives up after about this many seconds when Redis is unreachable.
SEND_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5}


def make_celery(redis_url: str) -> Celery:
    """A Celery app for `redis_url` with the fit task registered (connects lazily)."""
    app = Celery("velodash", broker=redis_url, set_as_current=False)
    app.conf.update(
        task_ignore_result=True,
        task_default_queue=QUEUE,
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options={"socket_timeout": 10, "socket_connect_timeout": 5},
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_send_task_events=False,
    )

    @app.task(name=FIT_TASK, ignore_result=True)
    def fit(job_id: str) -> str:
        """Claim job `job_id` from the store and run it."""
        return run_job(RedisJobStore(redis_url), job_id)

    return app


def run_job(store: RedisJobStore, job_id: str) -> str:
    """Claim (queued → running) and execute one job; "skipped" when it is no longer queued."""
    job = store.get(job_id)
    now = time.time()
    if job is None or not store.transition(
        job_id, ("queued",), "running", started=now, heartbeat=now, worker=worker_name()
    ):
        return "skipped"
    job.state, job.started, job.heartbeat = "running", now, now
    return execute(store, job)


def send_fit(celery_app: Celery, job_id: str) -> None:
    """Publish job `job_id` to the workers (raises when Redis cannot be reached in ~1 s)."""
    celery_app.send_task(
        FIT_TASK, args=[job_id], task_id=job_id, retry=True, retry_policy=SEND_RETRY_POLICY
    )


#: Set when this worker process stops: ends its CUDA announcement (`dashboard.jobs.devices`).
_STOPPING = threading.Event()


@worker_ready.connect
def _reap_on_start(sender: Any = None, **_kwargs: Any) -> None:
    """A (re)started worker first fails the jobs that a dead worker left *running*, then,
    on a machine that can fit on CUDA, keeps announcing that (`dashboard.jobs.devices`)."""
    broker = _broker(sender)
    if broker:
        store = RedisJobStore(broker)
        reap_stale(store)
        if local_cuda():
            _STOPPING.clear()
            keep_announcing(store, worker_id(), _STOPPING)


@worker_shutdown.connect
def _forget_on_shutdown(sender: Any = None, **_kwargs: Any) -> None:
    """A worker stopping warmly withdraws its CUDA announcement at once (otherwise it expires)."""
    _STOPPING.set()
    broker = _broker(sender)
    if broker:
        record_worker(RedisJobStore(broker), worker_id(), False)


def _broker(sender: Any) -> str | None:
    """The broker URL of the worker that sent a signal."""
    return getattr(getattr(sender, "app", None), "conf", {}).get("broker_url")
