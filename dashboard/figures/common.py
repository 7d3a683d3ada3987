"""Shared pieces of every figure: template, layout and axes, palettes, hover, the cell layer.

Conventions shared by all figures:

* Cells are drawn with WebGL ``Scattergl`` from float32 numpy arrays, which plotly serialises as
  base64 typed arrays (``{"dtype": "f4", "bdata": …}``), never as per-cell JSON numbers or strings.
* The cell layer is **one trace per category** (cell type by default, or the categories of a
  categorical obs column): the legend is then clickable to hide or isolate a type, which is what
  users of cellxgene-like viewers expect. Numeric colourings (genes, latent time, …) keep the
  per-cell-type split and share one ``coloraxis``, so switching between the cell-type colouring
  and any numeric colouring only changes ``marker.color`` per trace (see
  :func:`dashboard.figures.embedding.recolor_patch`).
* The same cell type has the same colour in every figure (:func:`cell_type_colors`).
* Hover uses ``customdata`` (cell index, latent time, uncertainties) + ``hovertemplate``; the
  trace name carries the cell type. The app maps the index back to the cell id on click.
* Optional slots that a fit skipped give an explanatory empty figure (:func:`empty_figure`).
* Above ``dashboard.data.overview.POINT_BUDGET`` cells, the cell layer draws the subsample a
  :class:`~dashboard.data.overview.CellView` picks (the overview, or the cells of a zoomed
  window), and the figure says so in its subtitle (a figure without a title bar, in the
  annotation :func:`view_note`); :func:`cell_layer_patch` swaps the drawn cells for another
  view's.
"""

from __future__ import annotations

import itertools
import textwrap
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.colors as pcolors
import plotly.graph_objects as go
from _plotly_utils.utils import to_typed_array_spec
from plotly.exceptions import PlotlyError

from dashboard.data.overview import CellView, overview
from dashboard.data.results import Results
from dashboard.data.values import ColorValues

SEQUENTIAL = "Viridis"
DIVERGING = "RdBu_r"
_AXIS_STYLE = {"gridcolor": "#ebf0f8", "linecolor": "#ebf0f8", "zerolinecolor": "#ebf0f8"}
# A small template instead of "plotly_white": looking a named template up deep-copies and
# re-validates it on every figure (~70 ms), and its JSON rides along in every payload.
TEMPLATE = go.layout.Template(
    layout={
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "font": {"family": "Helvetica, Arial, sans-serif", "size": 12},
        "xaxis": _AXIS_STYLE,
        "yaxis": _AXIS_STYLE,
        "hoverlabel": {"align": "left"},
    }
)


def typed(arr: np.ndarray) -> dict | Any:
    """Plotly's base64 typed-array spec of ``arr`` (``{"dtype", "bdata"[, "shape"]}``).

    Use it for arrays put into a ``dash.Patch``: Dash sends Patch values as plain JSON lists
    otherwise (≈3× larger), while figures are encoded by plotly itself.
    """
    return to_typed_array_spec(np.ascontiguousarray(arr))


def wrapped(text: str, width: int) -> str:
    """``text`` broken into lines of at most ``width`` characters with ``<br>`` (plotly
    annotations do not wrap); unchanged when it fits."""
    return text if len(text) <= width else "<br>".join(textwrap.wrap(text, width))


