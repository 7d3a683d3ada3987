"""Sample-data generator: a branching differentiation with known kinetics (ground truth).

Cells live on a tree on the time axis [0, T_MAX]: a shared trunk (``Progenitor`` then
``Transit``) that splits at ``T_BRANCH`` into lineages A and B, each with an ``Early`` and a
``Mature`` cell type. Every gene follows switching transcription kinetics: transcription rate α
while on (between a per-lineage switch-on and switch-off time), 0 otherwise; splicing β and
degradation γ per gene. The noiseless state is integrated exactly with the closed forms of
:mod:`core.kinetics` (induction from (0, 0), then repression from the switch state), and counts
are drawn from a negative binomial around library-size-scaled expectations.

Gene programmes (fractions of the genes): housekeeping (on since long before t = 0, at steady
state), shared (switched on in the trunk, same in both lineages), transient (short pulse in the
trunk), fate (on in the trunk, kept on in one lineage and repressed at the branch point in the
other) and lineage-specific (switched on after the branch point in one lineage only).
"""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from core.blocks import blocks_within
from core.io import write_h5ad_atomic
from core.simulation_truth import (
    LINEAGES,
    GeneKinetics,
    expected_abundances,
    lineage_index,
    velocity_of,
)

T_MAX = 20.0
T_BRANCH = 8.0
#: (name, lineage or None for the trunk, start time, end time) of each cell type.
CELL_TYPES = (
    ("Progenitor", None, 0.0, 4.0),
    ("Transit", None, 4.0, T_BRANCH),
    ("Early A", "A", T_BRANCH, 14.0),
    ("Mature A", "A", 14.0, T_MAX),
    ("Early B", "B", T_BRANCH, 14.0),
    ("Mature B", "B", 14.0, T_MAX),
)
#: Gene programmes and the fraction of genes in each (the rest go to ``lineage``).
PROGRAMMES = (("housekeeping", 0.05), ("shared", 0.25), ("transient", 0.15), ("fate", 0.15))
#: Switch time for "never" and "since long before t = 0" (e^{-γ·60} < 1e-5 for γ ≥ 0.2).
T_NEVER = 1.0e3
T_ALWAYS = -60.0
NB_DISPERSION = 20.0
LIBRARY_LOG_SD = 0.3


def _gene_kinetics(rng: np.random.Generator, n_genes: int) -> GeneKinetics:
    """Draw rates and switch times for ``n_genes`` genes (time in units of the 0–20 axis)."""
    sizes = [round(frac * n_genes) for _, frac in PROGRAMMES]
    sizes.append(n_genes - sum(sizes))
    programme = np.repeat([name for name, _ in PROGRAMMES] + ["lineage"], sizes)
    own = rng.integers(0, 2, n_genes)  # the lineage a fate/lineage gene belongs to
    beta = np.exp(rng.uniform(np.log(0.5), np.log(2.5), n_genes))
    gamma = np.exp(rng.uniform(np.log(0.2), np.log(1.0), n_genes))
    steady_s = np.exp(rng.uniform(np.log(3.0), np.log(60.0), n_genes))  # α/γ in counts
    alpha = steady_s * gamma

    start_trunk = rng.uniform(0.0, 6.0, n_genes)
    start_branch = rng.uniform(T_BRANCH, T_MAX - 4.0, n_genes)
    on_time = {
        "housekeeping": np.full(n_genes, T_ALWAYS),
        "shared": start_trunk,
        "transient": start_trunk,
        "fate": start_trunk,
        "lineage": start_branch,
    }
    off_time = {
        "housekeeping": np.full(n_genes, T_NEVER),
        "shared": start_trunk + rng.uniform(4.0, 20.0, n_genes),
        "transient": start_trunk + rng.uniform(1.5, 4.0, n_genes),
        "fate": start_trunk + rng.uniform(10.0, 20.0, n_genes),
        "lineage": start_branch + rng.uniform(3.0, 12.0, n_genes),
    }
    t_on = np.empty((n_genes, 2))
    t_off = np.empty((n_genes, 2))
    for name in on_time:
        rows = programme == name
        t_on[rows] = on_time[name][rows, None]
        t_off[rows] = off_time[name][rows, None]
    # The other lineage: fate genes are repressed just after the branch point, lineage genes
    # never switch on. Both differ only after T_BRANCH, so trunk cells agree across lineages.
    other = np.stack([own == 1, own == 0], axis=1)
    fate_other = other & (programme == "fate")[:, None]
    t_off = np.where(fate_other, T_BRANCH + rng.uniform(0.0, 1.0, (n_genes, 1)), t_off)
    lineage_other = other & (programme == "lineage")[:, None]
    t_on = np.where(lineage_other, T_NEVER, t_on)
    t_off = np.where(lineage_other, T_NEVER, t_off)
    gene_lineage = np.where(np.isin(programme, ("fate", "lineage")), np.take(LINEAGES, own), "")
    return GeneKinetics(alpha, beta, gamma, t_on, t_off, programme, gene_lineage)


