"""Progress of a fit over time: the clock kept from its progress events and the time left
estimated from it. Light (no heavy imports): the job supervisor, the fit and the web process
all use it, so the job bar and the stage notices say the same."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from core.options import STAGE_SPAN


def seconds_left(
    progress: Mapping[str, Any], until: float = 1.0, now: float | None = None
) -> tuple[float, bool] | None:
    """(seconds until the fit's progress reaches ``until`` (a fraction of the bar,
    `STAGE_SPAN`), whether that is an upper bound), or None before there is a rate to go by.

    ``progress`` holds ``stage``, ``fraction`` (overall, 0–1), ``started`` and
    ``stage_started`` (Unix seconds), ``stage_fraction`` (where the stage began) and, in
    training, ``epoch`` / ``max_epochs``. The current stage's own rate finishes it: the epoch
    rate in training (an upper bound: training may stop early), its rate over its share of the
    bar when it reports progress (the uncertainty's cell chunks), else the rate of the stages
    done; the rest of the way goes at the rate of the stages done (seconds per share of the
    bar). The first stage has no rate yet. Times are the writer's clock against ``now``.
    """
    started, stage_started = progress.get("started"), progress.get("stage_started")
    stage = progress.get("stage")
    if started is None or stage_started is None:
        return None
    if stage == "done":
        return 0.0, False
    now = time.time() if now is None else now
    stage_fraction = float(progress.get("stage_fraction") or 0.0)
    if stage_fraction <= 0:
        return None
    per_share = max(0.0, stage_started - started) / stage_fraction  # s per unit of the bar
    end = STAGE_SPAN.get(stage, (0.0, 1.0))[1]
    if until < end:  # a point the fit has passed (or is passing)
        return 0.0, False
    running_for = max(0.0, now - stage_started)
    epoch, max_epochs = progress.get("epoch"), progress.get("max_epochs")
    bound = False
    if stage == "train":
        if not epoch or not max_epochs:
            return None
        this, bound = (max_epochs - epoch) * running_for / epoch, epoch < max_epochs
    else:
        fraction = float(progress.get("fraction") or 0.0)
        if fraction > stage_fraction:
            this = (end - fraction) * running_for / (fraction - stage_fraction)
        else:
            this = max(0.0, (end - stage_fraction) * per_share - running_for)
    return this + max(0.0, until - end) * per_share, bound


class ProgressClock:
    """The time fields :func:`seconds_left` needs, kept from a stream of progress events:
    ``stage``, ``fraction``, ``started`` (first event), ``stage_started`` and ``stage_fraction``
    (when and where the current stage began), ``epoch`` / ``max_epochs``."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {
            "stage": "queued",
            "fraction": 0.0,
            "started": None,
            "stage_started": None,
            "stage_fraction": 0.0,
            "epoch": None,
            "max_epochs": None,
        }

    def observe(
        self, stage: str, fraction: float, epoch: int | None = None, max_epochs: int | None = None
    ) -> bool:
        """Record one event; returns whether it began a new stage."""
        new_stage = stage != self.state["stage"]
        self.state.update(stage=stage, fraction=round(float(fraction), 4))
        if new_stage:
            wall = time.time()
            self.state["started"] = self.state["started"] or wall
            self.state.update(stage_started=wall, stage_fraction=self.state["fraction"])
        if epoch is not None:
            self.state.update(epoch=epoch, max_epochs=max_epochs)
        return new_stage
