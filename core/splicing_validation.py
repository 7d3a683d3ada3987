"""How well predicted spliced/unspliced counts stand in for true ones, on held-out cells.

:func:`ratio_metrics` compares the predicted spliced share with the true one. A single
cell-gene entry holds one or two UMIs (its share is 0, ½ or 1), so the share veloVI works with
is that of the kNN moments, Ms / (Ms + Mu), over the held-out cells' own kNN graph of their
total counts (30 neighbours, 30 PCs, scVelo's moment kernel). It is reported unweighted and
weighted by each entry's moment count (entries measured by more UMIs count more), overall
and per gene, next to the raw per-entry share. :func:`velocity_agreement` compares two veloVI
results of the same cells (from true and from predicted S/U): the per-cell cosine of their
velocities over the genes both fitted and in the embedding, and the Spearman correlation of
their latent times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scipy.stats import spearmanr
from sklearn.preprocessing import MinMaxScaler

from core.preprocess import moment_kernel, smooth

#: Neighbours and principal components of the held-out cells' kNN graph (the pipeline's).
N_NEIGHBORS, N_PCS = 30, 30
#: Predicted vs true share pairs kept for the dashboard's scatter.
N_SCATTER = 4000
_COUNT_LAYERS, _MOMENTS = ("spliced", "unspliced"), ("Ms", "Mu")


def _pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> float:
    """(Weighted) Pearson correlation; NaN when either side is constant."""
    w = np.ones_like(x) if w is None else w
    w = w / w.sum()
    dx, dy = x - (w * x).sum(), y - (w * y).sum()
    denominator = np.sqrt((w * dx * dx).sum() * (w * dy * dy).sum())
    return float((w * dx * dy).sum() / denominator) if denominator > 0 else float("nan")


def _rmse(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> float:
    """(Weighted) root mean squared difference."""
    return float(np.sqrt(np.average((x - y) ** 2, weights=w)))


def totals_graph(
    totals,
    seed: int = 0,
    n_pcs: int = N_PCS,
    n_neighbors: int = N_NEIGHBORS,
    umap: bool = False,
    obs_names=None,
) -> AnnData:
    """The kNN graph of cells from their total counts (N, G), the only counts a query has:
    an AnnData of the log-normalised totals (cells named ``obs_names`` when given) with
    ``obsm['X_pca']``, ``obsp['connectivities'|'distances']`` and, with ``umap``,
    ``obsm['X_umap']`` (all seeded)."""
    import scanpy as sc

    adata = AnnData(sp.csr_matrix(totals, dtype=np.float32))
    if obs_names is not None:
        adata.obs_names = obs_names
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    n_pcs = max(1, min(n_pcs, adata.n_obs - 1, adata.n_vars - 1))
    sc.pp.pca(adata, n_comps=n_pcs, random_state=seed)
    sc.pp.neighbors(
        adata, n_neighbors=min(n_neighbors, adata.n_obs - 1), n_pcs=n_pcs, random_state=seed
    )
    if umap:
        sc.tl.umap(adata, random_state=seed)
    return adata


def moments_kernel(totals: np.ndarray, seed: int = 0) -> sp.csr_matrix:
    """scVelo's moment kernel (N, N) of cells from their kNN graph on log-normalised totals."""
    return moment_kernel(totals_graph(totals, seed).obsp["connectivities"])


