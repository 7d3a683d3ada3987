"""Home page: dataset picker and upload, results summary, fit with live progress and curve.

Fitting queues a job on the shared queue (editors); the shell polls it, and this page draws
its live training curve and refreshes the summary when it is done.
"""

from __future__ import annotations

import re
from typing import Any

import dash
import flask
from dash import (
    ClientsideFunction,
    Input,
    Output,
    State,
    callback,
    clientside_callback,
    dcc,
    html,
    no_update,
)
from dash.exceptions import PreventUpdate

from core.options import in_pipeline_order
from dashboard import figures
from dashboard.data.datasets import UPLOADS_DISABLED, Dataset, UnknownDataset
from dashboard.data.stages import is_base_file, stage_report
from dashboard.hosting import auth
from dashboard.jobs import devices
from dashboard.jobs.queue import InvalidFitOptions, parse_fit_params
from dashboard.jobs.store import QueueUnavailable
from dashboard.web import context, fit_form, jobview, rate_views, run_report, splicing_views
from dashboard.web import widgets as ui
from dashboard.web.upload_route import UPLOAD_PATH

dash.register_page(__name__, path="/", name="Home", title="velodash", order=0)
run_report.register()

#: Class of the note under the Fit button about the job it started or joined.
FIT_NOTE = "fit-note"
#: Where a dataset comes from, as the badge says it, and the badge's tooltip.
SOURCES = {
    "cli": ("opened", "Named on the command line that started velodash"),
    "sample": ("sample", "The simulated sample dataset bundled with velodash"),
    "data_dir": ("shared", "From the server's datasets folder (read-only)"),
    "upload": ("uploaded", "Uploaded through this page"),
}


def _breakable(name: str) -> list:
    """`name` with line-break opportunities after '_', '.' and '-' (never mid-word)."""
    parts: list = []
    for piece in re.split(r"(?<=[_.\-])", name):
        parts += [piece, html.Wbr()]
    return parts[:-1]


def _dataset_item(dataset: Dataset, status: str, active: bool) -> html.Li:
    label = _breakable(dataset.label)
    source, where = SOURCES.get(dataset.source, (dataset.source, ""))
    return html.Li(
        [
            dcc.Link(
                html.B(label) if active else label,
                href=ui.page_href("/", dataset.id),
                id=f"ds-link-{dataset.id}",
                title=dataset.label,
            ),
            html.Span(
                [
                    html.Span(
                        status, className="badge badge-ok" if status != "needs fit" else "badge"
                    ),
                    html.Span(source, className="badge", title=where),
                ],
                className="badges",
            ),
        ]
    )


def dataset_list(active: str | None) -> list[html.Li]:
    """One line per openable dataset: link, fit status (results, fitted, fitting, partly
    fitted (a fit that stopped after its first stages landed), queued, needs fit) and where it
    comes from."""
    registry = context.current_registry()
    try:
        jobs = {job.dataset: job.state for job in context.current_queue().store.active()}
    except QueueUnavailable:
        jobs = {}
    items = []
    for d in registry.datasets():
        path = registry.results_for(d) if d.kind != "results" else None
        if d.kind == "results":
            status = "results"
        elif path is not None and is_base_file(path):  # a fit's landings: running or stopped
            status = "fitting" if stage_report(path).alive else "partly fitted"
        elif path is not None:
            status = "fitted"
        else:
            status = {"running": "fitting", "queued": "queued"}.get(jobs.get(d.id), "needs fit")
        items.append(_dataset_item(d, status, d.id == active))
    return items


def layout(ds: str | None = None, **_query) -> html.Div:
    """The home page for dataset `ds` (default dataset when absent)."""
    config = flask.current_app.config[context.CONFIG_KEY]
    user = auth.current_user()
    dataset, _, _ = context.resolve(ds)
    active = dataset.id if dataset else None
    can_fit = user.can("editor") and dataset is not None and dataset.kind == "raw"
    defaults = parse_fit_params(config, {})
    try:
        cuda = devices.cuda_available(context.current_queue())
    except QueueUnavailable:
        cuda = None
    upload = upload_zone(config, user)
    return html.Div(
        [
            dcc.Store(id="home-ds", data=active),
            dcc.Store(id="home-can-fit", data=can_fit),
            dcc.Store(id="home-curve-epochs"),
            dcc.Store(id="home-pending"),
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
                            ),
                            ui.section(
                                "Fit veloVI",
                                html.Div(
                                    fit_form.fit_controls(defaults.to_dict(), cuda),
                                    className="control",
                                ),
                                fit_form.reference_picker(context.current_registry(), dataset),
                                html.Div(
                                    [
                                        html.Button(
                                            "Fit",
                                            id="fit-btn",
                                            className="btn",
                                            n_clicks=0,
                                            disabled=not can_fit,
                                            title=why_not_fit(user, dataset),
                                        ),
                                        html.Span(
                                            " "
                                            + (
                                                why_not_fit(user, dataset)
                                                or "results are cached by content: the same "
                                                "data and options reopen instantly; one fit per "
                                                "data and options runs however many ask for it"
                                            ),
                                            className="caveat",
                                            id="fit-why",
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
                            html.Div(run_report.sections(active), id="home-report"),
                        ]
                    ),
                ],
                className="grid-side",
            ),
        ]
    )


