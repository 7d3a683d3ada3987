"""Velocity projected on the UMAP, per source, for the velocity page (memoised per results file).

* veloVI: ``obsm['velocity_umap']``, written by the fit.
* scVelo baseline: ``obsm['velocity_baseline_umap']`` when a fit wrote it, else projected here
  from ``layers['velocity_baseline']`` exactly as the fit projects veloVI's velocity (velocity
  graph over the kNN-of-kNN candidates, transition matrix with negative cosines:
  :mod:`core.graph`; embedding projection: :mod:`core.streams`), so both streams come from the
  same procedure.
* Their per-cell agreement (cosine of the two 2-D vectors) and the local confidence of a
  stream point (from extrinsic uncertainty of the nearest cells).

Everything runs on the CPU (the web process never initialises CUDA).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.spatial import cKDTree

from dashboard.data.results import Results

Source = Literal["velovi", "scvelo"]
SOURCES: dict[str, str] = {"velovi": "veloVI", "scvelo": "scVelo baseline"}
CONFIDENCE_NEIGHBORS = 30
#: Largest pair of layers (bytes) read whole to project the baseline of a file fitted before
#: velodash stored the projection (or with --skip graph).
PROJECT_LIMIT_BYTES = 256 << 20


def baseline_missing_reason(results: Results) -> str | None:
    """Why the scVelo baseline cannot be projected (None when it can)."""
    if "velocity_baseline_umap" in results.adata.obsm:
        return None
    if not results.has("baseline"):
        return results.missing_reason("baseline")
    if "distances" not in results.store.obsp_names:
        return (
            "The results file has no kNN graph (obsp['distances']), which projecting the scVelo "
            "baseline onto the UMAP needs; refit with a current velodash."
        )
    if 2 * 4 * results.n_cells * results.n_genes > PROJECT_LIMIT_BYTES:
        return (
            "The results file has no projected scVelo baseline (obsm['velocity_baseline_umap']),"
            " and projecting it here would read two whole layers of this large file; refit "
            "without --skip graph to store it."
        )
    return None


def _project_baseline(results: Results) -> np.ndarray:
    """The baseline's UMAP projection for results fitted before velodash stored it (small
    files of older versions: this reads the velocity genes of two layers whole)."""
    from core.graph import candidate_neighbors, transition_matrix, velocity_graph
    from core.streams import velocity_embedding

    genes = np.ones(results.n_genes, dtype=bool)
    if "velocity_genes" in results.adata.var:
        genes &= results.adata.var["velocity_genes"].to_numpy(dtype=bool)
    V = results.layer_columns("velocity_baseline", np.flatnonzero(genes))
    finite = np.isfinite(V).all(axis=0)
    X = results.layer_columns("Ms", np.flatnonzero(genes)[finite])
    vgraph = velocity_graph(
        V[:, finite], X, candidate_neighbors(results.obsp("distances")), device="cpu"
    )
    T = transition_matrix(vgraph, use_negative_cosines=True)
    return velocity_embedding(T, results.umap).astype(np.float32)


def projected_velocity(results: Results, source: Source = "velovi") -> np.ndarray | None:
    """float32 (N, 2) velocity of ``source`` on the UMAP, or None when it is unavailable (see
    :func:`baseline_missing_reason`; veloVI's needs ``obsm['velocity_umap']``)."""
    if source == "velovi":
        return results.velocity_umap
    if source != "scvelo":
        raise ValueError(f"unknown velocity source {source!r}; choose from {', '.join(SOURCES)}")
    if baseline_missing_reason(results) is not None:
        return None
    if "velocity_baseline_umap" in results.adata.obsm:
        stored = results.adata.obsm["velocity_baseline_umap"][:, :2]
        return np.ascontiguousarray(stored, dtype=np.float32)
    return results.memo(("baseline_umap",), lambda: _project_baseline(results), shared=True)


def agreement(results: Results) -> np.ndarray | None:
    """float32 (N,) cosine between veloVI's and the scVelo baseline's projected velocity per
    cell (NaN where either is zero or undefined); None when either projection is missing."""
    a, b = projected_velocity(results, "velovi"), projected_velocity(results, "scvelo")
    if a is None or b is None:
        return None

    def build() -> np.ndarray:
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        norm = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.where(norm > 0, (a64 * b64).sum(1) / norm, np.nan)
        return np.clip(cos, -1, 1).astype(np.float32)

    return results.memo(("agreement",), build, shared=True)


def local_uncertainty(
    cell_xy: np.ndarray, uncertainty: np.ndarray, points: np.ndarray, k: int = CONFIDENCE_NEIGHBORS
) -> np.ndarray:
    """Mean log10 uncertainty of the ``k`` cells nearest to each of ``points`` (M, 2) in the
    embedding (cells: xy (N, 2), uncertainty (N,) > 0; non-finite or non-positive cells are
    ignored): float64 (M,)."""
    valid = np.isfinite(uncertainty) & (uncertainty > 0) & np.isfinite(cell_xy).all(1)
    xy, logu = cell_xy[valid], np.log10(uncertainty[valid].astype(np.float64))
    k = int(min(k, len(xy)))
    if len(points) == 0 or k == 0:
        return np.full(len(points), np.nan)
    _, idx = cKDTree(xy).query(np.asarray(points, dtype=np.float64), k=k)
    return logu[idx.reshape(len(points), k)].mean(1)


def confidence_levels(results: Results, points: np.ndarray) -> np.ndarray | None:
    """Confidence class of each stream point (M, 2): 2 high, 1 medium, 0 low, by where its
    local extrinsic uncertainty (:func:`local_uncertainty`) falls among the tertiles of the same
    quantity at every cell; None without extrinsic uncertainty. int8 (M,)."""
    if not results.has("extrinsic"):
        return None
    unc = results.obs_numeric("extrinsic_uncertainty")

    def thresholds() -> np.ndarray:
        at_cells = local_uncertainty(results.umap, unc, results.umap)
        return np.nanpercentile(at_cells, [100 / 3, 200 / 3])

    low, high = results.memo(("confidence_tertiles",), thresholds)
    local = local_uncertainty(results.umap, unc, points)
    level = np.where(local > high, 0, np.where(local > low, 1, 2))
    return np.where(np.isfinite(local), level, 1).astype(np.int8)