def ratio_metrics(
    predicted: np.ndarray,
    spliced: np.ndarray,
    totals: np.ndarray,
    genes: list,
    seed: int = 0,
) -> dict:
    """Predicted (N, G) vs true spliced shares of held-out cells with ``spliced`` and ``totals``
    counts (N, G). Keys: ``ratio_rmse``, ``ratio_pearson`` (moments, weighted by counts: the
    headline), ``*_unweighted`` (moments, every entry alike), ``*_entry`` (raw entries), and
    ``per_gene`` {genes, rmse, pearson} (moments, weighted) and ``scatter`` {true, predicted}
    (at most :data:`N_SCATTER` moment pairs drawn with ``seed``)."""
    predicted = np.asarray(predicted, dtype=np.float64)
    spliced, totals = np.asarray(spliced, np.float64), np.asarray(totals, np.float64)
    observed = totals > 0
    entry_true = spliced[observed] / totals[observed]
    kernel = moments_kernel(totals, seed)
    m_spliced, m_total = smooth(kernel, spliced), smooth(kernel, totals)
    m_predicted = smooth(kernel, predicted * totals)
    seen = m_total > 0
    share_true = np.where(seen, m_spliced / np.where(seen, m_total, 1.0), np.nan)
    share_predicted = np.where(seen, m_predicted / np.where(seen, m_total, 1.0), np.nan)
    t, p, w = share_true[seen], share_predicted[seen], m_total[seen]
    per_gene_rmse = np.full(len(genes), np.nan)
    per_gene_r = np.full(len(genes), np.nan)
    for g in range(len(genes)):
        cells = seen[:, g]
        if cells.sum() >= 3:
            a, b, wg = share_true[cells, g], share_predicted[cells, g], m_total[cells, g]
            per_gene_rmse[g], per_gene_r[g] = _rmse(b, a, wg), _pearson(b, a, wg)
    pick = np.random.default_rng(seed).permutation(t.size)[:N_SCATTER]
    return {
        "ratio_rmse": _rmse(p, t, w),
        "ratio_pearson": _pearson(p, t, w),
        "ratio_rmse_unweighted": _rmse(p, t),
        "ratio_pearson_unweighted": _pearson(p, t),
        "ratio_rmse_entry": _rmse(predicted[observed], entry_true),
        "ratio_pearson_entry": _pearson(predicted[observed], entry_true),
        "n_entries": int(t.size),
        "per_gene": {
            "genes": np.asarray(genes, dtype=str),
            "rmse": per_gene_rmse,
            "pearson": per_gene_r,
        },
        "scatter": {"true": t[pick].astype(np.float32), "predicted": p[pick].astype(np.float32)},
    }


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``a`` with the same row of ``b`` (NaN for a zero row)."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, (a * b).sum(1) / norms, np.nan)


def velocity_agreement(true: AnnData, predicted: AnnData) -> dict:
    """Per-cell agreement of two veloVI results of the same cells (results AnnData of
    :func:`core.pipeline.run`, from true and from predicted S/U).

    ``cosine`` (N,): the cosine of the two velocities over the genes both fitted, each gene's
    velocity divided by its spread over the cells (each fit scales a gene by its own Ms range);
    ``cosine_embedding`` (N,): the cosine of the projected velocities (``obsm['velocity_umap']``,
    on the same embedding) when both have them; their medians; ``latent_time_spearman``.
    """
    predicted = predicted[true.obs_names]
    genes = true.var_names.intersection(predicted.var_names, sort=False)
    v_true = np.asarray(true[:, genes].layers["velocity"], dtype=np.float64)
    v_pred = np.asarray(predicted[:, genes].layers["velocity"], dtype=np.float64)
    v_true = v_true / np.maximum(v_true.std(0), 1e-12)
    v_pred = v_pred / np.maximum(v_pred.std(0), 1e-12)
    cosine = _row_cosines(v_true, v_pred)
    out = {
        "n_genes": len(genes),
        "cosine": cosine.astype(np.float32),
        "cosine_median": float(np.nanmedian(cosine)) if len(genes) else float("nan"),
        "latent_time_spearman": float(
            spearmanr(true.obs["latent_time"], predicted.obs["latent_time"]).statistic
        ),
    }
    if "velocity_umap" in true.obsm and "velocity_umap" in predicted.obsm:
        embedded = _row_cosines(
            np.asarray(true.obsm["velocity_umap"], np.float64),
            np.asarray(predicted.obsm["velocity_umap"], np.float64),
        )
        out["cosine_embedding"] = embedded.astype(np.float32)
        out["cosine_embedding_median"] = float(np.nanmedian(embedded))
    return out


@dataclass
class ReferenceVeloVI:
    """veloVI fitted on the true S/U of the reference's training cells, with what new cells
    need to enter it in the training cells' units (the ablation without retraining, made by
    :func:`fit_reference_velovi`).

    ``var``: the fitted genes' rows of the preprocessed training cells; ``size_targets``: per
    count layer, the training cells' median count, to which preprocessing normalises each cell
    (None when ``params.normalize`` is off); ``scalers``: per moment (Ms, Mu), the per-gene
    min-max scaler fitted on the training cells; ``scaling``: the training posterior's
    per-gene rescaling; ``input_genes``: the genes preprocessing started from (a cell's size
    is summed over them)."""

    model: Any
    params: Any
    var: pd.DataFrame
    input_genes: pd.Index
    size_targets: dict[str, float] | None
    scalers: dict[str, MinMaxScaler]
    scaling: np.ndarray


