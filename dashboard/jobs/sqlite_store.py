"""The local queue's job store: one SQLite file in the cache dir (WAL mode), shared by the
web process and the local worker(s); every state change is one atomic statement."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

from dashboard.jobs.store import (
    KEEP_FINISHED,
    Job,
    JobStore,
    QueueUnavailable,
    encode_values,
)

#: The local queue's SQLite file, in the cache dir.
SQLITE_NAME = "jobs.sqlite"

_COLUMNS = ", ".join("id TEXT PRIMARY KEY" if f.name == "id" else f.name for f in fields(Job))
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs ({_COLUMNS});
CREATE UNIQUE INDEX IF NOT EXISTS one_active_job_per_key
    ON jobs(key) WHERE state IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs(created);
"""


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Give a jobs table written by an older version the `Job` fields it lacks."""
    present = {row["name"] for row in conn.execute("PRAGMA table_info(jobs)")}
    for name in (f.name for f in fields(Job)):
        if name not in present:
            try:
                conn.execute(f"ALTER TABLE jobs ADD COLUMN {name}")
            except sqlite3.OperationalError as err:  # another process added it just now
                if "duplicate column" not in str(err):
                    raise


class SqliteJobStore(JobStore):
    """Jobs in one SQLite file (WAL), shared by the web process(es) and local workers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    @classmethod
    def in_cache(cls, cache_dir: Path) -> SqliteJobStore:
        """The local queue of a cache dir (`SQLITE_NAME` in it)."""
        return cls(cache_dir / SQLITE_NAME)

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():  # never share one across a fork
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            _add_missing_columns(conn)
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @contextmanager
    def _write(self):
        """One IMMEDIATE transaction (a write lock across processes)."""
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            raise QueueUnavailable(f"the local job database {self.path} failed: {err}") from err

    def _read(self, sql: str, args: tuple = ()) -> list[Job]:
        try:
            rows = self._connection().execute(sql, args).fetchall()
        except sqlite3.Error as err:
            raise QueueUnavailable(f"the local job database {self.path} failed: {err}") from err
        return [Job.from_record(dict(row)) for row in rows]

    def add(self, job: Job) -> Job:
        record = job.to_record(native=True)
        with self._write() as conn:
            if job.state == "queued":
                row = conn.execute(
                    "SELECT * FROM jobs WHERE key = ? AND state IN ('queued', 'running')",
                    (job.key,),
                ).fetchone()
                if row is not None:
                    return Job.from_record(dict(row))
            names = ", ".join(record)
            conn.execute(
                f"INSERT INTO jobs ({names}) VALUES ({', '.join('?' * len(record))})",
                tuple(record.values()),
            )
            conn.execute(
                "DELETE FROM jobs WHERE state IN ('done', 'failed', 'cancelled') AND id NOT IN "
                "(SELECT id FROM jobs ORDER BY created DESC LIMIT ?)",
                (KEEP_FINISHED,),
            )
        return job

    def get(self, job_id: str) -> Job | None:
        found = self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return found[0] if found else None

    def jobs(self, limit: int = 200) -> list[Job]:
        return self._read("SELECT * FROM jobs ORDER BY created DESC LIMIT ?", (limit,))

    def active(self) -> list[Job]:
        return self._read(
            "SELECT * FROM jobs WHERE state IN ('queued', 'running') ORDER BY created"
        )

    def latest_done(self, key: str) -> Job | None:
        found = self._read(
            "SELECT * FROM jobs WHERE key = ? AND state = 'done' ORDER BY finished DESC LIMIT 1",
            (key,),
        )
        return found[0] if found else None

    def transition(self, job_id: str, from_states: Iterable[str], to: str, **values: Any) -> bool:
        from_states = tuple(from_states)
        updates = {"state": to, **encode_values(values, native=True)}
        assignments = ", ".join(f"{k} = ?" for k in updates)
        with self._write() as conn:
            cursor = conn.execute(
                f"UPDATE jobs SET {assignments} WHERE id = ? AND state IN "
                f"({', '.join('?' * len(from_states))})",
                (*updates.values(), job_id, *from_states),
            )
            return cursor.rowcount == 1

    def report(self, job_id: str, now: float, progress: dict[str, Any] | None = None) -> bool:
        with self._write() as conn:
            if progress is None:
                cursor = conn.execute(
                    "UPDATE jobs SET heartbeat = ? WHERE id = ? AND state = 'running'",
                    (now, job_id),
                )
            else:
                cursor = conn.execute(
                    "UPDATE jobs SET heartbeat = ?, progress = ? "
                    "WHERE id = ? AND state = 'running'",
                    (now, json.dumps(progress), job_id),
                )
            return cursor.rowcount == 1

    def position(self, job: Job) -> int | None:
        if job.state != "queued":
            return None
        try:
            (count,) = (
                self._connection()
                .execute(
                    "SELECT count(*) FROM jobs WHERE state = 'queued' AND "
                    "(created < ? OR (created = ? AND id <= ?))",
                    (job.created, job.created, job.id),
                )
                .fetchone()
            )
        except sqlite3.Error as err:
            raise QueueUnavailable(str(err)) from err
        return int(count)

    def claim(self, worker: str, max_running: int) -> Job | None:
        """Atomically start the oldest queued job unless `max_running` jobs already run."""
        now = time.time()
        with self._write() as conn:
            (running,) = conn.execute(
                "SELECT count(*) FROM jobs WHERE state = 'running'"
            ).fetchone()
            if running >= max_running:
                return None
            row = conn.execute(
                "SELECT * FROM jobs WHERE state = 'queued' ORDER BY created, id LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET state = 'running', started = ?, heartbeat = ?, worker = ? "
                "WHERE id = ?",
                (now, now, worker, row["id"]),
            )
        job = Job.from_record(dict(row))
        job.state, job.started, job.heartbeat, job.worker = "running", now, now, worker
        return job

    def ping(self) -> None:
        self._read("SELECT * FROM jobs LIMIT 0")
