"""The app shell around every page: stores, navbar, job bar, alerts, and their callbacks.

The job bar follows the queue, not a browser-owned process: one cheap server callback polls
the job of the dataset in the URL (every second while one is queued or running, every few
seconds otherwise) and writes it to the ``job-state`` store; the bar, the live text of pending
notices and the reload of a page whose dataset just got fitted are drawn in the browser from
that store (assets/velodash.js), so a poll costs one request. Every visitor of a dataset sees
the same job: stage, epoch / max, validation ELBO, queue position and who started it.
A page drawn while its fit still lands stages is drawn again, in place, when one lands.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

import dash
import flask
from dash import ALL, ClientsideFunction, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from dashboard.data.datasets import DatasetRegistry, UnknownDataset
from dashboard.data.stages import stage_key
from dashboard.hosting import auth
from dashboard.jobs.queue import JobFinished, JobNotFound
from dashboard.jobs.store import FINAL, QueueUnavailable
from dashboard.web import context, jobview, splicing_views
from dashboard.web import widgets as ui

LOG = logging.getLogger(__name__)
#: Dash pages' container of the page's content (what its router callback fills).
PAGE_CONTENT = "_pages_content"
#: Poll intervals (ms) while the dataset has a queued/running job, and otherwise.
POLL_ACTIVE_MS = 1000
POLL_IDLE_MS = 4000


def layout() -> html.Div:
    """The shell of every page (built per request: the navbar names the signed-in user).

    Dash also builds it once outside any sign-in to validate it; the navbar then has no user.
    """
    user = flask.g.get("velodash_user") if auth.sign_in_enabled() else None
    return html.Div(
        [
            dcc.Location(id=ui.URL, refresh="callback-nav"),
            dcc.Interval(id=ui.JOB_POLL, interval=POLL_IDLE_MS),
            dcc.Store(id=ui.JOB_STATE),
            dcc.Store(id=ui.JOB_SEEN),
            dcc.Store(id=ui.JOB_FINISHED),
            dcc.Store(id="job-reload"),
            dcc.Store(id=ui.URL_SYNCED),
            dcc.Store(id=ui.NOTICE),
            ui.navbar(user),
            ui.job_bar(),
            html.Div(id=splicing_views.BADGE_ID),
            html.Div(id=ui.JOB_ALERT),
            html.Div(id=ui.NOTICE_AREA),
            html.Main(dash.page_container, className="page"),
        ]
    )


def dataset_of(search: str | None, registry: DatasetRegistry) -> str | None:
    """The dataset id a URL's query string names (the default dataset when none)."""
    return parse_qs((search or "").lstrip("?")).get("ds", [None])[0] or registry.default_id()


def poll_job(search: str | None, seen: dict | None, registry: DatasetRegistry):
    """(job-state, job-seen, job-finished, poll interval) for the dataset in the URL."""
    ds = dataset_of(search, registry)
    queue = context.current_queue()
    try:
        active = queue.active_for(ds) if ds else []
        job = queue.public(active[0]) if active else None
        finished = no_update
        seen_id = (seen or {}).get("id") if (seen or {}).get("ds") == ds else None
        if seen_id and seen_id != (job or {}).get("id"):
            try:
                old = queue.get(seen_id)
            except JobNotFound:
                old = None
            if old is not None and old.state in FINAL:
                finished = queue.public(old)
    except QueueUnavailable:
        state = {"ds": ds, "job": None, "error": True, "message": "The job queue is unreachable."}
        return state, {"ds": ds, "id": (seen or {}).get("id")}, no_update, POLL_IDLE_MS
    user = auth.current_user()
    state = {
        "ds": ds,
        "job": job,
        "message": jobview.describe(job) if job else "",
        "percent": jobview.percent(job),
        "can_cancel": bool(job) and auth.can_cancel(user, job["owner"]),
        "more": max(0, len(active) - 1),
    }
    digest = hashlib.sha1(json.dumps(state, sort_keys=True).encode()).hexdigest()
    new_seen = {"ds": ds, "id": job["id"] if job else None, "digest": digest}
    unchanged = seen is not None and seen.get("digest") == digest
    interval = POLL_ACTIVE_MS if job else POLL_IDLE_MS
    return (no_update if unchanged else state), new_seen, finished, interval


