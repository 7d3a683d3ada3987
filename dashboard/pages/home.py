"""Home page: dataset picker and upload, results summary, fit with live progress and curve."""

from __future__ import annotations

import time

import dash
import flask
from dash import Input, Output, State, callback, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from dashboard import components as ui
from dashboard import figures, run_report
from dashboard.app import fit_params
from dashboard.datasets import Dataset, UploadError

dash.register_page(__name__, path="/", name="Home", title="velodash", order=0)

DEVICES = [
    {"label": "auto (GPU when available)", "value": "auto"},
    {"label": "CPU", "value": "cpu"},
    {"label": "CUDA GPU", "value": "cuda"},
]


def _dataset_item(dataset: Dataset, fitted: bool, active: bool) -> html.Li:
    status = "results" if dataset.kind == "results" else ("fitted" if fitted else "needs fit")
    return html.Li(
        [
            dcc.Link(
                html.B(dataset.label) if active else dataset.label,
                href=ui.page_href("/", dataset.id),
                id=f"ds-link-{dataset.id}",
            ),
            html.Span(status, className="badge badge-ok" if status != "needs fit" else "badge"),
            html.Span(dataset.source, className="badge"),
        ]
    )


def dataset_list(active: str | None) -> list[html.Li]:
    """One line per openable dataset: link, fit status and where it comes from."""
    registry = ui.current_registry()
    return [
        _dataset_item(d, registry.results_for(d) is not None, d.id == active)
        for d in registry.datasets()
    ]


def layout(ds: str | None = None, **_query) -> html.Div:
    """The home page for dataset `ds` (default dataset when absent)."""
    config = flask.current_app.config[ui.CONFIG_KEY]
    dataset, results, _ = ui.resolve(ds)
    active = dataset.id if dataset else None
    autofit = bool(
        config.auto_fit_sample
        and not config.data
        and dataset is not None
        and dataset.source == "sample"
        and results is None
    )
    defaults = fit_params(config)
    upload = (
        dcc.Upload(
            html.Div(
                [
                    "Drop or ",
                    html.A("choose"),
                    f" an .h5ad / .loom file (up to {config.max_upload_mb:g} MB)",
                ]
            ),
            id="upload",
            className="upload",
            max_size=config.max_upload_bytes,
        )
        if config.allow_upload
        else html.P("Uploads are disabled on this server.", className="caveat")
    )
    return html.Div(
        [
            dcc.Store(id="home-ds", data=active),
            dcc.Store(id="home-autofit", data=autofit),
            html.Div(
                [
                    html.Div(
                        [
                            ui.section(
                                "Datasets",
                                html.Ul(
                                    dataset_list(active),
                                    id="dataset-list",
                                    className="dataset-list",
                                ),
                                upload,
                                html.Div(id="upload-message"),
                            ),
                            ui.section(
                                "Fit veloVI",
                                html.Div(
                                    [
                                        html.Label("Device", className="label"),
                                        dcc.RadioItems(DEVICES, defaults.device, id="fit-device"),
                                        html.Label("Max epochs", className="label"),
                                        dcc.Input(
                                            id="fit-epochs",
                                            type="number",
                                            min=1,
                                            step=1,
                                            value=defaults.max_epochs,
                                        ),
                                    ],
                                    className="control",
                                ),
                                html.Div(
                                    [
                                        html.Button(
                                            "Fit", id="fit-btn", className="btn", n_clicks=0
                                        ),
                                        html.Span(
                                            " results are cached by content: the same data "
                                            "and options reopen instantly",
                                            className="caveat",
                                        ),
                                    ],
                                    style={"marginTop": "10px"},
                                ),
                                html.Div(id="fit-status", className="caveat"),
                            ),
                        ]
                    ),
                    html.Div(
                        [
                            ui.section(
                                "Summary", html.Div(summary_view(active), id="home-summary")
                            ),
                            ui.section(
                                "Training curve",
                                dcc.Graph(
                                    id="training-curve",
                                    figure=training_curve(active),
                                    config=ui.graph_config(dataset, "training_curve"),
                                    style={"height": "320px"},
                                ),
                            ),
                            *run_report.sections(active),
                        ]
                    ),
                ],
                className="grid-side",
            ),
        ]
    )


