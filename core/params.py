"""A fit's options and progress events, and the content address of its results: what the web
layer, the command line and the job queue need to describe a fit without importing the
pipeline (scanpy, torch)."""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from core import __version__
from core.fit_options import FitOption, describe, option
from core.options import (
    BASELINES,
    DEVICES,
    PI_ESTIMATORS,
    POSTERIOR_MODES,
    SPLICE_LOSSES,
    STOPPING_RULES,
    TIME_STATISTICS,
)

#: Analyses run after the posterior, in order; each can be left out with ``skip``.
ANALYSES = ("graph", "intrinsic", "extrinsic", "coherence", "permutation", "baseline")
#: Analyses that need another one: coherence and extrinsic uncertainty use the velocity graph.
REQUIRES = {"extrinsic": "graph", "coherence": "graph"}
#: Options of the splicing prediction (SplicedVAE): they address results only when a reference
#: is used, so every fit without one keeps the content key it had before they existed.
SPLICING_OPTIONS = (
    "splicing_reference_sha256",
    "splicing_loss",
    "splicing_epochs",
)
#: Longest list of known options an unknown option's message shows.
_KNOWN_SHOWN = 300
_SHA256_HEX = frozenset("0123456789abcdef")
#: numpy's largest seed (scanpy seeds numpy's legacy generator).
_MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class FitParams:
    """Every option of a fit, each declared once here (type, default, help, range): the command
    line, the JSON API, the home page and the pipeline's configs derive from it (`FIT_OPTIONS`).
    All of it is recorded in ``uns['velodash']['params']`` and addresses the results
    (`results_key`): renaming a field or changing a default orphans cached results."""

    groupby: str | None = option(None, "obs column with cell types (default: auto-detect)")
    # preprocessing
    normalize: bool = option(
        True,
        "gene filtering, per-cell normalisation and HVG selection; simulated or "
        "already-normalised data need none",
    )
    min_shared_counts: int = option(
        20, "genes need this many spliced + unspliced counts (scVelo filter_genes)", min=0
    )
    n_top_genes: int = option(2000, "highly variable genes kept", min=1, max=50_000)
    n_pcs: int = option(30, "principal components for the kNN graph", min=1, max=500)
    n_neighbors: int = option(30, "neighbours for the kNN graph and the moments", min=2, max=200)
    compute_umap: bool = option(True, "a UMAP when the data has none", cli=False)
    # model
    n_hidden: int = option(256, "hidden units of the encoder", min=1, max=4096, cli=False)
    n_latent: int = option(10, "latent dimensions", min=1, max=256, cli=False)
    time_dependent_rate: bool = option(
        False, "time-dependent transcription rate α(t) (veloVI paper, Fig. 5)"
    )
    # training
    max_epochs: int = option(500, "most training epochs", min=1, max=100_000)
    batch_size: int = option(256, "cells per training batch", min=2, max=65_536)
    lr: float = option(1e-2, "Adam learning rate", min=1e-6, max=1.0, cli=False)
    weight_decay: float = option(1e-2, "Adam weight decay", min=0.0, max=1.0, cli=False)
    patience: int = option(45, "early-stopping patience", min=1, max=100_000)
    early_stopping: bool = option(True, "early stopping (else training runs max_epochs)", cli=False)
    stopping: str = option(
        STOPPING_RULES[0],
        "'velocity': stop once the velocity field has converged (or the ELBO stops "
        "improving; the default); 'elbo': the reference veloVI's ELBO patience alone",
        choices=STOPPING_RULES,
    )
    pi_estimator: str = option(
        PI_ESTIMATORS[0],
        "state weights in the training loss: 'sampled' (the reference veloVI's "
        "reparameterised Dirichlet draw, the default) or 'expected' (E[log π], no sampling: "
        "about 1.5x faster per epoch, but intrinsic uncertainty comes out too low and "
        "extrinsic unlike the reference's)",
        choices=PI_ESTIMATORS,
    )
    device: str = option(
        DEVICES[0],
        "where to fit: 'auto' (a CUDA GPU when torch sees one, else the CPU), 'cpu' or 'cuda'",
        choices=DEVICES,
    )
    seed: int = option(0, "random seed of every stage", min=0, max=_MAX_SEED)
    # posterior and analyses
    n_samples: int = option(25, "posterior samples", min=1, max=1_000)
    posterior_mode: str = option(
        POSTERIOR_MODES[0],
        "posterior estimator: 'rao-blackwell' (exact over the state weights, the default), "
        "'sample' (the reference veloVI's Monte-Carlo) or 'mean' (deterministic, no sampling)",
        choices=POSTERIOR_MODES,
    )
    time_statistic: str = option(
        TIME_STATISTICS[0],
        "latent time per cell and gene: 'mean', the reference veloVI's state-weighted mean "
        "(the default), or 'max', the time of the most probable state (recovers simulated "
        "time better; the velocity's per-gene scaling follows it)",
        choices=TIME_STATISTICS,
    )
    n_samples_intrinsic: int = option(
        100, "velocity draws per cell for the intrinsic uncertainty", min=1, max=1_000, cli=False
    )
    n_samples_extrinsic: int = option(
        25, "future states per cell for the extrinsic uncertainty", min=1, max=200, cli=False
    )
    permutation_cells: int = option(
        200,
        "most cells per cell type in the permutation score's t-tests",
        min=1,
        max=100_000,
        cli=False,
    )
    baseline: str = option(
        BASELINES[0],
        "scVelo baseline to compare with ('dynamical' runs scVelo's EM: slow)",
        choices=BASELINES,
    )
    skip: tuple[str, ...] = option(
        (),
        f"leave an analysis out (repeatable): {', '.join(ANALYSES)}",
        choices=ANALYSES,
        item="analysis",
    )
    # spliced/unspliced predicted from a reference (SplicedVAE, core.splicing)
    splicing_reference_sha256: str | None = option(
        None,
        "sha256 of the reference dataset whose spliced/unspliced counts train SplicedVAE to "
        "predict this dataset's (set from `velodash fit --splicing-reference FILE` or the home "
        "page's reference picker); None: the dataset has its own",
        cli=False,
    )
    splicing_loss: str = option(
        SPLICE_LOSSES[0],
        "SplicedVAE's splicing loss: 'weighted_mse' (squared error weighted by counts, the "
        "default: validated best on held-out pancreas cells), 'mse' (the paper's) or "
        "'binomial' (the likelihood of the spliced counts)",
        choices=SPLICE_LOSSES,
    )
    splicing_epochs: int = option(
        150, "SplicedVAE training epochs (the paper's 150)", min=1, max=10_000, cli=False
    )

    def __post_init__(self) -> None:
        digest = self.splicing_reference_sha256
        if digest is not None and (len(digest) != 64 or not set(digest) <= _SHA256_HEX):
            raise ValueError(
                "'splicing_reference_sha256' must be 64 lowercase hex digits (a file's sha256) "
                f"or null; got {digest[:70]!r}"
            )
        for name, declared in FIT_OPTIONS.items():
            declared.check(getattr(self, name))
            if declared.kind is float:  # 0 and 0.0 are one option value, and one content key
                object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "skip", tuple(self.skip))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FitParams:
        """Build from a (JSON) dict, ignoring unknown keys (a record of an older version); numpy
        values (as ``uns`` reads back from an .h5ad) become plain Python ones."""
        return cls(
            **{
                k: v.tolist() if hasattr(v, "tolist") else v
                for k, v in values.items()
                if k in FIT_OPTIONS
            }
        )

    def to_dict(self) -> dict:
        """JSON-able dict of every option."""
        values = asdict(self)
        values["skip"] = list(self.skip)
        return values

    def for_config(self, config: type) -> dict[str, Any]:
        """The options that dataclass `config` (PreprocessConfig, ModelConfig, TrainConfig) has a
        field of the same name for, with their values: ``config(**params.for_config(config))``."""
        return {f.name: getattr(self, f.name) for f in fields(config) if f.name in FIT_OPTIONS}

    @property
    def predicts_splicing(self) -> bool:
        """Whether spliced/unspliced are predicted from a reference (SplicedVAE)."""
        return self.splicing_reference_sha256 is not None

    def key_dict(self) -> dict:
        """What addresses the results (`results_key`): every option, less the splicing ones when
        no reference is used (so older fits keep their content key)."""
        values = self.to_dict()
        if not self.predicts_splicing:
            for name in SPLICING_OPTIONS:
                del values[name]
        return values

    def analyses(self) -> list[str]:
        """Analyses that will run: not skipped, and with what they need not skipped."""
        return [a for a in ANALYSES if a not in self.skip and REQUIRES.get(a) not in self.skip]


