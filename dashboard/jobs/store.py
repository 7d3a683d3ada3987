"""Where fit jobs live: one record per job, readable by every web and worker process.

Two stores with one interface: `SqliteJobStore` (the local queue: a SQLite file in the cache
dir, WAL mode) and `RedisJobStore` (hosted: hashes in Redis, next to Celery's broker queue).
Every state change is a single atomic compare-and-set, so two processes can never both claim,
finish or cancel the same job, and at most one job per content key is queued or running.

States: queued → running → done | failed | cancelled (queued may also go straight to
cancelled or failed; an interrupted local fit goes back from running to queued). The claim
(queued → running) is the only way into *running*, so however many messages or workers ask for
a job, it runs once at a time. Records hold server-side paths; `Job.public` is what clients may
see.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
FINAL = ("done", "failed", "cancelled")
#: Finished jobs kept for the jobs panel; older ones are forgotten (their results stay).
KEEP_FINISHED = 500
#: The local queue's SQLite file, in the cache dir.
SQLITE_NAME = "jobs.sqlite"


class QueueUnavailable(RuntimeError):
    """The job store cannot be reached (Redis down, SQLite file locked or unwritable)."""


def new_job_id() -> str:
    """A fresh, unguessable job id (32 hex digits)."""
    return uuid.uuid4().hex


def valid_job_id(job_id: str) -> bool:
    """Whether `job_id` has the shape of a job id (checked before any lookup)."""
    hex_digits = "0123456789abcdef"
    return isinstance(job_id, str) and len(job_id) == 32 and all(c in hex_digits for c in job_id)


@dataclass
class Job:
    """One fit of one dataset with one set of options (`key` is their content address)."""

    id: str
    key: str
    dataset: str
    label: str
    owner: str
    params: dict[str, Any]
    input_path: str
    output_path: str
    state: str = "queued"
    progress: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    heartbeat: float | None = None
    reused: bool = False
    device: str | None = None
    worker: str | None = None
    #: When the job's latest broker message was sent (hosted queue only).
    published: float | None = None

    @property
    def active(self) -> bool:
        """Queued or running."""
        return self.state in ACTIVE

    def public(self, position: int | None = None) -> dict[str, Any]:
        """The JSON clients see: no file paths, no worker names."""
        return {
            "id": self.id,
            "dataset": self.dataset,
            "label": self.label,
            "state": self.state,
            "progress": self.progress,
            "owner": self.owner,
            "error": self.error,
            "params": self.params,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "queue_position": position,
            "reused": self.reused,
            "device": self.device,
            "results": Path(self.output_path).stem if self.state == "done" else None,
        }

    def to_record(self, native: bool = False) -> dict[str, Any]:
        """Flat fields for storage (None fields left out): see `encode_values`."""
        return encode_values(asdict(self), native=native)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Job:
        """Inverse of `to_record` (also accepts SQLite rows with native numbers)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = record.get(f.name)
            if value is None or value == "":
                continue
            if f.name in ("params", "progress", "reused") and isinstance(value, str):
                value = json.loads(value)
            elif f.name in ("created", "started", "finished", "heartbeat", "published"):
                value = float(value)
            values[f.name] = bool(value) if f.name == "reused" else value
        return cls(**values)


def encode_values(values: dict[str, Any], native: bool = False) -> dict[str, Any]:
    """Job fields for storage: dicts and booleans as JSON, None left out, the rest as strings
    (Redis) or as they are (`native`, SQLite)."""
    encoded: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, dict | bool):
            encoded[name] = json.dumps(value)
        else:
            encoded[name] = value if native else str(value)
    return encoded


class JobStore(ABC):
    """Storage of job records; every method may raise QueueUnavailable."""

    @abstractmethod
    def add(self, job: Job) -> Job:
        """Store `job`; a queued job whose key already has an active job returns that one."""

    @abstractmethod
    def get(self, job_id: str) -> Job | None:
        """The job with this id, or None."""

    @abstractmethod
    def jobs(self, limit: int = 200) -> list[Job]:
        """The most recent jobs, newest first."""

    @abstractmethod
    def active(self) -> list[Job]:
        """Queued and running jobs, oldest first."""

    @abstractmethod
    def latest_done(self, key: str) -> Job | None:
        """The most recent finished-and-done job for a content key."""

    @abstractmethod
    def transition(self, job_id: str, from_states: Iterable[str], to: str, **values: Any) -> bool:
        """Set state `to` (and `values`) only if the state is one of `from_states`."""

    @abstractmethod
    def report(self, job_id: str, now: float, progress: dict[str, Any] | None = None) -> bool:
        """Heartbeat (and new progress) of a running job; False when it is no longer running."""

    @abstractmethod
    def position(self, job: Job) -> int | None:
        """1-based place of a queued job in the queue; None for other states."""

    @abstractmethod
    def ping(self) -> None:
        """Raise QueueUnavailable when the store cannot be reached."""


# -- SQLite (local queue) ------------------------------------------------------------------------
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


# -- Redis (hosted) ------------------------------------------------------------------------------
_LUA_ADD = """
local p, id, key, created, state = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
if state == 'queued' then
  local current = redis.call('GET', p .. 'active:' .. key)
  if current then
    local s = redis.call('HGET', p .. 'job:' .. current, 'state')
    if s == 'queued' or s == 'running' then return current end
  end
end
local values = {}
for i = 6, #ARGV do values[#values + 1] = ARGV[i] end
redis.call('HSET', p .. 'job:' .. id, unpack(values))
redis.call('ZADD', p .. 'jobs', created, id)
if state == 'queued' then
  redis.call('ZADD', p .. 'queued', created, id)
  redis.call('ZADD', p .. 'active', created, id)
  redis.call('SET', p .. 'active:' .. key, id)
elseif state == 'done' then
  redis.call('SET', p .. 'done:' .. key, id)
end
return id
"""

