"""How well a fit recovered a simulation's ground truth, per gene (vectorised over genes).

For simulated data that carry the truth (``obs['true_t']``, ``layers['true_velocity']``, as the
bundled sample does): per gene, the Spearman correlation of the fitted latent time
(``layers['fit_t']``) with the true time, and the Pearson correlation of the fitted velocity
with the true velocity. Both are invariant to per-gene positive rescalings (min-max scaling,
the t = 20 axis) between the model's units and the simulation's, so they compare directly.
"""

from __future__ import annotations

from collections.abc import Iterable

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


#: Share of cells, the slowest by true speed, whose direction error is left out: a velocity
#: near zero has no defined direction.
SLOWEST_LEFT_OUT = 0.25
#: The cells an uncertainty should find: the worst tenth by direction error.
WORST_SHARE = 0.10


def direction_error(
    velocity: np.ndarray, true_velocity: np.ndarray, slowest: float = SLOWEST_LEFT_OUT
) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's direction error 1 − cos(v̂, v) over genes, and which cells it is defined for.

    ``velocity`` and ``true_velocity`` (N, G) are in different per-gene units (min-max scaling,
    time axis), so each gene of each is first divided by its standard deviation over cells.
    The cosine is then the centred one that veloVI's uncertainty and scVelo's velocity graph
    use (each cell's vector minus its mean over genes, i.e. a Pearson correlation over genes):
    the plain cosine is dominated by the component shared by all genes (early cells induce
    almost every gene), which any velocity gets right. Genes constant in either are left out.
    Returns the error float64 (N,) in [0, 2] and a boolean mask (N,) that leaves out the
    ``slowest`` share of cells by the norm of their standardised true velocity (a velocity
    near 0 has no direction) and cells whose error is undefined.
    """
    return direction_error_blocks([(velocity, true_velocity)], slowest)


def direction_error_blocks(
    blocks: Iterable[tuple[np.ndarray, np.ndarray]], slowest: float = SLOWEST_LEFT_OUT
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`direction_error` from consecutive gene blocks ``(velocity, true_velocity)``,
    each (N, g): per-cell sums over genes are accumulated block by block (float64), so the
    whole (N, G) layers are never held at once."""
    sums = None
    for velocity, true_velocity in blocks:
        v = np.asarray(velocity, dtype=np.float64)
        t = np.asarray(true_velocity, dtype=np.float64)
        sd_v, sd_t = v.std(axis=0), t.std(axis=0)
        genes = (sd_v > 0) & (sd_t > 0) & np.isfinite(sd_v) & np.isfinite(sd_t)
        v, t = v[:, genes] / sd_v[genes], t[:, genes] / sd_t[genes]
        part = np.stack(
            [
                v.sum(1),
                t.sum(1),
                np.einsum("ng,ng->n", v, v),
                np.einsum("ng,ng->n", t, t),
                np.einsum("ng,ng->n", v, t),
                np.full(v.shape[0], genes.sum(), dtype=np.float64),
            ]
        )
        sums = part if sums is None else sums + part
    sv, st, svv, stt, svt, n = sums
    speed = np.sqrt(stt)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = (svt - sv * st / n) / np.sqrt((svv - sv**2 / n) * (stt - st**2 / n))
    error = 1.0 - cosine
    defined = np.isfinite(error) & (speed > np.quantile(speed, slowest))
    return error, defined


def uncertainty_calibration(
    uncertainty: np.ndarray, error: np.ndarray, defined: np.ndarray, worst: float = WORST_SHARE
) -> dict[str, float]:
    """How well a per-cell uncertainty (N,) points at the cells whose velocity is wrong.

    Over the ``defined`` cells of :func:`direction_error`: ``spearman``, the rank correlation
    of uncertainty and error (1: same order, 0: unrelated, < 0: points away), and ``auroc``,
    the area under the ROC curve of the uncertainty as a detector of the ``worst`` share of
    cells by error (1: finds them all first, 0.5: chance). NaN uncertainties are left out.
    """
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    keep = defined & np.isfinite(uncertainty) & np.isfinite(error)
    u, e = np.asarray(uncertainty)[keep], np.asarray(error)[keep]
    is_worst = e >= np.quantile(e, 1.0 - worst)
    return {
        "spearman": float(spearmanr(u, e)[0]),
        "auroc": float(roc_auc_score(is_worst, u)),
        "n_cells": float(keep.sum()),
    }