def cancel_from_bar(clicks: int | None, state: dict | None, polls: int | None):
    """Cancel the job shown in the bar (its owner or an admin); errors become an alert."""
    if not clicks or not state or not state.get("job"):
        raise PreventUpdate
    user = auth.current_user()
    queue = context.current_queue()
    try:
        job = queue.get(state["job"]["id"])
        if not auth.can_cancel(user, job.owner):
            message = f"Only {job.owner} or an admin can cancel this fit."
            return ui.alert(message, "danger", id="job-error"), no_update
        queue.cancel(job.id, user.name)
    except (JobNotFound, JobFinished):
        return ui.alert("This fit had already ended.", "info"), (polls or 0) + 1
    except QueueUnavailable:
        return ui.alert("The job queue is unreachable; try again.", "danger"), no_update
    return no_update, (polls or 0) + 1


def finished_alert(job: dict | None) -> html.Div:
    """The message when the job of the shown dataset ends: done (links), failed or cancelled."""
    if not job:
        raise PreventUpdate
    label, ds = job.get("label") or job["dataset"], job["dataset"]
    if job["state"] == "done":
        return ui.alert(
            [
                f"Fit finished for {label} on {job.get('device') or 'the worker'} "
                f"({jobview.fit_time(job)}). Open the ",
                dcc.Link("velocity view", href=ui.page_href("/stream", ds)),
                " or the ",
                dcc.Link("gene table", href=ui.page_href("/genes", ds)),
                ".",
            ],
            "success",
            id="job-done",
        )
    if job["state"] == "cancelled":
        return ui.alert(
            f"Fit of {label} {job.get('error') or 'cancelled'}.", "warning", id="job-cancelled"
        )
    return ui.alert(jobview.describe(job), "danger", id="job-error")


def show_notice(href: str | None, notice: dict | None) -> tuple:
    """(what the notice area shows, the notice store): the notice while the browser is on the
    page it was meant for; once it has left that page, nothing, and the notice is dropped so
    coming back does not show it again."""
    if not notice:
        return None, no_update
    here = urlsplit(href or "")._replace(scheme="", netloc="").geturl()
    if here == notice["href"]:
        return ui.alert(notice["text"], notice.get("color", "info"), id="notice"), no_update
    return None, None


def redraw_when_a_stage_lands(
    pathname: str | None, search: str | None, watched: list, registry: DatasetRegistry
) -> Any:
    """The page drawn afresh when a late stage it shows has landed, failed or stopped since it
    was drawn (its `context.stage_watch` store), so the stage's views appear without a reload;
    a page waiting for its fit's first stage opens when it lands, and one whose partial
    results went (a cancelled fit) says so. PreventUpdate otherwise, for pages drawn from
    complete results, and when the browser has moved to another page."""
    watch = watched[0] if watched and watched[0] else {}
    if watch.get("key") is None or watch.get("path") not in (None, pathname):
        raise PreventUpdate
    try:
        path = registry.results_for(registry.get(watch["ds"]))
    except UnknownDataset:
        raise PreventUpdate from None
    waiting = watch["key"] == context.WAITING
    if (path is None and waiting) or stage_key(path, tuple(watch["stages"])) == watch["key"]:
        raise PreventUpdate
    page = next((p for p in dash.page_registry.values() if p["path"] == pathname), None)
    if page is None or not callable(page["layout"]):
        raise PreventUpdate
    query = {k: v[0] for k, v in parse_qs((search or "").lstrip("?")).items()}
    return page["layout"](**query)


