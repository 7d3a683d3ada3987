"""The shared fit queue as web processes see it: submit, look up, list, cancel.

One job per content key (dataset fingerprint + every fit option, `core.params.results_key`):
asking for a fit that is queued or running returns that job, and asking for one whose
results exist returns a *done* job at once. Locally the jobs are rows of a SQLite file that a
`LocalWorker` executes; hosted, they are Redis records and each new job is published to the
Celery workers, and every look at the queue also publishes again any queued job whose message
was lost (`celery_app.republish_lost`). Web processes never run a fit themselves, so they never
import torch or CUDA.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from core.params import FitParams, parse_fit_options
from core.stage_files import is_complete
from dashboard.config import AppConfig
from dashboard.data.datasets import Dataset, DatasetRegistry
from dashboard.jobs.devices import cuda_available
from dashboard.jobs.redis_store import RedisJobStore
from dashboard.jobs.sqlite_store import SqliteJobStore
from dashboard.jobs.store import ACTIVE, Job, JobStore, QueueUnavailable, new_job_id, valid_job_id
from dashboard.jobs.worker import reap_stale

#: Minimum seconds between two checks for lost workers by one web process.
REAP_INTERVAL_S = 2.0


class JobNotFound(LookupError):
    """No job has this id (a stale link, a forged id)."""


class JobFinished(RuntimeError):
    """The job is no longer queued or running (cannot be cancelled)."""


class InvalidFitOptions(ValueError):
    """Fit options that cannot be used; the message says which and why."""


class NothingToFit(InvalidFitOptions):
    """The dataset is already a results file: there are no counts to fit."""


def parse_fit_params(config: AppConfig, requested: Any) -> FitParams:
    """`FitParams` from a request's ``params`` (defaults < `config.fit_overrides` < request),
    checked against the options' declaration (`core.params.parse_fit_options`).

    Raises InvalidFitOptions for unknown options, wrong types or values out of range.
    """
    if requested is None:
        requested = {}
    if not isinstance(requested, dict):
        raise InvalidFitOptions("'params' must be a JSON object of fit options")
    try:
        return parse_fit_options({**config.fit_overrides, **requested})
    except ValueError as err:
        raise InvalidFitOptions(str(err)) from err


def open_store(config: AppConfig) -> JobStore:
    """The job store of a configuration: Redis when `redis_url` is set, else SQLite."""
    if config.redis_url:
        return RedisJobStore(config.redis_url)
    return SqliteJobStore.in_cache(config.cache_dir)


class JobQueue:
    """Submit and follow fits; one instance per web process (thread-safe)."""

    def __init__(self, config: AppConfig, store: JobStore | None = None) -> None:
        self.config = config
        self.store = store or open_store(config)
        self.registry = DatasetRegistry(config)
        self._celery = None
        if config.redis_url:
            from dashboard.jobs.celery_app import make_celery

            self._celery = make_celery(config.redis_url)
        self._last_reap = 0.0
        self._reap_lock = threading.Lock()

    def _reap(self) -> None:
        """Fail jobs of dead workers and, hosted, publish again queued jobs whose message was
        lost; at most every REAP_INTERVAL_S per process."""
        now = time.monotonic()
        with self._reap_lock:
            if now - self._last_reap < REAP_INTERVAL_S:
                return
            self._last_reap = now
        reap_stale(self.store)
        if self._celery is not None:
            from dashboard.jobs.celery_app import republish_lost

            republish_lost(self._celery, self.store)

    def submit(self, dataset: Dataset, params: FitParams, owner: str) -> tuple[Job, bool]:
        """The job fitting `dataset` with `params`: existing or new; (job, whether new).

        A new job is queued (and published to the workers when hosted). Raises NothingToFit for
        a results file, InvalidFitOptions for a splicing reference that is not an offered
        dataset with spliced/unspliced counts (or one for a dataset that has them), for a CUDA
        fit where no fit can use CUDA
        (`dashboard.jobs.devices`), and QueueUnavailable when the store or the broker cannot be
        reached.
        """
        if dataset.kind == "results":
            raise NothingToFit(
                f"{dataset.label} is already a results file: there is nothing to fit"
            )
        if params.predicts_splicing:
            self._link_reference(dataset, params.splicing_reference_sha256)
        output = self.registry.results_path_for_fit(dataset, params)
        if params.device == "cuda" and not output.exists() and not cuda_available(self):
            raise InvalidFitOptions("no CUDA GPU is available to the fits here; choose CPU or auto")
        now = time.time()
        common = {
            "key": output.stem,
            "dataset": dataset.id,
            "label": dataset.label,
            "owner": owner,
            "params": params.to_dict(),
            "input_path": str(dataset.path),
            "output_path": str(output),
            "created": now,
        }
        if is_complete(output):  # a file whose late stage failed is fitted again
            done = self.store.latest_done(output.stem)
            if done is not None:
                return done, False
            progress = {"stage": "done", "fraction": 1.0, "message": "results already existed"}
            job = Job(new_job_id(), state="done", reused=True, progress=progress, **common)
            job.started = job.finished = now
            return self.store.add(job), True
        progress = {"stage": "queued", "fraction": 0.0, "message": "waiting for a worker"}
        published = now if self._celery is not None else None  # its message is sent below
        fresh = Job(new_job_id(), progress=progress, published=published, **common)
        job = self.store.add(fresh)
        if job.id != fresh.id:
            return job, False
        if self._celery is not None:
            from dashboard.jobs.celery_app import send_fit

            try:
                send_fit(self._celery, job.id)
            except Exception as err:
                message = f"The fit could not be queued: the job queue is unreachable ({err})."
                self.store.transition(job.id, ("queued",), "failed", error=message, finished=now)
                raise QueueUnavailable(message) from err
        return job, True

    def _link_reference(self, dataset: Dataset, digest: str) -> None:
        """Check a fit's splicing reference and link it for the job (see
        `DatasetRegistry.reference_link`): it must be a dataset offered here (so one the
        requesting user may read) with spliced/unspliced counts, and the dataset must have
        none. Raises InvalidFitOptions otherwise."""
        if self.registry.has_splicing(dataset):
            raise InvalidFitOptions(
                f"{dataset.label} has its own spliced/unspliced counts: a splicing reference "
                "is not needed"
            )
        reference = self.registry.identical_to(digest)
        if reference is None or not self.registry.has_splicing(reference):
            raise InvalidFitOptions(
                "the splicing reference must be a dataset offered here with spliced/unspliced "
                "counts; pick one from the list"
            )
        self.registry.reference_link(reference)

    def get(self, job_id: str) -> Job:
        """The job with this id; JobNotFound for a malformed or unknown id."""
        if not valid_job_id(job_id):
            raise JobNotFound(job_id)
        self._reap()
        job = self.store.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def jobs(self, limit: int = 200) -> list[Job]:
        """The most recent jobs, newest first."""
        self._reap()
        return self.store.jobs(limit)

    def active_for(self, dataset_id: str | None) -> list[Job]:
        """Queued and running jobs of one dataset: running first, then in queue order."""
        self._reap()
        jobs = [job for job in self.store.active() if job.dataset == dataset_id]
        return sorted(jobs, key=lambda job: (job.state != "running", job.created))

    def cancel(self, job_id: str, by: str) -> Job:
        """Cancel a queued or running job (the caller checked the right to); the job after.

        Raises JobNotFound, or JobFinished when it already ended.
        """
        job = self.get(job_id)
        now = time.time()
        if not self.store.transition(
            job.id, ACTIVE, "cancelled", finished=now, error=f"cancelled by {by}"
        ):
            raise JobFinished(f"the job is already {self.get(job_id).state}")
        return self.get(job_id)

    def public(self, job: Job) -> dict[str, Any]:
        """The JSON a client sees for `job`, with its queue position."""
        return job.public(self.store.position(job))
