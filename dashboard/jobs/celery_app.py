"""Celery over Redis for hosted fits: the app, the one task, and the broker kept in step with
the job store.

The broker message carries only the job id; the job's record (dataset, options, progress,
state) lives in the `RedisJobStore` on the same Redis, where every web process reads it. The
task claims the job (queued → running, atomic) or does nothing when it is no longer queued
(cancelled, already running or finished: a duplicate message is harmless), then
`dashboard.jobs.worker.execute` runs it. Workers use Celery's thread pool: a task only
supervises a fit that runs in its own fresh interpreter, so a thread per concurrent fit is
enough and nothing is forked from a process that may have touched CUDA or thread pools.

The broker is a real queue. A message is acknowledged when its task *ends* (`task_acks_late`)
and a worker takes a message only for a free thread (`worker_prefetch_multiplier` 1 with late
acknowledgement): waiting jobs stay in the Redis list, where any worker, including one started
after a crash, takes them. A message a worker took but never acknowledged (it was killed) stays
in kombu's *unacked* hash and comes back after `VISIBILITY_TIMEOUT_S`. And the job store can
always rebuild what the broker lost: `republish_lost` (run by every worker every
`MAINTENANCE_S` and by web processes when they look at the queue) publishes again each queued
job whose message is in neither the list nor, recently taken, the unacked hash. A running job
whose worker died is failed by `reap_stale`, not re-run (see `dashboard.jobs.worker`).

Run a worker with ``velodash worker --config FILE`` (or ``celery -A
dashboard.hosting.server:celery_app worker --pool threads`` with ``VELODASH_CONFIG`` set).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown
from kombu.exceptions import OperationalError

from dashboard.jobs.devices import keep_announcing, local_cuda, record_worker, worker_id
from dashboard.jobs.redis_store import RedisJobStore
from dashboard.jobs.store import QueueUnavailable
from dashboard.jobs.worker import execute, reap_stale, worker_name

log = logging.getLogger(__name__)

FIT_TASK = "velodash.fit"
QUEUE = "velodash-fits"
#: kombu's Redis keys of taken-but-unacknowledged messages (set explicitly: read below).
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"
#: An unacknowledged message (its worker died, or its fit outlasts this) goes back to the queue
#: after this many seconds; the task then finds its job no longer queued and skips it.
VISIBILITY_TIMEOUT_S = 3600
#: A queued job whose message is missing this long after it was published (or, taken by a
#: worker, still unclaimed this long after) is published again.
REPUBLISH_AFTER_S = 10.0
#: Seconds between a worker's checks for lost workers and lost messages.
MAINTENANCE_S = 5.0
#: Publishing a job gives up after about this many seconds when Redis is unreachable.
SEND_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5}


def make_celery(redis_url: str) -> Celery:
    """A Celery app for `redis_url` with the fit task registered (connects lazily)."""
    app = Celery("velodash", broker=redis_url, set_as_current=False)
    app.conf.update(
        task_ignore_result=True,
        task_default_queue=QUEUE,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options={
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
            "unacked_key": UNACKED_KEY,
            "unacked_index_key": UNACKED_INDEX_KEY,
        },
        # A fit keeps running through a Redis outage; its outcome is recorded once it is back.
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


def _messages(store: RedisJobStore) -> tuple[set[str], dict[str, float]]:
    """Job ids of the messages waiting in the queue, and of those taken but not acknowledged
    with when they were taken (one consistent snapshot of kombu's keys)."""
    with store.reaching(), store.client.pipeline(transaction=True) as pipe:
        pipe.lrange(QUEUE, 0, -1)
        pipe.hgetall(UNACKED_KEY)
        pipe.zrange(UNACKED_INDEX_KEY, 0, -1, withscores=True)
        waiting, unacked, taken_at = pipe.execute()
    when = dict(taken_at)
    held: dict[str, float] = {}
    for tag, raw in unacked.items():  # [message, exchange, routing key]
        job_id = _task_id(json.loads(raw)[0])
        held[job_id] = max(held.get(job_id, 0.0), when.get(tag, 0.0))
    return {_task_id(json.loads(raw)) for raw in waiting}, held


def _task_id(message: dict[str, Any]) -> str | None:
    """The task id (here: the job id) of a kombu message (Celery's protocol 2)."""
    return message.get("headers", {}).get("id")


def republish_lost(celery_app: Celery, store: RedisJobStore, now: float | None = None) -> list[str]:
    """Publish again every job that has been queued for `REPUBLISH_AFTER_S` with no message
    that will run it; returns their ids.

    A message is missing when it is neither waiting in the queue nor taken by a worker less
    than `REPUBLISH_AFTER_S` ago (a live worker claims a job within milliseconds of taking its
    message; one holding it longer died, or hangs). `RedisJobStore.mark_published` lets one
    process only republish a job; an extra message is harmless (its task skips the job).
    """
    now = time.time() if now is None else now
    due = [
        job
        for job in store.active()
        if job.state == "queued" and now - (job.published or job.created) >= REPUBLISH_AFTER_S
    ]
    if not due:
        return []
    waiting, held = _messages(store)
    republished = []
    for job in due:
        if job.id in waiting or now - held.get(job.id, 0.0) < REPUBLISH_AFTER_S:
            continue
        if store.mark_published(job, now):
            try:
                send_fit(celery_app, job.id)
            except OperationalError as err:  # the next look, once Redis is back, retries
                raise QueueUnavailable(f"the job queue (Redis) is unreachable: {err}") from err
            log.warning("job %s (%s) had no message: published again", job.id, job.label)
            republished.append(job.id)
    return republished


def keep_maintaining(celery_app: Celery, store: RedisJobStore, stop: threading.Event) -> None:
    """Until `stop` is set, every `MAINTENANCE_S`: fail the jobs of dead workers and publish
    again the queued jobs whose message was lost (a daemon thread; outages are waited out)."""

    def run() -> None:
        while True:
            try:
                reap_stale(store)
                republish_lost(celery_app, store)
            except QueueUnavailable as err:
                log.warning("queue maintenance: %s", err)
            except Exception:  # the loop must outlive any surprise; say what happened
                log.exception("queue maintenance: unexpected error (continuing)")
            if stop.wait(MAINTENANCE_S):
                return

    threading.Thread(target=run, name="velodash-queue-maintenance", daemon=True).start()


#: Set when this worker process stops: ends its maintenance and CUDA announcement.
_STOPPING = threading.Event()


@worker_ready.connect
def _reap_on_start(sender: Any = None, **_kwargs: Any) -> None:
    """A (re)started worker at once, and then every `MAINTENANCE_S`, fails the jobs that a dead
    worker left *running* and publishes again queued jobs whose message was lost; on a machine
    that can fit on CUDA, it keeps announcing that (`dashboard.jobs.devices`)."""
    broker = _broker(sender)
    if broker:
        store = RedisJobStore(broker)
        _STOPPING.clear()
        keep_maintaining(sender.app, store, _STOPPING)
        if local_cuda():
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
