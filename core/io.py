"""Reading, validating and atomically writing spliced/unspliced count datasets."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

SUPPORTED_SUFFIXES = (".h5ad", ".loom")
REQUIRED_LAYERS = ("spliced", "unspliced")
GROUPBY_CANDIDATES = (
    "clusters",
    "cell_type",
    "celltype",
    "cell_types",
    "CellType",
    "leiden",
    "louvain",
    "cluster",
)
_CHUNK_BYTES = 1 << 20
_ROWS_PER_BLOCK = 4096


class DatasetError(ValueError):
    """Bad input data; the message says what is wrong and how to fix it."""


def read_dataset(path: str | os.PathLike) -> ad.AnnData:
    """Read an ``.h5ad`` or ``.loom`` file into an AnnData (cells × genes).

    Loom files (velocyto, STARsolo, kb) keep their named layers (``spliced``, ``unspliced``,
    ``ambiguous``) as AnnData layers and the main matrix as X; cell and gene names come from the
    usual ``CellID``/``Gene`` attributes. Raises :class:`DatasetError` for a missing file, an
    unsupported suffix, or a file that is not a readable AnnData/loom file.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"Dataset file not found: {path}. Check the path (cwd: {Path.cwd()}).")
    if not path.is_file():
        raise DatasetError(f"{path} is a folder, not a dataset file; give an .h5ad or .loom file.")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DatasetError(
            f"Unsupported file type '{path.suffix or '(none)'}' for {path.name}; supported: "
            f"{', '.join(SUPPORTED_SUFFIXES)}. Convert other formats with anndata/scanpy "
            "(e.g. `adata.write_h5ad('data.h5ad')`)."
        )
    try:
        if suffix == ".h5ad":
            adata = ad.read_h5ad(path)
        else:
            adata = ad.read_loom(path, sparse=True, X_name="")
    except Exception as err:  # the readers raise many unrelated types on corrupt input
        raise DatasetError(
            f"Could not read {path.name} as a {suffix} file ({type(err).__name__}: {err}). "
            "The file is corrupt, truncated, or not an AnnData/loom file; re-export it with "
            "anndata (`adata.write_h5ad`) or loompy."
        ) from err
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise DatasetError(
            f"{path.name} holds an empty matrix ({adata.n_obs} cells × {adata.n_vars} genes); "
            "it is not a count dataset. Check that the right file was exported."
        )
    adata.obs_names_make_unique()
    adata.var_names_make_unique()
    return adata


def _nonfinite_negative_counts(matrix) -> tuple[int, int, int]:
    """Count (NaN, ±inf, negative) entries of a dense or sparse matrix, in row blocks."""
    if sparse.issparse(matrix):
        values = matrix.data if matrix.format in ("csr", "csc", "coo") else matrix.tocsr().data
        return (
            int(np.isnan(values).sum()),
            int(np.isinf(values).sum()),
            int((values < 0).sum()),
        )
    counts = np.zeros(3, dtype=np.int64)
    for start in range(0, matrix.shape[0], _ROWS_PER_BLOCK):
        block = np.asarray(matrix[start : start + _ROWS_PER_BLOCK])
        counts += (np.isnan(block).sum(), np.isinf(block).sum(), (block < 0).sum())
    return int(counts[0]), int(counts[1]), int(counts[2])


def validate_counts(adata: ad.AnnData) -> None:
    """Check that ``layers['spliced'|'unspliced']`` exist, are numeric, finite and ≥ 0.

    AnnData itself refuses layers whose shape differs from X (in memory and on reading). Works
    on sparse and dense layers without densifying the whole matrix. Raises
    :class:`DatasetError` naming the problem, the layer, how many entries, and how to fix it.
    """
    missing = [name for name in REQUIRED_LAYERS if name not in adata.layers]
    if missing:
        present = ", ".join(f"'{k}'" for k in adata.layers.keys()) or "none"
        raise DatasetError(
            f"Missing layer(s) {', '.join(repr(m) for m in missing)}; the file has layers: "
            f"{present}. RNA velocity needs spliced and unspliced counts per cell and gene: "
            "produce them with velocyto (`velocyto run`, gives a .loom), STARsolo "
            "(`--soloFeatures Gene Velocyto`) or kallisto|bustools (`kb count --workflow lamanno`),"
            " then store them as adata.layers['spliced'] and adata.layers['unspliced']."
        )
    for name in REQUIRED_LAYERS:
        layer = adata.layers[name]
        if not np.issubdtype(layer.dtype, np.number):
            raise DatasetError(
                f"Layer '{name}' has dtype {layer.dtype}; counts must be numeric. Convert with "
                f"adata.layers['{name}'] = adata.layers['{name}'].astype('float32')."
            )
        n_nan, n_inf, n_neg = _nonfinite_negative_counts(layer)
        problems = [
            f"{n} {what}"
            for n, what in ((n_nan, "NaN"), (n_inf, "infinite"), (n_neg, "negative"))
            if n
        ]
        if problems:
            raise DatasetError(
                f"Layer '{name}' contains {' and '.join(problems)} value(s); counts must be "
                "finite and non-negative. Use raw (un-logged, un-scaled) spliced/unspliced "
                "counts, or replace the bad entries (e.g. with 0) before loading."
            )


def detect_groupby(adata: ad.AnnData, groupby: str | None = None) -> str | None:
    """Return the obs column holding cell types: ``groupby`` if given, else the first known name.

    Known names are tried in order: clusters, cell_type, celltype, cell_types, CellType, leiden,
    louvain, cluster. Returns None when none is present (the caller continues with one group).
    A given ``groupby`` that is not in ``adata.obs`` raises :class:`DatasetError` listing the
    categorical columns that could be used instead.
    """
    if groupby is not None:
        if groupby in adata.obs.columns:
            return groupby
        candidates = [
            str(col)
            for col in adata.obs.columns
            if isinstance(adata.obs[col].dtype, pd.CategoricalDtype)
            or pd.api.types.is_object_dtype(adata.obs[col])
            or pd.api.types.is_string_dtype(adata.obs[col])
        ]
        listing = ", ".join(candidates) if candidates else "none"
        raise DatasetError(
            f"Cell-type column '{groupby}' is not in the dataset's obs; categorical columns "
            f"available: {listing}. Pass one of them, or leave it unset to auto-detect."
        )
    return next((key for key in GROUPBY_CANDIDATES if key in adata.obs.columns), None)


def file_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB chunks (a content address)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_h5ad_atomic(
    adata: ad.AnnData, path: str | os.PathLike, compression: str | None = None
) -> Path:
    """Write ``adata`` to ``path`` atomically: temp file in the same folder, then ``os.replace``.

    Readers never see a half-written file; the temp file is removed when writing fails.
    ``compression`` is passed to :meth:`AnnData.write_h5ad` (``None`` or ``"gzip"``, ``"lzf"``).
    Returns the final path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name rather than mkstemp, whose 0600 mode would survive os.replace
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        adata.write_h5ad(tmp, compression=compression)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str, mode: int = 0o666) -> Path:
    """Write ``text`` to ``path`` atomically: a fresh temp file in the same folder (created
    with ``mode``, less the umask), then ``os.replace``; the temp file is removed when writing
    fails. Returns the final path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
