"""Writing and reading results files: an ordinary ``.h5ad`` laid out so that one gene is a
cheap read.

Every dense (cells × genes) layer is stored in HDF5 chunks that hold *all cells of a few genes*
(about :data:`CHUNK_BYTES` each), so reading one gene's column decompresses one chunk, and a
whole layer can be streamed gene block by gene block in bounded memory. Layers the dashboard
streams whole (:data:`FAST_LAYERS`, the velocity) are stored uncompressed; the others
with HDF5's built-in byte shuffle + gzip, which every HDF5 reader (h5py, anndata, R) decodes.

Slots that other slots rebuild exactly are not stored, each only where its rebuild equals it
bit for bit: X when it is ``log1p`` of the spliced layer (the preprocessing's); the raw moments
``Ms_raw``/``Mu_raw``, ``connectivities × counts`` of layers the file keeps
(:func:`restore_raw_moments`); the derived layers of :mod:`core.derived_layers` (the
steady-state baseline, a simulation's true velocity), closed forms of its slots. The file
stays an AnnData: ``anndata.read_h5ad`` opens it (scVelo, CellRank) with every other slot;
:func:`read_results` also restores the left-out ones.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
from anndata.io import write_elem
from scipy import sparse

from core import derived_layers
from core.row_spill import RowSpill

#: Target bytes of one chunk of a dense layer (all cells × a few genes): one gene's column
#: alone from 64,000 cells on, so a gene click decompresses no other gene's values.
CHUNK_BYTES = 256 << 10
#: Dense layers stored uncompressed: the dashboard streams the velocity whole (selection
#: statistics, projections), where gzip costs 3–5× the read time for a 1.3× smaller layer. The
#: coherence, streamed only by a selection's drivers, compresses 1.6× and is gzipped.
FAST_LAYERS = frozenset({"velocity"})
#: HDF5 filters of every other dense layer (shuffle + gzip 1: 1.2–1.4× on fitted float32
#: layers; level 4 gains under 5 % for 25 % more write time).
COMPRESSED = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
#: Layers that :func:`restore_raw_moments` rebuilds and the writer therefore leaves out:
#: raw moment -> (count layer, scaled moment).
RAW_MOMENTS = {"Ms_raw": "spliced", "Mu_raw": "unspliced"}
#: ``uns['velodash']['layout']`` of files written by :func:`write_results`.
LAYOUT = "gene-chunked-1"
#: ``uns['velodash']['X']`` of a file that left X out because it is ``log1p`` of its spliced
#: layer, entry for entry (the preprocessing's X); :func:`read_results` rebuilds it.
X_FROM_SPLICED = "log1p(layers['spliced'])"


def genes_per_chunk(n_cells: int, itemsize: int = 4) -> int:
    """Genes in one chunk of a dense layer of ``n_cells`` cells (≥ 1): about CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // max(1, n_cells * itemsize))


def gene_blocks(n_genes: int, block: int) -> Iterator[slice]:
    """Consecutive slices of ``block`` genes covering ``range(n_genes)``."""
    for start in range(0, n_genes, block):
        yield slice(start, min(start + block, n_genes))


def _dense_layers(adata: ad.AnnData) -> dict[str, np.ndarray]:
    return {k: v for k, v in adata.layers.items() if isinstance(v, np.ndarray) and v.ndim == 2}


def _x_is_log1p_spliced(adata: ad.AnnData) -> bool:
    """Whether X is ``log1p`` of ``layers['spliced']`` bit for bit: the same sparse pattern and
    dtype, and every stored value equal to numpy's ``log1p`` of the spliced one."""
    X, spliced = adata.X, adata.layers.get("spliced")
    if not (sparse.issparse(X) and sparse.issparse(spliced)) or X.shape != spliced.shape:
        return False
    X, spliced = sparse.csr_matrix(X), sparse.csr_matrix(spliced)
    return (
        X.dtype == spliced.dtype
        and np.array_equal(X.indptr, spliced.indptr)
        and np.array_equal(X.indices, spliced.indices)
        and np.array_equal(X.data, np.log1p(spliced.data))
    )


def x_from_spliced(spliced: sparse.spmatrix) -> sparse.csr_matrix:
    """X rebuilt from the spliced layer (N, G): ``log1p`` of each stored value."""
    X = sparse.csr_matrix(spliced, copy=True)
    np.log1p(X.data, out=X.data)
    return X


