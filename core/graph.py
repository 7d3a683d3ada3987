"""Velocity graph and transition matrix, equal to scVelo's.

scVelo (``scv.tl.velocity_graph``) loops over cells in Python; here the cosines of all cells
against their kNN-of-kNN candidates are one gather plus one batched matmul per chunk of cells
(torch, so it runs on a GPU when there is one), and a posterior's S velocity samples share the
candidate pattern and the normalised displacements. ``approx=True`` computes the cosines in
scVelo's 30-component PCA of X (:class:`PcaSpace`), as the reference's extrinsic uncertainty
does; the default is exact cosines over genes, as ``scv.tl.velocity_graph``'s. What the graph
means in an embedding (the projected velocities, their grid and streams) is :mod:`core.streams`.
Deliberate differences from scVelo:

- ``random_neighbors_at_max`` (off by default in scVelo) and ``tkey`` are not offered.
- ``add_velocity_graph`` raises when the ``xkey`` layer is missing instead of silently using
  ``spliced``, and never recomputes neighbours (it asks for them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from anndata import AnnData

from core.streams import velocity_embedding

MAX_CHUNK_BYTES = 256 * 2**20
"""Upper bound on the gathered displacement block (cells × candidates × genes, float32)."""
CPU_CHUNK_BYTES = 4 * 2**20
"""The same on the CPU, where blocks that stay in cache are faster than big ones."""


#: scVelo's ``approx=True`` computes cosines in this many principal components of X ...
APPROX_COMPONENTS = 30
#: ... when X has more genes than this (with fewer it keeps the genes).
APPROX_MIN_GENES = 100


@dataclass(frozen=True)
class PcaSpace:
    """scVelo's ``approx=True`` space: the states ``X_pca`` (N, C) and the loadings
    ``components`` (C, G) of a C-component PCA of X, float32 tensors on one device."""

    states: torch.Tensor
    components: torch.Tensor

    def project(self, V: torch.Tensor) -> torch.Tensor:
        """Velocity samples (S, N, G) in the space, (S, N, C), as scVelo: (V − its mean over
        cells)·componentsᵀ, with the cells whose velocity sums to 0 set to 0."""
        return self.finish(V @ self.components.T, V.mean(dim=1), V.sum(dim=-1) == 0)

    def finish(
        self, projected: torch.Tensor, mean: torch.Tensor, zero: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`project` from its parts, for samples seen a chunk of cells at a time:
        ``projected`` = V·componentsᵀ (S, N, C), ``mean`` (S, G) V's mean over cells, ``zero``
        (S, N) the cells whose velocity sums to 0. Writes into ``projected``."""
        projected -= (mean @ self.components.T).unsqueeze(1)
        return projected.masked_fill_(zero.unsqueeze(-1), 0.0)


def pca_space(X: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> PcaSpace | None:
    """scVelo's ``velocity_graph(approx=True)`` space of the states X (N, G): a
    ``APPROX_COMPONENTS``-component arpack PCA by scanpy's ``pca``, called as scVelo calls it
    (so the same components); None when X has at most ``APPROX_MIN_GENES`` genes, where scVelo
    keeps the genes."""
    X = np.asarray(X.cpu() if isinstance(X, torch.Tensor) else X, dtype=np.float32)
    if X.shape[1] <= APPROX_MIN_GENES:
        return None
    from scanpy.preprocessing import pca

    n_comps = min(APPROX_COMPONENTS, min(X.shape) - 1)
    X_pca, components, _, _ = pca(X, n_comps=n_comps, svd_solver="arpack", return_info=True)
    return PcaSpace(
        *(
            torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32), device=device)
            for a in (X_pca, components)
        )
    )


@dataclass
class VelocityGraph:
    """Cosines of velocities with candidate displacements, split like scVelo.

    ``graph`` (N×N CSR float32) holds the positive cosines in (0, 1], ``graph_neg`` the negative
    ones in [-1, 0); zeros are not stored. ``self_transition`` (N,) is scVelo's
    ``clip(P98(c) - c, 0, 1)`` with c the row maximum of ``graph``. ``candidates`` is the N×N
    boolean pattern the cosines were evaluated on (reuse it for further graphs).
    """

    graph: sp.csr_matrix
    graph_neg: sp.csr_matrix
    self_transition: np.ndarray
    candidates: sp.csr_matrix


