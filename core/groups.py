"""Cell-type (group) codes: validation and the sparse one-hot indicator used by the analyses."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def validate_group_codes(group_codes: np.ndarray, n_cells: int, n_groups: int) -> np.ndarray:
    """Check integer group codes and return them as an int64 array of shape (N,).

    Codes must lie in ``[0, n_groups)``; ``-1`` marks an unlabelled cell (the pandas
    categorical convention for a missing label) that no group statistic uses.
    """
    codes = np.asarray(group_codes)
    if codes.shape != (n_cells,):
        raise ValueError(
            f"group_codes has shape {codes.shape} but the data have {n_cells} cells; pass one "
            "integer code per cell, e.g. adata.obs['clusters'].cat.codes.to_numpy()."
        )
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(
            f"group_codes must be integers, got dtype {codes.dtype}; convert labels with "
            "pandas.Categorical(labels).codes."
        )
    if n_groups < 1:
        raise ValueError(f"n_groups must be at least 1, got {n_groups}.")
    if codes.size and (codes.min() < -1 or codes.max() >= n_groups):
        raise ValueError(
            f"group_codes must lie in [0, {n_groups}) (or -1 for unlabelled cells), got range "
            f"[{codes.min()}, {codes.max()}]; check n_groups against the number of categories."
        )
    return codes.astype(np.int64, copy=False)


def group_indicator(codes: np.ndarray, n_groups: int) -> sp.csr_matrix:
    """Sparse one-hot matrix (N, C): entry (i, c) = 1 when cell i belongs to group c.

    Unlabelled cells (code -1) get an all-zero row. ``indicator.T @ X`` sums X (N, G) per group.
    """
    labelled = np.flatnonzero(codes >= 0)
    return sp.csr_matrix(
        (np.ones(labelled.size), (labelled, codes[labelled])), shape=(codes.size, n_groups)
    )
