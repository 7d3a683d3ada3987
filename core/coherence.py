"""Velocity coherence (veloVI paper, Methods; reference notes §6).

A gene's velocity in a cell is coherent when it points the same way as the cell's expected
displacement under the velocity-induced transition matrix: per cell and gene the score is
Δ ⊙ V with Δ = T·Ms − Ms, averaged per cell type.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from core.groups import group_indicator, validate_group_codes


def velocity_coherence(
    T: sp.spmatrix,
    Ms: np.ndarray,
    V: np.ndarray,
    group_codes: np.ndarray,
    n_groups: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell and per-cell-type velocity coherence.

    ``T`` (N, N) is the transition matrix (as the paper notebook: ``use_negative_cosines=True``,
    ``self_transitions=True``); its diagonal is dropped and the rows are **not** renormalised,
    like the reference's ``T.setdiag(0)``. ``Ms`` (N, G) is the spliced moments the model saw,
    ``V`` (N, G) the velocity (same units as Ms per unit time). ``group_codes`` (N,) are integer
    cell-type codes in [0, n_groups) (-1 = unlabelled, ignored in the per-type mean).

    Returns ``per_cell`` (N, G) = (T·Ms − Ms) ⊙ V and ``per_type`` (G, C), the mean of
    ``per_cell`` over each type's cells (NaN for a type without cells). Positive means the
    velocity agrees in sign with the expected displacement.
    """
    # the inputs' precision (at least float32): the pipeline's float32 layers give one float32
    # N × G product instead of float64 temporaries
    dtype = np.result_type(np.asarray(Ms).dtype, np.asarray(V).dtype, np.float32)
    Ms = np.asarray(Ms, dtype=dtype)
    V = np.asarray(V, dtype=dtype)
    n_cells = Ms.shape[0]
    if Ms.ndim != 2 or V.shape != Ms.shape:
        raise ValueError(
            f"Ms and V must both be (cells, genes) arrays of equal shape, got {Ms.shape} and "
            f"{V.shape}; pass adata.layers['Ms'] and adata.layers['velocity']."
        )
    if T.shape != (n_cells, n_cells):
        raise ValueError(
            f"T has shape {T.shape}, expected ({n_cells}, {n_cells}); build it with "
            "core.graph.transition_matrix on the same cells."
        )
    codes = validate_group_codes(group_codes, n_cells, n_groups)

    off_diagonal = sp.csr_matrix(T, dtype=dtype, copy=True)
    off_diagonal.setdiag(0)
    off_diagonal.eliminate_zeros()
    per_cell = np.asarray(off_diagonal @ Ms)
    per_cell -= Ms
    per_cell *= V

    indicator = group_indicator(codes, n_groups)
    counts = np.asarray(indicator.sum(axis=0)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        per_type = np.asarray(indicator.T @ per_cell.astype(np.float64, copy=False)).T / counts
    return per_cell, per_type


def add_coherence_to_adata(adata: AnnData, per_cell: np.ndarray, per_type: np.ndarray) -> None:
    """Write ``layers['velocity_coherence']`` (N, G) and ``varm['coherence']`` (G, C), in place.

    The column order of ``varm['coherence']`` is the cell-type code order used to compute it
    (the pipeline records it in ``uns['velodash']['cell_types']``).
    """
    if per_cell.shape != adata.shape or per_type.shape[0] != adata.n_vars:
        raise ValueError(
            f"expected per_cell {adata.shape} and per_type ({adata.n_vars}, C); got "
            f"{per_cell.shape} and {per_type.shape}. Pass the output of velocity_coherence."
        )
    adata.layers["velocity_coherence"] = per_cell.astype(np.float32)
    adata.varm["coherence"] = per_type
