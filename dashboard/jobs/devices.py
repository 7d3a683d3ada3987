"""Which fit devices to offer: CUDA only where a fit can use it.

Locally (`velodash run`) fits run on this machine: CUDA is offered when an NVIDIA driver is
present and the installed torch is not a CPU-only build, found without importing torch in the
web process. Hosted, fits run on Celery workers: a worker on a machine where the same check
holds announces itself in Redis under a key that expires unless it is renewed (`CUDA_TTL_S`),
so a worker that stops, even by `kill -9` or a reboot, stops offering CUDA within that time.
`JobQueue.submit` refuses a CUDA fit when none is available, for the page and the API alike.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import shutil
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from dashboard.jobs.redis_store import RedisJobStore
from dashboard.jobs.store import QueueUnavailable

if TYPE_CHECKING:
    from dashboard.jobs.queue import JobQueue

#: Key prefix (under the job store's prefix) of the workers that can fit on CUDA.
CUDA_WORKER = "cuda-worker:"
#: Seconds a worker's announcement lasts unless renewed (it is renewed every third of this).
CUDA_TTL_S = 60
NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")


@functools.cache
def local_cuda() -> bool:
    """Whether fits on this machine can use CUDA: an NVIDIA driver and a torch CUDA build."""
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return False
    driver = NVIDIA_DRIVER.exists() or shutil.which("nvidia-smi") is not None
    return driver and "+cpu" not in version


def worker_id() -> str:
    """`host:pid` of this worker process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def record_worker(store: RedisJobStore, worker: str, has_cuda: bool, ttl: int = CUDA_TTL_S) -> None:
    """Announce for `ttl` seconds that `worker` can fit on CUDA, or withdraw that."""
    key = store.prefix + CUDA_WORKER + worker
    if has_cuda:
        store.client.set(key, "1", ex=ttl)
    else:
        store.client.delete(key)


def keep_announcing(store: RedisJobStore, worker: str, stop: threading.Event) -> threading.Thread:
    """Renew `worker`'s CUDA announcement every third of `CUDA_TTL_S` until `stop` is set, then
    withdraw it (a daemon thread; Redis outages are waited out)."""

    def run() -> None:
        import redis

        while not stop.is_set():
            try:
                record_worker(store, worker, True)
            except redis.exceptions.RedisError:
                pass  # the key expires meanwhile; the next renewal restores it
            stop.wait(CUDA_TTL_S / 3)
        with contextlib.suppress(redis.exceptions.RedisError):
            record_worker(store, worker, False)

    thread = threading.Thread(target=run, name="velodash-cuda-announce", daemon=True)
    thread.start()
    return thread


def cuda_available(queue: JobQueue) -> bool:
    """Whether a fit submitted to `queue` can run on CUDA (see the module docstring)."""
    if not isinstance(queue.store, RedisJobStore):
        return local_cuda()
    import redis

    try:
        pattern = queue.store.prefix + CUDA_WORKER + "*"
        return next(queue.store.client.scan_iter(match=pattern, count=100), None) is not None
    except redis.exceptions.RedisError as err:
        raise QueueUnavailable(f"the job queue (Redis) is unreachable: {err}") from err
