"""scVelo baselines (steady-state or EM dynamical) and their per-gene agreement with veloVI.

scVelo itself computes the baseline, on a minimal copy holding the same ``Ms``/``Mu`` layers
(and neighbour graph) the model was fitted on, so the two velocities share genes and inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scvelo as scv
from anndata import AnnData

from core.blocks import blocks_within
from core.options import BASELINES

BaselineMode = Literal["steady_state", "dynamical"]
#: Cells × genes of one block of genes: scVelo's and the agreement's float64 temporaries stay
#: at a few multiples of 64 MiB whatever the dataset's size.
_BLOCK_ELEMENTS = 2**23


@dataclass(frozen=True)
class BaselineResult:
    """``velocity`` (N, G) scVelo velocity (NaN for genes scVelo did not fit);
    ``sign_agreement`` and ``pearson`` (G,) against the veloVI velocity; ``mode``; ``gamma``
    (G,) the steady-state ratio γ of each gene (velocity = Mu − γ·Ms), None when dynamical."""

    velocity: np.ndarray
    sign_agreement: np.ndarray
    pearson: np.ndarray
    mode: BaselineMode
    gamma: np.ndarray | None = None


def scvelo_velocity(
    adata: AnnData, mode: BaselineMode = "steady_state", n_jobs: int = 1
) -> tuple[np.ndarray, np.ndarray | None]:
    """scVelo velocity (N, G), float32, from ``adata.layers['Ms']``/``['Mu']``, leaving
    ``adata`` untouched, and (steady state) its per-gene ratio γ (G,), in scVelo's dtype.

    ``mode="steady_state"``: ``scv.tl.velocity(mode='deterministic')`` (extreme-quantile
    steady-state ratio γ, no offset: velocity = Mu − γ·Ms). ``mode="dynamical"``:
    ``scv.tl.recover_dynamics`` on all genes (``n_jobs`` workers) then
    ``scv.tl.velocity(mode='dynamical')``; this needs ``obsp['connectivities']`` and is slow
    (minutes per thousand genes); its γ is None.
    """
    missing = [key for key in ("Ms", "Mu") if key not in adata.layers]
    if missing:
        raise ValueError(
            f"adata lacks layers {missing}; run core.preprocess.preprocess (scv.pp.moments) "
            "first so the baseline sees the same moments as the model."
        )
    if mode not in BASELINES:
        raise ValueError(f"mode must be one of {', '.join(BASELINES)}, got {mode!r}.")
    if mode == "dynamical" and "connectivities" not in adata.obsp:
        raise ValueError(
            "the dynamical baseline needs obsp['connectivities']; compute neighbours "
            "(scanpy.pp.neighbors) before calling it."
        )
    velocity = np.empty(adata.shape, dtype=np.float32)
    ratios = []
    # scVelo fits each gene on its own, so blocks of genes give the same velocities while its
    # dense float64 temporaries stay bounded
    for genes in blocks_within(adata.n_vars, adata.n_obs, _BLOCK_ELEMENTS):
        velocity[:, genes], gamma = _scvelo_block(adata, genes, mode, n_jobs)
        ratios.append(gamma)
    gamma = np.concatenate(ratios) if mode == "steady_state" and ratios else None
    return velocity, gamma


def _scvelo_block(
    adata: AnnData, genes: slice, mode: BaselineMode, n_jobs: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`scvelo_velocity` of one block of genes (N, g) and scVelo's γ (g,), on a minimal
    AnnData."""
    Ms, Mu = (np.asarray(adata.layers[key])[:, genes] for key in ("Ms", "Mu"))
    work = AnnData(
        X=Ms,
        obs=adata.obs[[]].copy(),
        var=adata.var[[]].iloc[genes].copy(),
        layers={"Ms": Ms, "Mu": Mu},
    )
    if mode == "steady_state":
        scv.tl.velocity(work, mode="deterministic", use_highly_variable=False)
    else:
        work.obsp["connectivities"] = adata.obsp["connectivities"]
        work.uns["neighbors"] = {"connectivities_key": "connectivities"}
        scv.tl.recover_dynamics(work, var_names="all", n_jobs=n_jobs, show_progress_bar=False)
        scv.tl.velocity(work, mode="dynamical", use_highly_variable=False)
    return np.asarray(work.layers["velocity"], dtype=np.float32), work.var[
        "velocity_gamma"
    ].to_numpy()


