"""Two fits of one dataset that differ only in the transcription rate: constant α, and the
time-dependent α(t) = α₁ − (α₁ − α)e^{−λt} of the veloVI paper (Fig. 5).

They are two results files (two jobs, one content key each): `DatasetRegistry.companion_fit`
finds the other one in the cache. `rate_pair` orders a fit and its companion as (constant,
time-dependent); `mse_comparison` is the paper's per-gene comparison (Fig. 5b): the log10 ratio
of each gene's fit MSE (``var['fit_mse']``: mean over cells of (ŝ − s)² + (û − u)², on the same
preprocessed moments in both fits) under the constant model over the time-dependent one, so a
positive value means α(t) fits that gene better.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dashboard.data.results import Results


def rate_pair(results: Results, companion: Results | None) -> tuple[Results | None, Results | None]:
    """(constant-rate fit, time-dependent fit) among `results` and its `companion` (either may
    be None when that fit is not there)."""
    fits = [r for r in (results, companion) if r is not None]
    constant = next((r for r in fits if not r.time_dependent), None)
    time_dependent = next((r for r in fits if r.time_dependent), None)
    return constant, time_dependent


def mse_comparison(constant: Results, time_dependent: Results) -> pd.DataFrame:
    """Per gene present in both fits (the constant fit's order): ``gene``, ``mse_constant``,
    ``mse_time_dependent`` and ``log10_ratio`` = log10(constant / time-dependent), sorted by
    ``log10_ratio`` descending (the genes α(t) helps most first); genes whose MSE is missing
    or not positive in either fit are left out."""

    def build() -> pd.DataFrame:
        names = [g for g in constant.gene_names if g in time_dependent.gene_index]
        index_c = [constant.gene_index[g] for g in names]
        index_t = [time_dependent.gene_index[g] for g in names]
        mse_c = _mse(constant)[index_c]
        mse_t = _mse(time_dependent)[index_t]
        keep = (mse_c > 0) & (mse_t > 0)
        table = pd.DataFrame(
            {
                "gene": np.asarray(names, dtype=object)[keep],
                "mse_constant": mse_c[keep],
                "mse_time_dependent": mse_t[keep],
            }
        )
        table["log10_ratio"] = np.log10(table["mse_constant"] / table["mse_time_dependent"])
        return table.sort_values("log10_ratio", ascending=False, kind="stable").reset_index(
            drop=True
        )

    return constant.memo(("mse_comparison", time_dependent.key), build)


def _mse(results: Results) -> np.ndarray:
    """``var['fit_mse']`` as float64 (NaN where absent)."""
    var = results.adata.var
    if "fit_mse" not in var:
        return np.full(results.n_genes, np.nan)
    return var["fit_mse"].to_numpy(dtype=np.float64)
