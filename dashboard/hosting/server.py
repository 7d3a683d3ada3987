"""`velodash serve` and `velodash worker`: gunicorn for the web app, Celery or the local queue
for fits.

`serve` runs gunicorn in this process (it becomes the master) with `workers` processes ×
`threads` threads (gthread), preloading the app once so a bad configuration fails before any
worker starts and workers share its memory copy-on-write (the app starts no thread and
touches no CUDA at import). Without `redis_url` it also starts the local queue's worker as a
child process (`velodash worker`), which stops with it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import Celery
from gunicorn.app.base import BaseApplication

from dashboard.config import ENV_CONFIG, ENV_REDIS_URL, AppConfig
from dashboard.hosting.settings import HostedConfig, load_config
from dashboard.jobs.runner import child_env, end_with_parent

#: Builds the Dash app for a configuration (`dashboard.web.app.create_app`).
AppFactory = Callable[[AppConfig], Any]


class GunicornServer(BaseApplication):
    """gunicorn with options from a dict and the velodash app as the WSGI application."""

    def __init__(
        self, hosted: HostedConfig, options: dict[str, Any], app_factory: AppFactory
    ) -> None:
        self.hosted = hosted
        self.options = options
        self.app_factory = app_factory
        super().__init__()

    def load_config(self) -> None:
        """Apply `options` to gunicorn's settings (those this gunicorn version knows)."""
        for key, value in self.options.items():
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self):
        """Build the Flask server of the Dash app (once, in the master: preload)."""
        return self.app_factory(self.hosted.app).server


def gunicorn_options(hosted: HostedConfig) -> dict[str, Any]:
    """gunicorn settings for a hosted configuration."""
    serve = hosted.serve
    return {
        "bind": f"{serve.host}:{serve.port}",
        "workers": serve.workers,
        "threads": serve.threads,
        "worker_class": "gthread",
        "timeout": serve.timeout,
        "graceful_timeout": 30,
        "keepalive": 5,
        "preload_app": True,
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "velodash",
        # Behind nginx on the same machine: trust its X-Forwarded-* headers only.
        "forwarded_allow_ips": "127.0.0.1,::1",
        # gunicorn >= 25's admin socket is one fixed path per user: off, it is not needed.
        "control_socket_disable": True,
    }


def _local_worker_command(hosted: HostedConfig) -> list[str]:
    command = [sys.executable, "-m", "dashboard.cli", "worker"]
    return command + (["--config", str(hosted.path)] if hosted.path else [])


def serve(hosted: HostedConfig, app_factory: AppFactory) -> None:
    """Serve the app that `app_factory` builds (`dashboard.web.app.create_app`, passed in by the
    CLI: hosting sits below the web layer) with gunicorn until stopped, and the local queue
    without Redis."""
    local_worker = None
    if not hosted.app.redis_url:
        local_worker = subprocess.Popen(_local_worker_command(hosted), env=child_env())
    print(
        f"velodash: serving on {hosted.serve.url} with {hosted.serve.workers} workers "
        f"(config: {hosted.path or 'environment'})",
        flush=True,
    )
    try:
        GunicornServer(hosted, gunicorn_options(hosted), app_factory).run()
    finally:
        if local_worker is not None:
            local_worker.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                local_worker.wait(30)


def run_worker(hosted: HostedConfig, concurrency: int | None) -> None:
    """Execute fits until stopped: a Celery worker with `redis_url`, else the local queue."""
    concurrency = concurrency or hosted.app.job_concurrency
    if hosted.path is not None:
        os.environ[ENV_CONFIG] = str(hosted.path)
    if hosted.app.redis_url:
        from dashboard.jobs.celery_app import QUEUE, make_celery

        make_celery(hosted.app.redis_url).worker_main(
            [
                "worker",
                "--pool=threads",
                f"--concurrency={concurrency}",
                f"--queues={QUEUE}",
                "--hostname=velodash@%h",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
            ]
        )
        return
    from dashboard.jobs.sqlite_store import SqliteJobStore
    from dashboard.jobs.worker import LocalWorker

    end_with_parent(signal.SIGTERM)  # a local worker started by `serve` stops with it
    store = SqliteJobStore.in_cache(hosted.app.cache_dir)
    worker = LocalWorker(store, concurrency)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop(timeout=0))
    print(
        f"velodash: local queue worker running {concurrency} fit(s) at a time (jobs: {store.path})",
        flush=True,
    )
    worker.run()
    worker.stop()


@functools.cache
def _default_celery() -> Celery:
    """The Celery app of the configuration in ``VELODASH_CONFIG`` (else ``VELODASH_REDIS_URL``)."""
    from dashboard.jobs.celery_app import make_celery

    config_path = os.environ.get(ENV_CONFIG)
    if config_path:
        redis_url = load_config(Path(config_path)).app.redis_url
    else:
        redis_url = os.environ.get(ENV_REDIS_URL)
    if not redis_url:
        raise RuntimeError(f"set redis_url in {ENV_CONFIG} or {ENV_REDIS_URL} to run a worker")
    return make_celery(redis_url)


def __getattr__(name: str) -> Any:
    """`celery_app` for ``celery -A dashboard.hosting.server:celery_app``, from the environment."""
    if name == "celery_app":
        return _default_celery()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
