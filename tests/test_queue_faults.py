"""The hosted queue under faults, with a real redis-server and real Celery workers
(`velodash worker --config FILE`, concurrency 1) started and killed as subprocesses.

Jobs are submitted through `JobQueue` as a web process does, but their state is read from the
store directly, so every recovery seen here is the workers' own (web processes recover the same
way when they look at the queue). No fit interpreter is started: a *waiting* job's results file
is written while it waits, so its worker finds it and finishes at once (a reused fit), and a
*running* job is one whose worker waits on the results file's lock, which the test holds, as
it would behind another fit of the same data. What is under test is the queue: every job the
store calls queued gets a message that runs it, and none runs twice.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import anndata as ad
import numpy as np
import pytest
import redis
from fake_results import write_fake_results
from servers import REDIS_SERVER, CeleryWorker, RedisServer, wait_until

from core.params import FitParams
from dashboard.config import AppConfig
from dashboard.hosting.users import add_user
from dashboard.jobs.celery_app import (
    MAINTENANCE_S,
    QUEUE,
    REPUBLISH_AFTER_S,
    UNACKED_KEY,
    make_celery,
    send_fit,
)
from dashboard.jobs.queue import JobQueue
from dashboard.jobs.store import FINAL, Job

pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None, reason="needs redis-server: apt-get install redis-server (make test)"
)

#: Longest a lost message may take to be published again once a worker runs: its maintenance
#: period after the republish delay, plus a margin for a busy machine.
REPUBLISHED_WITHIN_S = REPUBLISH_AFTER_S + MAINTENANCE_S + 20


@dataclass
class Lab:
    """A redis-server, a worker configuration and the queue a web process would use."""

    root: Path
    redis: RedisServer
    config: Path
    queue: JobQueue
    results: Path
    workers: list[CeleryWorker] = field(default_factory=list)
    locks: list[IO] = field(default_factory=list)
    seeds: Iterator[int] = field(default_factory=lambda: iter(range(1, 10_000)))

    @property
    def broker(self) -> redis.Redis:
        """A client for looking at kombu's keys."""
        return self.queue.store.client

    def worker(self, concurrency: int = 1) -> CeleryWorker:
        """Start one more `velodash worker` and wait until it is ready."""
        log = self.root / f"worker{len(self.workers)}.log"
        self.workers.append(CeleryWorker(self.config, log, concurrency).start())
        return self.workers[-1]

    def _output(self, seed: int) -> Path:
        dataset = self.queue.registry.datasets()[0]
        return self.queue.registry.results_path_for_fit(dataset, FitParams(seed=seed))

    def submit(self) -> Job:
        """Queue a fit that finishes at once when a worker runs it (its results appear now)."""
        seed = next(self.seeds)
        dataset = self.queue.registry.datasets()[0]
        job, created = self.queue.submit(dataset, FitParams(seed=seed), "test")
        assert created and job.state == "queued"
        shutil.copy(self.results, self._output(seed))
        return job

    def submit_held(self) -> Job:
        """Queue a fit whose worker, once it claims it, waits on a results lock the test holds
        (it stays *running*, heartbeat and all, until `release`)."""
        seed = next(self.seeds)
        lock = open(self._output(seed).with_suffix(".lock"), "w")
        fcntl.flock(lock, fcntl.LOCK_EX)
        self.locks.append(lock)
        dataset = self.queue.registry.datasets()[0]
        job, created = self.queue.submit(dataset, FitParams(seed=seed), "test")
        assert created
        return job

    def release(self, job: Job) -> None:
        """Let a held job finish: its results appear, then the lock is released."""
        shutil.copy(self.results, job.output_path)
        lock = next(
            f for f in self.locks if f.name == str(Path(job.output_path).with_suffix(".lock"))
        )
        fcntl.flock(lock, fcntl.LOCK_UN)

    def state(self, job: Job) -> str:
        """The job's state in the store (read directly: no web-process recovery involved)."""
        return self.queue.store.get(job.id).state

    def wait_state(self, job: Job, states: tuple[str, ...], timeout: float) -> Job:
        """Wait until the job is in one of `states`; the job then."""
        wait_until(lambda: self.state(job) in states, timeout, 0.2, f"job to be {states}")
        return self.queue.store.get(job.id)

    def waiting(self) -> int:
        """Messages waiting in the Celery queue."""
        return self.broker.llen(QUEUE)


@pytest.fixture
def lab(tmp_path) -> Iterator[Lab]:
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    # The raw dataset is never read: every fit finds its results (or waits on a lock).
    ad.AnnData(np.ones((4, 3), dtype=np.float32)).write_h5ad(datasets / "raw.h5ad")
    users = tmp_path / "users.json"
    add_user(users, "ann", "admin", "ann-admin-password")
    server = RedisServer(tmp_path / "redis").start()
    config = tmp_path / "velodash.toml"
    config.write_text(
        f'datasets_dir = "{datasets}"\ncache_dir = "{tmp_path / "cache"}"\n'
        f'users_file = "{users}"\nredis_url = "{server.url}"\n'
    )
    app = AppConfig(
        data_dir=datasets, cache_dir=tmp_path / "cache", redis_url=server.url, sample_path=None
    )
    (tmp_path / "cache" / "results").mkdir(parents=True)
    results = write_fake_results(tmp_path / "fitted.h5ad", n_cells=30, n_genes=3)
    built = Lab(tmp_path, server, config, JobQueue(app), results)
    yield built
    for worker in built.workers:
        worker.kill(signal.SIGKILL)
    server.kill()


