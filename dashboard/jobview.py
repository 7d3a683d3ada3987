"""How a fit job reads in the browser: one sentence, a percentage, a pending notice.

Pure functions of a job's public JSON (`Job.public`), shared by the shell's job bar, the pages
of a dataset that is being fitted, the home page and the jobs panel, so they all say the same.
"""

from __future__ import annotations

import time
from typing import Any

from dash import html

#: Pattern id of the live text in a pending notice (updated in the browser on every poll).
PENDING_TEXT = "job-pending-text"


def describe(job: dict[str, Any]) -> str:
    """One sentence: state, stage or epoch / max with the validation ELBO, queue position."""
    progress = job.get("progress") or {}
    label, owner = job.get("label") or job["dataset"], job.get("owner")
    by = f" (started by {owner})" if owner else ""
    state = job["state"]
    if state == "queued":
        position = job.get("queue_position")
        where = f", position {position} in the queue" if position else ""
        return f"{label} is waiting for a worker{where}{by}."
    if state == "running":
        if progress.get("stage") == "train" and progress.get("epoch"):
            text = f"epoch {progress['epoch']} / {progress['max_epochs']}"
            elbo = progress.get("elbo_validation") or []
            if elbo and elbo[-1] is not None:
                text += f" · validation ELBO {elbo[-1]:.2f}"
        else:
            text = progress.get("message") or "starting"
        return f"Fitting {label}: {text}{by}."
    if state == "done":
        return f"{label} is fitted{' (results reused)' if job.get('reused') else ''}."
    if state == "cancelled":
        return f"The fit of {label} was cancelled ({job.get('error') or 'cancelled'})."
    return f"The fit of {label} failed: {job.get('error') or 'unknown error'}"


def percent(job: dict[str, Any] | None) -> float:
    """Overall progress in percent (0 while queued, 100 when done)."""
    if not job:
        return 0.0
    if job["state"] == "done":
        return 100.0
    return round(100 * float((job.get("progress") or {}).get("fraction") or 0.0), 1)


def pending_notice(dataset_id: str, job: dict[str, Any]) -> html.Div:
    """What a page of a dataset that is being fitted shows instead of its figures."""
    return html.Div(
        [
            html.Span(describe(job), id={"type": PENDING_TEXT, "ds": dataset_id}),
            " This page opens by itself when the fit is done.",
        ],
        className="alert alert-info job-pending",
        role="status",
    )


def elapsed(job: dict[str, Any], now: float | None = None) -> str:
    """How long the job ran (or has been running / waiting), e.g. "2 min 5 s"."""
    now = time.time() if now is None else now
    start = job.get("started") or job.get("created") or now
    seconds = max(0, int((job.get("finished") or now) - start))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def ago(timestamp: float | None, now: float | None = None) -> str:
    """A timestamp as "12 s ago", "5 min ago", "3 h ago" or "2 d ago"."""
    if not timestamp:
        return "–"
    seconds = max(0, int((time.time() if now is None else now) - timestamp))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"