def why_not_fit(user: auth.User, dataset: Dataset | None) -> str:
    """Why the Fit button is off for this user and dataset ("" when it is on)."""
    if not user.can("editor"):
        return "Fitting needs the editor role: ask an editor or an admin."
    if dataset is None:
        return "Open a dataset first."
    if dataset.kind != "raw":
        return f"{dataset.label} holds results already; fit the raw data it came from."
    return ""


def summary_view(ds: str | None) -> html.Div:
    """Cells, genes, cell types with counts, device and stage timings of `ds`'s results."""
    dataset, results, problem = context.resolve(ds, on_home=True)
    if problem is not None:
        return problem
    info = results.summary()
    stats = [
        ("cells", f"{info['n_cells']:,}"),
        ("genes fitted", f"{info['n_genes']:,}"),
        ("velocity genes", f"{info['n_velocity_genes']:,}" if info["n_velocity_genes"] else "–"),
        ("device", info["device"] or "–"),
        ("fit time", jobview.duration(sum(info["timings"].values())) if info["timings"] else "–"),
    ]
    timings = ", ".join(f"{k} {jobview.duration(v)}" for k, v in in_pipeline_order(info["timings"]))
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
            rate_views.rate_note(dataset, results),
            *[ui.alert(reason, "info") for reason in info["missing"].values()],
            splicing_views.validation_panel(splicing_views.record_of(results), dataset.label),
        ]
    )


@callback(
    Output("fit-status", "children"),
    Output(ui.JOB_POLL, "n_intervals", allow_duplicate=True),
    inputs={"clicks": Input("fit-btn", "n_clicks")},
    state={
        "ds": State("home-ds", "data"),
        "polls": State(ui.JOB_POLL, "n_intervals"),
        "options": fit_form.control_states(),
        "reference": State(fit_form.REFERENCE_PICKER, "value"),
    },
    prevent_initial_call=True,
)
def submit_fit(
    clicks: int | None,
    ds: str | None,
    polls: int | None,
    options: dict[str, Any],
    reference: str | None = None,
):
    """Queue a fit of the shown dataset with the `options` of the page's controls (an empty one
    keeps its default) and, for a dataset without spliced/unspliced, the picked splicing
    reference; or join the fit already queued or running (editors)."""
    if not clicks:
        raise PreventUpdate
    try:
        user = auth.require("editor", "Fitting")
        dataset = context.current_registry().get(ds)
        requested = fit_form.requested_options(options)
        if not context.current_registry().has_splicing(dataset):
            requested |= fit_form.reference_option(context.current_registry(), reference)
        params = parse_fit_params(context.current_registry().config, requested)
        job, created = context.current_queue().submit(dataset, params, user.name)
    except auth.Forbidden as err:
        return ui.alert(str(err), "danger", id="fit-refused"), no_update
    except UnknownDataset:
        return ui.alert("This dataset is no longer available.", "danger"), no_update
    except InvalidFitOptions as err:
        return ui.alert(f"Cannot fit: {err}.", "danger"), no_update
    except QueueUnavailable:
        return ui.alert("The job queue is unreachable; try again.", "danger"), no_update
    if job.state == "done":
        message = "These results already exist."
    elif created:
        message = "Fit queued."
    else:
        message = f"Already being fitted (started by {job.owner}); showing its progress."
    return html.Span(message, className=FIT_NOTE), (polls or 0) + 1


clientside_callback(
    ClientsideFunction("velodash", "fitButtonDisabled"),
    Output("fit-btn", "disabled"),
    Input(ui.JOB_STATE, "data"),
    State("home-can-fit", "data"),
)


@callback(
    Output("training-curve", "figure", allow_duplicate=True),
    Output("home-curve-epochs", "data"),
    Input(ui.JOB_STATE, "data"),
    State("home-ds", "data"),
    State("home-curve-epochs", "data"),
    prevent_initial_call=True,
)
def live_curve(state: dict | None, ds: str | None, drawn: int | None):
    """The training curve of the running fit of this dataset, redrawn when epochs were added."""
    job = (state or {}).get("job")
    if not job or job["dataset"] != ds:
        raise PreventUpdate
    progress = job.get("progress") or {}
    epochs = len(progress.get("elbo_train") or [])
    if not epochs or epochs == drawn:
        raise PreventUpdate
    return figures.training_curve_figure(progress), epochs