def candidate_neighbors(
    adata_or_distances: AnnData | sp.spmatrix, n_recurse_neighbors: int = 2
) -> sp.csr_matrix:
    """Boolean N×N pattern of the cells each cell's velocity is compared with, as scVelo.

    Takes ``adata.obsp['distances']`` (or ``uns['neighbors']['distances']``, or the sparse
    distance matrix itself). Like scVelo's ``get_indices`` every row is cut to the smallest
    neighbour count in the graph (keeping the nearest), then the candidates of cell i are i, its
    neighbours, and their neighbours, recursively ``n_recurse_neighbors`` times (scVelo's default
    2 for ``mode_neighbors='distances'``): the pattern of (I + A)^r.
    """
    distances = _distances(adata_or_distances)
    if n_recurse_neighbors < 1:
        raise ValueError(f"n_recurse_neighbors must be >= 1, got {n_recurse_neighbors}.")
    knn = _truncated_knn(distances)
    step = (knn + sp.identity(knn.shape[0], dtype=np.int32, format="csr")).astype(bool)
    pattern = step
    for _ in range(n_recurse_neighbors - 1):
        pattern = (pattern @ step).astype(bool)
    pattern = pattern.tocsr()
    pattern.sort_indices()
    return pattern


def velocity_graph(
    V: np.ndarray | torch.Tensor,
    X: np.ndarray | torch.Tensor,
    candidates: sp.csr_matrix,
    sqrt_transform: bool = False,
    device: str | torch.device | None = None,
    approx: bool = False,
) -> VelocityGraph:
    """Velocity graph of one velocity field V (N, G) against states X (N, G), as scVelo.

    π_ij = cos(dX_ij − mean_g dX_ij, V_i − mean_g V_i) with dX_ij = X_j − X_i over the
    ``candidates`` (from :func:`candidate_neighbors`); with ``sqrt_transform`` V and dX are first
    mapped to sign·sqrt|·| (scVelo's default for stochastic velocities). Undefined cosines (zero
    velocity, identical cells, the cell itself) are 0 and not stored, as in scVelo. ``approx``:
    cosines in scVelo's PCA space of X instead of over genes (:func:`pca_space`). ``device``:
    where to compute (default: V's device if it is a tensor, else CUDA when available, else CPU).
    """
    V = V.unsqueeze(0) if isinstance(V, torch.Tensor) else np.asarray(V)[None]
    return velocity_graph_samples(V, X, candidates, sqrt_transform, device, approx)[0]


def velocity_graph_samples(
    V: np.ndarray | torch.Tensor,
    X: np.ndarray | torch.Tensor,
    candidates: sp.csr_matrix,
    sqrt_transform: bool = False,
    device: str | torch.device | None = None,
    approx: bool = False,
) -> list[VelocityGraph]:
    """S velocity graphs, one per velocity sample V (S, N, G), on shared X (N, G) and candidates.

    Same cosines as :func:`velocity_graph`, computed by :func:`candidate_cosines`.
    """
    dev = _device(V, device)
    V = torch.as_tensor(V, dtype=torch.float32, device=dev)
    # row-major: the cosines gather whole rows of X (same values, several times faster)
    X = torch.as_tensor(X, dtype=torch.float32, device=dev).contiguous()
    if V.ndim != 3 or X.ndim != 2 or V.shape[1:] != X.shape:
        raise ValueError(
            f"expected V (samples, cells, genes) and X (cells, genes) of matching shape; got V "
            f"{tuple(V.shape)} and X {tuple(X.shape)}. Subset both to the same genes and cells."
        )
    if approx and (space := pca_space(X, dev)) is not None:
        V, X = space.project(V), space.states
    n_cells = V.shape[1]
    candidates = sorted_candidates(candidates, n_cells)
    cosines = candidate_cosines(V, X, candidates, np.arange(n_cells), sqrt_transform)
    return [_split_graph(values, candidates) for values in cosines.cpu().numpy()]


