"""Data access for the dashboard: open a velodash results file once and serve what figures need.

A results file is immutable and content-addressed, so :func:`load_results` memoises the opened
:class:`Results` per ``(path, mtime, size)``. It is read lazily (:mod:`dashboard.data.store`):
the per-cell arrays once, a gene's layers when the gene is asked for, whole layers only as
streams of gene blocks (:meth:`Results.layer_blocks`). Each :class:`Results` memoises derived data
(gene table, per-gene arrays, stream geometry…) in a small bounded LRU (:meth:`Results.memo`).
Nothing here is per-user state: two web workers opening the same file agree on everything.

Accessors of an absent optional feature of the results contract (`dashboard.data.contract`)
return ``None`` and :meth:`Results.missing_reason` explains why, so figures can show an empty
state instead of failing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypeVar

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from core.results_io import gene_blocks
from core.stage_files import BASE_FILE, stages_dir
from dashboard.data import view_cache
from dashboard.data.contract import (
    FEATURE_STAGES,
    FEATURES,
    STATE_ASSIGNMENT,
    ResultsError,
    has_slot,
    validate_results,
)
from dashboard.data.datasets import fingerprint
from dashboard.data.gene_lookup import GeneLookup
from dashboard.data.run_record import RunRecord
from dashboard.data.stages import (
    StageReport,
    is_base_file,
    report_of_results,
    stage_files,
    stage_report,
)
from dashboard.data.store import MemoryStore, ResultsStore
from dashboard.data.values import ColorValues, GeneArrays, obs_title

T = TypeVar("T")

SINGLE_GROUP = "all cells"


def _scalar(var: pd.DataFrame, key: str, j: int) -> float | None:
    return float(var[key].iloc[j]) if key in var else None


class Results(GeneLookup, RunRecord):
    """A validated, read-only results file with typed, memoised accessors for the figures.

    :attr:`adata` holds obs, var, obsm, varm and uns; the layers are read through
    :attr:`store` (:meth:`layer_columns`, :meth:`layer_blocks`, :meth:`gene_arrays`)."""

    MEMO_SIZE = 128

    def __init__(
        self,
        source: ad.AnnData | ResultsStore,
        key: str | None = None,
        path: Path | None = None,
        stages: Sequence[Path] = (),
    ):
        """Wrap an AnnData in memory or an opened :class:`ResultsStore` (validated); ``key``
        identifies its content for caches (default: the object's id); ``path`` is its file
        and ``stages`` the stage files read with it (a fit still running)."""
        self.store = MemoryStore(source) if isinstance(source, ad.AnnData) else source
        self.adata = self.store.adata
        validate_results(self.adata, self.store.layers)
        self.path = path
        self.stages = list(stages)
        self.key = key or f"memory:{id(source)}"
        self._memo: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Results({self.key!r}, {self.n_cells} cells × {self.n_genes} genes)"

    # -- memoisation -------------------------------------------------------------------------
    def memo(self, key: Hashable, compute: Callable[[], T], shared: bool = False) -> T:
        """``compute()`` once per ``key`` for this file (bounded LRU of ``MEMO_SIZE`` entries);
        `shared` views also go through the machine's view cache (`view_cache`), so other
        processes and the next start read them instead of computing them again."""
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        value = view_cache.get_or_compute(self.content_key, key, compute) if shared else compute()
        with self._lock:
            self._memo[key] = value
            while len(self._memo) > self.MEMO_SIZE:
                self._memo.popitem(last=False)
        return value

    # -- optional features -------------------------------------------------------------------
    def has(self, feature: str) -> bool:
        """Whether every slot of optional ``feature`` (a key of :data:`FEATURES`) is present."""
        slots, _ = FEATURES[feature]
        return all(has_slot(self.adata, s, self.store.layers) for s in slots)

    def missing_reason(self, feature: str) -> str | None:
        """None when ``feature`` is present, else a sentence for the figure's empty state: its
        stage is still computing (with the time left), failed or never ran, or the fit left it
        out."""
        if self.has(feature):
            return None
        report, stage = self.stage_report(), FEATURE_STAGES.get(feature)
        if report is not None and stage is not None and (reason := report.reason(stage)):
            return reason
        return FEATURES[feature][1].capitalize() + "."

    def stage_report(self) -> StageReport | None:
        """How the fit's stages stand: read afresh from the fit's status while it lands
        stages (``self.path`` is its first landing), the failed stage a finished file
        records, or None for a complete file."""
        if self.path is not None and is_base_file(self.path):
            return stage_report(self.path)
        return report_of_results(self.info)

    # -- cells -------------------------------------------------------------------------------
    @property
    def n_cells(self) -> int:
        return self.adata.n_obs

    @property
    def n_genes(self) -> int:
        return self.adata.n_vars

    @property
    def info(self) -> dict[str, Any]:
        """``uns['velodash']`` (version, params, groupby, cell_types, device, timings, …)."""
        return self.adata.uns["velodash"]

    @cached_property
    def content_key(self) -> str | None:
        """What names this file's content in every process and after restarts: the sha256 of
        its bytes (read once per file version and process: `datasets.fingerprint`), joined
        with its landed stage files' while its fit runs. None for results in memory (their
        views stay in this process)."""
        if self.path is None:
            return None
        return "+".join(fingerprint(p) for p in (self.path, *self.stages))

    @property
    def time_dependent(self) -> bool:
        """Whether the fit used the time-dependent transcription rate α(t) (its α₁ and λ are
        ``var['fit_alpha_1']`` and ``var['fit_lambda_alpha']``)."""
        return bool(self.info.get("params", {}).get("time_dependent_rate", False))

    @cached_property
    def groupby(self) -> str | None:
        """The obs column holding cell types, or None when the fit had no grouping."""
        key = self.info.get("groupby")
        return str(key) if key and key in self.adata.obs else None

    @cached_property
    def cell_types(self) -> list[str]:
        """Cell-type names in the fit's order (``uns['velodash']['cell_types']``)."""
        if self.groupby is None:
            return [SINGLE_GROUP]
        stored = self.info.get("cell_types")
        if stored is not None and len(stored):
            return [str(c) for c in stored]
        return [str(c) for c in pd.Categorical(self.adata.obs[self.groupby]).categories]

    @cached_property
    def cell_type_codes(self) -> np.ndarray:
        """int16 (N,) index of each cell's type into :attr:`cell_types` (-1 = not listed)."""
        if self.groupby is None:
            return np.zeros(self.n_cells, dtype=np.int16)
        labels = self.adata.obs[self.groupby].astype(str)
        return pd.Categorical(labels, categories=self.cell_types).codes.astype(np.int16)

    @cached_property
    def cell_ids(self) -> np.ndarray:
        """Cell names (obs_names) as a str array (N,)."""
        return np.asarray(self.adata.obs_names, dtype=str)

    @cached_property
    def umap(self) -> np.ndarray:
        """float32 (N, 2) UMAP coordinates."""
        return np.ascontiguousarray(self.adata.obsm["X_umap"][:, :2], dtype=np.float32)

    @cached_property
    def velocity_umap(self) -> np.ndarray | None:
        """float32 (N, 2) velocity projected on the UMAP, or None (feature ``streams``)."""
        if not self.has("streams"):
            return None
        return np.ascontiguousarray(self.adata.obsm["velocity_umap"][:, :2], dtype=np.float32)

    @cached_property
    def latent_time(self) -> np.ndarray:
        """float32 (N,) cell-level latent time in [0, 1]."""
        return self.obs_numeric("latent_time")

    def obs_numeric(self, key: str) -> np.ndarray | None:
        """float32 (N,) values of a numeric obs column, or None when absent."""
        if key not in self.adata.obs:
            return None
        return np.asarray(self.adata.obs[key], dtype=np.float32)

    def obs_columns(self) -> dict[str, Literal["categorical", "numeric"]]:
        """Colourable obs columns (categorical or numeric, in obs order) and their kind."""
        out: dict[str, Literal["categorical", "numeric"]] = {}
        for name, col in self.adata.obs.items():
            if isinstance(col.dtype, pd.CategoricalDtype) or col.dtype == bool:
                out[str(name)] = "categorical"
            elif pd.api.types.is_numeric_dtype(col):
                out[str(name)] = "numeric"
        return out

    def color_values(self, key: str, layer: str = "Ms") -> ColorValues:
        """Values to colour cells by: an obs column, else a gene's ``layer`` values.

        Raises KeyError naming the problem when ``key`` is neither a colourable obs column
        nor a gene.
        """
        return self.memo(("color", key, layer), lambda: self._color_values(key, layer))

    def _color_values(self, key: str, layer: str) -> ColorValues:
        kind = self.obs_columns().get(key)
        if kind == "categorical":
            if key == self.groupby:
                return ColorValues(key, key, "categorical", self.cell_type_codes, self.cell_types)
            cat = pd.Categorical(self.adata.obs[key].astype(str))
            return ColorValues(
                key,
                key,
                "categorical",
                cat.codes.astype(np.int16),
                [str(c) for c in cat.categories],
            )
        if kind == "numeric":
            return ColorValues(key, obs_title(key), "numeric", self.obs_numeric(key))
        if key in self.gene_index:
            values = self.store.column(layer, self.gene_index[key])
            return ColorValues(key, f"{key} ({layer})", "numeric", values)
        raise KeyError(
            f"cannot colour by {key!r}: it is neither a gene name nor an obs column "
            f"({', '.join(self.obs_columns())})"
        )

    # -- genes -------------------------------------------------------------------------------
    def gene_arrays(self, gene: str) -> GeneArrays:
        """One gene's per-cell arrays and fit (memoised per gene)."""
        return self.memo(("gene", gene), lambda: self._gene_arrays(gene))

    def _gene_arrays(self, gene: str) -> GeneArrays:
        j = self.resolve_gene(gene)
        var, column = self.adata.var, self.store.column

        def optional(name: str) -> np.ndarray | None:
            return column(name, j) if self.has_layer(name) else None

        state = column(STATE_ASSIGNMENT, j).astype(np.int8) if self.has("states") else None
        return GeneArrays(
            gene=gene,
            index=j,
            ms=column("Ms", j),
            mu=column("Mu", j),
            velocity=column("velocity", j),
            fit_t=column("fit_t", j),
            latent_time=self.latent_time,
            alpha=float(var["fit_alpha"].iloc[j]),
            beta=float(var["fit_beta"].iloc[j]),
            gamma=float(var["fit_gamma"].iloc[j]),
            t_switch=float(var["fit_t_"].iloc[j]),
            scaling=_scalar(var, "fit_scaling", j) or 1.0,
            alpha_1=_scalar(var, "fit_alpha_1", j),
            lambda_alpha=(_scalar(var, "fit_lambda_alpha", j) or 0.0)
            if self.time_dependent
            else 0.0,
            fit_s=optional("fit_s"),
            fit_u=optional("fit_u"),
            velocity_var=optional("velocity_var"),
            baseline=optional("velocity_baseline"),
            state=state,
            likelihood=_scalar(var, "fit_likelihood", j),
            mse=_scalar(var, "fit_mse", j),
        )

    def gene_table(self) -> pd.DataFrame:
        """One row per gene (file order), for the sortable gene table.

        Columns: ``gene``, ``velocity_gene``, ``permutation_score``, ``fit_mse``,
        ``fit_likelihood``, ``alpha``, ``beta``, ``gamma``, ``switch_time`` (fit_t_), ``alpha_1``
        and ``lambda_alpha`` (time-dependent fits),
        ``coherence_<cell type>`` (one per type), ``baseline_agreement``, ``baseline_pearson``;
        columns of absent optional slots are left out.
        """
        return self.memo(("gene_table",), self._gene_table, shared=True)

    def _gene_table(self) -> pd.DataFrame:
        var = self.adata.var
        renames = {
            "velocity_genes": "velocity_gene",
            "permutation_score": "permutation_score",
            "fit_mse": "fit_mse",
            "fit_likelihood": "fit_likelihood",
            "fit_alpha": "alpha",
            "fit_beta": "beta",
            "fit_gamma": "gamma",
            "fit_t_": "switch_time",
        }
        if self.time_dependent:
            renames |= {"fit_alpha_1": "alpha_1", "fit_lambda_alpha": "lambda_alpha"}
        table = pd.DataFrame({"gene": self.gene_names})
        for src, dst in renames.items():
            if src in var:
                table[dst] = var[src].to_numpy()
        if self.has("coherence"):
            coherence = np.asarray(self.adata.varm["coherence"], dtype=np.float64)
            for c, name in enumerate(self.cell_types):
                table[f"coherence_{name}"] = coherence[:, c]
        for src, dst in (
            ("baseline_sign_agreement", "baseline_agreement"),
            ("baseline_pearson", "baseline_pearson"),
        ):
            if src in var:
                table[dst] = var[src].to_numpy()
        return table

    # -- layers (read from disk; never a whole layer at once) -------------------------------
    def has_layer(self, key: str) -> bool:
        """Whether the file has ``layers[key]``."""
        return key in self.store.layers

    def layer_columns(self, key: str, genes: slice | Sequence[int]) -> np.ndarray:
        """float32 (N, k) ``layers[key]`` of ``genes`` (a slice or column indices); raises
        KeyError for an absent layer."""
        return self.store.columns(key, genes)

    def layer_blocks(self, *keys: str) -> Iterator[tuple[slice, list[np.ndarray]]]:
        """``(genes, [values of each key])`` over all genes, one block of genes at a time
        (float32 (N, g) each, about 32 MB per layer): reduce whole layers in bounded memory."""
        width = min(self.store.block_genes(k) for k in keys)
        for genes in gene_blocks(self.n_genes, width):
            yield genes, [self.store.columns(k, genes) for k in keys]

    def obsp(self, key: str) -> sparse.csr_matrix | None:
        """``obsp[key]`` (N × N: ``distances``, ``connectivities``) read on demand, or None."""
        return self.store.obsp(key)

    def varm_matrix(self, key: str) -> np.ndarray | None:
        """float32 (G, C) ``varm[key]`` (``coherence``, ``permutation_effect``) or None."""
        if key not in self.adata.varm:
            return None
        return np.asarray(self.adata.varm[key], dtype=np.float32)