_LUA_TRANSITION = """
local p, id, to = ARGV[1], ARGV[2], ARGV[3]
local h = p .. 'job:' .. id
local current = redis.call('HGET', h, 'state')
if not current then return 0 end
local allowed = false
for s in string.gmatch(ARGV[4], '[^,]+') do
  if s == current then allowed = true end
end
if not allowed then return 0 end
redis.call('HSET', h, 'state', to)
for i = 5, #ARGV, 2 do redis.call('HSET', h, ARGV[i], ARGV[i + 1]) end
if to == 'queued' then
  redis.call('ZADD', p .. 'queued', redis.call('HGET', h, 'created'), id)
else
  redis.call('ZREM', p .. 'queued', id)
end
if to == 'done' or to == 'failed' or to == 'cancelled' then
  redis.call('ZREM', p .. 'active', id)
  local key = redis.call('HGET', h, 'key')
  local pointer = p .. 'active:' .. key
  if redis.call('GET', pointer) == id then redis.call('DEL', pointer) end
  if to == 'done' then redis.call('SET', p .. 'done:' .. key, id) end
end
return 1
"""

_LUA_PUBLISHED = """
local h = ARGV[1] .. 'job:' .. ARGV[2]
if redis.call('HGET', h, 'state') ~= 'queued' then return 0 end
if (redis.call('HGET', h, 'published') or '') ~= ARGV[3] then return 0 end
redis.call('HSET', h, 'published', ARGV[4])
return 1
"""

_LUA_REPORT = """
local h = ARGV[1] .. 'job:' .. ARGV[2]
if redis.call('HGET', h, 'state') ~= 'running' then return 0 end
redis.call('HSET', h, 'heartbeat', ARGV[3])
if ARGV[4] then redis.call('HSET', h, 'progress', ARGV[4]) end
return 1
"""


class RedisJobStore(JobStore):
    """Jobs as Redis hashes under `prefix`, with sorted sets for listing and queue order."""

    def __init__(self, url: str, prefix: str = "velodash:") -> None:
        import redis

        self.prefix = prefix
        self._errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        self.client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=3,
            health_check_interval=15,
        )
        self._add = self.client.register_script(_LUA_ADD)
        self._transition = self.client.register_script(_LUA_TRANSITION)
        self._report = self.client.register_script(_LUA_REPORT)
        self._published = self.client.register_script(_LUA_PUBLISHED)

    @contextmanager
    def reaching(self):
        """Turn Redis connection errors inside the block into QueueUnavailable."""
        try:
            yield
        except self._errors as err:
            raise QueueUnavailable(f"the job queue (Redis) is unreachable: {err}") from err

    def _load(self, ids: list[str]) -> list[Job]:
        with self.reaching():
            pipe = self.client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(f"{self.prefix}job:{job_id}")
            records = pipe.execute()
        return [Job.from_record(r) for r in records if r]

    def add(self, job: Job) -> Job:
        record = job.to_record()
        flat = [item for pair in record.items() for item in pair]
        with self.reaching():
            stored = self._add(args=[self.prefix, job.id, job.key, job.created, job.state, *flat])
        if stored != job.id:
            return self.get(stored) or job
        self._prune()
        return job

    def _prune(self) -> None:
        with self.reaching():
            old = self.client.zrevrange(f"{self.prefix}jobs", KEEP_FINISHED, -1)
            for stale in self._load(old):
                if stale.state in FINAL:
                    self.client.delete(f"{self.prefix}job:{stale.id}")
                    self.client.zrem(f"{self.prefix}jobs", stale.id)

    def get(self, job_id: str) -> Job | None:
        found = self._load([job_id])
        return found[0] if found else None

    def jobs(self, limit: int = 200) -> list[Job]:
        with self.reaching():
            ids = self.client.zrevrange(f"{self.prefix}jobs", 0, limit - 1)
        return self._load(ids)

    def active(self) -> list[Job]:
        with self.reaching():
            ids = self.client.zrange(f"{self.prefix}active", 0, -1)
        return [job for job in self._load(ids) if job.active]

    def latest_done(self, key: str) -> Job | None:
        with self.reaching():
            job_id = self.client.get(f"{self.prefix}done:{key}")
        job = self.get(job_id) if job_id else None
        return job if job is not None and job.state == "done" else None

    def transition(self, job_id: str, from_states: Iterable[str], to: str, **values: Any) -> bool:
        flat = [item for pair in encode_values(values).items() for item in pair]
        with self.reaching():
            changed = self._transition(args=[self.prefix, job_id, to, ",".join(from_states), *flat])
        return changed == 1

    def report(self, job_id: str, now: float, progress: dict[str, Any] | None = None) -> bool:
        args = [self.prefix, job_id, now] + ([json.dumps(progress)] if progress is not None else [])
        with self.reaching():
            return self._report(args=args) == 1

    def mark_published(self, job: Job, now: float) -> bool:
        """Record that queued `job` is published again at `now`; False when it is no longer
        queued or another process republished it since `job` was read (then it must not be)."""
        seen = "" if job.published is None else str(job.published)
        with self.reaching():
            return self._published(args=[self.prefix, job.id, seen, now]) == 1

    def position(self, job: Job) -> int | None:
        if job.state != "queued":
            return None
        with self.reaching():
            rank = self.client.zrank(f"{self.prefix}queued", job.id)
        return None if rank is None else rank + 1

    def ping(self) -> None:
        with self.reaching():
            self.client.ping()
