"""The job store's guarantees, on both backends (SQLite file, real redis-server): one active
job per content key, atomic state changes, queue positions, lost-worker detection; and the
local worker executing jobs."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from fake_results import write_fake_results
from servers import REDIS_SERVER, RedisServer

from dashboard.jobs.redis_store import RedisJobStore
from dashboard.jobs.sqlite_store import SqliteJobStore
from dashboard.jobs.store import Job, QueueUnavailable, new_job_id, valid_job_id
from dashboard.jobs.worker import STALE_AFTER_S, LocalWorker, execute, reap_stale


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    if REDIS_SERVER is None:
        pytest.skip("needs redis-server: apt-get install redis-server (make test)")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.kill()


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        return SqliteJobStore(tmp_path / "jobs.sqlite")
    redis_store = RedisJobStore(request.getfixturevalue("redis_url"), prefix=f"t{new_job_id()}:")
    return redis_store


def _job(key: str = "k1", created: float | None = None, **values) -> Job:
    fields = {
        "key": key,
        "dataset": "ds",
        "label": "Data",
        "owner": "ann",
        "params": {"max_epochs": 5},
        "input_path": "/in.h5ad",
        "output_path": f"/nonexistent/{key}.h5ad",
        "created": time.time() if created is None else created,
    }
    return Job(new_job_id(), **{**fields, **values})


def test_one_active_job_per_key_and_atomic_transitions(store):
    first = store.add(_job("k1"))
    duplicate = store.add(_job("k1"))
    assert duplicate.id == first.id  # the same fit asked twice is one job
    other = store.add(_job("k2"))
    assert other.id != first.id
    assert [j.id for j in store.active()] == [first.id, other.id]
    assert store.transition(first.id, ["queued"], "running", started=1.0) is True
    assert store.transition(first.id, ["queued"], "running") is False  # already running
    assert store.report(first.id, 5.0, {"stage": "train", "epoch": 1}) is True
    assert store.get(first.id).progress == {"stage": "train", "epoch": 1}
    assert store.transition(first.id, ["queued", "running"], "cancelled", error="by bob")
    assert store.report(first.id, 6.0, {"epoch": 2}) is False  # a cancelled job takes no news
    cancelled = store.get(first.id)
    assert (cancelled.state, cancelled.error) == ("cancelled", "by bob")
    assert cancelled.progress["epoch"] == 1
    # With the first one finished, the same key can be asked for again.
    again = store.add(_job("k1"))
    assert again.id not in (first.id, other.id)
    assert store.transition(again.id, ["queued"], "running")
    assert store.transition(again.id, ["running"], "done", reused=True, finished=9.0)
    assert store.latest_done("k1").id == again.id and store.latest_done("k1").reused is True
    assert store.get(new_job_id()) is None
    assert [j.id for j in store.jobs()][:3] == [again.id, other.id, first.id]


def test_queue_positions_follow_submission_order(store):
    now = time.time()
    jobs = [store.add(_job(f"p{i}", created=now + i)) for i in range(3)]
    assert [store.position(j) for j in jobs] == [1, 2, 3]
    store.transition(jobs[0].id, ["queued"], "running")
    assert store.position(store.get(jobs[0].id)) is None
    assert [store.position(store.get(j.id)) for j in jobs[1:]] == [1, 2]


def test_concurrent_cancels_change_state_once(store):
    job = store.add(_job("race"))
    results = []
    barrier = threading.Barrier(8)

    def cancel():
        barrier.wait()
        results.append(store.transition(job.id, ["queued", "running"], "cancelled"))

    threads = [threading.Thread(target=cancel) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]


def test_silent_running_jobs_are_reaped_with_their_partial_files(store, tmp_path):
    output = tmp_path / "results" / "key.h5ad"
    output.parent.mkdir()
    partial = output.parent / ".key.h5ad.0123.tmp"
    partial.write_bytes(b"half")
    job = store.add(_job("silent", output_path=str(output)))
    now = time.time()
    store.transition(job.id, ["queued"], "running", started=now, heartbeat=now)
    assert reap_stale(store, now + STALE_AFTER_S / 2) == []  # still beating recently
    assert reap_stale(store, now + STALE_AFTER_S + 1) == [job.id]
    failed = store.get(job.id)
    assert failed.state == "failed" and "worker running this fit stopped" in failed.error
    assert not partial.exists()


def test_an_interrupted_job_goes_back_to_its_place_in_the_queue(store):
    now = time.time()
    first, second = (store.add(_job(f"i{i}", created=now + i)) for i in range(2))
    assert store.transition(first.id, ["queued"], "running")
    assert store.position(store.get(second.id)) == 1
    assert store.transition(first.id, ["running"], "queued")  # a local worker stopping
    assert [store.position(store.get(j.id)) for j in (first, second)] == [1, 2]


def test_only_one_process_publishes_a_lost_job_again(redis_url):
    store = RedisJobStore(redis_url, prefix=f"t{new_job_id()}:")
    job = store.add(_job("lost", published=100.0))
    seen = store.get(job.id)
    results = []
    barrier = threading.Barrier(8)

    def republish():
        barrier.wait()
        results.append(store.mark_published(seen, 200.0))

    threads = [threading.Thread(target=republish) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    assert store.get(job.id).published == 200.0
    assert store.mark_published(store.get(job.id), 300.0)  # seen afresh: allowed again
    store.transition(job.id, ["queued"], "running")
    assert not store.mark_published(store.get(job.id), 400.0)  # only queued jobs


def test_a_job_table_of_an_older_version_gains_the_new_columns(tmp_path):
    path = tmp_path / "jobs.sqlite"
    old = _job("old", state="done")
    record = {k: v for k, v in old.to_record(native=True).items() if k != "published"}
    with sqlite3.connect(path) as conn:  # the table as the previous version made it
        conn.execute(f"CREATE TABLE jobs (id TEXT PRIMARY KEY, {', '.join(list(record)[1:])})")
        conn.execute(
            f"INSERT INTO jobs VALUES ({', '.join('?' * len(record))})", [*record.values()]
        )
    store = SqliteJobStore(path)
    assert store.get(old.id) == old
    job = store.add(_job("new", published=5.0))
    assert store.get(job.id).published == 5.0


def test_an_unreachable_redis_is_reported_not_raised_raw():
    store = RedisJobStore("redis://127.0.0.1:1/0")
    with pytest.raises(QueueUnavailable, match="unreachable"):
        store.ping()
    with pytest.raises(QueueUnavailable):
        store.add(_job())


def test_job_ids_are_checked_before_any_lookup():
    assert valid_job_id(new_job_id())
    for forged in ("", "../../etc/passwd", "A" * 32, "0" * 31, None, 42):
        assert not valid_job_id(forged)


def _claim_all(path: str, found) -> None:
    store = SqliteJobStore(Path(path))
    while (job := store.claim("p", max_running=100)) is not None:
        found.put(job.id)


def test_two_processes_never_claim_the_same_job(tmp_path):
    path = tmp_path / "jobs.sqlite"
    store = SqliteJobStore(path)
    ids = {store.add(_job(f"c{i}")).id for i in range(40)}
    context = multiprocessing.get_context("fork")
    found = context.Queue()
    procs = [context.Process(target=_claim_all, args=(str(path), found)) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    claimed = [found.get(timeout=5) for _ in range(40)]
    assert sorted(claimed) == sorted(ids)  # each job exactly once
    assert store.claim("p", max_running=100) is None
    assert store.claim("p", max_running=1) is None  # 40 running already: the limit holds


def test_local_worker_runs_jobs_one_at_a_time(tmp_path):
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    # Existing outputs: the fit is found done without starting an interpreter.
    outputs = [write_fake_results(tmp_path / f"r{i}.h5ad", n_cells=30, n_genes=3) for i in range(2)]
    jobs = [store.add(_job(f"w{i}", output_path=str(out))) for i, out in enumerate(outputs)]
    worker = LocalWorker(store, concurrency=1, poll_s=0.05).start()
    try:
        deadline = time.monotonic() + 20
        while any(store.get(j.id).state != "done" for j in jobs):
            assert time.monotonic() < deadline, [store.get(j.id).state for j in jobs]
            time.sleep(0.05)
    finally:
        worker.stop()
    done = [store.get(j.id) for j in jobs]
    assert all(j.reused and j.device == "cpu" and j.progress["fraction"] == 1.0 for j in done)
    assert done[0].finished <= done[1].started  # concurrency 1: one after the other


def test_execute_records_bad_input_as_failed_with_the_reason(tmp_path):
    bad = tmp_path / "counts.h5ad"
    ad.AnnData(np.ones((5, 3), dtype=np.float32)).write_h5ad(bad)
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    job = store.add(_job("bad", input_path=str(bad), output_path=str(tmp_path / "o.h5ad")))
    claimed = store.claim("w", 1)
    assert execute(store, claimed) == "failed"
    failed = store.get(job.id)
    assert failed.state == "failed" and "spliced" in failed.error
    assert not (tmp_path / "o.h5ad").exists()


def test_error_messages_lose_server_paths():
    from dashboard.jobs.worker import _without_paths

    job = _job("p", input_path="/srv/data/raw.h5ad", output_path="/var/cache/results/k.h5ad")
    message = "cannot read /srv/data/raw.h5ad; wrote /var/cache/results/.k.h5ad.1.tmp"
    assert _without_paths(message, job) == "cannot read Data; wrote .k.h5ad.1.tmp"