def summary_view(ds: str | None) -> html.Div:
    """Cells, genes, cell types with counts, device and stage timings of `ds`'s results."""
    dataset, results, problem = ui.resolve(ds)
    if problem is not None:
        return problem
    info = results.summary()
    stats = [
        ("cells", f"{info['n_cells']:,}"),
        ("genes fitted", f"{info['n_genes']:,}"),
        ("velocity genes", f"{info['n_velocity_genes']:,}" if info["n_velocity_genes"] else "–"),
        ("device", info["device"] or "–"),
        ("fit time", f"{sum(info['timings'].values()):.1f} s" if info["timings"] else "–"),
    ]
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in info["timings"].items())
    return html.Div(
        [
            html.Div(
                [
                    html.Div(
                        [html.Div(v, className="value"), html.Div(k, className="name")],
                        className="stat",
                    )
                    for k, v in stats
                ],
                className="stats",
                id="summary-stats",
            ),
            html.P(
                f"{dataset.label} · cell types from obs['{info['groupby']}']", className="caveat"
            ),
            html.Div(
                [
                    html.Span(f"{name}: {n}", className="pill")
                    for name, n in info["cell_types"].items()
                ],
                className="pill-list",
            ),
            html.P(f"Stages: {timings}", className="caveat") if timings else None,
            *[ui.alert(reason, "info") for reason in info["missing"].values()],
        ]
    )


@callback(
    Output(ui.FIT_REQUEST, "data"),
    Input("fit-btn", "n_clicks"),
    Input("home-autofit", "data"),
    State("home-ds", "data"),
    State("fit-device", "value"),
    State("fit-epochs", "value"),
    State(ui.FIT_RUNNING, "data"),
)
def request_fit(clicks, autofit, ds, device, epochs, running) -> dict:
    """A fit request for the shell's background job: on click, or on a first-launch sample."""
    if running or ds is None:
        raise PreventUpdate
    if ctx.triggered_id != "fit-btn" and not autofit:
        raise PreventUpdate
    if ctx.triggered_id == "fit-btn" and not clicks:
        raise PreventUpdate
    params = {"device": device or "auto"}
    if epochs:
        params["max_epochs"] = int(epochs)
    return {"ds": ds, "params": params, "nonce": time.time()}


@callback(Output("fit-btn", "disabled"), Input(ui.FIT_RUNNING, "data"))
def disable_fit_while_running(running: bool) -> bool:
    """One fit at a time per browser tab."""
    return bool(running)


@callback(
    Output("home-summary", "children"),
    Output("training-curve", "figure"),
    Output("fit-status", "children"),
    Input(ui.FIT_RESULT, "data"),
    State("home-ds", "data"),
    prevent_initial_call=True,
)
def refresh_after_fit(result: dict | None, ds: str | None):
    """Show the new results once a fit of the displayed dataset has finished."""
    if not result or result.get("ds") != ds:
        raise PreventUpdate
    return summary_view(ds), training_curve(ds), ""


@callback(
    Output("fit-status", "children", allow_duplicate=True),
    Output("training-curve", "figure", allow_duplicate=True),
    Input(ui.FIT_PROGRESS, "data"),
    State(ui.FIT_RUNNING, "data"),
    prevent_initial_call=True,
)
def show_progress(progress: dict | None, running: bool):
    """Live fit progress: epoch / max, validation ELBO and the training curve so far."""
    if not progress or not running:
        raise PreventUpdate
    status = progress["message"]
    if progress.get("epoch"):
        status = f"epoch {progress['epoch']} / {progress['max_epochs']}"
        if progress["elbo_validation"]:
            status += f" · validation ELBO {progress['elbo_validation'][-1]:.2f}"
    return status, figures.training_curve_figure(progress)


def training_curve(ds: str | None):
    """The training curve of `ds`'s results (an empty state before any fit)."""
    _, results, _ = ui.resolve(ds)
    return figures.training_curve_figure(results.history() if results is not None else None)


@callback(
    Output("upload-message", "children"),
    Output(ui.URL, "href", allow_duplicate=True),
    Input("upload", "contents"),
    State("upload", "filename"),
    prevent_initial_call=True,
)
def receive_upload(contents: str | None, filename: str | None):
    """Store a valid upload and open it; explain what is wrong with an invalid one."""
    if not contents:
        raise PreventUpdate
    try:
        dataset = ui.current_registry().save_upload(filename or "", contents)
    except UploadError as err:
        return ui.alert(str(err), "danger", id="upload-error"), no_update
    return ui.alert(f"Uploaded {dataset.label}.", "success"), ui.page_href("/", dataset.id)
