"""Cell selections in the dashboard: resolve a lasso or box drawn on a UMAP to cells, summarise
them against the rest (via :mod:`core.selection`), and keep named selections per dataset.

* **Geometry.** The browser sends only the shape (the lasso polygon or the box ranges, a few
  hundred numbers), never the per-point list; :func:`mask_from_geometry` resolves it against
  every cell with ``matplotlib.path.Path.contains_points`` after a bounding-box cut.
* **Summary.** :func:`summarise` gives the cells by type, the median intrinsic and extrinsic
  uncertainty and the latent-time range inside vs outside, and the velocity drivers. The whole
  matrices' per-gene moments are memoised per results file, so a selection reads only the rows
  of its smaller side.
* **Saved selections** live server-side under ``cache_dir/selections/<dataset id>/<id>.json``
  (written atomically), addressed by a 10-hex-digit content id (``?sel=ID`` in a URL); the
  cells are a bit mask tied to the results' cell ids, so a selection never applies to other
  cells by accident. Ids are validated before any path is built.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.path import Path as MplPath

from core.io import write_text_atomic
from core.selection import (
    Comparison,
    Moments,
    ValueSummary,
    check_mask,
    column_moments,
    comparison_from_moments,
    drivers_frame,
    group_counts,
    rank_drivers,
    smaller_side,
    summarise_values,
)
from dashboard.data.results import Results

SELECTION_ID = re.compile(r"^[0-9a-f]{10}$")
DATASET_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_NAME = 60
MAX_VERTICES = 5000
#: A selection colouring's value in the colour dropdowns and URLs: ``sel:<id>``.
COLOR_PREFIX = "sel:"


class SelectionError(ValueError):
    """A selection that cannot be used; the message says why and what to do."""


# -- geometry ---------------------------------------------------------------------------------
def geometry_from_event(selected: dict | None) -> dict | None:
    """The shape of a plotly ``selectedData`` event: ``{"kind": "lasso", "x": [...], "y": [...]}``
    (polygon vertices) or ``{"kind": "box", "x": [x0, x1], "y": [y0, y1]}``, or None.

    Subplots name their axes ``x2``/``y2``…; the first x and y keys are used (the UMAP panels
    share coordinates). ``assets/velodash.js`` does the same in the browser, so that the points
    list never reaches the server.
    """
    if not selected:
        return None
    for kind, key in (("lasso", "lassoPoints"), ("box", "range")):
        shape = selected.get(key)
        if shape:
            xs = next((v for k, v in sorted(shape.items()) if k.startswith("x")), None)
            ys = next((v for k, v in sorted(shape.items()) if k.startswith("y")), None)
            if xs is not None and ys is not None:
                return {"kind": kind, "x": list(xs), "y": list(ys)}
    return None


def _coordinates(values, what: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise SelectionError(f"the {what} of the selection is not a list of numbers") from err
    if arr.ndim != 1 or not np.isfinite(arr).all():
        raise SelectionError(f"the {what} of the selection is not a list of finite numbers")
    return arr


def polygon_mask(xy: np.ndarray, xs, ys) -> np.ndarray:
    """Cells (xy (N, 2)) inside the polygon with vertices (xs, ys): bool (N,)."""
    px, py = _coordinates(xs, "lasso x"), _coordinates(ys, "lasso y")
    if px.size != py.size or px.size < 3:
        raise SelectionError("a lasso needs at least three points; draw it again")
    if px.size > MAX_VERTICES:
        raise SelectionError(f"the lasso has more than {MAX_VERTICES} points; draw it again")
    mask = np.zeros(len(xy), dtype=bool)
    near = (
        (xy[:, 0] >= px.min())
        & (xy[:, 0] <= px.max())
        & (xy[:, 1] >= py.min())
        & (xy[:, 1] <= py.max())
    )
    idx = np.flatnonzero(near)
    if idx.size:
        mask[idx] = MplPath(np.column_stack([px, py])).contains_points(xy[idx])
    return mask


def box_mask(xy: np.ndarray, x_range, y_range) -> np.ndarray:
    """Cells (xy (N, 2)) inside the box x_range × y_range (either order, edges included)."""
    xr, yr = _coordinates(x_range, "box x range"), _coordinates(y_range, "box y range")
    if xr.size != 2 or yr.size != 2:
        raise SelectionError("a box selection needs two x and two y values")
    return (
        (xy[:, 0] >= xr.min())
        & (xy[:, 0] <= xr.max())
        & (xy[:, 1] >= yr.min())
        & (xy[:, 1] <= yr.max())
    )


def mask_from_geometry(xy: np.ndarray, geometry: dict) -> np.ndarray:
    """The cells (xy (N, 2) float32 embedding) inside a :func:`geometry_from_event` shape."""
    if not isinstance(geometry, dict) or geometry.get("kind") not in ("lasso", "box"):
        raise SelectionError("unknown selection shape: use the lasso or box tool")
    if geometry["kind"] == "lasso":
        return polygon_mask(xy, geometry.get("x"), geometry.get("y"))
    return box_mask(xy, geometry.get("x"), geometry.get("y"))


# -- summary ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SelectionSummary:
    """What the selection panel shows.

    ``types``: one row per cell type (``cell_type``, ``n_selected``, ``n_total``,
    ``share_of_selection``, ``share_of_type``), fit order. ``values``: label -> ValueSummary for
    latent time and the uncertainties present. ``drivers``: :func:`core.selection.velocity_drivers`
    with a ``gene`` column, ranked.
    """

    n_selected: int
    n_cells: int
    types: pd.DataFrame
    values: dict[str, ValueSummary]
    drivers: pd.DataFrame


def layer_moments(results: Results, layer: str) -> Moments:
    """:class:`Moments` of a whole layer (N, G), streamed a block of genes at a time; cached
    per machine (the view cache), so later selections read only their own side."""

    def build() -> Moments:
        return Moments.concat([column_moments(v) for _, (v,) in results.layer_blocks(layer)])

    return results.memo(("moments", layer), build, shared=True)


def _comparison(results: Results, layer: str, mask: np.ndarray) -> Comparison:
    """Welch's test per gene of ``layers[layer]`` between ``mask`` and the rest, reading the
    layer a block of genes at a time (only the smaller side's rows are summed)."""
    totals = layer_moments(results, layer)
    rows, small_is_in = smaller_side(mask)
    small = Moments.concat(
        [
            column_moments(v, rows, totals.shift[genes], check_finite=not totals.all_finite)
            for genes, (v,) in results.layer_blocks(layer)
        ]
    )
    return comparison_from_moments(small, totals, small_is_in)


def drivers_table(results: Results, mask: np.ndarray, rank_by: str = "score") -> pd.DataFrame:
    """Velocity drivers of ``mask`` (N,) with gene names, ranked by ``rank_by``
    (``score``/``velocity``/``coherence``; see :mod:`core.selection`). Raises ValueError for
    an empty selection or one holding every cell."""
    mask = check_mask(mask, results.n_cells)
    coherence = (
        _comparison(results, "velocity_coherence", mask)
        if results.has_layer("velocity_coherence")
        else None
    )
    table = drivers_frame(_comparison(results, "velocity", mask), coherence)
    table.insert(0, "gene", np.asarray(results.gene_names)[table.index.to_numpy()])
    return rank_drivers(table.reset_index(drop=True), rank_by)


def summarise(results: Results, mask: np.ndarray, rank_by: str = "score") -> SelectionSummary:
    """:class:`SelectionSummary` of the cells in ``mask`` (N,) bool against the rest.

    Raises SelectionError for an empty selection or one holding every cell.
    """
    mask = np.asarray(mask, dtype=bool)
    n_selected = int(mask.sum())
    if n_selected == 0:
        raise SelectionError("No cells in the selection: draw a lasso or box around some cells.")
    if n_selected == results.n_cells:
        raise SelectionError("Every cell is selected, so there is no rest to compare with.")
    inside, total = group_counts(results.cell_type_codes, mask, len(results.cell_types))
    with np.errstate(invalid="ignore", divide="ignore"):
        types = pd.DataFrame(
            {
                "cell_type": results.cell_types,
                "n_selected": inside,
                "n_total": total,
                "share_of_selection": inside / n_selected,
                "share_of_type": inside / total,
            }
        )
    values = {"latent time": summarise_values(results.latent_time, mask)}
    for key in ("intrinsic", "extrinsic"):
        if results.has(key):
            column = results.obs_numeric(f"{key}_uncertainty")
            values[f"{key} uncertainty"] = summarise_values(column, mask)
    return SelectionSummary(
        n_selected, results.n_cells, types, values, drivers_table(results, mask, rank_by)
    )


# -- saved selections -------------------------------------------------------------------------
@dataclass(frozen=True)
class SavedSelection:
    """A named selection of one dataset: ``mask`` (N,) bool over the results' cells."""

    id: str
    name: str
    ds: str
    mask: np.ndarray
    created: float
    owner: str = ""

    @property
    def n_selected(self) -> int:
        return int(self.mask.sum())


def clean_name(name: str | None, n_selected: int) -> str:
    """A display name: whitespace collapsed, at most MAX_NAME characters, a default when empty."""
    text = " ".join(str(name or "").split())[:MAX_NAME]
    return text or f"{n_selected} cells"


def cells_fingerprint(cell_ids: np.ndarray) -> str:
    """A short hash of the ordered cell ids a mask refers to."""
    return hashlib.sha256("\n".join(map(str, cell_ids)).encode()).hexdigest()[:16]


def check_ids(ds: str, sel_id: str | None = None) -> None:
    """Raise SelectionError unless ``ds`` (and ``sel_id``) are well-formed ids (no paths)."""
    if not isinstance(ds, str) or not DATASET_ID.match(ds):
        raise SelectionError("bad dataset id")
    if sel_id is not None and (not isinstance(sel_id, str) or not SELECTION_ID.match(sel_id)):
        raise SelectionError(
            f"'{sel_id}' is not a selection id (10 hexadecimal digits, as in a shared link)"
        )


class SelectionStore:
    """Named selections per dataset under ``cache_dir/selections``; nothing kept in memory."""

    def __init__(self, cache_dir: Path) -> None:
        self.root = Path(cache_dir) / "selections"

    def _path(self, ds: str, sel_id: str) -> Path:
        check_ids(ds, sel_id)
        return self.root / ds / f"{sel_id}.json"

    def save(
        self, ds: str, name: str | None, mask: np.ndarray, cell_ids: np.ndarray, owner: str
    ) -> SavedSelection:
        """Store ``mask`` (N,) bool for ``owner`` under a content id of the cells and the owner
        (the same user saving the same cells renames their selection; another user saving
        the same cells gets a selection of their own, never touching this one) and return it.
        Raises SelectionError for an empty mask or a bad id. Who may save is the caller's
        check (the editor role, ``selection_panel``)."""
        check_ids(ds)
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(cell_ids),):
            raise SelectionError("the selection does not match the dataset's cells")
        if not mask.any():
            raise SelectionError("No cells in the selection: nothing to save.")
        fingerprint = cells_fingerprint(cell_ids)
        packed = np.packbits(mask)
        content = ds.encode() + fingerprint.encode() + packed.tobytes() + owner.encode()
        sel_id = hashlib.sha256(content).hexdigest()[:10]
        record = {
            "id": sel_id,
            "name": clean_name(name, int(mask.sum())),
            "ds": ds,
            "n_cells": int(mask.size),
            "cells_fingerprint": fingerprint,
            "mask": base64.b64encode(packed.tobytes()).decode(),
            "created": time.time(),
            "owner": owner,
        }
        path = self._path(ds, sel_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(record), mode=0o600)
        return SavedSelection(sel_id, record["name"], ds, mask, record["created"], owner)

    def load(self, ds: str, sel_id: str, cell_ids: np.ndarray) -> SavedSelection:
        """The saved selection ``sel_id`` of ``ds`` as a mask over ``cell_ids``; SelectionError
        when the id is malformed or unknown or the selection belongs to other cells."""
        path = self._path(ds, sel_id)
        try:
            record = json.loads(path.read_text())
            n_cells = int(record["n_cells"])
            packed = np.frombuffer(base64.b64decode(record["mask"]), dtype=np.uint8)
        except FileNotFoundError as err:
            raise SelectionError(
                f"No saved selection '{sel_id}' for this dataset (it may have been made on "
                "another server)."
            ) from err
        except (ValueError, KeyError, TypeError) as err:
            raise SelectionError(f"The saved selection '{sel_id}' is unreadable.") from err
        if n_cells != len(cell_ids) or record.get("cells_fingerprint") != cells_fingerprint(
            cell_ids
        ):
            raise SelectionError(
                f"The saved selection '{sel_id}' was made on other cells (a different fit of "
                "this dataset)."
            )
        mask = np.unpackbits(packed, count=n_cells).astype(bool)
        return SavedSelection(
            sel_id,
            str(record["name"]),
            ds,
            mask,
            float(record["created"]),
            str(record.get("owner", "")),
        )

    def list(self, ds: str) -> list[dict]:
        """``[{"id", "name", "n_selected", "owner"}]`` of ``ds``'s saved selections, newest
        first (unreadable files are skipped)."""
        check_ids(ds)
        folder = self.root / ds
        items = []
        for path in folder.glob("*.json") if folder.is_dir() else []:
            try:
                record = json.loads(path.read_text())
                packed = np.frombuffer(base64.b64decode(record["mask"]), dtype=np.uint8)
                n = int(np.unpackbits(packed, count=int(record["n_cells"])).sum())
                owner = str(record.get("owner", ""))
                items.append((float(record["created"]), record["id"], record["name"], n, owner))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return [
            {"id": i, "name": name, "n_selected": n, "owner": owner}
            for _, i, name, n, owner in sorted(items)[::-1]
        ]
