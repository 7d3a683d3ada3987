"""A fit's options and progress events, and the content address of its results: what the web
layer, the command line and the job queue need to describe a fit without importing the
pipeline (scanpy, torch)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

from core import __version__
from core.options import PI_ESTIMATORS, POSTERIOR_MODES, STOPPING_RULES, TIME_STATISTICS

#: Analyses run after the posterior, in order; each can be left out with ``skip``.
ANALYSES = ("graph", "intrinsic", "extrinsic", "coherence", "permutation", "baseline")
#: Analyses that need another one: coherence and extrinsic uncertainty use the velocity graph.
REQUIRES = {"extrinsic": "graph", "coherence": "graph"}


@dataclass(frozen=True)
class FitParams:
    """Every option of a fit; all of it is recorded in ``uns['velodash']['params']``."""

    groupby: str | None = None
    # preprocessing
    normalize: bool = True
    min_shared_counts: int = 20
    n_top_genes: int = 2000
    n_pcs: int = 30
    n_neighbors: int = 30
    compute_umap: bool = True
    # model
    n_hidden: int = 256
    n_latent: int = 10
    time_dependent_rate: bool = False
    # training
    max_epochs: int = 500
    batch_size: int = 256
    lr: float = 1e-2
    weight_decay: float = 1e-2
    patience: int = 45
    early_stopping: bool = True
    stopping: str = STOPPING_RULES[0]
    pi_estimator: str = PI_ESTIMATORS[0]
    device: str = "auto"
    seed: int = 0
    # posterior and analyses
    n_samples: int = 25
    posterior_mode: str = POSTERIOR_MODES[0]
    time_statistic: str = TIME_STATISTICS[0]
    n_samples_intrinsic: int = 100
    n_samples_extrinsic: int = 25
    permutation_cells: int = 200
    baseline: str = "steady_state"
    skip: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.skip) - set(ANALYSES))
        if unknown:
            raise ValueError(
                f"unknown analysis to skip: {', '.join(unknown)}; choose from {', '.join(ANALYSES)}"
            )
        for name, value, choices in (
            ("posterior_mode", self.posterior_mode, POSTERIOR_MODES),
            ("pi_estimator", self.pi_estimator, PI_ESTIMATORS),
            ("stopping", self.stopping, STOPPING_RULES),
            ("time_statistic", self.time_statistic, TIME_STATISTICS),
        ):
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
        if self.baseline not in ("steady_state", "dynamical"):
            raise ValueError("baseline must be 'steady_state' or 'dynamical'")

    @classmethod
    def from_dict(cls, values: dict) -> FitParams:
        """Build from a (JSON) dict, ignoring unknown keys; lists become tuples."""
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in names}
        if "skip" in kwargs:
            kwargs["skip"] = tuple(kwargs["skip"])
        return cls(**kwargs)

    def to_dict(self) -> dict:
        """JSON-able dict of every option."""
        values = asdict(self)
        values["skip"] = list(self.skip)
        return values

    def analyses(self) -> list[str]:
        """Analyses that will run: not skipped, and with what they need not skipped."""
        return [a for a in ANALYSES if a not in self.skip and REQUIRES.get(a) not in self.skip]


@dataclass
class ProgressEvent:
    """One progress report; ``fraction`` is the overall progress in [0, 1]."""

    stage: str
    fraction: float
    message: str
    epoch: int | None = None
    max_epochs: int | None = None
    elbo_train: float | None = None
    elbo_validation: float | None = None


ProgressCallback = Callable[[ProgressEvent], None]


def results_key(fingerprint: str, params: FitParams) -> str:
    """Content address of a results file: hash of the input fingerprint, options and version."""
    payload = json.dumps(
        {"fingerprint": fingerprint, "params": params.to_dict(), "version": __version__},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]