def _cell_layout(rng: np.random.Generator, n_cells: int) -> pd.DataFrame:
    """True time, lineage and cell type per cell: a third in the trunk, a third per lineage."""
    n_trunk = n_cells // 3
    n_a = (n_cells - n_trunk) // 2
    branch = np.repeat([0, 1, 2], [n_trunk, n_a, n_cells - n_trunk - n_a])  # trunk, A, B
    t = np.where(
        branch == 0,
        rng.uniform(0.0, T_BRANCH, n_cells),
        rng.uniform(T_BRANCH, T_MAX, n_cells),
    )
    lineage_label = np.take(["trunk", *LINEAGES], branch)
    cell_type = np.empty(n_cells, dtype=object)
    for name, lineage, start, end in CELL_TYPES:
        on_path = branch == 0 if lineage is None else lineage_label == lineage
        cell_type[on_path & (t >= start) & (t < end)] = name
    order = rng.permutation(n_cells)
    return pd.DataFrame(
        {
            "true_t": t[order],
            "true_lineage": pd.Categorical(lineage_label[order], ["trunk", *LINEAGES]),
            "clusters": pd.Categorical(cell_type[order], [c[0] for c in CELL_TYPES]),
        },
        index=[f"cell_{i:05d}" for i in range(n_cells)],
    )


#: Cells × genes of one block of the simulation's float64 temporaries (64 MiB each).
_BLOCK_ELEMENTS = 2**23


def _sample_counts(rng: np.random.Generator, mean: np.ndarray) -> sparse.csr_matrix:
    """Negative-binomial counts (dispersion NB_DISPERSION) around ``mean`` as float32 CSR.

    The means are rounded to float32 first: the closed forms' last bits differ between CPUs
    (vectorised ``exp`` kernels), and an accept/reject sampler fed a one-ulp different mean can
    draw a different count. Rounding keeps the counts identical across machines.
    """
    mean = mean.astype(np.float32).astype(np.float64)
    counts = rng.negative_binomial(NB_DISPERSION, NB_DISPERSION / (NB_DISPERSION + mean))
    return sparse.csr_matrix(counts.astype(np.float32))


