"""A results ``.h5ad`` opened lazily: the small parts in memory, the (cells × genes) layers on
disk, read a gene (or a block of genes) at a time.

Opening reads ``obs``, ``var``, ``obsm``, ``varm`` and ``uns`` (without its N × N graphs) into a
skeleton AnnData: the per-cell arrays the pages draw, loaded once. Layers stay in the file and
are read through h5py: files written by :func:`core.results_io.write_results` keep each layer in
chunks of all cells × a few genes, so a gene costs one chunk. Files of older versions
(unchunked layers) still open while their layers are small enough to read column by column;
larger ones are refused with the command that rewrites them (:data:`CONVERT_COMMAND`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
from anndata.io import read_elem, sparse_dataset
from scipy import sparse

from core.derived_layers import DERIVED
from core.results_io import gene_blocks, genes_per_chunk
from core.stage_files import STAGES_SUFFIX
from dashboard.data.contract import ResultsError

#: An unchunked dense layer larger than this is refused (a gene would read most of the layer).
CONTIGUOUS_LIMIT_BYTES = 64 << 20
#: Bytes of one block when a layer is streamed whole (:meth:`ResultsStore.blocks`).
BLOCK_BYTES = 32 << 20
#: How to rewrite a file of an older velodash in the lazy layout.
CONVERT_COMMAND = "velodash convert {path}"
_SPARSE_ENCODINGS = {"csr_matrix", "csc_matrix"}


@dataclass(frozen=True)
class LayerInfo:
    """Where a layer lives: its name, shape, whether it is a dense array, its chunks, and the
    file that holds it (0: the results file; k: its k-th stage file); ``derived``: not
    stored, rebuilt from other slots on each read (:mod:`core.derived_layers`)."""

    name: str
    shape: tuple[int, int]
    dense: bool
    chunks: tuple[int, ...] | None
    part: int = 0
    derived: bool = False


def _encoding(node: h5py.Group | h5py.Dataset) -> str:
    value = node.attrs.get("encoding-type", "")
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_uns(group: h5py.Group) -> tuple[dict, list[str]]:
    """``uns`` without its sparse matrices (the N × N velocity graphs), and their keys."""
    uns, left = {}, []
    for key, node in group.items():
        if _encoding(node) in _SPARSE_ENCODINGS:
            left.append(key)
        else:
            uns[key] = read_elem(node)
    return uns, left


def _unshuffle(raw: bytes, size: int) -> np.ndarray:
    """Undo HDF5's byte shuffle of items of ``size`` bytes: the k-th bytes of all items come
    as the k-th plane; copied plane by plane into the items (3× faster than a transpose)."""
    planes = np.frombuffer(raw, dtype=np.uint8).reshape(size, -1)
    items = np.empty((planes.shape[1], size), dtype=np.uint8)
    for k in range(size):
        items[:, k] = planes[k]
    return items


class _GeneChunks:
    """Reads a dense layer stored in chunks of all cells × w genes chunk by chunk, decoding
    HDF5's shuffle and deflate filters with numpy and zlib: h5py's own reading of such a
    selection copies element by element (≈130 MB/s here), the chunks themselves read and
    decode at disk or zlib speed (≈1.3 GB/s uncompressed). Any numeric dtype (float32 layers,
    the int8 state assignment)."""

    _DEFLATE, _SHUFFLE = 1, 2  # HDF5 filter ids

    def __init__(self, ds: h5py.Dataset, filters: list[int]):
        self.ds = ds
        self.filters = filters

    @classmethod
    def of(cls, ds: h5py.Dataset) -> _GeneChunks | None:
        """A reader of ``ds`` when it is a numeric layer in whole-cell chunks with no filters
        but shuffle and deflate, else None (h5py reads it)."""
        if ds.chunks is None or ds.chunks[0] != ds.shape[0] or ds.dtype.kind not in "fiu":
            return None
        plist = ds.id.get_create_plist()
        filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
        return cls(ds, filters) if set(filters) <= {cls._DEFLATE, cls._SHUFFLE} else None

    def _chunk(self, start: int) -> np.ndarray:
        """The chunk whose first gene is ``start``, (N, w) in the layer's dtype."""
        mask, raw = self.ds.id.read_direct_chunk((0, start))
        # filters were applied in pipeline order on write: undo them in reverse; a set bit
        # of the mask marks a filter that was skipped for this chunk
        for position in reversed(range(len(self.filters))):
            if mask & (1 << position):
                continue
            if self.filters[position] == self._DEFLATE:
                raw = zlib.decompress(raw)
            else:
                raw = _unshuffle(raw, self.ds.dtype.itemsize)
        return np.frombuffer(raw, dtype=self.ds.dtype).reshape(self.ds.chunks)

    def read(self, genes: np.ndarray) -> np.ndarray:
        """(N, k) values of the increasing gene indices ``genes``, in the layer's dtype."""
        width = self.ds.chunks[1]
        out = np.empty((self.ds.shape[0], len(genes)), dtype=self.ds.dtype)
        starts = genes // width * width
        for start in np.unique(starts):
            where = np.flatnonzero(starts == start)
            out[:, where] = self._chunk(int(start))[:, genes[where] - start]
        return out


