"""The Dash application: `create_app(config)`, the app shell, background fits and `serve`.

Hosting: ``gunicorn 'dashboard.app:server'`` and, with ``VELODASH_REDIS_URL`` set, a worker
``celery -A dashboard.app:celery_app worker --concurrency 1``; both build the same app from
``VELODASH_*`` environment variables on first access of those module attributes.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import dash
import diskcache
from dash import ClientsideFunction, Dash, Input, Output, dcc, html
from dash.exceptions import PreventUpdate

from core.pipeline import FitParams
from dashboard import components as ui
from dashboard import jobs
from dashboard.config import REPO_ROOT, AppConfig, resolve_secret_key
from dashboard.datasets import DatasetRegistry, UnknownDataset

PAGES_FOLDER = Path(__file__).resolve().parent / "pages"
ASSETS_FOLDER = REPO_ROOT / "assets"
#: Seconds an unread background result stays in the Diskcache store.
JOB_RESULT_EXPIRE_S = 24 * 3600


def make_background_manager(config: AppConfig) -> tuple[Any, Any]:
    """(background-callback manager, Celery app or None), chosen by configuration alone.

    With `config.redis_url` the jobs go to Celery workers through Redis (nothing connects
    until a job is submitted); otherwise a DiskcacheManager runs each job in a subprocess and
    keeps progress and results in ``cache_dir/jobs``.
    """
    if config.redis_url:
        from celery import Celery

        celery_app = Celery("velodash", broker=config.redis_url, backend=config.redis_url)
        return dash.CeleryManager(celery_app, expire=JOB_RESULT_EXPIRE_S), celery_app
    cache = diskcache.Cache(str(config.cache_dir / "jobs"))
    return dash.DiskcacheManager(cache, expire=JOB_RESULT_EXPIRE_S), None


def fit_params(config: AppConfig, requested: dict[str, Any] | None = None) -> FitParams:
    """The fit options: FitParams defaults, then `config.fit_overrides`, then the UI's choices."""
    return FitParams.from_dict({**dict(config.fit_overrides), **(requested or {})})


def _shell() -> html.Div:
    return html.Div(
        [
            dcc.Location(id=ui.URL, refresh="callback-nav"),
            dcc.Store(id=ui.FIT_REQUEST),
            dcc.Store(id=ui.FIT_PROGRESS),
            dcc.Store(id=ui.FIT_RUNNING, data=False),
            dcc.Store(id=ui.FIT_RESULT),
            dcc.Store(id=ui.URL_SYNCED),
            ui.navbar(),
            ui.job_bar(),
            html.Div(id=ui.JOB_ALERT),
            html.Main(dash.page_container, className="page"),
        ]
    )


def create_app(config: AppConfig) -> Dash:
    """Build the multi-page Dash app for `config` (pages, background fits, URL state)."""
    manager, celery_app = make_background_manager(config)
    app = Dash(
        "dashboard",
        use_pages=True,
        pages_folder=str(PAGES_FOLDER),
        assets_folder=str(ASSETS_FOLDER),
        suppress_callback_exceptions=True,
        background_callback_manager=manager,
        title="velodash",
    )
    server = app.server
    server.secret_key = resolve_secret_key(config)
    server.config[ui.CONFIG_KEY] = config
    # Base64 inflates uploads by 4/3; leave room for the rest of the request.
    server.config["MAX_CONTENT_LENGTH"] = int(config.max_upload_bytes * 1.4) + 2**20
    server.extensions["velodash_celery"] = celery_app
    app.layout = _shell
    _register_shell_callbacks(app, DatasetRegistry(config), config)
    return app


