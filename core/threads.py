"""CPU threads of velodash processes: use the machine's cores, and share them gracefully.

torch (and numba's OpenMP layer) run their parallel loops on libgomp, whose worker threads by
default *spin* for a while at every barrier. When two such processes share a machine (two fits,
a fit and the dashboard, two Celery workers) each one's spinning threads burn the cores the
other's threads need, and a 2-core machine went from 1 s to 37 s per epoch (bench/RESULTS.md,
"Contention"). With ``OMP_WAIT_POLICY=PASSIVE`` waiting threads sleep instead, which costs
little when the process is alone and degrades gracefully when it is not.

libgomp reads its environment once, when it is loaded (on ``import torch``), so
:func:`set_process_defaults` runs when :mod:`core` is imported; a value the user exported wins.
"""

from __future__ import annotations

import os

#: Environment defaults applied before any thread pool exists (user settings take precedence).
PROCESS_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}
#: Environment variable that overrides the number of torch threads of a fit.
THREADS_ENV = "VELODASH_THREADS"


def set_process_defaults() -> None:
    """Export :data:`PROCESS_DEFAULTS` for keys the environment does not set yet."""
    for key, value in PROCESS_DEFAULTS.items():
        os.environ.setdefault(key, value)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's CPU set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def fit_threads(requested: int | None = None) -> int:
    """Torch threads for a fit: ``requested``, else ``$VELODASH_THREADS``, else every core.

    Raises ValueError naming the setting when the value is not a positive integer.
    """
    value: object = requested if requested is not None else os.environ.get(THREADS_ENV)
    if value is None or value == "":
        return available_cores()
    try:
        threads = int(value)
    except (TypeError, ValueError):
        threads = 0
    if threads < 1:
        source = "threads" if requested is not None else THREADS_ENV
        raise ValueError(f"{source} must be a positive integer, got {value!r}.")
    return threads
