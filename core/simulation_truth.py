"""The ground truth of a simulation (:mod:`core.simulate`) as closed forms of what it stores.

A simulated dataset keeps its truth in small slots: per cell ``obs['true_t']`` and
``obs['true_lineage']``, per gene ``var['true_alpha'|'true_beta'|'true_gamma'|…]`` and
``varm['true_t_on'|'true_t_off']``. The noiseless abundances and the true velocity of any block
of genes follow from them exactly (:func:`true_velocity`), so a results file need not store
the (cells × genes) ``layers['true_velocity']``. Numpy only: a web process rebuilds a gene's
truth without importing torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import anndata as ad
import numpy as np
import pandas as pd

from core.kinetics import induction, repression

#: Lineages after the branch point, in the order of the (G, 2) switch-time columns.
LINEAGES = ("A", "B")


@dataclass(frozen=True)
class GeneKinetics:
    """Per-gene rates (G,) and per-lineage switch times (G, 2), columns ordered as LINEAGES."""

    alpha: np.ndarray
    beta: np.ndarray
    gamma: np.ndarray
    t_on: np.ndarray
    t_off: np.ndarray
    programme: np.ndarray
    lineage: np.ndarray

    def subset(self, genes: slice | Sequence[int] | np.ndarray) -> GeneKinetics:
        """The kinetics of ``genes`` only."""
        return GeneKinetics(*(np.asarray(getattr(self, f.name))[genes] for f in fields(self)))


def expected_abundances(
    t: np.ndarray, lineage: np.ndarray, kinetics: GeneKinetics
) -> tuple[np.ndarray, np.ndarray]:
    """Noiseless (u, s) of shape (N, G) for cells at times ``t`` (N,) on ``lineage`` (N,) ∈ {0, 1}.

    Induction (rate α) runs from the cell's switch-on time to min(t, switch-off) and repression
    from then to t; both use the closed forms of :mod:`core.kinetics` (float64, numpy: the
    same values whichever block of cells or genes they are computed for). Units: expected
    counts of a cell with library-size factor 1.
    """
    t_on = kinetics.t_on[:, lineage].T
    t_off = kinetics.t_off[:, lineage].T
    time = np.asarray(t, dtype=np.float64)[:, None]
    alpha, beta, gamma = (
        np.asarray(x, np.float64) for x in (kinetics.alpha, kinetics.beta, kinetics.gamma)
    )
    induced_for = np.maximum(np.minimum(time, t_off) - t_on, 0.0)
    repressed_for = np.maximum(time - t_off, 0.0)
    u_switch, s_switch = induction(alpha, beta, gamma, induced_for)
    return repression(u_switch, s_switch, beta, gamma, repressed_for)


def velocity_of(u: np.ndarray, s: np.ndarray, kinetics: GeneKinetics) -> np.ndarray:
    """True velocity βu − γs (N, G) float32 of noiseless abundances (counts per time unit)."""
    return (kinetics.beta * u - kinetics.gamma * s).astype(np.float32)


def lineage_index(obs: pd.DataFrame) -> np.ndarray:
    """(N,) 0 or 1: the switch-time column of each cell (trunk cells follow lineage A's)."""
    return np.maximum(obs["true_lineage"].cat.codes.to_numpy() - 1, 0)


def kinetics_from_adata(adata: ad.AnnData) -> GeneKinetics:
    """Rebuild the :class:`GeneKinetics` ground truth stored by ``simulate_branching``."""
    var = adata.var
    return GeneKinetics(
        alpha=var["true_alpha"].to_numpy(),
        beta=var["true_beta"].to_numpy(),
        gamma=var["true_gamma"].to_numpy(),
        t_on=np.asarray(adata.varm["true_t_on"]),
        t_off=np.asarray(adata.varm["true_t_off"]),
        programme=var["true_programme"].to_numpy(),
        lineage=var["true_gene_lineage"].to_numpy(),
    )


#: The slots :func:`true_velocity` reads ("kind/key").
TRUTH_SLOTS = (
    "obs/true_t",
    "obs/true_lineage",
    *(f"var/true_{k}" for k in ("alpha", "beta", "gamma", "programme", "gene_lineage")),
    "varm/true_t_on",
    "varm/true_t_off",
)


def has_truth(adata: ad.AnnData) -> bool:
    """Whether ``adata`` (obs, var and varm suffice) holds every slot of :data:`TRUTH_SLOTS`."""
    return all(key in getattr(adata, kind) for kind, key in (s.split("/") for s in TRUTH_SLOTS))


def true_velocity(adata: ad.AnnData, genes: slice | Sequence[int] | np.ndarray) -> np.ndarray:
    """``layers['true_velocity']`` (N, k) float32 of ``genes``, from the truth ``adata``
    holds (:func:`has_truth`): bit for bit what ``simulate_branching`` stored."""
    kinetics = kinetics_from_adata(adata).subset(genes)
    u, s = expected_abundances(adata.obs["true_t"].to_numpy(), lineage_index(adata.obs), kinetics)
    return velocity_of(u, s, kinetics)
