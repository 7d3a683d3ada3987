"""How a fit job reads in the browser: one sentence, a percentage, a pending notice.

Pure functions of a job's public JSON (`Job.public`), shared by the shell's job bar, the pages
of a dataset that is being fitted, the home page and the jobs panel, so they all say the same.
"""

from __future__ import annotations

import time
from typing import Any

from dash import html

from core.params import FitParams
from core.progress import seconds_left
from dashboard.data.stages import in_words

#: Pattern id of the live text in a pending notice (updated in the browser on every poll).
PENDING_TEXT = "job-pending-text"


def remaining(job: dict[str, Any], now: float | None = None) -> tuple[float, bool] | None:
    """(seconds left, whether that is an upper bound) for a running job, or None before there
    is a rate to go by (`core.progress.seconds_left` over the job's progress: the
    current stage at its own rate, the stages after it at the rate of the stages done; in
    training an upper bound, as training stops early once the velocity has converged). Times
    are the worker's clock against `now` (the web server's): hosts must keep their clocks in
    sync (NTP)."""
    if job.get("state") != "running":
        return None
    return seconds_left(job.get("progress") or {}, 1.0, now)


def duration(seconds: float) -> str:
    """Seconds as "45 s" or "3 min 5 s" (the one way fit times are written)."""
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def time_left(job: dict[str, Any], now: float | None = None) -> str:
    """The estimate of `remaining` in words (`dashboard.data.stages.in_words`), or "" when
    there is none yet or the fit is writing its end."""
    if (job.get("progress") or {}).get("stage") == "done":
        return ""
    return in_words(remaining(job, now))


def describe(job: dict[str, Any], now: float | None = None) -> str:
    """One sentence: state, stage or epoch / max with the validation ELBO and the time left,
    queue position."""
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
        left = time_left(job, now)
        return f"Fitting {label}: {text}{' · ' + left if left else ''}{by}."
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
            " This page opens by itself as soon as the fit's first results (the posterior and"
            " the velocity graph) are written.",
        ],
        className="alert alert-info job-pending",
        role="status",
    )


def elapsed(job: dict[str, Any], now: float | None = None) -> str:
    """How long the job ran (or has been running / waiting), e.g. "2 min 5 s"."""
    now = time.time() if now is None else now
    start = job.get("started") or job.get("created") or now
    return duration((job.get("finished") or now) - start)


def fit_time(job: dict[str, Any], now: float | None = None) -> str:
    """A job's time: for a finished fit, the fit time the home page's summary gives (the
    results' stage timings); "reused" for a request that found its results already written;
    else how long it ran or has been running (`elapsed`)."""
    seconds = (job.get("progress") or {}).get("fit_seconds")
    if seconds is not None:
        return duration(seconds)
    return "reused" if job.get("reused") else elapsed(job, now)


def ago(timestamp: float | None, now: float | None = None) -> str:
    """A timestamp as "12 s ago", "5 min ago", "3 h ago" or "2 d ago"."""
    if not timestamp:
        return "–"
    seconds = max(0, int((time.time() if now is None else now) - timestamp))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def fit_options(params: dict[str, Any]) -> tuple[str, str]:
    """A job's fit options as (the ones that differ from velodash's defaults, "name value"
    joined by " · ", or "defaults"; every option, one "name = value" per line)."""
    defaults = FitParams().to_dict()
    changed = [f"{k} {_value(v)}" for k, v in params.items() if defaults.get(k, _UNSET) != v]
    full = "\n".join(f"{k} = {_value(v)}" for k, v in sorted(params.items()))
    return (" · ".join(changed) or "defaults"), full


_UNSET = object()  # an option velodash has no default for (a newer or older version's)


def _value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or "none"
    return "auto" if value is None else str(value)