class _LayerReaders:
    """What both stores share: the layer table (stored layers, then the derived layers their
    slots rebuild) and the readers built on ``columns``."""

    layers: dict[str, LayerInfo]
    adata: ad.AnnData

    def _stored_columns(self, key: str, genes: slice | Sequence[int]) -> np.ndarray:
        raise NotImplementedError

    def _stored_block_genes(self, key: str) -> int:
        raise NotImplementedError

    @property
    def layer_names(self) -> list[str]:
        """Every layer that can be read, stored or derived."""
        return list(self.layers)

    def _add_derived(self, shape: tuple[int, int]) -> None:
        """List the derived layers (:data:`core.derived_layers.DERIVED`) that are not stored
        but rebuild from the slots at hand (cells × genes ``shape``)."""
        for name, layer in DERIVED.items():
            if name not in self.layers and layer.available(self):
                self.layers[name] = LayerInfo(name, shape, True, None, derived=True)

    def _info(self, key: str) -> LayerInfo:
        if key not in self.layers:
            raise KeyError(f"no layer {key!r}; layers are {', '.join(self.layers)}")
        return self.layers[key]

    def columns(self, key: str, genes: slice | Sequence[int]) -> np.ndarray:
        """float32 (N, k) C-contiguous values of ``layers[key]`` for ``genes`` (a slice or
        column indices, any order and repeats): a stored layer reads only the chunks holding
        them, a derived one is rebuilt from theirs."""
        if self._info(key).derived:
            values = DERIVED[key].rebuild(self, genes)
            return np.ascontiguousarray(values, dtype=np.float32)
        return self._stored_columns(key, genes)

    def block_genes(self, key: str) -> int:
        """Genes per block when ``key`` is streamed whole (about :data:`BLOCK_BYTES`)."""
        info = self._info(key)
        if info.derived:
            return max(1, BLOCK_BYTES // max(1, info.shape[0] * 4))
        return self._stored_block_genes(key)

    def column(self, key: str, j: int) -> np.ndarray:
        """float32 (N,) values of ``layers[key]`` for gene ``j``."""
        return self.columns(key, slice(j, j + 1))[:, 0].copy()

    def blocks(self, key: str) -> Iterator[tuple[slice, np.ndarray]]:
        """``(genes, values)`` over the whole layer, one float32 (N, g) block at a time
        (:meth:`block_genes` genes, about :data:`BLOCK_BYTES`): a layer reduced in bounded
        memory."""
        for genes in gene_blocks(self._info(key).shape[1], self.block_genes(key)):
            yield genes, self.columns(key, genes)


class ResultsStore(_LayerReaders):
    """One results file (and the stage files that complete it while its fit runs):
    :attr:`adata` (a skeleton AnnData without layers, X or obsp) and lazy readers of its
    layers (:meth:`column`, :meth:`columns`, :meth:`blocks`), its obsp graphs and its ``uns``
    matrices. Safe to share between threads; reopens the files after a fork."""

    def __init__(self, path: str | os.PathLike, stages: Sequence[str | os.PathLike] = ()):
        """Open ``path``, plus the ``stages`` files of a fit still running (each holds the
        slots one late stage added, :mod:`core.staged_results`); raises :class:`ResultsError`
        for a file that is not an AnnData or whose unchunked layers are too large to read
        lazily."""
        self.path = Path(path)
        self.paths = [self.path, *(Path(p) for p in stages)]
        self._lock = threading.Lock()
        self._hold_open = self.path.parent.name.endswith(STAGES_SUFFIX)
        self._pid: int | None = os.getpid()
        self._handles: dict[int, h5py.File] = {}
        self._readers: dict[str, tuple[h5py.Dataset, _GeneChunks | None]] = {}
        self.layers: dict[str, LayerInfo] = {}
        self.uns_matrices: list[str] = []
        self._uns_part: dict[str, int] = {}
        pieces = [self._read_skeleton(part, p) for part, p in enumerate(self.paths)]
        base = pieces[0]
        for piece in pieces[1:]:
            for kind in ("obs", "var"):
                if kind in piece and len(piece[kind].columns):
                    base[kind] = pd.concat([base[kind], piece[kind]], axis=1)
            for kind in ("obsm", "varm"):
                base.setdefault(kind, {}).update(piece.get(kind, {}))
            velodash = {**base["uns"].get("velodash", {}), **piece["uns"].get("velodash", {})}
            base["uns"].update(piece["uns"])
            base["uns"]["velodash"] = velodash
        self.adata = ad.AnnData(
            obs=base.get("obs"),
            var=base.get("var"),
            obsm=base.get("obsm"),
            varm=base.get("varm"),
            uns=base["uns"],
        )
        self._refuse_large_contiguous()
        self._add_derived(self.adata.shape)

    def _read_skeleton(self, part: int, path: Path) -> dict:
        """obs, var, obsm, varm and uns (without its sparse matrices) of file ``part``; records
        its layers, obsp graphs (of the results file) and uns matrices. The landings of a fit
        still running stay open (they are removed when it ends: an open handle still reads
        them); other files are opened again on the first layer read."""
        try:
            f = h5py.File(path, "r")
            if self._hold_open:
                self._handles[part] = f
            with contextlib.nullcontext(f) if self._hold_open else f:
                uns, matrices = _read_uns(f["uns"]) if "uns" in f else ({}, [])
                parts = {k: read_elem(f[k]) for k in ("obs", "var", "obsm", "varm") if k in f}
                for name, info in self._layer_infos(f).items():
                    self.layers[name] = replace(info, part=part)
                if part == 0:
                    self.obsp_names = list(f["obsp"].keys()) if "obsp" in f else []
        except FileNotFoundError as exc:  # a fit's landing removed as it ended
            raise ResultsError(f"{path.name} was just replaced; open the page again") from exc
        except Exception as exc:  # h5py/anndata raise many types for a file that is not h5ad
            raise ResultsError(
                f"cannot read {path} as an .h5ad file ({exc}); choose a velodash results file"
            ) from exc
        self.uns_matrices += matrices
        self._uns_part.update(dict.fromkeys(matrices, part))
        return {**parts, "uns": uns}

    @staticmethod
    def _layer_infos(f: h5py.File) -> dict[str, LayerInfo]:
        infos = {}
        for name, node in f["layers"].items() if "layers" in f else ():
            if isinstance(node, h5py.Dataset) and node.ndim == 2:
                infos[name] = LayerInfo(name, tuple(node.shape), True, node.chunks)
            elif _encoding(node) in _SPARSE_ENCODINGS:
                shape = tuple(int(x) for x in node.attrs["shape"])
                infos[name] = LayerInfo(name, shape, False, None)
        return infos

    def _refuse_large_contiguous(self) -> None:
        large = [
            info.name
            for info in self.layers.values()
            if info.dense
            and info.chunks is None
            and info.shape[0] * info.shape[1] * 4 > CONTIGUOUS_LIMIT_BYTES
        ]
        if large:
            command = CONVERT_COMMAND.format(path=self.path)
            raise ResultsError(
                f"{self.path.name} was written by an older velodash: its layers "
                f"({', '.join(large)}) are stored whole, so the dashboard would read most of a "
                f"layer for every gene. Rewrite it once with `{command}` (same content, read "
                "a gene at a time), then open it again."
            )

    # -- the open file -----------------------------------------------------------------------
    def _file(self, part: int = 0) -> h5py.File:
        """This process's read handle of file ``part`` (h5py handles do not survive a fork)."""
        if self._pid != os.getpid():
            self._pid, self._handles, self._readers = os.getpid(), {}, {}
        if part not in self._handles:
            self._handles[part] = h5py.File(self.paths[part], "r")
        return self._handles[part]

    def _dense(self, key: str) -> tuple[h5py.Dataset, _GeneChunks | None]:
        """The layer's dataset and its chunk reader (None: h5py reads it), found once per
        layer and process."""
        f = self._file(self.layers[key].part)
        if key not in self._readers:
            ds = f["layers"][key]
            self._readers[key] = (ds, _GeneChunks.of(ds))
        return self._readers[key]

    # -- layers ------------------------------------------------------------------------------
    def _stored_columns(self, key: str, genes: slice | Sequence[int]) -> np.ndarray:
        """float32 (N, k) values of stored ``layers[key]``: reads only the chunks holding
        ``genes``."""
        info = self._info(key)
        with self._lock:
            if not info.dense:
                block = sparse_dataset(self._file(info.part)["layers"][key])[:, genes]
                return np.ascontiguousarray(block.toarray(), dtype=np.float32)
            ds, chunks = self._dense(key)
            if chunks is None and isinstance(genes, slice):
                return np.ascontiguousarray(ds[:, genes], dtype=np.float32)
            if isinstance(genes, slice):
                genes = range(*genes.indices(info.shape[1]))
            idx = np.asarray(genes, dtype=np.int64)
            order = np.unique(idx)  # read increasing indices once each; map back afterwards
            if chunks is not None:
                values = chunks.read(order)
            else:
                values = ds[:, order] if order.size else np.empty((info.shape[0], 0))
        if np.array_equal(order, idx):
            return np.ascontiguousarray(values, dtype=np.float32)
        positions = np.searchsorted(order, idx)
        return np.ascontiguousarray(np.asarray(values, dtype=np.float32)[:, positions])

    def _stored_block_genes(self, key: str) -> int:
        """Genes per block when stored ``key`` is streamed whole: a multiple of its chunk
        width, about :data:`BLOCK_BYTES`."""
        info = self._info(key)
        width = info.chunks[1] if info.chunks else genes_per_chunk(info.shape[0])
        per_block = max(1, BLOCK_BYTES // max(1, info.shape[0] * 4))
        return max(width, per_block // width * width)

    # -- graphs ------------------------------------------------------------------------------
    def obsp(self, key: str) -> sparse.csr_matrix | None:
        """``obsp[key]`` (an N × N graph) read on demand, or None when absent."""
        if key not in self.obsp_names:
            return None
        with self._lock:
            return sparse.csr_matrix(read_elem(self._file()["obsp"][key]))

    def uns_matrix(self, key: str) -> sparse.csr_matrix | None:
        """A sparse ``uns[key]`` left out of :attr:`adata` (``velocity_graph``…), or None."""
        if key not in self.uns_matrices:
            return None
        with self._lock:
            return sparse.csr_matrix(read_elem(self._file(self._uns_part[key])["uns"][key]))


class MemoryStore(_LayerReaders):
    """The :class:`ResultsStore` interface over an AnnData in memory (results being built, or
    made by tests): same readers, no file."""

    def __init__(self, adata: ad.AnnData):
        """Serve ``adata``'s layers, obsp graphs and sparse ``uns`` entries."""
        self.path = None
        self.adata = adata
        self.layers = {
            name: LayerInfo(name, tuple(v.shape), not sparse.issparse(v), None)
            for name, v in adata.layers.items()
        }
        self.obsp_names = list(adata.obsp.keys())
        self.uns_matrices = [k for k, v in adata.uns.items() if sparse.issparse(v)]
        self._add_derived(adata.shape)

    def _stored_columns(self, key: str, genes: slice | Sequence[int]) -> np.ndarray:
        """float32 (N, k) values of ``layers[key]`` for ``genes``."""
        block = self.adata.layers[key][:, genes]
        block = block.toarray() if sparse.issparse(block) else block
        return np.ascontiguousarray(block, dtype=np.float32)

    def _stored_block_genes(self, key: str) -> int:
        """Genes per block when ``key`` is streamed whole (about :data:`BLOCK_BYTES`)."""
        return max(1, BLOCK_BYTES // max(1, self._info(key).shape[0] * 4))

    def obsp(self, key: str) -> sparse.csr_matrix | None:
        """``obsp[key]`` or None."""
        return sparse.csr_matrix(self.adata.obsp[key]) if key in self.adata.obsp else None

    def uns_matrix(self, key: str) -> sparse.csr_matrix | None:
        """A sparse ``uns[key]`` or None."""
        return sparse.csr_matrix(self.adata.uns[key]) if key in self.uns_matrices else None
