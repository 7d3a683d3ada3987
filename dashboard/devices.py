"""Which fit devices to offer: CUDA only where a fit can use it.

Locally (`velodash run`) fits run on this machine: CUDA is offered when an NVIDIA driver is
present and the installed torch is not a CPU-only build, found without importing torch in the
web process. Hosted, fits run on Celery workers: a worker records on start whether the same
check holds on its machine (a Redis set, left on shutdown), and CUDA is offered while one that
does is up. A fit that asks for CUDA where there is none fails with a message saying so.
"""

from __future__ import annotations

import functools
import importlib.metadata
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from dashboard.jobstore import QueueUnavailable, RedisJobStore

if TYPE_CHECKING:
    from dashboard.jobqueue import JobQueue

#: Redis set (under the job store's prefix) of the workers whose torch sees a CUDA GPU.
CUDA_WORKERS = "cuda-workers"
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


def record_worker(store: RedisJobStore, worker: str, has_cuda: bool) -> None:
    """Record (or forget, when `has_cuda` is false) that `worker` can fit on CUDA."""
    key = store.prefix + CUDA_WORKERS
    if has_cuda:
        store.client.sadd(key, worker)
    else:
        store.client.srem(key, worker)


def cuda_available(queue: JobQueue) -> bool:
    """Whether a fit submitted to `queue` can run on CUDA (see the module docstring)."""
    if not isinstance(queue.store, RedisJobStore):
        return local_cuda()
    import redis

    try:
        return bool(queue.store.client.scard(queue.store.prefix + CUDA_WORKERS))
    except redis.exceptions.RedisError as err:
        raise QueueUnavailable(f"the job queue (Redis) is unreachable: {err}") from err
