"""How well a fit recovered a simulation's ground truth, per gene (vectorised over genes).

For simulated data that carry the truth (``obs['true_t']``, ``layers['true_velocity']``, as the
bundled sample does): per gene, the Spearman correlation of the fitted latent time
(``layers['fit_t']``) with the true time, and the Pearson correlation of the fitted velocity
with the true velocity. Both are invariant to per-gene positive rescalings (min-max scaling,
the t = 20 axis) between the model's units and the simulation's, so they compare directly.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def column_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column pair x[:, g], y[:, g] (both (N, G); y may be (N,) to
    use one column for every gene): float64 (G,); NaN where a column is constant or has a
    non-finite value."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    xc = x - x.mean(axis=0)
    yc = y - y.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=0) / np.sqrt((xc**2).sum(axis=0) * (yc**2).sum(axis=0))
    return np.clip(r, -1.0, 1.0)


def column_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman correlation per column (Pearson of average ranks; ties share their rank):
    x (N, G), y (N, G) or (N,). float64 (G,)."""
    y = np.asarray(y, dtype=np.float64)
    ry = rankdata(y, axis=0) if y.ndim == 2 else rankdata(y)
    return column_pearson(rankdata(np.asarray(x, dtype=np.float64), axis=0), ry)


def recovery(
    fit_t: np.ndarray, true_t: np.ndarray, velocity: np.ndarray, true_velocity: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Per gene: ``spearman_time`` (fit_t (N, G) vs true_t (N,)) and, when ``true_velocity``
    (N, G) is given, ``pearson_velocity`` (velocity (N, G) vs it); float64 (G,) each."""
    out = {"spearman_time": column_spearman(fit_t, true_t)}
    if true_velocity is not None:
        out["pearson_velocity"] = column_pearson(velocity, true_velocity)
    return out