def _blocked_in_brpop(lab: Lab) -> bool:
    """Whether a client (the idle worker) waits in BRPOP on the queue right now."""
    return any(c["cmd"] == "brpop" and "b" in c["flags"] for c in lab.broker.client_list())


@pytest.mark.slow
def test_jobs_waiting_behind_a_killed_worker_all_run(lab):
    worker = lab.worker()
    running = lab.submit_held()
    lab.wait_state(running, ("running",), 30)
    waiting = [lab.submit(), lab.submit()]
    time.sleep(1)  # room for a worker that would reserve the next message while busy
    broker = (lab.waiting(), lab.broker.hlen(UNACKED_KEY))
    worker.kill(signal.SIGKILL)
    lab.worker()
    for job in waiting:
        done = lab.wait_state(job, FINAL, 60)
        assert (done.state, done.reused) == ("done", True)
    # Both waited in the broker's list, none was held by the busy worker; the one message
    # taken was the running job's, acknowledged when its task ends.
    assert broker == (2, 1)
    # The job that was running is failed, not re-run: its worker is gone.
    failed = lab.wait_state(running, FINAL, 30)
    assert failed.state == "failed" and "worker running this fit stopped" in failed.error


@pytest.mark.slow
def test_a_message_taken_by_a_worker_that_died_before_recording_it_is_published_again(lab):
    """The worker is frozen while Redis hands it a message (BRPOP pops it from the list), then
    killed: the message is nowhere, neither waiting nor unacknowledged."""
    worker = lab.worker()
    for _attempt in range(5):
        wait_until(lambda: _blocked_in_brpop(lab), 10, 0.05, "the worker to wait in BRPOP")
        os.kill(worker.proc.pid, signal.SIGSTOP)
        job = lab.submit()
        time.sleep(1.5)  # kombu's BRPOP waits 1 s: Redis answered it or let it time out
        if lab.waiting() == 0:
            break  # the frozen worker has the message
        os.kill(worker.proc.pid, signal.SIGCONT)  # too late: it takes the job; try again
        lab.wait_state(job, ("done",), 30)
    else:
        pytest.fail("never caught the worker waiting for a message")
    worker.kill(signal.SIGKILL)
    assert (lab.waiting(), lab.broker.hlen(UNACKED_KEY)) == (0, 0)
    assert lab.state(job) == "queued"
    lab.worker()
    done = lab.wait_state(job, FINAL, REPUBLISHED_WITHIN_S)
    assert done.state == "done"


@pytest.mark.slow
def test_a_message_held_unclaimed_by_a_killed_worker_is_published_again(lab):
    """A rate limit (a Celery remote-control command) makes the worker hold a received message
    without starting its task; the worker is killed with the message unacknowledged."""
    worker = lab.worker()
    celery = make_celery(lab.redis.url)
    replies = celery.control.rate_limit("velodash.fit", "1/h", reply=True, timeout=10)
    assert replies and all("ok" in r for reply in replies for r in reply.values())
    first = lab.submit()  # takes the one token of the hour
    lab.wait_state(first, ("done",), 30)
    held = lab.submit()
    wait_until(lambda: lab.broker.hlen(UNACKED_KEY) == 1, 10, what="the worker to take it")
    time.sleep(1)
    assert lab.state(held) == "queued" and lab.waiting() == 0
    worker.kill(signal.SIGKILL)
    lab.worker()  # a new worker has no rate limit
    done = lab.wait_state(held, FINAL, REPUBLISHED_WITHIN_S)
    assert done.state == "done"


@pytest.mark.slow
def test_redis_restart_while_jobs_wait_strands_none(lab):
    """Redis persists (append-only file, as docs/hosting.md asks): the job store lives there."""
    lab.worker()
    running = lab.submit_held()
    lab.wait_state(running, ("running",), 30)
    waiting = [lab.submit(), lab.submit()]
    lab.redis.kill()
    time.sleep(3)  # the worker notices
    lab.redis.start()
    assert lab.state(running) == "running"
    assert [lab.state(job) for job in waiting] == ["queued", "queued"]
    lab.release(running)
    for job in [running, *waiting]:
        assert lab.wait_state(job, FINAL, 90).state == "done"


@pytest.mark.slow
def test_a_deleted_queue_is_rebuilt_from_the_job_store(lab):
    worker = lab.worker()
    running = lab.submit_held()
    lab.wait_state(running, ("running",), 30)
    waiting = [lab.submit(), lab.submit()]
    lab.broker.delete(QUEUE)
    lab.release(running)
    for job in waiting:
        assert lab.wait_state(job, FINAL, REPUBLISHED_WITHIN_S).state == "done"
    assert worker.output().count("published again") == 2


@pytest.mark.slow
def test_duplicate_messages_never_run_a_job_twice(lab):
    worker = lab.worker(concurrency=2)  # a free thread takes the duplicates at once
    running = lab.submit_held()
    claimed = lab.wait_state(running, ("running",), 30)
    celery = make_celery(lab.redis.url)
    for _ in range(3):
        send_fit(celery, running.id)
    wait_until(lambda: worker.output().count("'skipped'") == 3, 30, what="duplicates skipped")
    now = lab.queue.store.get(running.id)
    assert (now.state, now.started, now.worker) == ("running", claimed.started, claimed.worker)
    lab.release(running)
    assert lab.wait_state(running, FINAL, 30).state == "done"
    wait_until(lambda: f"{running.id}] succeeded" in worker.output(), 10, what="the log")
    assert worker.output().count(": 'done'") == 1