def empty_figure(message: str, title: str = "") -> go.Figure:
    """A figure with no data and ``message`` in the middle (the empty state of a figure)."""
    fig = go.Figure(layout=base_layout(title))
    fig.add_annotation(
        text=wrapped(message, 64),
        x=0.5,
        y=0.5,
        xref="paper",
        yref="paper",
        showarrow=False,
        font_size=14,
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def base_layout(
    title: str = "", uirevision: str | None = None, subtitle: str = "", **extra: Any
) -> dict:
    """Layout shared by every figure: the title (and a smaller ``subtitle`` line under it) sits
    below the modebar row, so a long title never runs under the buttons, and the legend is
    outside the plot on the right, where plotly's automargin makes room for it, clear of axis
    titles and tick labels."""
    # The plot starts below the modebar row (30 px), the title and the subtitle: a fixed top
    # margin (not title automargin, which moves the plot after the legend is placed).
    top = 30 + (36 if title else 0) + (20 if subtitle else 0)
    return {
        "title": {
            "text": title,
            "subtitle": {"text": subtitle, "font": {"size": 11, "color": "#616e7c"}},
            "x": 0.01,
            "xanchor": "left",
            "xref": "container",
            "y": 1,
            "yanchor": "top",
            "yref": "container",
            "pad": {"t": 30},
            "font": {"size": 15},
        },
        "template": TEMPLATE,
        "margin": {"l": 60, "r": 20, "t": top, "b": 50},
        "uirevision": uirevision,
        "legend": {
            "itemsizing": "constant",
            "x": 1.02,
            "xanchor": "left",
            "y": 1,
            "yanchor": "top",
        },
        **extra,
    }


def embedding_axes(x_title: str = "UMAP 1", y_title: str = "UMAP 2") -> dict:
    """Layout axes of an embedding: equal aspect, no grid or tick labels."""
    axis = {"showgrid": False, "zeroline": False, "showticklabels": False}
    return {
        "xaxis": {"title": {"text": x_title}, **axis},
        "yaxis": {"title": {"text": y_title}, "scaleanchor": "x", "scaleratio": 1, **axis},
    }


def plot_axes(x_title: str, y_title: str, **extra: Any) -> dict:
    """Layout axes of an ordinary x/y plot (titles; ``extra`` applies to both axes)."""
    return {
        "xaxis": {"title": {"text": x_title}, **extra},
        "yaxis": {"title": {"text": y_title}, **extra},
    }


def robust_range(values: np.ndarray, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    """The [p_low, p_high] percentiles of the finite values (padded when degenerate)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, [low, high]))
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def palette(n: int) -> list[str]:
    """n distinct qualitative colours (D3 up to 10, Alphabet up to 26, then Turbo samples)."""
    if n <= len(pcolors.qualitative.D3):
        return pcolors.qualitative.D3[:n]
    if n <= len(pcolors.qualitative.Alphabet):
        return pcolors.qualitative.Alphabet[:n]
    return pcolors.sample_colorscale("Turbo", np.linspace(0, 1, n).tolist())


def _rgb(color: str) -> tuple[float, float, float]:
    """(r, g, b) in 0–1 of a ``#rgb``/``#rrggbb[aa]``/``rgb[a](…)`` colour (plotly's parser; an
    alpha is dropped), else NaNs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "#rrggbbaa": alpha ignored, as meant
            (rgb,), _ = pcolors.convert_colors_to_same_type([color], colortype="tuple")
    except (ValueError, TypeError, PlotlyError):
        return np.nan, np.nan, np.nan
    return rgb


def cielab(colors: list[str]) -> np.ndarray:
    """CIELAB (D65) coordinates (n, 3) of CSS colours written ``#rgb``, ``#rrggbb[aa]`` or
    ``rgb[a](r, g, b[, a])``; a colour in any other form (a name) gives a NaN row. Euclidean
    distance between rows is ΔE*76 (about 2.3 is a just-noticeable difference)."""
    rgb = np.array([_rgb(str(c).strip().lower()) for c in colors], dtype=float)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]
    )
    xyz = linear @ to_xyz.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def category_colors(results: Results, key: str, categories: list[str]) -> dict[str, str]:
    """Colour of each category of obs column ``key``: scanpy's ``uns[f"{key}_colors"]`` when
    it covers the column's categories, else a fixed qualitative palette in category order."""
    stored = results.adata.uns.get(f"{key}_colors")
    if stored is not None and key in results.adata.obs:
        obs_categories = getattr(results.adata.obs[key], "cat", None)
        names = [str(c) for c in obs_categories.categories] if obs_categories is not None else []
        if len(stored) == len(names) and set(categories) <= set(names):
            by_name = dict(zip(names, (str(c) for c in stored), strict=True))
            return {c: by_name[c] for c in categories}
    return dict(zip(categories, palette(len(categories)), strict=True))


def cell_type_colors(results: Results) -> dict[str, str]:
    """Cell type -> colour, identical in every figure of these results."""
    key = results.groupby or ""
    return results.memo(
        ("cell_type_colors",), lambda: category_colors(results, key, results.cell_types)
    )


@dataclass(frozen=True)
class CellHover:
    customdata: np.ndarray  # float32 (N, k): cell index, [latent time, intrinsic, extrinsic]
    template: str


def cell_hover(results: Results, full: bool = False) -> CellHover:
    """Hover of cell points: ``customdata[0]`` is always the cell index (for click callbacks);
    ``full`` adds latent time and the uncertainties (the main UMAP only, to keep the other
    figures' payloads small)."""

    def build() -> CellHover:
        columns = [np.arange(results.n_cells, dtype=np.float32)]
        lines = ["<b>%{fullData.name}</b>", "cell #%{customdata[0]}"]
        if full:
            lines.append("latent time %{customdata[1]:.3f}")
            columns.append(results.latent_time)
            for key, label in (("intrinsic", "intrinsic unc."), ("extrinsic", "extrinsic unc.")):
                if results.has(key):
                    lines.append(f"{label} %{{customdata[{len(columns)}]:.3g}}")
                    columns.append(results.obs_numeric(f"{key}_uncertainty"))
        return CellHover(
            np.ascontiguousarray(np.stack(columns, 1), dtype=np.float32), "<br>".join(lines)
        )

    return results.memo(("hover", full), build)


