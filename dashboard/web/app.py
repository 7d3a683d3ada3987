"""The Dash application: `create_app(config)`, the local launcher `serve`, and `server`.

Hosting: ``velodash serve --config FILE`` runs gunicorn with the app `create_app` builds once in
the master (`dashboard.hosting.server`); a plain ``gunicorn dashboard.web.app:server`` uses the
module attribute, built once per process from the TOML file named by ``VELODASH_CONFIG`` (or,
without it, from ``VELODASH_*`` variables as `velodash run` does, with a loud warning that
sign-in is off). Both read `dashboard.hosting.settings.load_config`.
Fits never run in a web process: they are jobs of the shared queue (`dashboard.jobs.queue`),
executed by a local worker (`velodash run`, or `velodash worker` without Redis) or by Celery
workers (``velodash worker --config FILE`` with `redis_url`).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from dash import Dash

from dashboard.config import ENV_CONFIG, AppConfig, bundled_folder, resolve_secret_key
from dashboard.data import view_cache
from dashboard.data.datasets import DatasetRegistry
from dashboard.data.uploads import sweep_stale_uploads
from dashboard.hosting import auth, protection
from dashboard.hosting.settings import load_config
from dashboard.jobs.queue import JobQueue, parse_fit_params
from dashboard.jobs.sqlite_store import SqliteJobStore
from dashboard.jobs.store import QueueUnavailable
from dashboard.jobs.worker import LocalWorker
from dashboard.web import context, shell
from dashboard.web.api import api
from dashboard.web.upload_route import upload_routes

PAGES_FOLDER = Path(__file__).resolve().parent / "pages"
ASSETS_FOLDER = bundled_folder("assets")
#: Largest request without uploads (callback bodies are small).
MAX_REQUEST_BYTES = 8 * 2**20
SYSTEM_OWNER = "velodash"
#: Without VELODASH_CONFIG, either of these makes `server` a hosted app configured from the
#: environment alone (sign-in on); with neither, it is the local app, and says so loudly.
SIGN_IN_VARIABLES = ("VELODASH_AUTH", "VELODASH_USERS_FILE")

log = logging.getLogger(__name__)
#: Logged when gunicorn (or any importer of `server`) builds the app without a hosting file.
NO_SIGN_IN_WARNING = (
    "velodash: SIGN-IN IS OFF: %s is not set, so this server has no users file and everyone "
    "who can reach it acts as an admin (fits, uploads, cancelling). To share it, point %s at "
    "the hosting TOML (docs/hosting.md) or run `velodash serve --config FILE`."
)


def _health(queue: JobQueue) -> dict[str, str]:
    try:
        queue.store.ping()
        state = "ok"
    except QueueUnavailable:
        state = "unreachable"
    return {"status": "ok", "queue": state}


def create_app(config: AppConfig) -> Dash:
    """Build the multi-page Dash app for `config`: pages, sign-in, job queue, API, health."""
    app = Dash(
        "dashboard",
        use_pages=True,
        pages_folder=str(PAGES_FOLDER),
        assets_folder=str(ASSETS_FOLDER),
        suppress_callback_exceptions=True,
        title="velodash",
    )
    server = app.server
    server.secret_key = resolve_secret_key(config)
    server.config[context.CONFIG_KEY] = config
    # Callbacks and the API send small bodies; /upload streams files under its own limit.
    server.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    view_cache.use(config.cache_dir / view_cache.VIEWS, config.view_cache_mb)
    sweep_stale_uploads(config.cache_dir / "uploads")
    queue = JobQueue(config)
    server.extensions[context.QUEUE_KEY] = queue
    protection.install_protection(server, config.max_upload_mb, before_auth=True)
    auth.install_auth(app, config)
    protection.install_protection(
        server, config.max_upload_mb, before_auth=False, callbacks=app.callback_map
    )
    server.register_blueprint(api)
    server.register_blueprint(upload_routes)
    server.wsgi_app = protection.HealthCheck(server.wsgi_app, lambda: _health(queue))
    app.layout = shell.layout
    shell.register_callbacks(app, DatasetRegistry(config))
    return app


def enqueue_sample_fit(app: Dash) -> None:
    """On a first launch, queue the fit of the bundled (raw, unfitted) sample: no browser is
    needed for it to start, and every visitor sees its progress."""
    config: AppConfig = app.server.config[context.CONFIG_KEY]
    registry = DatasetRegistry(config)
    if not config.auto_fit_sample or config.data:
        return
    sample = next((d for d in registry.datasets() if d.source == "sample"), None)
    if sample is None or sample.kind != "raw" or registry.results_for(sample) is not None:
        return
    job, created = app.server.extensions[context.QUEUE_KEY].submit(
        sample, parse_fit_params(config, {}), SYSTEM_OWNER
    )
    if created:
        print(f"velodash: fitting {sample.label} in the background (job {job.id})", flush=True)


def start_local_queue(app: Dash) -> LocalWorker:
    """Start executing the app's local queue in this process (and queue the sample's fit)."""
    config: AppConfig = app.server.config[context.CONFIG_KEY]
    store = app.server.extensions[context.QUEUE_KEY].store
    if not isinstance(store, SqliteJobStore):
        raise ValueError("the local queue runs only without redis_url")
    worker = LocalWorker(store, concurrency=config.job_concurrency).start()
    enqueue_sample_fit(app)
    return worker


def serve(
    data: list[Path] | None = None,
    data_dir: Path | None = None,
    host: str | None = None,
    port: int | None = None,
    cache_dir: Path | None = None,
    allow_upload: bool = True,
    debug: bool = False,
) -> None:
    """`velodash run`: the app and its local queue in this process, no sign-in (blocking).

    Settings come from `load_config(local=True)`: ``VELODASH_*`` variables, then these
    arguments (None leaves a setting to the environment or its default)."""
    for path in data or []:
        if not Path(path).is_file():
            raise FileNotFoundError(f"dataset not found: {path}")
    settings = load_config(
        None,
        local=True,
        datasets_dir=data_dir,
        cache_dir=cache_dir,
        allow_upload=None if allow_upload else False,  # VELODASH_ALLOW_UPLOAD still applies
        host=host,
        port=port,
    )
    config = replace(settings.app, data=tuple(Path(p) for p in data or ()), debug=debug)
    host, port = settings.serve.host, settings.serve.port
    app = create_app(config)
    worker = start_local_queue(app)
    print(f"velodash: serving on http://{host}:{port}/ (cache: {config.cache_dir})", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            "velodash: warning: no sign-in in this mode; anyone who can reach this address can "
            "fit and upload. For a shared server use `velodash serve --config FILE`.",
            flush=True,
        )
    # SIGTERM (systemd, `kill`) ends like Ctrl-C: running fits go back to the queue and
    # resume at the next start.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        app.run(host=host, port=port, debug=debug, use_reloader=False, threaded=True)
    finally:
        worker.stop()


@functools.cache
def _default_app() -> Dash:
    config_path = os.environ.get(ENV_CONFIG)
    if config_path or any(os.environ.get(name) for name in SIGN_IN_VARIABLES):
        return create_app(load_config(Path(config_path) if config_path else None).app)
    log.warning(NO_SIGN_IN_WARNING, ENV_CONFIG, ENV_CONFIG)
    return create_app(load_config(None, local=True).app)


def __getattr__(name: str) -> Any:
    """`app` and `server` for gunicorn, built once per process from the environment."""
    if name == "app":
        return _default_app()
    if name == "server":
        return _default_app().server
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
