"""Small shared layout pieces and per-request helpers for the page modules.

Ids of components that live in the app shell (stores, job bar) are constants here, so the
pages and the shell agree on them. Page modules get the active configuration and job queue
from the Flask app (`current_registry`, `current_queue`), never from module globals, so one
process can host several apps.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlencode

import flask
from dash import dcc, html

from dashboard import auth, jobview
from dashboard.datasets import Dataset, DatasetRegistry, UnknownDataset
from dashboard.jobqueue import JobQueue
from dashboard.jobstore import QueueUnavailable
from dashboard.results import Results, ResultsError, load_results
from dashboard.users import User

CONFIG_KEY = "VELODASH_CONFIG"
QUEUE_KEY = "velodash_queue"

# Shell-level ids (present on every page).
URL = "url"
JOB_POLL = "job-poll"
JOB_STATE = "job-state"
JOB_SEEN = "job-seen"
JOB_FINISHED = "job-finished"
CANCEL_FIT = "cancel-fit"
JOB_BAR = "job-bar"
JOB_ALERT = "job-alert"
URL_STATE = "url-state"
URL_SYNCED = "url-synced"
COPY_LINK = "copy-link"
#: A message for the page a callback navigates to ({"href", "text", "color"}): it lives in
#: the shell, so the page's re-render does not wipe it; it goes on the next navigation.
NOTICE = "page-notice"
NOTICE_AREA = "page-notice-area"

PAGES = (
    ("/", "Home"),
    ("/stream", "Velocity"),
    ("/uncertainty", "Uncertainty"),
    ("/genes", "Genes"),
    ("/coherence", "Coherence"),
    ("/permutation", "Permutation"),
    ("/portraits", "Portraits"),
    ("/heatmap", "Heatmap"),
)
#: Modebar image export: PNG at this scale (SVG through the extra button in velodash.js).
EXPORT_SCALE = 3


def current_registry() -> DatasetRegistry:
    """The dataset registry of the app serving the current request."""
    return DatasetRegistry(flask.current_app.config[CONFIG_KEY])


def current_queue() -> JobQueue:
    """The shared fit queue of the app serving the current request."""
    return flask.current_app.extensions[QUEUE_KEY]


def page_href(path: str, ds: str | None, **query: str | None) -> str:
    """A URL for `path` carrying the dataset id and any other non-empty query values."""
    values = {"ds": ds, **query}
    query_string = urlencode({k: v for k, v in values.items() if v})
    return f"{path}?{query_string}" if query_string else path


def gene_link(gene: str, ds: str | None, **style) -> dcc.Link:
    """A link that opens the gene view for `gene`; every gene name in the UI uses it."""
    return dcc.Link(gene, href=page_href("/genes", ds, gene=gene), className="gene-link", **style)


def alert(message, kind: str = "warning", **kwargs) -> html.Div:
    """A coloured message box; `kind` is info, success, warning or danger. In a plain-text
    message, `backticked` commands are shown as code rather than with raw backticks."""
    if isinstance(message, str):
        message = with_code(message)
    return html.Div(message, className=f"alert alert-{kind}", role="alert", **kwargs)


def with_code(text: str) -> str | list:
    """``text`` with each `backticked` span as an html.Code (the text alone when none)."""
    parts = text.split("`")
    if len(parts) < 3:
        return text
    if len(parts) % 2 == 0:  # an unpaired backtick stays as written
        parts[-2:] = ["`".join(parts[-2:])]
    return [html.Code(p) if i % 2 else p for i, p in enumerate(parts) if p]


def resolve(
    ds: str | None, on_home: bool = False
) -> tuple[Dataset | None, Results | None, html.Div | None]:
    """(dataset, its results, None) for a URL's `ds`, or what to show instead of a page.

    A missing `ds` means the default dataset. The third item is an alert explaining why there
    is nothing to show (unknown id, or a raw dataset not fitted yet) with a way forward that
    fits the user's role and the page (`on_home`: the Fit button is on this page).
    """
    registry = current_registry()
    ds = ds or registry.default_id()
    if ds is None:
        return None, None, alert(["No dataset is available. ", dcc.Link("Open one", href="/")])
    try:
        dataset = registry.get(ds)
    except UnknownDataset:
        return (
            None,
            None,
            alert([f"Unknown dataset '{ds}'. ", dcc.Link("Pick a dataset", href="/")], "danger"),
        )
    path = registry.results_for(dataset)
    if path is None:
        try:
            fitting = current_queue().active_for(dataset.id)
        except QueueUnavailable:
            fitting = []
        if fitting:
            job = current_queue().public(fitting[0])
            return dataset, None, jobview.pending_notice(dataset.id, job)
        return dataset, None, alert(not_fitted_message(dataset, on_home), "info")
    try:
        return dataset, load_results(path), None
    except ResultsError as err:
        return dataset, None, alert(str(err), "danger")


def not_fitted_message(dataset: Dataset, on_home: bool) -> list:
    """What to do about a dataset without results, for the current user's role: editors are
    sent to the Fit button (this page's, or the home page's), viewers to an editor."""
    head = f"{dataset.label} has not been fitted yet. "
    if not auth.current_user().can("editor"):
        return [head + "Fitting needs the editor role: ask an editor or an admin to fit it."]
    if on_home:
        return [head + "Fit it with the Fit button on this page; progress shows at the top."]
    return [
        head,
        dcc.Link("Fit it on the home page", href=page_href("/", dataset.id)),
        " (progress is shown at the top of every page).",
    ]


def navbar(user: User | None = None) -> html.Nav:
    """The top bar: brand, one link per page (hrefs keep the current dataset), the dataset,
    the jobs panel, "Copy link" for the current view and, when signed in, the user."""
    return html.Nav(
        [
            dcc.Link("velodash", href="/", className="brand", id="nav-brand"),
            html.Div(
                [
                    dcc.Link(name, href=path, id=f"nav-{name.lower()}", className="nav-link")
                    for path, name in PAGES
                ],
                className="nav-links",
            ),
            html.Span(id="nav-dataset", className="nav-dataset"),
            dcc.Link("Jobs", href="/jobs", id="nav-jobs", className="nav-link"),
            html.Button(
                "Copy link",
                id=COPY_LINK,
                className="btn btn-nav",
                title="Copy a link to this view",
                n_clicks=0,
            ),
            html.Span(
                id="copy-link-status", className="visually-hidden", **{"aria-live": "polite"}
            ),
            html.Span(f"{user.name} · {user.role}", className="nav-user", id="nav-user")
            if user is not None
            else None,
        ],
        className="navbar",
    )


def job_bar() -> html.Div:
    """The shell's fit progress strip with its Cancel button (hidden while no fit runs)."""
    return html.Div(
        [
            html.Span(id="job-message", className="job-message"),
            html.Div(
                html.Div(id="job-progress-fill", className="progress-fill"), className="progress"
            ),
            html.Button(
                "Cancel fit",
                id=CANCEL_FIT,
                className="btn btn-outline",
                n_clicks=0,
                style={"display": "none"},
            ),
        ],
        id=JOB_BAR,
        className="job-bar",
        style={"display": "none"},
    )