#: Every fit option, in declaration order (see `core.fit_options.FitOption`).
FIT_OPTIONS: dict[str, FitOption] = describe(FitParams)


def parse_fit_options(values: Mapping[str, Any]) -> FitParams:
    """`FitParams` from option names and values (a request's JSON object, a configuration's
    overrides); options not given keep their defaults. Raises ValueError naming unknown
    options, or an option with its bad value and what it allows."""
    if not isinstance(values, Mapping):
        raise ValueError(
            f"fit options must be an object of option names and values; got {type(values).__name__}"
        )
    unknown = sorted(set(map(str, values)) - set(FIT_OPTIONS))
    if unknown:
        close = [m for u in unknown for m in difflib.get_close_matches(u, FIT_OPTIONS, 1)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        known = ", ".join(sorted(FIT_OPTIONS))
        if len(known) > _KNOWN_SHOWN:
            known = (
                known[: known.rfind(", ", 0, _KNOWN_SHOWN)] + ", … (all in docs/architecture.md)"
            )
        raise ValueError(f"unknown fit option(s): {', '.join(unknown)}{hint}; known: {known}")
    return FitParams(**values)


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
    """Content address of a results file: hash of the input fingerprint, options (with the
    splicing reference's sha256 when one is used, `FitParams.key_dict`) and version."""
    payload = json.dumps(
        {"fingerprint": fingerprint, "params": params.key_dict(), "version": __version__},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]
