"""The hosted job store: hashes and sorted sets in Redis next to Celery's broker queue;
every state change is one Lua script, so it is atomic across processes and machines."""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import contextmanager
from typing import Any

from dashboard.jobs.store import (
    FINAL,
    KEEP_FINISHED,
    Job,
    JobStore,
    QueueUnavailable,
    encode_values,
)

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