def simulate_branching(n_cells: int = 2400, n_genes: int = 400, seed: int = 0) -> ad.AnnData:
    """Simulate a branching differentiation with ground truth; bit-for-bit deterministic per seed.

    Returns ``n_cells`` × ``n_genes`` raw counts: ``layers['spliced'|'unspliced']`` (float32 CSR of
    integers, X = spliced) with ground truth ``obs['true_t']`` (0–20 axis), ``obs['true_lineage']``
    (trunk/A/B), ``obs['clusters']`` (6 cell types), ``obs['true_library_size']``,
    ``layers['true_velocity']`` = β u − γ s of the noiseless state (counts per time unit, library
    factor 1), ``var['true_alpha'|'true_beta'|'true_gamma']``, ``var['true_t_on'|'true_t_']``
    (switch-on/off times of the gene's own lineage, or lineage A for shared genes),
    ``var['true_programme'|'true_gene_lineage']``, ``varm['true_t_on'|'true_t_off']`` (G, 2) per
    lineage, and ``uns['simulation']`` (parameters and seed). No embedding is included. Built a
    block of cells at a time: memory is about the output's (100,000 × 2,000: 4.6 GB peak).
    """
    if n_cells < 6 or n_genes < 5:
        raise ValueError(f"need at least 6 cells and 5 genes, got {n_cells} × {n_genes}")
    rng = np.random.default_rng(seed)
    kinetics = _gene_kinetics(rng, n_genes)
    obs = _cell_layout(rng, n_cells)
    lineage = lineage_index(obs)  # trunk cells use lineage A's switch times
    true_t = obs["true_t"].to_numpy()
    library = np.exp(rng.normal(0.0, LIBRARY_LOG_SD, n_cells))
    # a block of cells at a time; all unspliced counts are drawn before the spliced ones (the
    # random stream's order), so the spliced means wait, rounded to float32 as they are drawn
    blocks = blocks_within(n_cells, n_genes, _BLOCK_ELEMENTS)
    spliced_mean = np.empty((n_cells, n_genes), dtype=np.float32)
    velocity = np.empty((n_cells, n_genes), dtype=np.float32)
    unspliced_parts = []
    for cells in blocks:
        u, s = expected_abundances(true_t[cells], lineage[cells], kinetics)
        unspliced_parts.append(_sample_counts(rng, library[cells, None] * u))
        spliced_mean[cells] = library[cells, None] * s
        velocity[cells] = velocity_of(u, s, kinetics)
    unspliced = sparse.vstack(unspliced_parts, format="csr")
    del unspliced_parts
    spliced = sparse.vstack([_sample_counts(rng, spliced_mean[c]) for c in blocks], format="csr")
    del spliced_mean
    obs["true_library_size"] = library

    own = np.where(kinetics.lineage == "B", 1, 0)
    genes = np.arange(n_genes)
    var = pd.DataFrame(
        {
            "true_alpha": kinetics.alpha,
            "true_beta": kinetics.beta,
            "true_gamma": kinetics.gamma,
            "true_t_on": kinetics.t_on[genes, own],
            "true_t_": kinetics.t_off[genes, own],
            "true_programme": pd.Categorical(kinetics.programme),
            "true_gene_lineage": pd.Categorical(kinetics.lineage),
        },
        index=[f"gene_{i:04d}" for i in range(n_genes)],
    )
    return ad.AnnData(
        X=spliced.copy(),
        obs=obs,
        var=var,
        layers={
            "spliced": spliced,
            "unspliced": unspliced,
            "true_velocity": velocity,
        },
        varm={"true_t_on": kinetics.t_on, "true_t_off": kinetics.t_off},
        uns={
            "simulation": {
                "generator": "core.simulate.simulate_branching",
                "seed": seed,
                "n_cells": n_cells,
                "n_genes": n_genes,
                "t_max": T_MAX,
                "t_branch": T_BRANCH,
                "lineages": list(LINEAGES),
                "nb_dispersion": NB_DISPERSION,
                "library_log_sd": LIBRARY_LOG_SD,
                "never": T_NEVER,
            }
        },
    )


def write_sample_data(
    path: str | os.PathLike, n_cells: int = 2400, n_genes: int = 400, seed: int = 0
) -> Path:
    """Simulate with :func:`simulate_branching` and write a gzip-compressed ``.h5ad`` atomically."""
    adata = simulate_branching(n_cells=n_cells, n_genes=n_genes, seed=seed)
    return write_h5ad_atomic(adata, path, compression="gzip")
