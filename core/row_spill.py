"""Dense layers kept on disk while a fit runs: written a block of cells at a time, in order, as
the posterior makes them, and read back whole, one layer at a time, when they are written to
the results file (gene-chunked, :mod:`core.results_io`). At 100,000 cells × 2,000 genes each
float32 layer is 0.74 GB; a fit that holds none of them between the posterior and the base
landing stays within its memory bound.

Each layer is one raw little-endian file in the dtype of its first block (float32, or int8
for the state assignment), row-major, in a folder the caller owns.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


class RowSpill:
    """(N, G) layers on disk in ``folder``, filled by consecutive blocks of rows."""

    def __init__(self, folder: str | Path, shape: tuple[int, int]) -> None:
        """Start an empty spill of ``shape`` (cells, genes) layers in ``folder`` (created)."""
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.shape = (int(shape[0]), int(shape[1]))
        self._rows: dict[str, int] = {}
        self._dtypes: dict[str, np.dtype] = {}

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.{self._dtypes[name].str[1:]}"

    def append(self, name: str, rows: slice, values: np.ndarray) -> None:
        """Write rows ``rows`` (n cells) of layer ``name``: ``values`` (n, G), in the dtype of
        the layer's first block. Blocks of a layer come in order, each starting where the
        previous one stopped."""
        written = self._rows.get(name, 0)
        n_rows = rows.stop - rows.start
        if rows.start != written or values.shape != (n_rows, self.shape[1]):
            raise ValueError(
                f"layer {name!r} has {written} rows written; got rows {rows.start}:{rows.stop} "
                f"with values of shape {values.shape} (blocks must come in order, G = "
                f"{self.shape[1]})."
            )
        dtype = self._dtypes.setdefault(name, np.dtype(values.dtype).newbyteorder("<"))
        with self._path(name).open("ab" if written else "wb") as f:
            f.write(np.ascontiguousarray(values, dtype=dtype).tobytes())
        self._rows[name] = rows.stop

    @property
    def names(self) -> list[str]:
        """The layers written so far, in the order they were started."""
        return list(self._rows)

    def load(self, name: str) -> np.ndarray:
        """Layer ``name`` whole (N, G) in its dtype; every row must have been written."""
        if self._rows.get(name) != self.shape[0]:
            raise ValueError(
                f"layer {name!r} has {self._rows.get(name, 0)} of {self.shape[0]} rows written."
            )
        return np.fromfile(self._path(name), dtype=self._dtypes[name]).reshape(self.shape)

    def remove(self) -> None:
        """Delete the folder and its layers."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self._rows.clear()
        self._dtypes.clear()