def sorted_candidates(candidates: sp.spmatrix, n_cells: int) -> sp.csr_matrix:
    """``candidates`` as an N×N CSR matrix with sorted indices (raises on a wrong shape)."""
    if candidates.shape != (n_cells, n_cells):
        raise ValueError(
            f"candidates has shape {candidates.shape}, expected {(n_cells, n_cells)}; build it "
            "with candidate_neighbors on the same cells."
        )
    if candidates.format != "csr" or not candidates.has_sorted_indices:
        candidates = sp.csr_matrix(candidates, copy=True)
        candidates.sort_indices()
    return candidates


def candidate_cosines(
    V: torch.Tensor,
    X: torch.Tensor,
    candidates: sp.csr_matrix,
    rows: np.ndarray,
    sqrt_transform: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cosines of S velocity samples of some cells with their candidate displacements.

    ``V`` (S, n, G): the samples of the cells ``rows`` (n,); ``X`` (N, G) the states of all
    cells; ``candidates`` sorted CSR (:func:`sorted_candidates`). Writes the centred cosines
    (scVelo's ``cosine_correlation``; 0 where undefined: zero velocity, identical cells, the
    cell itself) at the rows' stored entries of ``out`` (S, nnz), aligned with
    ``candidates.indices``/``data``, and returns it (None: a new zero array; other entries are
    left as they are). The candidate gather and the centred, normalised displacements are
    shared by the S samples (one batched matmul); rows with similar candidate counts are
    processed together in blocks that stay under ``CPU_CHUNK_BYTES`` (CPU) or
    ``MAX_CHUNK_BYTES`` (GPU), each written straight into ``out`` (no second (S, nnz) array).
    """
    dev = V.device
    n_genes = X.shape[1]
    if out is None:
        out = V.new_zeros((V.shape[0], candidates.nnz))
    V_unit = _unit_rows(_centre(_signed_sqrt(V) if sqrt_transform else V))
    V_unit = V_unit.permute(1, 2, 0).contiguous()  # (n, G, S)
    counts = np.diff(candidates.indptr)[rows]
    # rows with similar counts share a block; widest first, so that later (smaller) blocks reuse
    # the memory of earlier ones instead of fragmenting the heap
    order = np.argsort(-counts, kind="stable")
    budget = MAX_CHUNK_BYTES if dev.type == "cuda" else CPU_CHUNK_BYTES
    per_block = max(1, budget // (4 * n_genes * max(1, int(counts.max(initial=0)))))
    for start in range(0, len(rows), per_block):
        local = order[start : start + per_block]
        block_rows = rows[local]
        cols, positions, valid = _padded_candidates(candidates, block_rows)
        dX = X[torch.as_tensor(cols, device=dev)]  # (n, width, G)
        dX -= X[torch.as_tensor(block_rows, device=dev), None, :]
        if sqrt_transform:
            dX = _signed_sqrt(dX)
        dX -= dX.mean(dim=-1, keepdim=True)
        norm = torch.linalg.vector_norm(dX, dim=-1, keepdim=True)
        block = torch.bmm(dX, V_unit[torch.as_tensor(local, device=dev)]) / norm  # (n, w, S)
        values = block[torch.as_tensor(valid, device=dev)].T.nan_to_num_(nan=0.0)
        out[:, torch.as_tensor(positions[valid], device=dev)] = values
        del dX, norm, block, values
    return out


def transition_matrix(
    vgraph: VelocityGraph,
    scale: float = 10.0,
    self_transitions: bool = True,
    use_negative_cosines: bool = False,
    perc: float | None = None,
    threshold: float | None = None,
    backward: bool = False,
) -> sp.csr_matrix:
    """Transition matrix T (N×N CSR), equal to ``scv.utils.get_transition_matrix``.

    With π the signed cosines (``graph + graph_neg``) and, if ``self_transitions``, the diagonal
    set to scVelo's self-transition confidence: T_ij = exp(scale·π_ij), or, with
    ``use_negative_cosines``, sign(π_ij)·(exp(scale·|π_ij|) − 1) (negative cosines become negative
    weights). Entries below ``threshold`` (or the ``perc`` percentile of the entries) are dropped,
    ``backward`` transposes, and rows are normalised by Σ_j |T_ij|.
    """
    graph = sp.csr_matrix(vgraph.graph, dtype=np.float64)
    cosines = graph + sp.csr_matrix(vgraph.graph_neg, dtype=np.float64)
    if self_transitions:
        cosines = cosines - sp.diags(cosines.diagonal()) + sp.diags(_self_transition(graph))
    T = sp.csr_matrix(cosines)
    T.eliminate_zeros()
    if use_negative_cosines:
        T.data = np.sign(T.data) * np.expm1(scale * np.abs(T.data))
    else:
        T.data = np.exp(scale * T.data)
    if perc is not None or threshold is not None:
        cut = np.percentile(T.data, perc) if threshold is None else threshold
        T.data[T.data < cut] = 0
        T.eliminate_zeros()
    if backward:
        T = T.T.tocsr()
    row_abs = np.asarray(abs(T).sum(axis=1)).ravel()
    inverse = np.divide(1.0, row_abs, out=np.zeros_like(row_abs), where=row_abs > 0)
    return sp.csr_matrix(sp.diags(inverse) @ T)


def add_velocity_graph(
    adata: AnnData,
    vkey: str = "velocity",
    xkey: str = "Ms",
    basis: str | None = "umap",
    sqrt_transform: bool | None = None,
    device: str | torch.device | None = None,
) -> VelocityGraph:
    """``scv.tl.velocity_graph`` + ``scv.tl.velocity_embedding`` on ``adata``, in place.

    Genes: ``var[f'{vkey}_genes']`` when present, minus genes whose velocity has NaNs (as
    scVelo). ``sqrt_transform=None`` means True iff ``uns[f'{vkey}_params']['mode']`` is
    ``'stochastic'``. Writes ``uns[f'{vkey}_graph']``, ``uns[f'{vkey}_graph_neg']``,
    ``obs[f'{vkey}_self_transition']`` and ``uns[f'{vkey}_params']`` (merged; ``mode`` kept),
    and, when ``basis`` is given, ``obsm[f'{vkey}_{basis}']`` from the transition matrix with
    negative cosines (scVelo's embedding default). Returns the :class:`VelocityGraph`, whose
    ``candidates`` can be reused for sampled graphs.
    """
    for key in (vkey, xkey):
        if key not in adata.layers:
            raise KeyError(
                f"layer {key!r} not found (layers: {sorted(adata.layers)}); compute the "
                "velocities/moments first or pass vkey/xkey naming existing layers."
            )
    if basis is not None and f"X_{basis}" not in adata.obsm:
        raise KeyError(
            f"embedding 'X_{basis}' not found in obsm ({sorted(adata.obsm)}); compute it first "
            "(e.g. scanpy.tl.umap) or pass basis=None to skip the projection."
        )
    genes = np.ones(adata.n_vars, dtype=bool)
    if f"{vkey}_genes" in adata.var:
        genes &= adata.var[f"{vkey}_genes"].to_numpy(dtype=bool)
    V, X = _dense(adata.layers[vkey]), _dense(adata.layers[xkey])
    genes &= ~np.isnan(V.sum(axis=0))
    if not genes.all():  # else the layers themselves: no (N, G) copies
        V, X = V[:, genes], X[:, genes]
    params = dict(adata.uns.get(f"{vkey}_params", {}))
    if sqrt_transform is None:
        sqrt_transform = params.get("mode") == "stochastic"
    candidates = candidate_neighbors(adata)
    vgraph = velocity_graph(V, X, candidates, sqrt_transform, device)
    adata.uns[f"{vkey}_graph"] = vgraph.graph
    adata.uns[f"{vkey}_graph_neg"] = vgraph.graph_neg
    adata.obs[f"{vkey}_self_transition"] = vgraph.self_transition
    params.pop("embeddings", None)
    params.update(mode_neighbors="distances", n_recurse_neighbors=2)
    if basis is not None:
        T = transition_matrix(vgraph, use_negative_cosines=True)
        adata.obsm[f"{vkey}_{basis}"] = velocity_embedding(T, adata.obsm[f"X_{basis}"])
        params["embeddings"] = [basis]
    adata.uns[f"{vkey}_params"] = params
    return vgraph


def _distances(adata_or_distances: AnnData | sp.spmatrix) -> sp.csr_matrix:
    """The kNN distance matrix (N×N CSR) from an AnnData or the matrix itself."""
    if isinstance(adata_or_distances, AnnData):
        adata = adata_or_distances
        if "distances" in adata.obsp:
            distances = adata.obsp["distances"]
        elif "distances" in adata.uns.get("neighbors", {}):
            distances = adata.uns["neighbors"]["distances"]
        else:
            raise KeyError(
                "no kNN graph: adata.obsp['distances'] is missing; compute neighbours first "
                "(scanpy.pp.neighbors or core.preprocess.preprocess)."
            )
    else:
        distances = adata_or_distances
    if not sp.issparse(distances) or distances.shape[0] != distances.shape[1]:
        raise ValueError(
            "distances must be a square sparse kNN distance matrix (cells × cells), as "
            "scanpy.pp.neighbors writes to adata.obsp['distances']."
        )
    return sp.csr_matrix(distances)


def _truncated_knn(distances: sp.csr_matrix) -> sp.csr_matrix:
    """0/1 matrix of each row's k nearest stored neighbours, k = the smallest row count.

    scVelo's ``get_indices``: stored zero distances count as neighbours (it adds 1e-6).
    """
    counts = np.diff(distances.indptr)
    k = int(counts.min())
    if k == 0:
        raise ValueError(
            "your neighbour graph seems to be corrupted (a cell has no neighbours, e.g. after "
            "subsetting); recompute it with scanpy.pp.neighbors."
        )
    rows = np.repeat(np.arange(distances.shape[0]), counts)
    order = np.lexsort((distances.data, rows))
    rank = np.arange(distances.nnz) - distances.indptr[rows]
    keep = order[rank < k]
    data = np.ones(keep.size, dtype=np.int32)
    return sp.csr_matrix((data, (rows[keep], distances.indices[keep])), shape=distances.shape)


def _padded_candidates(
    candidates: sp.csr_matrix, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidates of ``rows`` (n,) padded to the longest: columns (n, width) (padding: the
    row itself), their positions in ``candidates.indices`` (n, width) and the validity mask."""
    first = candidates.indptr[rows]
    counts = candidates.indptr[rows + 1] - first
    width = max(1, int(counts.max(initial=0)))
    valid = np.arange(width)[None, :] < counts[:, None]
    positions = first[:, None] + np.arange(width)[None, :]
    cols = np.repeat(rows[:, None], width, axis=1)
    cols[valid] = candidates.indices[positions[valid]]
    return cols, positions, valid


def _split_graph(values: np.ndarray, candidates: sp.csr_matrix) -> VelocityGraph:
    """Positive/negative graphs and self-transition from cosines aligned with ``candidates``."""

    def part(lo: float, hi: float) -> sp.csr_matrix:
        data = np.clip(values, lo, hi)
        matrix = sp.csr_matrix(
            (data, candidates.indices, candidates.indptr), shape=candidates.shape, copy=True
        )
        matrix.eliminate_zeros()
        return matrix

    graph = part(0.0, 1.0)
    return VelocityGraph(graph, part(-1.0, 0.0), _self_transition(graph), candidates)


def _self_transition(graph: sp.csr_matrix) -> np.ndarray:
    """scVelo's self-transition confidence clip(P98(c) − c, 0, 1), c = row max of ``graph``."""
    confidence = graph.max(axis=1).toarray().ravel()
    return np.clip(np.percentile(confidence, 98) - confidence, 0, 1)


def _device(V: np.ndarray | torch.Tensor, device: str | torch.device | None) -> torch.device:
    """Explicit device, else V's device for a tensor, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    if isinstance(V, torch.Tensor):
        return V.device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _signed_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sign(x)·sqrt|x|, scVelo's variance-stabilising transform."""
    return torch.sign(x) * torch.sqrt(torch.abs(x))


def _centre(x: torch.Tensor) -> torch.Tensor:
    """Subtract the mean over the last (gene) axis."""
    return x - x.mean(dim=-1, keepdim=True)


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Scale the last axis to unit L2 norm; all-zero rows stay zero (one new tensor)."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x / torch.where(norm > 0, norm, torch.ones_like(norm))


def _dense(layer: np.ndarray | sp.spmatrix) -> np.ndarray:
    """A layer as a dense float32 array."""
    return np.asarray(layer.toarray() if sp.issparse(layer) else layer, dtype=np.float32)