def load_results(path: str | Path) -> Results:
    """Open a results ``.h5ad`` (one read) and return its :class:`Results`, memoised per
    ``(resolved path, mtime, size)``; the first landing of a fit still running
    (``OUT.stages/base.h5ad``) opens with the stage files landed beside it, memoised per
    their set too: a stage that lands opens anew, and replaces the older opening. Raises
    :class:`ResultsError` for a missing/unreadable file or one that is not a velodash results
    file."""
    p = Path(path).expanduser().resolve()
    try:
        files = [p, *(stage_files(p) if is_base_file(p) else ())]
        stats = tuple((str(f), s.st_mtime_ns, s.st_size) for f in files for s in [f.stat()])
    except OSError:
        raise ResultsError(
            f"results file {p} does not exist; choose an existing .h5ad file"
        ) from None
    with _OPEN_LOCK:
        opened = _OPEN.get(str(p))
        if opened is not None and opened[0] == stats:
            _OPEN.move_to_end(str(p))
            return opened[1]
    results = Results(
        ResultsStore(p, [Path(name) for name, _, _ in stats[1:]]),
        key=";".join(f"{name}:{mtime}:{size}" for name, mtime, size in stats),
        path=p,
        stages=[Path(name) for name, _, _ in stats[1:]],
    )
    with _OPEN_LOCK:
        _OPEN[str(p)] = (stats, results)  # an older opening of the same file is dropped
        _OPEN.pop(str(stages_dir(p) / BASE_FILE), None)  # and a fit's landings once it ended
        _OPEN.move_to_end(str(p))
        while len(_OPEN) > OPEN_FILES:
            _OPEN.popitem(last=False)
    return results


#: Results files kept open per process (each with its memo of derived views).
OPEN_FILES = 4
_OPEN: OrderedDict[str, tuple[tuple, Results]] = OrderedDict()
_OPEN_LOCK = threading.Lock()
