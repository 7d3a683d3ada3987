"""scanpy/scVelo preprocessing followed by veloVI's min-max scaling and gene selection.

``preprocess`` returns a new AnnData restricted to the genes the model fits. Besides the slots
listed in docs/architecture.md it stores ``uns['velodash_preprocess']``: the number of genes
left after each step (``n_genes_input``, ``n_genes_filtered``, ``n_genes_hvg``,
``n_genes_velocity``), ``n_cells``, and ``dropped_genes``: for each step of
:data:`GENE_FILTER_STEPS`, the names of the genes it removed, so the app can say where a gene
that was not fitted was dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scvelo as scv
from pynndescent import PyNNDescentTransformer
from scipy import sparse
from scvelo.preprocessing.neighbors import get_connectivities
from sklearn.preprocessing import MinMaxScaler

from core.blocks import blocks_within
from core.io import DatasetError, validate_counts

PREPROCESS_UNS_KEY = "velodash_preprocess"
#: The steps that remove genes, in order (keys of ``uns['velodash_preprocess']['dropped_genes']``):
#: scVelo's shared-counts filter, Scanpy's highly variable genes, veloVI's velocity-gene selection.
GENE_FILTER_STEPS = ("min_shared_counts", "highly_variable", "velocity_genes")
#: From this many cells scanpy switches from exact kNN to pynndescent (euclidean metric).
APPROXIMATE_KNN_FROM = 8192


class CsrNNDescentTransformer(PyNNDescentTransformer):
    """pynndescent kNN transformer whose output is a ``scipy.sparse.csr_matrix``.

    scanpy 1.11 reads the kNN graph with ``.getnnz``, which scipy's ``csr_array`` (what
    pynndescent returns with current scipy) no longer has, so ``sc.pp.neighbors`` crashed on
    datasets of 8192 cells or more. Settings are UMAP's, as scanpy uses by default.
    """

    def fit_transform(self, X, y=None, **fit_params) -> sparse.csr_matrix:
        """The kNN graph of X itself. pynndescent's own fit_transform then compresses the
        index for later queries, which scanpy never makes: that step alone compiles ~60 s of
        numba code in every fresh fit process, so it is skipped."""
        self.fit(X, compress_index=False)
        return sparse.csr_matrix(self.transform(X=None))

    def transform(self, X) -> sparse.csr_matrix:
        return sparse.csr_matrix(super().transform(X))


def knn_transformer(n_obs: int, n_neighbors: int, seed: int) -> CsrNNDescentTransformer | None:
    """The kNN transformer for ``sc.pp.neighbors``: None (scanpy's exact kNN) below
    ``APPROXIMATE_KNN_FROM`` cells, else pynndescent with UMAP's defaults and csr output."""
    if n_obs < APPROXIMATE_KNN_FROM:
        return None
    return CsrNNDescentTransformer(
        n_neighbors=n_neighbors,
        metric="euclidean",
        n_trees=min(64, 5 + round(n_obs**0.5 / 20.0)),
        n_iters=max(5, round(np.log2(n_obs))),
        random_state=seed,
    )


@dataclass
class PreprocessConfig:
    """Options of :func:`preprocess` (defaults follow the veloVI reproducibility notebooks).

    ``normalize=False`` is for simulated or already-normalised data: gene filtering, per-cell
    normalisation, HVG selection and log1p are skipped and PCA/neighbours/moments use X and the
    layers as given.
    """

    min_shared_counts: int = 20
    n_top_genes: int = 2000
    n_pcs: int = 30
    n_neighbors: int = 30
    normalize: bool = True
    compute_umap: bool = True
    min_max_scale: bool = True
    filter_on_r2: bool = True
    min_cells: int = 30
    min_genes: int = 10
    seed: int = 0


def _as_float32(matrix):
    """Cast to float32, without a copy when already float32 (sparse stays sparse)."""
    return matrix.astype(np.float32, copy=False)


def _require_genes(adata: ad.AnnData, config: PreprocessConfig, step: str, fix: str) -> None:
    """Raise DatasetError when fewer than ``config.min_genes`` genes are left after ``step``."""
    if adata.n_vars < config.min_genes:
        raise DatasetError(
            f"Only {adata.n_vars} gene(s) left after {step}; at least min_genes="
            f"{config.min_genes} are needed. {fix}"
        )


def _removed(before: pd.Index, after: pd.Index) -> np.ndarray:
    """Names in ``before`` that are not in ``after`` (in ``before``'s order), an object array."""
    return np.asarray(before[~before.isin(after)], dtype=object)


def _filter_normalize_hvg(
    adata: ad.AnnData, config: PreprocessConfig
) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """scVelo gene filter + per-cell normalisation, log1p X, Scanpy 'seurat' HVG (in place).

    X is rebuilt from the spliced counts first so the result depends only on the count layers.
    Returns the number of genes after filtering and after HVG selection, and the names each of
    the two steps removed.
    """
    adata.X = adata.layers["spliced"].copy()
    names = adata.var_names
    scv.pp.filter_genes(adata, min_shared_counts=config.min_shared_counts)
    _require_genes(
        adata,
        config,
        f"gene filtering (min_shared_counts={config.min_shared_counts})",
        "Lower min_shared_counts (e.g. 5) or use a deeper-sequenced dataset.",
    )
    n_filtered, filtered = adata.n_vars, adata.var_names
    scv.pp.normalize_per_cell(adata, layers=["spliced", "unspliced"], enforce=True)
    sc.pp.log1p(adata)
    if adata.n_vars > config.n_top_genes:
        # scVelo 0.3.4 dropped n_top_genes; Scanpy's 'seurat' flavour expects logged X.
        sc.pp.highly_variable_genes(
            adata, flavor="seurat", n_top_genes=config.n_top_genes, subset=True
        )
    removed = {
        "min_shared_counts": _removed(names, filtered),
        "highly_variable": _removed(filtered, adata.var_names),
    }
    return {"n_genes_filtered": n_filtered, "n_genes_hvg": adata.n_vars}, removed


#: Cells × genes of one dense block of counts while smoothing (64 MiB in float32).
_SMOOTH_BLOCK_ELEMENTS = 2**24


def moment_kernel(connectivities: sparse.spmatrix) -> sparse.csr_matrix:
    """scVelo's first-order moment kernel (N, N) float32 from ``obsp['connectivities']``: the
    binarised kNN graph plus self, each row normalised to sum 1 (``get_connectivities``)."""
    shell = ad.AnnData(
        obs=pd.DataFrame(index=pd.RangeIndex(connectivities.shape[0]).astype(str)),
        obsp={"connectivities": connectivities},
        uns={"neighbors": {"connectivities_key": "connectivities"}},
    )
    return get_connectivities(shell)


def smooth(kernel: sparse.spmatrix, counts) -> np.ndarray:
    """kNN means ``kernel @ counts`` (N, G) as dense float32, one block of genes at a time:
    sparse × dense, so no near-dense sparse product (12–16 bytes per entry) is formed."""
    n_cells, n_genes = counts.shape
    out = np.empty((n_cells, n_genes), dtype=np.float32)
    for genes in blocks_within(n_genes, n_cells, _SMOOTH_BLOCK_ELEMENTS):
        block = counts[:, genes]
        out[:, genes] = kernel @ (block.toarray() if sparse.issparse(block) else block)
    return out


def _embed_and_smooth(adata: ad.AnnData, config: PreprocessConfig) -> None:
    """PCA, kNN graph, first-order moments Ms/Mu (kNN means) and UMAP, seeded (in place)."""
    n_pcs = max(1, min(config.n_pcs, adata.n_obs - 1, adata.n_vars - 1))
    sc.pp.pca(adata, n_comps=n_pcs, random_state=config.seed)
    n_neighbors = min(config.n_neighbors, adata.n_obs - 1)
    sc.pp.neighbors(
        adata,
        n_neighbors=n_neighbors,
        n_pcs=n_pcs,
        random_state=config.seed,
        transformer=knn_transformer(adata.n_obs, n_neighbors, config.seed),
    )
    # scVelo's own moment kernel (binarised kNN + self, row-normalised); called directly because
    # scv.pp.moments silently re-normalises integer-looking layers, which normalize=False forbids.
    kernel = moment_kernel(adata.obsp["connectivities"])
    for layer, moment in (("spliced", "Ms"), ("unspliced", "Mu")):
        adata.layers[moment] = smooth(kernel, adata.layers[layer])
    if config.compute_umap and "X_umap" not in adata.obsm:
        # scanpy ≤ 1.11 lets umap-learn zero small weights of obsp['connectivities'] in place
        # (scanpy#4028): keep the graph the moments were computed from, so the file's
        # connectivities rebuild Ms_raw/Mu_raw exactly (core.results_io).
        graph = adata.obsp["connectivities"].copy()
        sc.tl.umap(adata, random_state=config.seed)
        adata.obsp["connectivities"] = graph


def _min_max_scaled(moments: np.ndarray) -> np.ndarray:
    """Each gene of ``moments`` (N, G) min-max scaled to [0, 1] (scikit-learn's MinMaxScaler,
    per gene, so blocks of genes give the same numbers): float64 + clip so the float32 result
    lies exactly in [0, 1]; the float64 copy is made one block of genes at a time."""
    n_cells, n_genes = moments.shape
    out = np.empty((n_cells, n_genes), dtype=np.float32)
    for genes in blocks_within(n_genes, n_cells, _SMOOTH_BLOCK_ELEMENTS // 2):
        out[:, genes] = MinMaxScaler(clip=True).fit_transform(moments[:, genes].astype(np.float64))
    return out


def _subset_genes(adata: ad.AnnData, keep: np.ndarray) -> ad.AnnData:
    """``adata[:, keep].copy()`` holding at most one extra layer at a time: each layer is
    subset and its full version released before the next (the slots without genes are
    shared, not copied)."""
    layers = {}
    for key in list(adata.layers):
        layers[key] = adata.layers[key][:, keep]
        del adata.layers[key]
    return ad.AnnData(
        X=adata.X[:, keep],
        obs=adata.obs,
        var=adata.var[keep],
        obsm=dict(adata.obsm),
        varm={k: v[keep] for k, v in adata.varm.items()},
        obsp=dict(adata.obsp),
        uns=adata.uns,
        layers=layers,
    )


#: scVelo's thresholds for velocity genes (``scv.tl.velocity``'s ``min_r2`` and the
#: ``Velocity`` class's ``min_ratio``); the steady-state fit below uses scVelo's defaults.
_MIN_R2, _MIN_RATIO = 0.01, 0.01


def _steady_state_fit(adata: ad.AnnData) -> None:
    """``scv.tl.velocity(adata, mode="deterministic")``'s per-gene fit (``var['velocity_gamma'|
    'velocity_r2'|'velocity_genes'|…]``, written by scVelo's ``write_pars``), computed on
    blocks of genes with scVelo's ``Velocity`` class so its dense temporaries stay bounded.

    Every parameter is per gene; only the velocity-gene rule looks at all genes (scVelo lowers
    the r² threshold to the 80th percentile when fewer than two genes pass), so it is applied
    once to the whole fit, as scVelo states it. The steady-state velocity itself is not kept
    (it belongs to core.baseline)."""
    from scvelo.tools.velocity import Velocity, write_pars

    n_cells, n_genes = adata.shape
    spans = blocks_within(n_genes, n_cells, _SMOOTH_BLOCK_ELEMENTS)
    if len(spans) > 1 and spans[-1].stop - spans[-1].start == 1:
        # scVelo squeezes a one-gene block to a vector: give the last gene to its neighbours
        spans[-2:] = [slice(spans[-2].start, n_genes)]
    parts = []
    for genes in spans:
        block = ad.AnnData(
            obs=adata.obs[[]],
            var=adata.var.iloc[genes],
            layers={m: adata.layers[m][:, genes] for m in ("Ms", "Mu")},
        )
        velo = Velocity(block, min_r2=_MIN_R2, r2_adjusted=None, use_highly_variable=True)
        velo.compute_deterministic(fit_offset=False, perc=[5, 95])
        Ms, Mu = velo._Ms, velo._Mu
        passing = (
            (velo._r2 > _MIN_R2)
            & (velo._gamma > _MIN_RATIO)
            & (np.max(Ms > 0, 0) > 0)
            & (np.max(Mu > 0, 0) > 0)
        )
        if velo._highly_variable is not None:
            passing &= np.asarray(velo._highly_variable, dtype=bool)
        parts.append([*velo.get_pars()[:-1], passing])
    pars = [np.concatenate([np.atleast_1d(p[k]) for p in parts]) for k in range(len(parts[0]))]
    if pars[-1].sum() < 2:  # scVelo's low-signal rule, over all genes
        pars[-1] = pars[5] > np.percentile(pars[5], 80)
    write_pars(adata, "velocity", pars, velo.get_pars_names())


def _scale_and_select(adata: ad.AnnData, config: PreprocessConfig) -> ad.AnnData:
    """veloVI's ``preprocess_data``: keep raw moments, min-max scale, steady-state r2 filter.

    Memory: the unscaled moments become ``Ms_raw``/``Mu_raw`` without a copy, the steady-state
    fit runs on blocks of genes (:func:`_steady_state_fit`), and the genes are kept one layer
    at a time (:func:`_subset_genes`)."""
    for moment in ("Ms", "Mu"):
        raw = adata.layers[moment]
        adata.layers[f"{moment}_raw"] = raw
        adata.layers[moment] = _min_max_scaled(raw) if config.min_max_scale else raw.copy()
    _steady_state_fit(adata)
    if config.filter_on_r2:
        keep = (adata.var["velocity_r2"] > 0) & (adata.var["velocity_gamma"] > 0)
        if "velocity_genes" in adata.var:  # scVelo does not always write the column
            keep &= adata.var["velocity_genes"].astype(bool)
        adata = _subset_genes(adata, keep.to_numpy())
    adata.uns.pop("velocity_params", None)
    return adata


def preprocess(adata: ad.AnnData, config: PreprocessConfig | None = None) -> ad.AnnData:
    """Preprocess raw spliced/unspliced counts for veloVI; returns a new AnnData.

    Input: ``adata`` (N cells × G genes) with count layers ``spliced``/``unspliced``; it is not
    modified. Output (N × G' genes kept): ``layers['Ms'|'Mu']`` min-max scaled per gene to
    [0, 1] (float32, dense), ``layers['Ms_raw'|'Mu_raw']`` the kNN means before scaling (same
    units as the normalised counts), ``layers['spliced'|'unspliced']`` (per-cell normalised
    counts when ``normalize``, float32), X (log1p normalised spliced when ``normalize``),
    ``obsm['X_pca']``, ``obsp['connectivities'|'distances']``, ``obsm['X_umap']`` (kept if
    present), ``var['velocity_gamma'|'velocity_r2'|'velocity_genes']`` and
    ``uns['velodash_preprocess']`` (genes left after each step, and the names each step of
    :data:`GENE_FILTER_STEPS` removed).

    Raises :class:`DatasetError` when the counts are invalid or fewer than ``min_cells`` cells /
    ``min_genes`` genes remain, naming the step and the option to relax.
    """
    config = config or PreprocessConfig()
    validate_counts(adata)
    if adata.n_obs < config.min_cells:
        raise DatasetError(
            f"The dataset has {adata.n_obs} cell(s); at least min_cells={config.min_cells} are "
            "needed for the kNN graph and moments. Use a larger dataset or lower min_cells."
        )
    data = adata.copy()
    data.strings_to_categoricals()
    data.X = _as_float32(data.X)
    for layer in ("spliced", "unspliced"):
        data.layers[layer] = _as_float32(data.layers[layer])
    stats = {"n_cells": data.n_obs, "n_genes_input": data.n_vars}
    dropped = dict.fromkeys(GENE_FILTER_STEPS, np.asarray([], dtype=object))
    if config.normalize:
        counts, removed = _filter_normalize_hvg(data, config)
        stats.update(counts)
        dropped.update(removed)
    else:
        stats.update(n_genes_filtered=data.n_vars, n_genes_hvg=data.n_vars)
    _require_genes(data, config, "input checks", "Use a dataset with more genes.")
    _embed_and_smooth(data, config)
    selected = data.var_names
    data = _scale_and_select(data, config)
    dropped["velocity_genes"] = _removed(selected, data.var_names)
    _require_genes(
        data,
        config,
        "velocity gene selection (steady-state r2 > 0, gamma > 0)",
        "Set filter_on_r2=False to keep all genes, or raise n_top_genes / lower min_shared_counts.",
    )
    stats["n_genes_velocity"] = data.n_vars
    data.uns[PREPROCESS_UNS_KEY] = {**stats, "dropped_genes": dropped}
    return data
