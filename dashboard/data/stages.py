"""Results of a fit that is still running, as the pages see them: which stages have landed,
which one is computing and about how long it has left, which failed or stopped.

A fit lands its results stage by stage in ``OUT.stages/`` (:mod:`core.staged_results`); the
dashboard opens ``base.h5ad`` with the stage files present (:func:`stage_files`) and reads
``status.json`` for the rest (:func:`stage_report`). A finished file whose late stage failed
says so in ``uns['velodash']['stages']`` (:func:`report_of_results`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.options import STAGE_SPAN
from core.progress import seconds_left
from core.stage_files import (
    BASE,
    BASE_FILE,
    LATE_STAGES,
    STAGES_SUFFIX,
    read_status,
    stage_file,
    writer_alive,
)

#: What each landing is called on the pages.
STAGE_LABELS = {
    BASE: "posterior and velocity graph",
    "uncertainty": "uncertainty",
    "coherence": "velocity coherence",
    "permutation": "permutation scores",
    "baseline": "scVelo baseline",
}


def in_words(estimate: tuple[float, bool] | None) -> str:
    """A time-left estimate (seconds, whether an upper bound) in words: "about 4 min left",
    "at most about 4 min left", "under a minute left", or "" when there is none."""
    if estimate is None:
        return ""
    seconds, bound = estimate
    if seconds < 60:
        return "under a minute left"
    return f"{'at most ' if bound else ''}about {round(seconds / 60)} min left"


@dataclass(frozen=True)
class StageReport:
    """The landings of a fit: ``planned`` (`BASE` first, then its late stages), ``landed``,
    ``failed`` (stage -> message), whether the fit still runs (``alive``) and its ``progress``
    (:class:`core.progress.ProgressClock` fields)."""

    planned: tuple[str, ...] = ()
    landed: tuple[str, ...] = ()
    failed: Mapping[str, str] = field(default_factory=dict)
    alive: bool = False
    progress: Mapping[str, Any] = field(default_factory=dict)

    def state(self, stage: str) -> str:
        """ "landed", "failed", "computing" (the fit runs), "stopped" (it ended without it) or
        "unplanned" (the fit skips it, or the file is complete)."""
        if stage in self.landed:
            return "landed"
        if stage in self.failed:
            return "failed"
        if stage not in self.planned:
            return "unplanned"
        return "computing" if self.alive else "stopped"

    def time_left(self, stage: str, now: float | None = None) -> str:
        """About how long until ``stage`` lands, in words ("" when not known yet)."""
        return in_words(seconds_left(self.progress, STAGE_SPAN[stage][1], now))

    def reason(self, stage: str, now: float | None = None) -> str | None:
        """Why ``stage``'s views are empty (a sentence), or None when the report has nothing
        to say (landed, or not part of this fit)."""
        label = STAGE_LABELS.get(stage, stage)
        state = self.state(stage)
        where = (
            f"stage {self.planned.index(stage) + 1} of {len(self.planned)}"
            if stage in self.planned
            else ""
        )
        if state == "computing":
            left = self.time_left(stage, now) or "time left not known yet"
            return f"Computing: {where} ({label}), {left}. It appears here when it is done."
        if state == "stopped":
            return (
                f"The fit stopped before its {label} stage ({where}) finished: the stages "
                "before it are shown. Fit the dataset again to compute it."
            )
        if state == "failed":
            message = str(self.failed[stage])[:300]
            return (
                f"The {label} stage failed ({message}); the other stages are shown. Fit the "
                "dataset again to retry it."
            )
        return None


def is_base_file(path: Path) -> bool:
    """Whether ``path`` is the first landing of a fit still running (``OUT.stages/base.h5ad``)."""
    return path.name == BASE_FILE and path.parent.name.endswith(STAGES_SUFFIX)


def output_of(base: Path) -> Path:
    """The results file the fit that landed ``base`` will write when it ends."""
    return base.parent.with_name(base.parent.name[: -len(STAGES_SUFFIX)])


def stage_files(base: Path) -> list[Path]:
    """The late stages' files that have landed beside ``base``, in the order the fit runs
    them."""
    files = (stage_file(base.parent, stage) for stage in LATE_STAGES)
    return [f for f in files if f.is_file()]


def stage_report(base: Path, now: float | None = None) -> StageReport:
    """The landings of the fit writing beside ``base`` (from its ``status.json``; a folder
    without one reads as a fit that stopped)."""
    status = read_status(base.parent) or {}
    landed = {BASE} | {f.stem for f in stage_files(base)}
    return StageReport(
        planned=tuple(status.get("planned") or (BASE, *LATE_STAGES)),
        landed=tuple(s for s in (BASE, *LATE_STAGES) if s in landed),
        failed=status.get("failed") or {},
        alive=bool(status) and writer_alive(status, time.time() if now is None else now),
        progress=status.get("progress") or {},
    )


def stage_key(path: Path | None, stages: tuple[str, ...] = LATE_STAGES) -> list | None:
    """JSON of how ``stages`` stand (:meth:`StageReport.state`) for the results at ``path``
    while its fit lands stages, else None."""
    if path is None or not is_base_file(path):
        return None
    report = stage_report(path)
    return [[stage, report.state(stage)] for stage in stages]


def report_of_results(info: Mapping[str, Any]) -> StageReport | None:
    """The stage record of a finished results file (``uns['velodash']``): a report naming its
    failed late stages, or None when every stage ran."""
    failed = (info.get("stages") or {}).get("failed")
    if not failed:
        return None
    return StageReport(failed={str(k): str(v) for k, v in dict(failed).items()})
