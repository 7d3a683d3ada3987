"""Where fit jobs live: one record per job, readable by every web and worker process.

Two stores with this module's interface (`JobStore`): `sqlite_store.SqliteJobStore` (the local
queue: a SQLite file in the cache dir, WAL mode) and `redis_store.RedisJobStore` (hosted:
hashes in Redis, next to Celery's broker queue).
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
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
FINAL = ("done", "failed", "cancelled")
#: Finished jobs kept for the jobs panel; older ones are forgotten (their results stay).
KEEP_FINISHED = 500


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