def _left_out(adata: ad.AnnData, keys: set[str]) -> set[str]:
    """The dense layers among ``keys`` that ``adata``'s other slots rebuild bit for bit: raw
    moments (:func:`_can_restore`) and derived layers (:func:`core.derived_layers.rebuildable`)."""
    dense = _dense_layers(adata)
    raw = {k for k in RAW_MOMENTS if k in keys and k in dense and _can_restore(adata, k)}
    return raw | set(derived_layers.rebuildable(adata, keys))


def layer_storage(key: str, shape: tuple[int, int], itemsize: int = 4) -> dict:
    """h5py dataset keywords of dense layer ``key`` of ``shape`` (N, G): chunks of all cells
    × :func:`genes_per_chunk` genes, and the filters (none for :data:`FAST_LAYERS`)."""
    n_cells, n_genes = shape
    chunks = (max(1, n_cells), max(1, min(n_genes, genes_per_chunk(n_cells, itemsize))))
    return {"chunks": chunks, **({} if key in FAST_LAYERS else COMPRESSED)}


def _write_dense(group: h5py.Group, key: str, values: np.ndarray) -> None:
    """Write one (N, G) layer as :func:`layer_storage` says."""
    kwargs = layer_storage(key, values.shape, values.itemsize)
    write_elem(group, key, values, dataset_kwargs=kwargs)


def write_results(
    adata: ad.AnnData, path: str | os.PathLike, spill: RowSpill | None = None
) -> Path:
    """Write a results AnnData to ``path`` atomically in the gene-chunked layout.

    Dense layers are chunked by gene (see the module docstring), layers that the other slots
    rebuild bit for bit are left out (:func:`_left_out`), and everything else is written by
    anndata with gzip. The layers of ``spill`` (:class:`RowSpill` of
    ``adata``'s shape, not in ``adata``) are written too, read back one at a time. ``adata`` is
    not modified. Readers never see a half-written file: a temp file in the same folder is
    renamed over ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dense = _dense_layers(adata)
    dropped = _left_out(adata, set(dense))
    others = {k: v for k, v in adata.layers.items() if k not in dense}
    velodash = {**adata.uns.get("velodash", {}), "layout": LAYOUT}
    x_left_out = _x_is_log1p_spliced(adata)
    if x_left_out:
        velodash["X"] = X_FROM_SPLICED
    skeleton = ad.AnnData(
        X=None if x_left_out else adata.X,
        obs=adata.obs,
        var=adata.var,
        obsm=dict(adata.obsm),
        varm=dict(adata.varm),
        obsp=dict(adata.obsp),
        uns={**adata.uns, "velodash": velodash},
        layers=others,
    )
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        skeleton.write_h5ad(tmp, compression="gzip", compression_opts=1)
        with h5py.File(tmp, "a") as f:
            for key, values in dense.items():
                if key not in dropped:
                    _write_dense(f["layers"], key, values)
            for key in spill.names if spill is not None else ():
                _write_dense(f["layers"], key, spill.load(key))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def extend_results(
    base: str | os.PathLike, adata: ad.AnnData, added: ad.AnnData, path: str | os.PathLike
) -> Path:
    """Write ``adata`` to ``path`` atomically as a copy of results file ``base`` (written by
    :func:`write_results` from ``adata`` before it gained the slots in ``added``, an AnnData
    of the same cells and genes holding only them) with those slots added: the bytes of
    ``base`` are copied, not encoded again. ``obs``, ``var`` and ``uns['velodash']`` are
    rewritten whole from ``adata``; every other slot of ``base`` must be unchanged in
    ``adata``. The file equals what :func:`write_results` writes, slot for slot (an added
    layer that ``adata`` rebuilds is left out)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    gzip = {"compression": "gzip", "compression_opts": 1}
    try:
        shutil.copyfile(base, tmp)
        with h5py.File(tmp, "a") as f:
            for kind in ("obs", "var"):
                if len(getattr(added, kind).columns):
                    del f[kind]
                    write_elem(f, kind, getattr(adata, kind), dataset_kwargs=gzip)
            for kind in ("obsm", "varm"):
                for key in getattr(added, kind):
                    write_elem(f[kind], key, getattr(adata, kind)[key], dataset_kwargs=gzip)
            left_out = _left_out(adata, set(added.layers))
            for key, values in added.layers.items():
                if key in left_out:
                    continue
                if isinstance(values, np.ndarray) and values.ndim == 2:
                    _write_dense(f["layers"], key, values)
                else:
                    write_elem(f["layers"], key, values, dataset_kwargs=gzip)
            for key in set(added.uns) - {"velodash"}:
                write_elem(f["uns"], key, adata.uns[key], dataset_kwargs=gzip)
            velodash = {**adata.uns.get("velodash", {}), "layout": LAYOUT}
            if "X" in f["uns/velodash"]:  # the base left X out (it is log1p of the spliced)
                velodash["X"] = X_FROM_SPLICED
            del f["uns/velodash"]
            write_elem(f["uns"], "velodash", velodash, dataset_kwargs=gzip)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _has_sources(adata: ad.AnnData, raw: str) -> bool:
    """Whether the counts and connectivities that rebuild ``layers[raw]`` are present."""
    return RAW_MOMENTS[raw] in adata.layers and "connectivities" in adata.obsp


