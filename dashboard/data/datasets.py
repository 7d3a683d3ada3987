"""What the dashboard can open: the sample, CLI files, a data folder, uploads, and their results.

Datasets are addressed by short stable ids (``"sample"`` or a content-hash prefix), never by
file paths, so URLs are safe to share from a hosted instance. Results are content-addressed:
``cache_dir/results/<results_key>.h5ad`` records the fingerprint of its input in
``uns['velodash']['fingerprint']``, so a later launch (or another worker) finds them at once.
The registry keeps no mutable state; the only memo is keyed by file size and mtime.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import h5py

from core.io import SUPPORTED_SUFFIXES, file_fingerprint, write_text_atomic
from core.params import FitParams, results_key
from dashboard.config import AppConfig
from dashboard.data.stages import (
    BASE_FILE,
    STAGES_SUFFIX,
    is_base_file,
    output_of,
    stage_report,
)
from dashboard.data.uploads import HDF5_MAGIC, UploadError, UploadSink

SAMPLE_ID = "sample"
ID_LENGTH = 12
#: Why an upload is refused on a server with uploads off.
UPLOADS_DISABLED = (
    "Uploads are disabled on this server; ask its administrator to put the file in the "
    "datasets folder, or open it locally with `velodash run FILE`."
)

#: Folder of the cache holding links to the splicing references of fits (`reference_link`).
REFERENCES = "references"

Kind = Literal["results", "raw"]
Source = Literal["sample", "cli", "data_dir", "upload"]


class UnknownDataset(KeyError):
    """A dataset id that the registry does not offer (stale or tampered link)."""


@dataclass(frozen=True)
class Dataset:
    """One openable file: `kind` "results" opens at once, "raw" needs a fit first."""

    id: str
    label: str
    path: Path
    kind: Kind
    source: Source


#: Extended attribute that keeps a file's sha256 beside its size and mtime, so every process
#: of the machine, and the next start, reads it instead of hashing gigabytes again.
FINGERPRINT_XATTR = "user.velodash.sha256"


@functools.lru_cache(maxsize=512)
def _fingerprint_cached(path: str, size: int, mtime_ns: int) -> str:
    stamp = f"{size}:{mtime_ns}:"
    try:
        stored = os.getxattr(path, FINGERPRINT_XATTR).decode()
        if stored.startswith(stamp) and len(stored) == len(stamp) + 64:
            return stored[len(stamp) :]
    except (OSError, UnicodeDecodeError):  # no attribute yet, or a filesystem without xattrs
        pass
    digest = file_fingerprint(path)
    with contextlib.suppress(OSError):  # read-only file or filesystem: hash again next time
        os.setxattr(path, FINGERPRINT_XATTR, (stamp + digest).encode())
    return digest


def fingerprint(path: Path) -> str:
    """Content hash (sha256 hex) of a file, memoised on (path, size, mtime) in this process
    and, where the filesystem allows, in the file's :data:`FINGERPRINT_XATTR` (a 7 GB results
    file takes ~6 s to hash). Writing the file changes its mtime, so a stale hash is never
    used."""
    stat = path.stat()
    return _fingerprint_cached(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=512)
def _h5_info_cached(path: str, size: int, mtime_ns: int) -> tuple[bool, str, bool]:
    """(is results file, recorded input fingerprint, has spliced+unspliced layers)."""
    with h5py.File(path, "r") as fh:
        is_results = "uns/velodash" in fh and "layers/velocity" in fh
        recorded = ""
        if is_results and "uns/velodash/fingerprint" in fh:
            value = fh["uns/velodash/fingerprint"][()]
            recorded = value.decode() if isinstance(value, bytes) else str(value)
        has_counts = "layers/spliced" in fh and "layers/unspliced" in fh
    return is_results, recorded, has_counts


def _holds_counts(path: Path, suffix: str) -> bool:
    """Whether an HDF5 file is an AnnData (X, obs and var) or a loom file (its matrix)."""
    with h5py.File(path, "r") as fh:
        return "matrix" in fh if suffix == ".loom" else {"X", "obs", "var"} <= set(fh)


@functools.lru_cache(maxsize=64)
def _gene_names_cached(path: str, size: int, mtime_ns: int) -> frozenset[str]:
    with h5py.File(path, "r") as fh:
        if "row_attrs" in fh:  # .loom
            names = fh["row_attrs"]["Gene"][()] if "Gene" in fh["row_attrs"] else []
        else:
            var = fh["var"]
            names = var[var.attrs.get("_index", "_index")][()]
    return frozenset(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def gene_names(path: Path) -> frozenset[str]:
    """The gene names of an .h5ad/.loom file, read without loading it (memoised); empty when
    they cannot be read."""
    try:
        stat = path.stat()
        return _gene_names_cached(str(path), stat.st_size, stat.st_mtime_ns)
    except (OSError, KeyError, TypeError):
        return frozenset()


def h5_info(path: Path) -> tuple[bool, str, bool]:
    """Inspect an HDF5 (.h5ad/.loom) file without loading it; memoised on size and mtime.

    Returns (is a velodash results file, the input fingerprint it records, has count layers).
    Raises OSError when the file is not readable HDF5.
    """
    stat = path.stat()
    return _h5_info_cached(str(path), stat.st_size, stat.st_mtime_ns)


def _kind(path: Path) -> Kind:
    return "results" if path.suffix.lower() == ".h5ad" and h5_info(path)[0] else "raw"


class DatasetRegistry:
    """The datasets offered by one app configuration; every lookup re-reads the disk."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.uploads_dir = config.cache_dir / "uploads"
        self.results_dir = config.cache_dir / "results"

    def _candidates(self) -> list[tuple[Path, Source]]:
        found: list[tuple[Path, Source]] = []
        if self.config.sample_path is not None and self.config.sample_path.is_file():
            found.append((self.config.sample_path, "sample"))
        found += [(Path(p), "cli") for p in self.config.data if Path(p).is_file()]
        for folder, source in ((self.config.data_dir, "data_dir"), (self.uploads_dir, "upload")):
            if folder is not None and folder.is_dir():
                found += [
                    (p, source)
                    for p in sorted(folder.iterdir())
                    if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES
                ]
        return found

    def datasets(self) -> list[Dataset]:
        """Every openable dataset, sample first; unreadable files are left out."""
        out: dict[str, Dataset] = {}
        for path, source in self._candidates():
            try:
                kind = _kind(path)
                ds_id = SAMPLE_ID if source == "sample" else fingerprint(path)[:ID_LENGTH]
            except OSError:
                continue
            out.setdefault(
                ds_id, Dataset(ds_id, _label(path, source), path.resolve(), kind, source)
            )
        return list(out.values())

    def identical_to(self, digest: str) -> Dataset | None:
        """The offered dataset whose file has this content hash (sha256 hex), if any."""
        for dataset in self.datasets():
            try:
                if fingerprint(dataset.path) == digest:
                    return dataset
            except OSError:
                continue
        return None

    def get(self, ds_id: str) -> Dataset:
        """The dataset with this id; raises UnknownDataset."""
        for dataset in self.datasets():
            if dataset.id == ds_id:
                return dataset
        raise UnknownDataset(ds_id)

    def default_id(self) -> str | None:
        """The dataset a bare URL opens: the first CLI file, else the sample, else any."""
        datasets = self.datasets()
        for source in ("cli", "sample", "data_dir", "upload"):
            match = [d for d in datasets if d.source == source]
            if match:
                return match[0].id
        return None

    def has_splicing(self, dataset: Dataset) -> bool:
        """Whether a raw dataset has spliced and unspliced layers (else it needs a reference)."""
        try:
            return dataset.kind == "raw" and h5_info(dataset.path)[2]
        except OSError:
            return False

    def splicing_references(self, query: Dataset | None = None) -> list[tuple[Dataset, int]]:
        """The datasets that can serve as a splicing reference (raw, with spliced/unspliced),
        with the number of genes each shares with `query`, most shared first (0 without one)."""
        wanted = gene_names(query.path) if query is not None else frozenset()
        found = [(d, len(wanted & gene_names(d.path))) for d in self.datasets()]
        return sorted(
            [(d, n) for d, n in found if self.has_splicing(d) and d != query],
            key=lambda pair: -pair[1],
        )

    @property
    def references_dir(self) -> Path:
        """Where `reference_link` puts the references of queued fits (by content hash)."""
        return self.config.cache_dir / REFERENCES

    def reference_link(self, dataset: Dataset) -> Path:
        """A link ``cache_dir/references/<sha256><suffix>`` to `dataset`'s file, made
        atomically: a fit job finds its reference by the sha256 in its options (no server path
        in the job's public record), on this machine or a worker sharing the cache."""
        digest = fingerprint(dataset.path)
        link = self.references_dir / f"{digest}{dataset.path.suffix.lower()}"
        if link.exists() and link.resolve() == dataset.path:
            return link
        self.references_dir.mkdir(parents=True, exist_ok=True)
        temp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        temp.unlink(missing_ok=True)
        temp.symlink_to(dataset.path)
        os.replace(temp, link)
        return link

    def results_path_for_fit(self, dataset: Dataset, params: FitParams) -> Path:
        """Where a fit of `dataset` with `params` is written: its content address."""
        return self.results_dir / f"{results_key(fingerprint(dataset.path), params)}.h5ad"

    def results_for(self, dataset: Dataset) -> Path | None:
        """The results file to show for `dataset`: itself, else its newest cached fit, a fit
        still landing its stages included (``OUT.stages/base.h5ad``, `dashboard.data.stages`);
        the landings of a fit that stopped only when no other fit is there."""
        if dataset.kind == "results":
            return dataset.path
        if not self.results_dir.is_dir():
            return None
        wanted = fingerprint(dataset.path)
        ranked: dict[bool, list[tuple[float, Path]]] = {True: [], False: []}
        bases = self.results_dir.glob(f"*.h5ad{STAGES_SUFFIX}/{BASE_FILE}")
        for path in (*self.results_dir.glob("*.h5ad"), *bases):
            try:  # a fit's landings go when it ends: skip what vanished meanwhile
                if h5_info(path)[1] != wanted:
                    continue
                live = not is_base_file(path) or stage_report(path).alive
                if is_base_file(path) and not live and output_of(path).exists():
                    continue  # a stopped fit's landings under a finished file
                ranked[live].append((path.stat().st_mtime, path))
            except OSError:
                continue
        return max(ranked[True] or ranked[False], default=(0.0, None))[1]

    def companion_fit(self, info: Mapping[str, Any]) -> Path | None:
        """The cached fit of the same input with the same options but the other transcription
        rate (constant ↔ time-dependent α(t)), for a results file whose ``uns['velodash']`` is
        `info`; None when it has not been fitted (or `info` records no input fingerprint)."""
        fingerprint, params = info.get("fingerprint"), info.get("params")
        if not fingerprint or not isinstance(params, Mapping):
            return None
        try:
            fitted = FitParams.from_dict(dict(params))
        except (TypeError, ValueError):
            return None
        other = replace(fitted, time_dependent_rate=not fitted.time_dependent_rate)
        path = self.results_dir / f"{results_key(str(fingerprint), other)}.h5ad"
        return path if path.is_file() else None

    def open_upload(self, filename: str) -> UploadSink:
        """Start receiving an upload named `filename`: refuse it at once when uploads are off
        or its suffix is not .h5ad/.loom, else a sink (a hidden temp file in the uploads
        folder) to stream its bytes into; `store_upload` then keeps it, `discard` drops it."""
        if not self.config.allow_upload:
            raise UploadError(UPLOADS_DISABLED)
        if Path(filename or "").suffix.lower() not in SUPPORTED_SUFFIXES:
            raise UploadError(
                f"'{filename}' is not a supported file type; upload an .h5ad or .loom count "
                "file (with 'spliced' and 'unspliced' layers, or without them to predict them "
                "from a reference) or a results file from `velodash fit`."
            )
        return UploadSink(self.uploads_dir, Path(filename).name, self.config.max_upload_mb)

    def store_upload(self, sink: UploadSink) -> tuple[Dataset, bool]:
        """Validate a fully received upload and keep it under its content hash, labelled with
        the user's file name; returns (the dataset, whether it is new). A file identical to one
        already offered (by content) stores nothing and returns that dataset.

        Raises UploadError for a file that is not HDF5, or one that holds no count matrix. A
        count matrix without spliced/unspliced layers is kept: it is fitted with S/U predicted
        from a reference (`splicing_references`). The sink's temp file is renamed into place
        (atomic) only when everything passed; otherwise it stays for `sink.discard()`.
        """
        sink.close()
        name = sink.filename
        if sink.head != HDF5_MAGIC:
            raise UploadError(
                f"'{name}' is not an HDF5 file (corrupt or mislabelled); re-export it with "
                "`adata.write_h5ad(...)`."
            )
        digest = sink.digest
        existing = self.identical_to(digest)
        if existing is not None:
            return existing, False
        try:
            is_results, _, has_counts = h5_info(sink.path)
        except OSError as err:
            raise UploadError(f"'{name}' could not be read as HDF5: {err}.") from err
        suffix = Path(name).suffix.lower()
        if not (is_results or has_counts or _holds_counts(sink.path, suffix)):
            raise UploadError(
                f"'{name}' holds no count matrix: an .h5ad needs X, obs and var (as "
                "`adata.write_h5ad` writes them), a .loom its matrix. Re-export it with anndata "
                "or loompy."
            )
        target = self.uploads_dir / f"{digest[:ID_LENGTH]}{suffix}"
        write_text_atomic(_label_path(target), json.dumps({"name": name}))
        os.replace(sink.path, target)
        kind = "results" if is_results and suffix == ".h5ad" else "raw"
        return Dataset(digest[:ID_LENGTH], name, target.resolve(), kind, "upload"), True


def reference_file(results_path: str | Path, digest: str) -> Path | None:
    """The linked reference with sha256 `digest` of a fit writing `results_path` (in
    ``cache_dir/results``), made by `DatasetRegistry.reference_link`; None when absent."""
    folder = Path(results_path).parent.parent / REFERENCES
    for suffix in SUPPORTED_SUFFIXES:
        path = folder / f"{digest}{suffix}"
        if path.exists():
            return path
    return None


def _label_path(path: Path) -> Path:
    """Where an upload's original file name is kept: ``<hash>.<suffix>.json`` beside it."""
    return path.with_name(path.name + ".json")


def _label(path: Path, source: Source) -> str:
    """What the dataset list shows: the sample's title, an upload's original file name (its
    stored name is a content hash), else the file's name."""
    if source == "sample":
        return "Sample data (simulated branching)"
    if source == "upload":
        try:
            return str(json.loads(_label_path(path).read_text())["name"]) or path.name
        except (OSError, ValueError, KeyError, TypeError):
            return path.name
    return path.name