def group_indices(codes: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """Cell indices of each group 0..n_groups-1 (code -1 is dropped); one sort, no cell loop."""
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n_groups + 1) - 0.5)
    return [order[a:b] for a, b in itertools.pairwise(bounds)]


def cell_layer_split(results: Results, color: str | ColorValues | None) -> str | None:
    """The obs column the cell layer is split by for ``color`` (the cell-type column unless
    ``color`` is another categorical column or categorical ColorValues, whose key is returned).
    Equal splits => a recolour can be a Patch."""
    if isinstance(color, ColorValues):
        return color.key if color.kind == "categorical" else results.groupby
    if color is not None and results.obs_columns().get(color) == "categorical":
        return color
    return results.groupby


def split_cells(
    results: Results, color: str | ColorValues | None
) -> tuple[list[str], list[np.ndarray], dict[str, str]]:
    """(category names, cell indices per category, colour per category) of the cell layer."""
    key = cell_layer_split(results, color)
    if key is None or key == results.groupby:
        names, codes, colors = (
            results.cell_types,
            results.cell_type_codes,
            cell_type_colors(results),
        )
    else:
        cv = color if isinstance(color, ColorValues) else results.color_values(key)
        names, codes = cv.categories or [], cv.values
        colors = cv.colors or category_colors(results, key, names)
    return names, group_indices(codes, len(names)), colors


def numeric_coloraxis(values: np.ndarray, title: str, diverging: bool = False) -> dict:
    """A ``coloraxis`` on the robust p1–p99 range (symmetric p99 |v| when ``diverging``), with
    a horizontal colour bar under the plot (the legend keeps the right-hand side)."""
    colorbar = {
        "title": {"text": title, "side": "right"},  # beside the bar ("top" overlaps it)
        "orientation": "h",
        "yref": "container",
        "y": 0,
        "yanchor": "bottom",
        "x": 0.5,
        "xanchor": "center",
        "len": 0.6,
        "thickness": 12,
        "exponentformat": "power",  # 2×10⁻⁴, not plotly's SI "200μ" (read as micrometres)
    }
    if diverging:
        bound = max(float(np.nanpercentile(np.abs(values), 99)), 1e-12)
        return {
            "colorscale": DIVERGING,
            "cmin": -bound,
            "cmax": bound,
            "cmid": 0.0,
            "colorbar": colorbar,
        }
    lo, hi = robust_range(values)
    return {"colorscale": SEQUENTIAL, "cmin": lo, "cmax": hi, "colorbar": colorbar}


def cell_markers(
    values: ColorValues | None, names: list[str], groups: list[np.ndarray], colors: dict[str, str]
) -> list[dict]:
    """Per-trace ``marker.color``/``marker.coloraxis``: a category colour, or typed values."""
    if values is None or values.kind == "categorical":
        return [{"color": colors[n], "coloraxis": None} for n in names]
    return [{"color": values.values[idx], "coloraxis": "coloraxis"} for idx in groups]


def shown_groups(groups: list[np.ndarray], cells: np.ndarray, n_cells: int) -> list[np.ndarray]:
    """Each group's cell indices restricted to ``cells`` (order kept)."""
    if len(cells) == n_cells:
        return groups
    keep = np.zeros(n_cells, dtype=bool)
    keep[cells] = True
    return [idx[keep[idx]] for idx in groups]


def cell_traces(
    results: Results,
    xy: np.ndarray,
    color: str | ColorValues | None,
    values: ColorValues | None,
    size: float,
    opacity: float,
    full_hover: bool,
    cells: np.ndarray | None = None,
) -> list[go.Scattergl]:
    """The cell layer: one Scattergl per category of :func:`cell_layer_split` holding its
    cells among ``cells`` (all when None), out of the legend (see :func:`legend_keys`).

    Built without plotly's validation (``_validate=False``, also for the legend keys and the
    :func:`cell_figure` around them): its per-trace checks and array copies were a fifth of a
    50,000-cell gene click, and these properties are fixed here, covered by the figure tests."""
    names, groups, colors = split_cells(results, color)
    if cells is not None:
        groups = shown_groups(groups, cells, results.n_cells)
    hover = cell_hover(results, full_hover)
    template = hover.template
    if values is not None and values.kind == "numeric":
        template += f"<br>{values.label} %{{marker.color:.3g}}"
    markers = cell_markers(values, names, groups, colors)
    return [
        go.Scattergl(
            x=xy[idx, 0],
            y=xy[idx, 1],
            mode="markers",
            name=name,
            legendgroup=name,
            showlegend=False,
            customdata=hover.customdata[idx],
            hovertemplate=template + "<extra></extra>",
            marker={"size": size, "opacity": opacity, **marker},
            _validate=False,
        )
        for name, idx, marker in zip(names, groups, markers, strict=True)
    ]


