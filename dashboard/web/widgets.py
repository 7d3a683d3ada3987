"""Small shared layout pieces for the page modules: links, alerts, cards, graphs with their
export settings, the navbar and the job bar.

Ids of components that live in the app shell (stores, job bar) are constants here, so the
pages and the shell agree on them.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlencode

from dash import dcc, html

from dashboard.data.datasets import Dataset
from dashboard.hosting.users import User

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


def card_foot(caveat: str | list, download_id: str) -> html.Div:
    """The foot of a page's figure card: the caveat (text or components) beside the page's
    "download data" button ``download_id``."""
    return html.Div(
        [html.P(caveat, className="caveat"), download_button(download_id)], className="card-foot"
    )


def graph_card(page: str, figure: dcc.Graph, caveat: str | list) -> html.Div:
    """A page's figure card: alerts in ``{page}-message``, ``figure`` under a loading spinner,
    and the :func:`card_foot` with ``caveat`` and the ``{page}-csv`` button."""
    return html.Div(
        [
            html.Div(id=f"{page}-message"),
            dcc.Loading(figure),
            card_foot(caveat, f"{page}-csv"),
        ],
        className="card",
    )
