"""The records a `Results` hands to the figures: one colouring of the cells (`ColorValues`) and
one gene's per-cell arrays with its fitted parameters (`GeneArrays`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

#: Readable names of the obs columns biologists colour by first (obs column -> (name, unit or
#: "")): the "Colour by" choices show the name, a colour bar the name with its unit.
OBS_LABELS = {
    "latent_time": ("latent time", ""),
    "intrinsic_uncertainty": ("intrinsic uncertainty", "cosine variance"),
    "extrinsic_uncertainty": ("extrinsic uncertainty", "cosine variance"),
    "velocity_length": ("velocity speed", ""),
    "velocity_confidence": ("velocity confidence", "mean cosine with neighbours"),
}


def obs_title(column: str) -> str:
    """A colour bar's title for obs ``column``: its readable name and unit, else the name."""
    name, unit = OBS_LABELS.get(column, (column, ""))
    return f"{name} ({unit})" if unit else name


@dataclass(frozen=True)
class ColorValues:
    """Per-cell values to colour by.

    ``kind == "categorical"``: ``values`` are int16 codes (N,) into ``categories`` (-1 = missing).
    ``kind == "numeric"``: ``values`` are float32 (N,) (NaN = missing), ``categories`` is None.
    ``colors`` optionally fixes the colour of each category (e.g. a selection against the rest).
    """

    key: str
    label: str
    kind: Literal["categorical", "numeric"]
    values: np.ndarray
    categories: list[str] | None = None
    colors: dict[str, str] | None = None


@dataclass(frozen=True)
class GeneArrays:
    """One gene's per-cell arrays (float32, shape (N,)) and its fitted parameters.

    Optional arrays are None when their slot is absent. ``state`` is the int8 argmax of the state
    probabilities (0 induction, 1 induction_steady, 2 repression, 3 repression_steady). ``fit_t``
    is on the 0–20 axis; ``latent_time`` is the cell-level time in [0, 1]. Rates and ``t_switch``
    follow scVelo's ``fit_*`` convention (same time axis as ``fit_t``). ``alpha_1`` and
    ``lambda_alpha`` are the time-dependent rate α(t) = α₁ − (α₁ − α)e^{−λt}; λ is 0 for a
    constant-rate fit.
    """

    gene: str
    index: int
    ms: np.ndarray
    mu: np.ndarray
    velocity: np.ndarray
    fit_t: np.ndarray
    latent_time: np.ndarray
    alpha: float
    beta: float
    gamma: float
    t_switch: float
    scaling: float
    alpha_1: float | None = None
    lambda_alpha: float = 0.0
    fit_s: np.ndarray | None = None
    fit_u: np.ndarray | None = None
    velocity_var: np.ndarray | None = None
    baseline: np.ndarray | None = None
    state: np.ndarray | None = None
    likelihood: float | None = None
    mse: float | None = None
