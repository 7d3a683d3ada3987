"""The JSON API for scripts and tests, behind the same sign-in as the pages.

``GET /api/datasets`` · ``GET /api/jobs`` · ``POST /api/jobs {"dataset": ID, "params": {...}}``
(201 with a new job; 200 with the existing job for the same content key) · ``GET /api/jobs/ID``
→ ``{id, dataset, state, progress, owner, error, ...}`` · ``DELETE /api/jobs/ID`` (cancel) ·
``GET /api/users`` (admins). Errors are ``{"error": message}`` with a 4xx/5xx status.
Fit options are checked against `FitParams` (names and types), so a typo is a 400 that names
the option instead of a fit that silently ignores it.
"""

from __future__ import annotations

import flask

from dashboard.data.datasets import UnknownDataset
from dashboard.hosting import auth
from dashboard.jobs.queue import (
    InvalidFitOptions,
    JobFinished,
    JobNotFound,
    NothingToFit,
    parse_fit_params,
)
from dashboard.jobs.store import QueueUnavailable
from dashboard.web.context import current_queue, current_registry

api = flask.Blueprint("velodash_api", __name__, url_prefix="/api")


def _error(status: int, message: str) -> flask.Response:
    return flask.make_response(flask.jsonify(error=message), status)


@api.errorhandler(auth.Forbidden)
def _forbidden(err: auth.Forbidden):
    return _error(403, str(err))


@api.errorhandler(QueueUnavailable)
def _unavailable(err: QueueUnavailable):
    return _error(503, f"The job queue is unavailable; try again shortly. ({err})")


@api.errorhandler(JobNotFound)
def _not_found(_err: JobNotFound):
    return _error(404, "No job has this id.")


@api.get("/datasets")
def list_datasets():
    """Every dataset: id, label, kind, source and whether results exist."""
    registry = current_registry()
    return flask.jsonify(
        [
            {
                "id": d.id,
                "label": d.label,
                "kind": d.kind,
                "source": d.source,
                "fitted": registry.results_for(d) is not None,
            }
            for d in registry.datasets()
        ]
    )


@api.get("/jobs")
def list_jobs():
    """The most recent jobs, newest first."""
    queue = current_queue()
    return flask.jsonify([queue.public(job) for job in queue.jobs()])


@api.post("/jobs")
def submit_job():
    """Fit a dataset: 201 with a new job, 200 with the job already doing (or done) it."""
    user = auth.require("editor", "Fitting")
    if not flask.request.is_json:
        return _error(415, "Send JSON with 'Content-Type: application/json'.")
    body = flask.request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("dataset"), str):
        return _error(400, 'Send {"dataset": ID, "params": {...}}; see GET /api/datasets.')
    registry = current_registry()
    try:
        dataset = registry.get(body["dataset"])
    except UnknownDataset:
        return _error(404, "Unknown dataset id; GET /api/datasets lists them.")
    queue = current_queue()
    try:
        params = parse_fit_params(registry.config, body.get("params"))
        job, created = queue.submit(dataset, params, user.name)
    except NothingToFit as err:
        return _error(409, str(err))
    except InvalidFitOptions as err:
        return _error(400, str(err))
    return flask.make_response(flask.jsonify(queue.public(job)), 201 if created else 200)


@api.get("/jobs/<job_id>")
def get_job(job_id: str):
    """One job: id, dataset, state, progress (stage, epoch, ELBO history), owner, error."""
    queue = current_queue()
    return flask.jsonify(queue.public(queue.get(job_id)))


@api.delete("/jobs/<job_id>")
def cancel_job(job_id: str):
    """Cancel a queued or running job: editors their own, admins any."""
    user = auth.require("editor", "Cancelling a fit")
    queue = current_queue()
    job = queue.get(job_id)
    if not auth.can_cancel(user, job.owner):
        return _error(403, f"Only {job.owner} or an admin can cancel this job.")
    try:
        job = queue.cancel(job_id, user.name)
    except JobFinished as err:
        return _error(409, f"Nothing to cancel: {err}.")
    return flask.jsonify(queue.public(job))


@api.get("/users")
def list_users():
    """Users and roles (admins only)."""
    auth.require("admin", "The users list")
    return flask.jsonify(auth.users_list())


@api.route("/<path:_rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def no_such_endpoint(_rest: str):
    """Anything else under /api/ is a JSON 404 (not the Dash page that would answer)."""
    return _error(404, "No such API endpoint; see docs/hosting.md.")
