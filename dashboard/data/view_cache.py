"""Derived views shared by every process of a machine and kept across restarts (diskcache).

A view (stream geometry, the gene table, a projection, ...) is a pure function of a results
file, the view's parameters and the code, so it is stored once under the results' content key
(`Results.content_key`: the sha256 of the file's bytes), the view's key and `code_key` in a
`diskcache.Cache` in the cache dir (``cache_dir/views``). Every web worker of a hosted instance,
and the next start of the server, read it instead of building it again. The cache is bounded
(``view_cache_mb``; least recently used entries go first); diskcache is safe across threads and
processes. A cache that cannot be read or written (a full disk, an entry pickled by other
library versions) only costs the view's computation: it is logged and the view is built.

`use(directory, size_limit_mb)` points this process at its cache (the app factory calls it; one
cache per process, as one app per process serves in production);
`Results.memo(key, compute, shared=True)` goes through `get_or_compute`. Without `use` (core
scripts, some tests) views stay in the process.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import TypeVar

import diskcache
import numpy as np
import pandas as pd
import plotly

T = TypeVar("T")
log = logging.getLogger(__name__)

_lock = threading.Lock()
_cache: diskcache.Cache | None = None
#: The views folder inside a cache dir (``cache_dir/views``, beside ``cache_dir/results``).
VIEWS = "views"
#: "No entry" (a stored view may itself be None).
_MISSING = object()


def use(directory: Path, size_limit_mb: float | None = None) -> diskcache.Cache:
    """Share views through the diskcache at `directory` (created if needed), holding at most
    `size_limit_mb` MB (None: the limit the cache was created with, e.g. by the app, or
    diskcache's default for a new one); returns it. A second call with another folder
    switches to it."""
    global _cache
    settings = {} if size_limit_mb is None else {"size_limit": int(size_limit_mb * 2**20)}
    with _lock:
        if _cache is None or Path(_cache.directory) != Path(directory):
            if _cache is not None:
                _cache.close()
            _cache = diskcache.Cache(
                str(directory), eviction_policy="least-recently-used", **settings
            )
        elif settings and _cache.size_limit != settings["size_limit"]:
            _cache.reset("size_limit", settings["size_limit"])
        return _cache


def current() -> diskcache.Cache | None:
    """The cache this process shares views through (None before `use`)."""
    return _cache


@functools.cache
def code_key() -> str:
    """A hash of the code that builds views (the sources of `core`, `dashboard.data` and
    `dashboard.figures`) and of the numpy, pandas and plotly versions: a changed velodash
    never reads views an older one stored."""
    digest = hashlib.sha256()
    for library in (np, pd, plotly):  # the pickled views are their objects
        digest.update(f"{library.__name__} {library.__version__}".encode())
    root = Path(__file__).resolve().parents[2]
    for package in ("core", "dashboard/data", "dashboard/figures"):
        for source in sorted((root / package).rglob("*.py")):
            digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def entry_key(content_key: str, key: Hashable) -> str:
    """The cache key of view `key` of the results whose content key is `content_key` (with
    the code's own key)."""
    return hashlib.sha256(f"{code_key()}|{content_key}|{key!r}".encode()).hexdigest()


def get_or_compute(content_key: str | None, key: Hashable, compute: Callable[[], T]) -> T:
    """The shared view `key` of the results `content_key`, computed (and stored) on a miss;
    just ``compute()`` when no cache is in use or the results have no content key."""
    cache = _cache
    if cache is None or content_key is None:
        return compute()
    name = entry_key(content_key, key)
    try:
        value = cache.get(name, default=_MISSING, retry=True)
    except Exception:  # unreadable entry or cache: build the view instead
        log.warning("view cache: cannot read %r; building it", key, exc_info=True)
        _forget(cache, name)
        value = _MISSING
    if value is _MISSING:
        value = compute()
        try:
            cache.set(name, value, retry=True)
        except Exception:  # full or read-only disk: serve the view without storing it
            log.warning("view cache: cannot store %r", key, exc_info=True)
    return value


def _forget(cache: diskcache.Cache, name: str) -> None:
    """Drop entry `name`, if the cache lets us."""
    try:
        cache.delete(name, retry=True)
    except Exception:
        log.warning("view cache: cannot drop an unreadable entry", exc_info=True)