def _can_restore(adata: ad.AnnData, raw: str) -> bool:
    """Whether ``layers[raw]`` equals, bit for bit, what :func:`raw_moments` rebuilds from the
    file's counts and connectivities (checked a block of genes at a time; files fitted before
    the connectivities were kept intact, scanpy#4028, do not)."""
    if not _has_sources(adata, raw):
        return False
    from core.preprocess import moment_kernel, smooth

    kernel = moment_kernel(adata.obsp["connectivities"])
    counts, stored = adata.layers[RAW_MOMENTS[raw]], adata.layers[raw]
    width = max(1, (64 << 20) // max(1, 4 * adata.n_obs))
    return all(
        np.array_equal(smooth(kernel, counts[:, genes]), stored[:, genes])
        for genes in gene_blocks(adata.n_vars, width)
    )


def drop_rebuildable_raw_moments(adata: ad.AnnData) -> list[str]:
    """Remove (in place) ``layers['Ms_raw'|'Mu_raw']`` where the counts and connectivities
    rebuild them bit for bit (:func:`_can_restore`), as :func:`write_results` would leave them
    out of the file anyway; returns the keys removed. A fit that writes a file calls it once
    preprocessed, so it does not carry two (N, G) layers nobody reads (1.5 GB at 100,000 cells
    × 2,000 genes)."""
    dropped = [k for k in RAW_MOMENTS if k in _dense_layers(adata) and _can_restore(adata, k)]
    for key in dropped:
        del adata.layers[key]
    return dropped


def convert_results(source: str | os.PathLike, target: str | os.PathLike | None = None) -> Path:
    """Rewrite a results file of an older velodash in the gene-chunked layout (same content;
    raw moments left out only where they rebuild exactly) to ``target`` (default: in place,
    atomically). Returns the path written."""
    from core.io import DatasetError, read_dataset

    adata = read_dataset(source)
    if "velodash" not in adata.uns:
        raise DatasetError(
            f"{Path(source).name} is not a velodash results file (no uns['velodash']); only "
            "files written by `velodash fit` are converted. Fit a counts file with "
            "`velodash fit`."
        )
    return write_results(adata, target if target is not None else source)


def raw_moments(connectivities: sparse.spmatrix, counts) -> np.ndarray:
    """kNN means ``M = C̃ · counts`` (N, G) float32, where ``C̃`` is scVelo's moment kernel
    (the binarised kNN graph plus self, row-normalised) built from ``connectivities`` (N, N):
    the preprocessing's ``Ms_raw``/``Mu_raw``, bit for bit."""
    from core.preprocess import moment_kernel, smooth

    return smooth(moment_kernel(connectivities), counts)


def restore_raw_moments(adata: ad.AnnData) -> None:
    """Add ``layers['Ms_raw'|'Mu_raw']`` (in place) where the file left them out."""
    for raw, counts in RAW_MOMENTS.items():
        if raw not in adata.layers and _has_sources(adata, raw):
            adata.layers[raw] = raw_moments(adata.obsp["connectivities"], adata.layers[counts])


def read_results(path: str | os.PathLike) -> ad.AnnData:
    """The whole results file as an AnnData (every layer in memory, the left-out slots
    restored: X, the raw moments and :mod:`core.derived_layers`): what scVelo and CellRank take
    (``scv.pl.velocity_embedding_stream(read_results(p))``)."""
    adata = ad.read_h5ad(path)
    x_left_out = adata.uns.get("velodash", {}).get("X") == X_FROM_SPLICED
    if adata.X is None and x_left_out and "spliced" in adata.layers:
        adata.X = x_from_spliced(adata.layers["spliced"])
    restore_raw_moments(adata)
    derived_layers.restore(adata)
    return adata
