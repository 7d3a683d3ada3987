"""A synthetic, contract-complete velodash results AnnData for dashboard tests and benchmarks,
and small raw counts with the options of a fit short enough for a test.

Cells lie on a branching 2-D manifold (a trunk that splits into two lineages); every gene follows
switch kinetics (induction until its switch time, then repression) on the 0–20 time axis, so phase
portraits, velocities, coherence, permutation effects and the velocity graph all look and relate
like those of a real fit. The closed forms are written here in numpy on purpose: the dashboard's
curves (drawn through ``core.kinetics``) are then checked against an independent implementation.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats
from sklearn.neighbors import NearestNeighbors

T_MAX = 20.0
T_BRANCH = 0.4  # latent time at which the trunk splits into two lineages


def closed_form_induction(alpha, beta, gamma, t):
    """Closed-form u(t), s(t) from (0, 0) under constant transcription ``alpha`` (γ ≠ β)."""
    eb, eg = np.exp(-beta * t), np.exp(-gamma * t)
    u = alpha / beta * (1 - eb)
    s = alpha / gamma * (1 - eg) + alpha / (gamma - beta) * (eg - eb)
    return u, s


def closed_form_repression(u0, s0, beta, gamma, t):
    """Closed-form u(t), s(t) from (u0, s0) with transcription off (γ ≠ β)."""
    eb, eg = np.exp(-beta * t), np.exp(-gamma * t)
    u = u0 * eb
    s = s0 * eg - beta * u0 / (gamma - beta) * (eg - eb)
    return u, s


def _cell_types(n_types: int) -> tuple[list[str], int, int]:
    """Names in order, number of trunk types and number of types per branch."""
    per_branch = (n_types - 1) // 2
    n_trunk = n_types - 2 * per_branch
    trunk = ["Progenitor"] if n_trunk == 1 else [f"Progenitor {i + 1}" for i in range(n_trunk)]
    branches = [f"{b} {i + 1}" for b in ("Alpha", "Beta") for i in range(per_branch)]
    return trunk + branches, n_trunk, per_branch


def _manifold(n_cells: int, n_types: int, rng: np.random.Generator):
    """Latent time, cell-type codes and names, positions (N, 2) and unit tangents (N, 2)."""
    t = np.sort(rng.uniform(0, 1, n_cells))
    lineage = np.where(t < T_BRANCH, -1, rng.integers(0, 2, n_cells))
    names, n_trunk, per_branch = _cell_types(n_types)
    if per_branch == 0:
        codes = np.minimum((t * n_trunk).astype(int), n_trunk - 1)
    else:
        trunk_code = np.minimum((t / T_BRANCH * n_trunk).astype(int), n_trunk - 1)
        frac = (t - T_BRANCH) / (1 - T_BRANCH)
        branch_code = (
            n_trunk
            + lineage * per_branch
            + np.minimum((frac * per_branch).astype(int), per_branch - 1)
        )
        codes = np.where(lineage < 0, trunk_code, branch_code)
    # Trunk along +x, then each branch bends away (±35°, curving further with time).
    tb = np.clip(t - T_BRANCH, 0, None)
    sign = np.where(lineage == 0, 1.0, -1.0)
    angle = sign * (np.deg2rad(35) + 1.2 * tb)
    x = 10 * np.minimum(t, T_BRANCH) + 10 * tb * np.cos(angle)
    y = 10 * tb * np.sin(angle)
    tangent = np.stack(
        [np.cos(np.where(lineage < 0, 0.0, angle)), np.where(lineage < 0, 0.0, np.sin(angle))], 1
    )
    pos = np.stack([x, y], 1) + rng.normal(0, 0.25, (n_cells, 2))
    return t, codes, names, pos, tangent


def _velocity_graph(umap: np.ndarray, v_umap: np.ndarray, k: int = 10):
    """kNN cosine graph between projected velocity and displacement, split by sign (CSR N×N)."""
    n = umap.shape[0]
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(umap).kneighbors(umap)
    rows, cols = np.repeat(np.arange(n), k), idx[:, 1:].ravel()
    disp = umap[cols] - umap[rows]
    v = v_umap[rows]
    cos = (disp * v).sum(1) / (np.linalg.norm(disp, axis=1) * np.linalg.norm(v, axis=1) + 1e-12)
    pos = sp.csr_matrix((np.clip(cos, 0, None), (rows, cols)), shape=(n, n), dtype=np.float32)
    neg = sp.csr_matrix((np.clip(cos, None, 0), (rows, cols)), shape=(n, n), dtype=np.float32)
    pos.eliminate_zeros()
    neg.eliminate_zeros()
    return pos, neg


def _knn_distances(xy: np.ndarray, k: int = 15) -> sp.csr_matrix:
    """kNN distance graph (N×N CSR, self excluded) of the embedding, as ``obsp['distances']``."""
    n = xy.shape[0]
    dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(xy).kneighbors(xy)
    rows = np.repeat(np.arange(n), k)
    return sp.csr_matrix((dist[:, 1:].ravel(), (rows, idx[:, 1:].ravel())), shape=(n, n))


def make_fake_results(
    n_cells: int = 500,
    n_genes: int = 60,
    n_types: int = 5,
    seed: int = 0,
    planted_driver: str | None = None,
) -> ad.AnnData:
    """A results AnnData with every slot of DESIGN.md's contract, values mutually consistent.

    Shapes: N = ``n_cells``, G = ``n_genes``, C = ``n_types`` (cell types in ``obs['clusters']``).
    Layers are float32 (N, G); ``var['fit_*']`` hold the generating kinetics in scVelo's ``fit_*``
    convention (time axis 0–20, ``fit_scaling`` = 1), so ``fit_u``/``fit_s`` lie exactly on the
    curve those rates define and ``Mu``/``Ms`` scatter around it. ``obsp['distances']`` is a
    15-NN graph of the UMAP. With ``planted_driver`` the last gene gets that name and a known
    driver role: a strong positive velocity in the lineage whose types are named ``Alpha …`` and
    about zero elsewhere (``uns['planted_driver'] = {gene, lineage}``).
    """
    if n_cells < 20 or n_genes < 2 or n_types < 1:
        raise ValueError("make_fake_results needs n_cells >= 20, n_genes >= 2 and n_types >= 1")
    rng = np.random.default_rng(seed)
    t, codes, names, umap, tangent = _manifold(n_cells, n_types, rng)
    n_types = len(names)

    beta = rng.uniform(0.3, 1.0, n_genes)
    gamma = beta * rng.uniform(0.3, 0.8, n_genes)
    alpha = beta * rng.uniform(0.8, 1.2, n_genes)
    t_switch = rng.uniform(6.0, 14.0, n_genes)
    fit_t = np.clip(T_MAX * t[:, None] + rng.normal(0, 0.4, (n_cells, n_genes)), 0, T_MAX)
    u_ind, s_ind = closed_form_induction(alpha, beta, gamma, np.minimum(fit_t, t_switch))
    u0, s0 = closed_form_induction(alpha, beta, gamma, t_switch)
    u_rep, s_rep = closed_form_repression(u0, s0, beta, gamma, fit_t - t_switch)
    repressing = fit_t > t_switch
    fit_u = np.where(repressing, u_rep, u_ind)
    fit_s = np.where(repressing, s_rep, s_ind)
    noise = 0.04 * np.maximum(fit_s.max(0), fit_u.max(0))
    mu = np.clip(fit_u + rng.normal(0, 1, fit_u.shape) * noise, 0, None)
    ms = np.clip(fit_s + rng.normal(0, 1, fit_s.shape) * noise, 0, None)
    velocity = beta * fit_u - gamma * fit_s + rng.normal(0, 0.01, fit_u.shape)
    in_alpha = np.isin(codes, [i for i, n in enumerate(names) if n.startswith("Alpha")])
    if planted_driver is not None:
        if not in_alpha.any():
            raise ValueError("a planted driver needs a lineage: use n_types >= 3")
        jitter = np.random.default_rng(seed + 1).normal(0, 0.02, n_cells)
        velocity[:, -1] = np.where(in_alpha, 2.0 * np.abs(velocity).max(), 0.0) + jitter

    # State probabilities: mostly the true phase, steady states near the ends of each phase.
    logits = np.full((n_cells, n_genes, 4), -2.0)
    logits[..., 0] = np.where(repressing, -2.0, 3.0)
    logits[..., 2] = np.where(repressing, 3.0, -2.0)
    logits[..., 1] = np.where(~repressing & (fit_t > t_switch - 1), 2.5, -2.0)
    logits[..., 3] = np.where(fit_t > T_MAX - 1, 2.5, -2.0)
    states = np.exp(logits)
    states /= states.sum(-1, keepdims=True)

    onehot = np.eye(n_types)[codes]  # (N, C)
    counts = onehot.sum(0)
    type_mean_v = (onehot.T @ velocity) / counts[:, None]  # (C, G)
    coherence_cell = (
        velocity
        * type_mean_v[codes]
        / (np.abs(velocity).max(0) * np.abs(type_mean_v).max(0) + 1e-12)
    )
    coherence = (onehot.T @ coherence_cell / counts[:, None]).T  # (G, C)

    gamma_ss = gamma / beta * rng.uniform(0.8, 1.2, n_genes)
    baseline = mu - gamma_ss * ms
    agreement = (np.sign(baseline) == np.sign(velocity)).mean(0)
    vc, bc = velocity - velocity.mean(0), baseline - baseline.mean(0)
    pearson = (vc * bc).sum(0) / np.sqrt((vc**2).sum(0) * (bc**2).sum(0))

    effect = np.abs(rng.normal(0, 1.5, (n_genes, n_types))) * rng.gamma(1.5, 2.0, (n_genes, 1))
    score = effect.max(1)
    fit_mse = ((ms - fit_s) ** 2 + (mu - fit_u) ** 2).mean(0)
    likelihood = np.exp(-fit_mse / (2 * noise**2 + 1e-12) / 2)

    speed = 1.0 + 0.5 * np.sin(6 * t)
    v_umap = tangent * speed[:, None] + rng.normal(0, 0.1, (n_cells, 2))
    near_branch = np.exp(-(((t - T_BRANCH) / 0.1) ** 2))
    graph, graph_neg = _velocity_graph(umap, v_umap)

    f32 = np.float32
    obs = pd.DataFrame(
        {
            "clusters": pd.Categorical.from_codes(codes, categories=names),
            "latent_time": t.astype(f32),
            "intrinsic_uncertainty": (
                rng.lognormal(-3, 0.4, n_cells) * (1 + 2 * near_branch)
            ).astype(f32),
            "extrinsic_uncertainty": (
                rng.lognormal(-2.5, 0.5, n_cells) * (1 + 3 * near_branch)
            ).astype(f32),
        },
        index=[f"cell_{i:05d}" for i in range(n_cells)],
    )
    gene_names = [f"Gene{g:03d}" for g in range(n_genes)]
    if planted_driver is not None:
        gene_names[-1] = planted_driver
    scale_s, scale_u = rng.uniform(2, 50, n_genes), rng.uniform(1, 20, n_genes)
    var = pd.DataFrame(
        {
            "fit_alpha": alpha,
            "fit_beta": beta,
            "fit_gamma": gamma,
            "fit_t_": t_switch,
            "fit_scaling": np.ones(n_genes),
            "fit_mse": fit_mse,
            "fit_likelihood": likelihood,
            "velocity_genes": likelihood > np.quantile(likelihood, 0.2),
            "permutation_score": score,
            "baseline_sign_agreement": agreement,
            "baseline_pearson": pearson,
        },
        index=gene_names,
    )
    layers = {
        "Ms": ms,
        "Mu": mu,
        "Ms_raw": ms * scale_s,
        "Mu_raw": mu * scale_u,
        "velocity": velocity,
        "velocity_var": rng.gamma(2.0, 0.002, (n_cells, n_genes)),
        "fit_t": fit_t,
        "fit_s": fit_s,
        "fit_u": fit_u,
        "velocity_coherence": coherence_cell,
        "velocity_baseline": baseline,
    }
    adata = ad.AnnData(
        X=ms.astype(f32),
        obs=obs,
        var=var,
        layers={k: np.ascontiguousarray(v, dtype=f32) for k, v in layers.items()},
        obsm={
            "X_umap": umap.astype(f32),
            "velocity_umap": v_umap.astype(f32),
            "X_velovi": rng.normal(0, 1, (n_cells, 10)).astype(f32) + t[:, None].astype(f32),
        },
        varm={"coherence": coherence.astype(f32), "permutation_effect": effect.astype(f32)},
    )
    adata.layers["state_assignment"] = states.argmax(-1).astype(np.int8)
    n_epochs = 120
    epochs = np.arange(n_epochs)
    elbo = 2000 * np.exp(-epochs / 25) + 300 + rng.normal(0, 5, n_epochs)
    adata.obsp["distances"] = _knn_distances(umap)
    if planted_driver is not None:
        adata.uns["planted_driver"] = {"gene": planted_driver, "lineage": "Alpha"}
    adata.uns["velocity_graph"] = graph
    adata.uns["velocity_graph_neg"] = graph_neg
    adata.uns["velocity_params"] = {"mode": "velovi", "embeddings": ["umap"]}
    adata.uns["velodash"] = {
        "version": "0.1.0",
        "params": {
            "n_top_genes": 2000,
            "max_epochs": 500,
            "n_samples": 25,
            "seed": seed,
            "device": "auto",
        },
        "groupby": "clusters",
        "cell_types": names,
        "device": "cpu",
        "timings": {
            "preprocess": 1.2,
            "train": 14.8,
            "posterior": 0.9,
            "uncertainty": 2.1,
            "coherence": 0.4,
            "permutation": 3.3,
            "graph": 0.7,
            "baseline": 0.2,
        },
        "history": {"elbo_train": elbo, "elbo_validation": elbo + 20 + rng.normal(0, 8, n_epochs)},
        "fingerprint": rng.bytes(32).hex(),
        "permutation": {
            "skewness": float(stats.skew(score)),
            "kurtosis": float(stats.kurtosis(score)),
            "n_cells": 200,
            "seed": seed,
        },
    }
    return adata


def write_fake_results(path: str | Path, **kwargs) -> Path:
    """Write ``make_fake_results(**kwargs)`` to ``path`` (.h5ad) and return the path."""
    path = Path(path)
    make_fake_results(**kwargs).write_h5ad(path)
    return path


#: A fit short enough for a test (on :func:`write_raw_counts`' data): 10 epochs, the slow
#: analyses left out.
QUICK_FIT = {
    "max_epochs": 10,
    "n_pcs": 10,
    "n_neighbors": 15,
    "skip": ["intrinsic", "extrinsic", "coherence", "permutation", "baseline"],
}


def write_raw_counts(
    path: str | Path, n_cells: int = 200, n_genes: int = 40, seed: int = 0
) -> Path:
    """Raw spliced/unspliced counts of a small branching simulation (``core.simulate``) with a
    2-D embedding from the true time and lineage (so a fit computes no UMAP), written to
    ``path`` (.h5ad); returns the path."""
    from core.simulate import simulate_branching

    adata = simulate_branching(n_cells=n_cells, n_genes=n_genes, seed=seed)
    t = adata.obs["true_t"].to_numpy()
    lineage = adata.obs["true_lineage"].astype("category").cat.codes.to_numpy()
    adata.obsm["X_umap"] = np.stack([t, t * (lineage - lineage.mean())], 1).astype(np.float32)
    path = Path(path)
    adata.write_h5ad(path)
    return path