def velocity_agreement(
    a: np.ndarray, b: np.ndarray, zero_tol: float = 1e-12
) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene agreement of two velocities a, b (N, G).

    Returns ``sign_agreement`` (G,): fraction of cells where sign(a) = sign(b), ignoring cells
    where both |a| and |b| are at most ``zero_tol``; and ``pearson`` (G,): Pearson correlation
    over cells. Cell-gene entries where either value is NaN are ignored; a gene with no usable
    cells (sign) or a constant column or fewer than 2 cells (Pearson) gets NaN. Computed in
    float64 over blocks of genes, so the temporaries stay bounded whatever N.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"velocities must be (cells, genes) arrays of equal shape, got {a.shape} and {b.shape}."
        )
    n_cells, n_genes = a.shape
    sign_agreement, pearson = np.empty(n_genes), np.empty(n_genes)
    for genes in blocks_within(n_genes, n_cells, _BLOCK_ELEMENTS):
        sign_agreement[genes], pearson[genes] = _block_agreement(a[:, genes], b[:, genes], zero_tol)
    return sign_agreement, pearson


def _block_agreement(
    a: np.ndarray, b: np.ndarray, zero_tol: float
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`velocity_agreement` of one block of genes (N, g), in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    valid = ~(np.isnan(a) | np.isnan(b))
    a0, b0 = np.where(valid, a, 0.0), np.where(valid, b, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        counted = valid & ((np.abs(a0) > zero_tol) | (np.abs(b0) > zero_tol))
        same_sign = counted & (np.sign(a0) == np.sign(b0))
        sign_agreement = same_sign.sum(axis=0) / counted.sum(axis=0)
        n = valid.sum(axis=0)
        a_c = np.where(valid, a0 - a0.sum(axis=0) / n, 0.0)
        b_c = np.where(valid, b0 - b0.sum(axis=0) / n, 0.0)
        pearson = (a_c * b_c).sum(axis=0) / np.sqrt((a_c**2).sum(axis=0) * (b_c**2).sum(axis=0))
    pearson[n < 2] = np.nan
    return sign_agreement, np.clip(pearson, -1.0, 1.0)


def scvelo_baseline(
    adata: AnnData,
    mode: BaselineMode = "steady_state",
    velocity_key: str = "velocity",
    n_jobs: int = 1,
) -> BaselineResult:
    """scVelo velocity on ``adata``'s genes and its agreement with ``layers[velocity_key]``."""
    if velocity_key not in adata.layers:
        raise ValueError(
            f"adata has no layers[{velocity_key!r}]; write the veloVI posterior first "
            "(core.posterior.add_posterior_to_adata)."
        )
    velocity, gamma = scvelo_velocity(adata, mode=mode, n_jobs=n_jobs)
    sign_agreement, pearson = velocity_agreement(velocity, adata.layers[velocity_key])
    return BaselineResult(velocity, sign_agreement, pearson, mode, gamma)


def add_baseline_to_adata(
    adata: AnnData,
    mode: BaselineMode = "steady_state",
    velocity_key: str = "velocity",
    n_jobs: int = 1,
) -> BaselineResult:
    """Compute :func:`scvelo_baseline` and write it to ``adata`` in place.

    Writes ``layers['velocity_baseline']`` (N, G), ``var['baseline_sign_agreement']``,
    ``var['baseline_pearson']``, (steady state) ``var['baseline_gamma']``, from which
    ``core.derived_layers`` rebuilds the layer, and ``uns['velodash']['baseline'] = {'mode':
    mode}`` (other ``uns['velodash']`` content is kept). Returns the result.
    """
    result = scvelo_baseline(adata, mode=mode, velocity_key=velocity_key, n_jobs=n_jobs)
    adata.layers["velocity_baseline"] = result.velocity
    if result.gamma is not None:
        adata.var["baseline_gamma"] = result.gamma
    adata.var["baseline_sign_agreement"] = result.sign_agreement
    adata.var["baseline_pearson"] = result.pearson
    adata.uns.setdefault("velodash", {})["baseline"] = {"mode": result.mode}
    return result