def register_callbacks(app: dash.Dash, registry: DatasetRegistry) -> None:
    """The shell's callbacks: job polling and display, cancel, alerts, nav links, URL, copy."""

    @app.callback(
        Output(ui.JOB_STATE, "data"),
        Output(ui.JOB_SEEN, "data"),
        Output(ui.JOB_FINISHED, "data"),
        Output(ui.JOB_POLL, "interval"),
        Output(PAGE_CONTENT, "children", allow_duplicate=True),
        Input(ui.JOB_POLL, "n_intervals"),
        Input(ui.URL, "search"),
        State(ui.JOB_SEEN, "data"),
        State(ui.URL, "pathname"),
        State({"type": context.STAGE_WATCH, "page": ALL}, "data"),
        prevent_initial_call="initial_duplicate",
    )
    def poll(_n, search: str | None, seen: dict | None, pathname: str | None, watched: list):
        """One request per poll: the job of the URL's dataset, and the page drawn again when
        a stage of its fit landed (`redraw_when_a_stage_lands`)."""
        page = no_update
        if dash.ctx.triggered_id == ui.JOB_POLL:
            try:
                page = redraw_when_a_stage_lands(pathname, search, watched, registry)
            except PreventUpdate:
                pass
            except Exception:  # a redraw must never cost the job bar its update
                LOG.exception("redrawing %s after a stage landed failed", pathname)
        return (*poll_job(search, seen, registry), page)

    app.clientside_callback(
        ClientsideFunction("velodash", "jobBar"),
        Output(ui.JOB_BAR, "style"),
        Output("job-message", "children"),
        Output("job-progress-fill", "style"),
        Output(ui.CANCEL_FIT, "style"),
        Input(ui.JOB_STATE, "data"),
    )
    app.clientside_callback(
        ClientsideFunction("velodash", "pendingText"),
        Output({"type": jobview.PENDING_TEXT, "ds": ALL}, "children"),
        Input(ui.JOB_STATE, "data"),
        State({"type": jobview.PENDING_TEXT, "ds": ALL}, "id"),
    )
    app.clientside_callback(
        ClientsideFunction("velodash", "reloadWhenFitted"),
        Output("job-reload", "data"),
        Input(ui.JOB_FINISHED, "data"),
        prevent_initial_call=True,
    )
    app.callback(
        Output(ui.JOB_ALERT, "children", allow_duplicate=True),
        Output(ui.JOB_POLL, "n_intervals", allow_duplicate=True),
        Input(ui.CANCEL_FIT, "n_clicks"),
        State(ui.JOB_STATE, "data"),
        State(ui.JOB_POLL, "n_intervals"),
        prevent_initial_call=True,
    )(cancel_from_bar)
    app.callback(
        Output(ui.JOB_ALERT, "children"),
        Input(ui.JOB_FINISHED, "data"),
        prevent_initial_call=True,
    )(finished_alert)
    app.callback(
        Output(ui.NOTICE_AREA, "children"),
        Output(ui.NOTICE, "data", allow_duplicate=True),
        Input(ui.URL, "href"),
        Input(ui.NOTICE, "data"),
        prevent_initial_call=True,
    )(show_notice)

    @app.callback(
        [Output(f"nav-{name.lower()}", "href") for _, name in ui.PAGES]
        + [Output("nav-dataset", "children")],
        Input(ui.URL, "search"),
    )
    def nav_links(search: str | None):
        """Keep the dataset in every navigation link and name it in the bar."""
        ds = dataset_of(search, registry)
        try:
            label = registry.get(ds).label if ds else ""
        except UnknownDataset:
            label = ""
        return [ui.page_href(path, ds) for path, _ in ui.PAGES] + [label]

    @app.callback(
        Output(splicing_views.BADGE_ID, "children"),
        Input(ui.URL, "search"),
        Input(ui.JOB_FINISHED, "data"),
    )
    def splicing_badge(search: str | None, _finished):
        """On every page of a fit whose S/U were predicted: say so, with the held-out R (again
        when a fit of the page's dataset finishes)."""
        _, results, _ = context.resolve(dataset_of(search, registry))
        return splicing_views.badge(splicing_views.record_of(results))

    app.clientside_callback(
        ClientsideFunction("velodash", "syncUrl"),
        Output(ui.URL_SYNCED, "data"),
        Input(ui.URL_STATE, "data"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        ClientsideFunction("velodash", "copyLink"),
        Output("copy-link-status", "children"),
        Output(ui.COPY_LINK, "children"),
        Input(ui.COPY_LINK, "n_clicks"),
        prevent_initial_call=True,
    )