def url_state_store() -> dcc.Store:
    """Per-page store whose value (a query string) is mirrored into the address bar."""
    return dcc.Store(id=URL_STATE)


def section(title: str, *children, **kwargs) -> html.Section:
    """A titled card."""
    return html.Section([html.H3(title), *children], className="card", **kwargs)


def export_name(dataset: Dataset | None, view: str) -> str:
    """File stem for a view's exports: the dataset (id of the sample, else the file stem),
    then the view, e.g. ``sample_stream`` or ``pancreas_739_heatmap``; safe characters only."""
    base = (
        "velodash"
        if dataset is None
        else (dataset.id if dataset.source == "sample" else Path(dataset.label).stem)
    )
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{base}_{view}").strip("_")


def graph_config(dataset: Dataset | None, view: str, **extra) -> dict:
    """``dcc.Graph`` config: no plotly logo; the modebar camera saves a PNG at
    ``EXPORT_SCALE``× named after dataset and view (the SVG button added by
    ``assets/velodash.js`` reuses that name)."""
    return {
        "displaylogo": False,
        "toImageButtonOptions": {
            "format": "png",
            "scale": EXPORT_SCALE,
            "filename": export_name(dataset, view),
        },
        **extra,
    }


def graph(graph_id: str, dataset: Dataset | None, view: str, height: str, **kwargs) -> dcc.Graph:
    """A ``dcc.Graph`` with the export config and a fixed height."""
    config = graph_config(dataset, view, **kwargs.pop("config", {}))
    return dcc.Graph(id=graph_id, config=config, style={"height": height}, **kwargs)


def download_button(button_id: str, label: str = "Download data (CSV)") -> html.Button:
    """The "download data" button every page has (pair it with a ``dcc.Download``)."""
    return html.Button(label, id=button_id, className="btn btn-outline btn-small", n_clicks=0)
