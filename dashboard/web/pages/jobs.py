"""Jobs panel: every recent fit with owner, dataset, state, progress, the fit options that
differ from the defaults (open for all of them) and time; cancel buttons
for those the user may cancel; and, for admins, the users list."""

from __future__ import annotations

import time

import dash
from dash import ALL, Input, Output, callback, ctx, dcc, html
from dash.exceptions import PreventUpdate

from dashboard.hosting import auth
from dashboard.hosting.users import User
from dashboard.jobs.queue import JobFinished, JobNotFound
from dashboard.jobs.store import QueueUnavailable
from dashboard.web import context, jobview
from dashboard.web import widgets as ui

dash.register_page(__name__, path="/jobs", name="Jobs", title="velodash · jobs", order=90)

REFRESH_MS = 2000
CANCEL = "cancel-job"


def _row(job: dict, user: User, now: float) -> html.Tr:
    progress = (
        html.Div(
            html.Div(className="progress-fill", style={"width": f"{jobview.percent(job)}%"}),
            className="progress",
        )
        if job["state"] in ("queued", "running")
        else None
    )
    may_cancel = job["state"] in ("queued", "running") and auth.can_cancel(user, job["owner"])
    changed, every = jobview.fit_options(job.get("params") or {})
    return html.Tr(
        [
            html.Td(dcc.Link(job["label"], href=ui.page_href("/", job["dataset"]))),
            html.Td(job["owner"]),
            html.Td(html.Span(job["state"], className=f"state state-{job['state']}")),
            html.Td([progress, " ", jobview.describe(job)]),
            html.Td(
                html.Details([html.Summary(changed), html.Pre(every)]),
                className="options",
                title="the options that differ from the defaults; open for every option",
            ),
            html.Td(jobview.ago(job["created"], now), title="submitted"),
            html.Td(jobview.fit_time(job, now), title="fit time (running: time so far)"),
            html.Td(
                html.Button(
                    "Cancel",
                    id={"type": CANCEL, "id": job["id"]},
                    className="btn btn-outline",
                    n_clicks=0,
                )
                if may_cancel
                else None
            ),
        ],
        id=f"job-row-{job['id']}",
    )


def jobs_table() -> html.Div:
    """The table of recent jobs as the signed-in user sees it."""
    user = auth.current_user()
    queue = context.current_queue()
    try:
        jobs = [queue.public(job) for job in queue.jobs(100)]
    except QueueUnavailable:
        return ui.alert("The job queue is unreachable; retrying.", "danger")
    if not jobs:
        return html.P("No fits yet.", className="caveat")
    now = time.time()
    header = ["dataset", "owner", "state", "progress", "options", "submitted", "time", ""]
    rows = [_row(job, user, now) for job in jobs]
    head = html.Thead(html.Tr([html.Th(h) for h in header]))
    return html.Table([head, html.Tbody(rows)], className="jobs")


def users_section() -> html.Section | None:
    """The users list (admins only; rendered on the server, so others never receive it)."""
    if not auth.current_user().can("admin"):
        return None
    users = auth.users_list()
    rows = [html.Tr([html.Td(u["name"]), html.Td(u["role"])]) for u in users]
    body = (
        html.Table(
            [html.Thead(html.Tr([html.Th("user"), html.Th("role")])), html.Tbody(rows)],
            className="jobs",
            id="users-table",
        )
        if rows
        else html.P("No users file: this instance has no sign-in.", className="caveat")
    )
    return ui.section(
        "Users",
        body,
        html.P("Manage them with `velodash users add|remove|list`.", className="caveat"),
    )


def layout(**_query) -> html.Div:
    """The jobs panel (refreshed every two seconds)."""
    return html.Div(
        [
            dcc.Interval(id="jobs-refresh", interval=REFRESH_MS),
            ui.section(
                "Jobs",
                html.Div(id="jobs-message"),
                html.Div(jobs_table(), id="jobs-table"),
                html.P(
                    "One job per dataset and fit options: everyone who asks for the same fit "
                    "shares it. Editors can cancel their own jobs, admins any job.",
                    className="caveat",
                ),
            ),
            users_section(),
        ]
    )


@callback(Output("jobs-table", "children"), Input("jobs-refresh", "n_intervals"))
def refresh(_n: int | None) -> html.Div:
    """Redraw the table."""
    return jobs_table()


@callback(
    Output("jobs-message", "children"),
    Input({"type": CANCEL, "id": ALL}, "n_clicks"),
    prevent_initial_call=True,
)
def cancel(clicks: list[int | None]):
    """Cancel the job whose button was clicked (checked here, not by hiding buttons)."""
    if not ctx.triggered_id or not any(clicks) or not ctx.triggered[0].get("value"):
        raise PreventUpdate
    job_id = ctx.triggered_id["id"]
    queue = context.current_queue()
    try:
        user = auth.require("editor", "Cancelling a fit")
        job = queue.get(job_id)
        if not auth.can_cancel(user, job.owner):
            raise auth.Forbidden(f"Only {job.owner} or an admin can cancel this fit.")
        queue.cancel(job_id, user.name)
    except auth.Forbidden as err:
        return ui.alert(str(err), "danger")
    except (JobNotFound, JobFinished):
        return ui.alert("That fit had already ended.", "info")
    except QueueUnavailable:
        return ui.alert("The job queue is unreachable; try again.", "danger")
    return ui.alert(f"Cancelled the fit of {job.label}.", "warning")
