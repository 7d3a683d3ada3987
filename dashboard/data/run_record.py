"""What a fit recorded about itself, as the home page and the API show it: the training
history, the preprocessing's gene counts, the permutation statistics and a JSON summary. A
mixin of :class:`dashboard.data.results.Results`."""

from __future__ import annotations

from typing import Any

import numpy as np

from dashboard.data.contract import FEATURES


class RunRecord:
    """Accessors of ``uns['velodash']`` and ``uns['velodash_preprocess']`` (the host class
    provides ``adata``, ``info``, ``has``, ``missing_reason`` and the cell-type fields)."""

    def history(self) -> dict[str, np.ndarray] | None:
        """Per-epoch ``elbo_train`` and ``elbo_validation`` (float64 arrays) or None."""
        if not self.has("history"):
            return None
        hist = self.info["history"]
        return {
            k: np.asarray(hist[k], dtype=np.float64)
            for k in ("elbo_train", "elbo_validation")
            if k in hist
        }

    def preprocess_record(self) -> dict[str, Any]:
        """``uns['velodash_preprocess']``: genes left after each preprocessing step
        (``n_genes_input``, ``n_genes_filtered``, ``n_genes_hvg``, ``n_genes_velocity``) and,
        in fits since velodash recorded them, ``dropped_genes`` (step -> names it removed);
        {} when absent."""
        return dict(self.adata.uns.get("velodash_preprocess", {}))

    def permutation_stats(self) -> dict[str, float]:
        """``uns['velodash']['permutation']`` (skewness, kurtosis, …) as floats; {} if absent."""
        stats = self.info.get("permutation", {})
        return {str(k): float(v) for k, v in stats.items() if np.isscalar(v)}

    def summary(self) -> dict[str, Any]:
        """JSON-ready overview: sizes, cell types with counts, device, timings, params, absences."""
        counts = np.bincount(
            self.cell_type_codes[self.cell_type_codes >= 0], minlength=len(self.cell_types)
        )
        var = self.adata.var
        return {
            "n_cells": self.n_cells,
            "n_genes": self.n_genes,
            "n_velocity_genes": int(var["velocity_genes"].sum())
            if "velocity_genes" in var
            else None,
            "groupby": self.groupby,
            "cell_types": {name: int(n) for name, n in zip(self.cell_types, counts, strict=True)},
            "version": str(self.info.get("version", "")),
            "device": str(self.info.get("device", "")),
            "fingerprint": str(self.info.get("fingerprint", "")),
            "timings": _plain(self.info.get("timings", {})),
            "params": _plain(self.info.get("params", {})),
            "missing": {f: reason for f in FEATURES if (reason := self.missing_reason(f))},
        }


def _plain(value: Any) -> Any:
    """Convert numpy scalars/arrays inside nested dicts to JSON-ready Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