def view_note(text: str) -> dict:
    """The annotation saying which cells a subsampled scatter without a title bar shows (the
    uncertainty maps; bottom left of the plot)."""
    return {
        "text": text,
        "name": "cells-shown",
        "x": 0,
        "y": 0,
        "xref": "paper",
        "yref": "paper",
        "xanchor": "left",
        "yanchor": "bottom",
        "showarrow": False,
        "font": {"size": 11, "color": "#3e4c59"},
        "bgcolor": "rgba(255, 255, 255, 0.85)",
    }


def cell_layer_patch(
    results: Results,
    xy: np.ndarray,
    color: str | ColorValues | None,
    values: ColorValues | None,
    view: CellView,
    full_hover: bool = False,
    zoomable: bool = True,
) -> dict:
    """What swaps the cells a :func:`cell_figure` (same ``xy``, ``color``, ``values`` and
    ``full_hover``) draws for ``view``'s: ``{"traces": [{"x", "y", "customdata"[, "color"]}
    per cell trace, in trace order, typed arrays], "note": the note's text}`` (``color`` only
    for a numeric colouring; the note is the figure's subtitle)."""
    _, groups, _ = split_cells(results, color)
    groups = shown_groups(groups, view.cells, results.n_cells)
    customdata = cell_hover(results, full_hover).customdata
    numeric = values is not None and values.kind == "numeric"
    traces = []
    for idx in groups:
        trace = {
            "x": typed(xy[idx, 0]),
            "y": typed(xy[idx, 1]),
            "customdata": typed(customdata[idx]),
        }
        if numeric:
            trace["color"] = typed(values.values[idx])
        traces.append(trace)
    return {"traces": traces, "note": view.note(zoomable) or ""}


def legend_keys(names: list[str], colors: dict[str, str]) -> list[go.Scatter]:
    """One empty legend entry per category in its colour, grouped with that category's cells:
    the legend always shows category colours (never the black dots plotly draws for traces
    coloured by a numeric array), and clicking an entry still hides/isolates those cells."""
    return [
        go.Scatter(
            x=[None],
            y=[None],
            mode="markers",
            name=name,
            legendgroup=name,
            hoverinfo="skip",
            marker={"size": 8, "color": colors[name]},
            _validate=False,
        )
        for name in names
    ]


def cell_figure(
    results: Results,
    xy: np.ndarray,
    color: str | ColorValues | None,
    values: ColorValues | None,
    title: str,
    uirevision: str,
    size: float = 3.0,
    opacity: float = 0.8,
    diverging: bool = False,
    extra: list | None = None,
    axes: dict | None = None,
    full_hover: bool = False,
    legend: bool = True,
    subtitle: str = "",
    view: CellView | None = None,
    zoomable: bool = False,
) -> go.Figure:
    """Cell layer, then ``extra`` traces on top, then the legend keys, built in one go (each
    plotly update call re-validates, which dominated the gene-click latency). ``legend=False``
    leaves the category keys out (a numeric colouring whose split nobody needs to toggle).
    The cell layer draws ``view``'s cells (default: the overview, every cell up to the point
    budget) and a subsample says so in the subtitle (``zoomable``: that zooming in shows more),
    where it shows above the plot however tall the plot is."""
    view = view if view is not None else overview(results)
    cells = cell_traces(results, xy, color, values, size, opacity, full_hover, view.cells)
    names, _, colors = split_cells(results, color)
    keys = legend_keys(names, colors) if legend else []
    axes = axes if axes is not None else embedding_axes()
    note = view.note(zoomable)
    layout = base_layout(title, uirevision, " · ".join(filter(None, [subtitle, note])), **axes)
    if values is not None and values.kind == "numeric":
        layout["coloraxis"] = numeric_coloraxis(values.values, values.label, diverging)
    return go.Figure(data=[*cells, *(extra or []), *keys], layout=layout, _validate=False)