def fit_reference_velovi(train: AnnData, params) -> ReferenceVeloVI:
    """Preprocess and fit veloVI on ``train`` (raw ``spliced``/``unspliced`` counts) as
    :func:`core.pipeline.run` does with :class:`core.params.FitParams` ``params``."""
    from core.pipeline import train_velovi
    from core.preprocess import PreprocessConfig, preprocess

    prepared = preprocess(train, PreprocessConfig(**params.for_config(PreprocessConfig)))
    model, _ = train_velovi(prepared, params)
    posterior = model.posterior(params.n_samples, params.posterior_mode, params.time_statistic)
    targets = None
    if params.normalize:
        targets = {k: float(np.median(_cell_sizes(train, k))) for k in _COUNT_LAYERS}
    return ReferenceVeloVI(
        model=model,
        params=params,
        var=prepared.var.copy(),
        input_genes=train.var_names.copy(),
        size_targets=targets,
        scalers={
            m: MinMaxScaler(clip=True).fit(prepared.layers[f"{m}_raw"].astype(np.float64))
            for m in _MOMENTS
        },
        scaling=posterior.scaling,
    )


def _cell_sizes(cells: AnnData, layer: str) -> np.ndarray:
    """Each cell's size (N,) float64 as scVelo normalises it: ``obs['initial_size_<layer>']``
    when present, else the layer's count over all genes."""
    if f"initial_size_{layer}" in cells.obs:
        return cells.obs[f"initial_size_{layer}"].to_numpy(dtype=np.float64)
    return np.asarray(cells.layers[layer].sum(1), dtype=np.float64).ravel()


def raw_moments(
    fitted: ReferenceVeloVI, cells: AnnData, kernel: sp.spmatrix
) -> dict[str, np.ndarray]:
    """Unscaled moments {Ms, Mu} (N, G') over the fitted genes of ``cells`` (raw S/U counts
    over the genes the fit started from), normalised per cell as preprocessing normalised the
    training cells (scVelo: each layer by the cell's own size over all genes, to the training
    cells' median size) and smoothed with the moment ``kernel`` (N, N)."""
    if not cells.var_names.equals(fitted.input_genes):
        raise ValueError(
            f"cells have {cells.n_vars} genes; pass the {len(fitted.input_genes)} genes the "
            "reference fit started from, in its order (its size factors sum over them)."
        )
    keep = cells.var_names.get_indexer(fitted.var.index)
    out = {}
    for layer, moment in zip(_COUNT_LAYERS, _MOMENTS, strict=True):
        counts = sp.csr_matrix(cells.layers[layer], dtype=np.float32)
        if fitted.size_targets is not None:
            factor = _cell_sizes(cells, layer) / (fitted.size_targets[layer] or 1.0)
            factor[factor == 0] = 1.0
            counts = sp.diags((1.0 / factor).astype(np.float32)) @ counts
        out[moment] = smooth(kernel, counts[:, keep])
    return out


def new_cells_result(
    fitted: ReferenceVeloVI, moments: dict[str, np.ndarray], graph: AnnData
) -> AnnData:
    """veloVI's results for new cells through the fit, without retraining: their unscaled
    ``moments`` (:func:`raw_moments`) min-max scaled with the training cells' scalers, the
    posterior in the training cells' per-gene units, and the velocity graph and its projection
    on ``graph`` (the cells' kNN graph and ``obsm['X_umap']``, as from :func:`totals_graph`)."""
    from core.graph import add_velocity_graph
    from core.posterior import add_posterior_to_adata

    scaled = {
        m: fitted.scalers[m].transform(moments[m].astype(np.float64)).astype(np.float32)
        for m in _MOMENTS
    }
    params = fitted.params
    posterior = fitted.model.posterior(
        params.n_samples,
        params.posterior_mode,
        params.time_statistic,
        spliced=scaled["Ms"],
        unspliced=scaled["Mu"],
        scaling=fitted.scaling,
    )
    result = AnnData(
        obs=pd.DataFrame(index=graph.obs_names),
        var=fitted.var.copy(),
        layers=scaled,
        obsm={"X_umap": graph.obsm["X_umap"]},
        obsp={k: graph.obsp[k] for k in ("connectivities", "distances")},
    )
    add_posterior_to_adata(result, posterior)
    add_velocity_graph(result)
    return result


def perturbed_moments(
    moments: dict[str, np.ndarray], rmse: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """{Ms, Mu} with each entry's spliced share Ms / (Ms + Mu) moved by an independent
    N(0, rmse[g]) draw and clipped to [0, 1], the moment total kept: prediction error of the
    held-out per-gene size (NaN rmse counts as 0) put into the moments veloVI reads."""
    total = moments["Ms"] + moments["Mu"]
    share = np.divide(moments["Ms"], total, out=np.zeros_like(total), where=total > 0)
    noise = rng.normal(size=total.shape) * np.nan_to_num(rmse)[None, :]
    moved = np.clip(share + noise, 0.0, 1.0).astype(np.float32)
    return {"Ms": moved * total, "Mu": (1.0 - moved) * total}