def _register_shell_callbacks(app: Dash, registry: DatasetRegistry, config: AppConfig) -> None:
    @app.callback(
        Output(ui.FIT_RESULT, "data"),
        Input(ui.FIT_REQUEST, "data"),
        background=True,
        progress=Output(ui.FIT_PROGRESS, "data"),
        running=[(Output(ui.FIT_RUNNING, "data"), True, False)],
        cancel=[Input(ui.CANCEL_FIT, "n_clicks")],
        interval=500,
        prevent_initial_call=True,
    )
    def fit_in_background(set_progress, request: dict | None) -> dict:
        """Run `jobs.run_fit` for a fit request {ds, params, nonce} in a job process."""
        if not request:
            raise PreventUpdate
        try:
            dataset = registry.get(request["ds"])
            params = fit_params(config, request.get("params"))
        except (KeyError, ValueError, TypeError) as err:  # UnknownDataset is a KeyError
            return {"status": "error", "message": f"Cannot fit: {err}", "ds": request.get("ds")}
        output = registry.results_path_for_fit(dataset, params)
        result = jobs.run_fit(str(dataset.path), str(output), params.to_dict(), set_progress)
        return {**result, "ds": dataset.id, "label": dataset.label}

    app.callback(
        Output(ui.JOB_BAR, "style"),
        Output("job-message", "children"),
        Output("job-progress-fill", "style"),
        Input(ui.FIT_PROGRESS, "data"),
        Input(ui.FIT_RUNNING, "data"),
    )(job_bar_state)

    app.callback(
        Output(ui.JOB_ALERT, "children"),
        Input(ui.FIT_RESULT, "data"),
        Input(ui.CANCEL_FIT, "n_clicks"),
        prevent_initial_call=True,
    )(job_alert)

    @app.callback(
        [Output(f"nav-{name.lower()}", "href") for _, name in ui.PAGES]
        + [Output("nav-dataset", "children")],
        Input(ui.URL, "search"),
    )
    def nav_links(search: str | None):
        """Keep the dataset in every navigation link and name it in the bar."""
        ds = parse_qs((search or "").lstrip("?")).get("ds", [None])[0] or registry.default_id()
        try:
            label = registry.get(ds).label if ds else ""
        except UnknownDataset:
            label = ""
        return [ui.page_href(path, ds) for path, _ in ui.PAGES] + [label]

    app.clientside_callback(
        ClientsideFunction("velodash", "syncUrl"),
        Output(ui.URL_SYNCED, "data"),
        Input(ui.URL_STATE, "data"),
        prevent_initial_call=True,
    )


def job_bar_state(progress: dict | None, running: bool) -> tuple[dict, str, dict]:
    """Job bar visibility, message (stage, epoch/max, validation ELBO) and fill width."""
    if not running:
        return {"display": "none"}, "", {"width": "0%"}
    progress = progress or {"fraction": 0.0, "message": "starting the fit job"}
    message = f"Fitting: {progress['message']}"
    if progress.get("elbo_validation"):
        message += f" · validation ELBO {progress['elbo_validation'][-1]:.2f}"
    width = f"{100 * float(progress.get('fraction') or 0):.0f}%"
    return {"display": "flex"}, message, {"width": width}


def job_alert(result: dict | None, cancel_clicks: int | None) -> html.Div:
    """The message after a fit: done (with links), an error, or cancelled (the Cancel button
    is only visible while a fit runs)."""
    if dash.ctx.triggered_id == ui.CANCEL_FIT:
        if not cancel_clicks:
            raise PreventUpdate
        return ui.alert("Fit cancelled.", "warning", id="job-cancelled")
    if not result:
        raise PreventUpdate
    if result.get("status") != "done":
        return ui.alert(result.get("message", "The fit failed."), "danger", id="job-error")
    verb = "Loaded cached results" if result.get("reused") else "Fit finished"
    return ui.alert(
        [
            f"{verb} for {result.get('label', result['ds'])} on {result['device']} "
            f"({result['seconds']:.0f} s). Open the ",
            dcc.Link("velocity view", href=ui.page_href("/stream", result["ds"])),
            " or the ",
            dcc.Link("gene table", href=ui.page_href("/genes", result["ds"])),
            ".",
        ],
        "success",
        id="job-done",
    )


def serve(
    data: list[Path] | None = None,
    data_dir: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8050,
    cache_dir: Path | None = None,
    allow_upload: bool = True,
    debug: bool = False,
) -> None:
    """Build the app from arguments plus VELODASH_* env, print its URL and serve (blocking)."""
    for path in data or []:
        if not Path(path).is_file():
            raise FileNotFoundError(f"dataset not found: {path}")
    config = AppConfig.from_env(
        data=tuple(data or ()),
        data_dir=data_dir,
        cache_dir=cache_dir,
        allow_upload=None if allow_upload else False,  # VELODASH_NO_UPLOAD still applies
        debug=debug,
    )
    app = create_app(config)
    print(f"velodash: serving on http://{host}:{port}/ (cache: {config.cache_dir})", flush=True)
    app.run(host=host, port=port, debug=debug, use_reloader=False)


@functools.cache
def _default_app() -> Dash:
    return create_app(AppConfig.from_env())


def __getattr__(name: str) -> Any:
    """`app`, `server` and `celery_app` for gunicorn/Celery, built from the environment once."""
    if name == "app":
        return _default_app()
    if name == "server":
        return _default_app().server
    if name == "celery_app":
        return _default_app().server.extensions["velodash_celery"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