@callback(
    Output("home-summary", "children", allow_duplicate=True),
    Output("dataset-list", "children", allow_duplicate=True),
    Output("home-pending", "data"),
    Input(ui.JOB_STATE, "data"),
    State("home-ds", "data"),
    State("home-pending", "data"),
    prevent_initial_call=True,
)
def summary_follows_job(state: dict | None, ds: str | None, shown: str | None):
    """Once a fit of this dataset is queued or running (by anyone), the summary and the
    dataset's badge say so (again when it goes from queued to running)."""
    job = (state or {}).get("job")
    if not job or job["dataset"] != ds or f"{job['id']}:{job['state']}" == shown:
        raise PreventUpdate
    return jobview.pending_notice(ds, job), dataset_list(ds), f"{job['id']}:{job['state']}"


@callback(
    Output("fit-status", "children", allow_duplicate=True),
    Input(ui.JOB_STATE, "data"),
    State("home-ds", "data"),
    State("fit-status", "children"),
    prevent_initial_call=True,
)
def fit_status_follows_job(state: dict | None, ds: str | None, shown: dict | str | None) -> None:
    """The note under the Fit button lasts only while it is true: "Fit queued." goes once
    the fit of this dataset runs (the bar at the top follows it) or has ended."""
    job = (state or {}).get("job")
    note = isinstance(shown, dict) and shown.get("props", {}).get("className") == FIT_NOTE
    if not note or (job and job["dataset"] == ds and job["state"] == "queued"):
        raise PreventUpdate  # errors stay; so does the note while the fit waits
    return None


@callback(
    Output("home-summary", "children"),
    Output("training-curve", "figure"),
    Output("dataset-list", "children"),
    Output("home-report", "children"),
    Output("home-pending", "data", allow_duplicate=True),
    Input(ui.JOB_FINISHED, "data"),
    State("home-ds", "data"),
    prevent_initial_call=True,
)
def refresh_after_fit(finished: dict | None, ds: str | None):
    """Show the new results (summary, curve, list, report and download cards) once the fit of
    the displayed dataset has ended."""
    if not finished or finished.get("dataset") != ds:
        raise PreventUpdate
    return summary_view(ds), training_curve(ds), dataset_list(ds), run_report.sections(ds), None


def training_curve(ds: str | None):
    """The training curve of `ds`'s results (an empty state before any fit)."""
    _, results, _ = context.resolve(ds)
    return figures.training_curve_figure(results.history() if results is not None else None)


def upload_zone(config, user: auth.User) -> html.Div:
    """The drop zone (editors, uploads on) or why there is none; assets/upload.js sends a
    dropped or chosen file to `upload_route.UPLOAD_PATH` and shows its progress here."""
    if not (config.allow_upload and user.can("editor")):
        why = UPLOADS_DISABLED if not config.allow_upload else "Uploading needs the editor role."
        return html.Div(html.P(why, className="caveat"), id="upload-message")
    limit = f"{config.max_upload_mb:g}"
    zone = html.Div(
        ["Drop or ", html.A("choose"), f" an .h5ad / .loom file (up to {limit} MB)"],
        id="upload",
        className="upload",
        role="button",
        tabIndex="0",
        **{
            "data-url": UPLOAD_PATH,
            "data-max-bytes": config.max_upload_bytes,
            "data-max-mb": limit,
        },
    )
    progress = html.Div(
        [
            html.Div(html.Div(id="upload-progress-fill"), className="upload-progress-track"),
            html.Span(id="upload-progress-text", className="caveat"),
            html.Button("Cancel", id="upload-cancel", className="btn btn-outline"),
        ],
        id="upload-progress",
        className="upload-progress",
        hidden=True,
    )
    return html.Div([zone, progress, dcc.Store(id="upload-result"), html.Div(id="upload-message")])


@callback(
    Output("upload-message", "children"),
    Output(ui.NOTICE, "data"),
    Output(ui.URL, "href", allow_duplicate=True),
    Input("upload-result", "data"),
    prevent_initial_call=True,
)
def upload_finished(result: dict | None):
    """What the upload route answered (assets/upload.js puts it in ``upload-result``): open the
    stored (or identical) dataset with its shell notice, which outlives the page's re-render
    for that dataset; or say what was wrong."""
    if not isinstance(result, dict):
        raise PreventUpdate
    notice, href = result.get("notice"), result.get("href")
    if result.get("error") or not isinstance(notice, dict) or not isinstance(href, str):
        error = str(result.get("error") or "The upload failed; please try again.")
        return ui.alert(error, "danger", id="upload-error"), no_update, no_update
    return None, notice, href
