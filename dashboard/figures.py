"""Every dashboard figure, as pure functions ``(Results, options) -> plotly Figure`` (no Dash).

Conventions shared by all figures:

* Cells are drawn with WebGL ``Scattergl`` from float32 numpy arrays, which plotly serialises as
  base64 typed arrays (``{"dtype": "f4", "bdata": …}``), never as per-cell JSON numbers or strings.
* The cell layer is **one trace per category** (cell type by default, or the categories of a
  categorical obs column): the legend is then clickable to hide or isolate a type, which is what
  users of cellxgene-like viewers expect. Numeric colourings (genes, latent time, …) keep the
  per-cell-type split and share one ``coloraxis``, so switching between the cell-type colouring
  and any numeric colouring only changes ``marker.color`` per trace: :func:`recolor_patch`
  returns that update for a ``dash.Patch`` (the layout's ``uirevision`` keeps zoom and lasso).
* The same cell type has the same colour in every figure (:func:`cell_type_colors`).
* Hover uses ``customdata`` (cell index, latent time, uncertainties) + ``hovertemplate``; the
  trace name carries the cell type. The app maps the index back to the cell id on click.
* Optional slots that a fit skipped give an explanatory empty figure (:func:`empty_figure`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import plotly.colors as pcolors
import plotly.graph_objects as go
from _plotly_utils.utils import to_typed_array_spec
from plotly.subplots import make_subplots
from scipy.stats import gaussian_kde

from core.kinetics import trajectory
from dashboard.results import STATES, ColorValues, Results

SEQUENTIAL = "Viridis"
DIVERGING = "RdBu_r"
STREAM_COLOR = "rgba(40, 40, 40, 0.85)"
STATE_COLORS = dict(zip(STATES, ("#1f77b4", "#9ecae1", "#d62728", "#fcae91"), strict=True))
FIT_COLORS = {"induction": "#6a3d9a", "repression": "#b15928", "steady": "#444444"}
ECDF_POINTS = 512
KDE_POINTS = 512
ARROW_GRID = 0.6  # arrow-grid density relative to scVelo's 50 nodes per axis
STREAM_WIDTHS = (0.6, 1.2, 1.9, 2.7)  # px, one trace per speed class (slow → fast)
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
MS_LABEL = "Ms (min-max scaled moments)"
MU_LABEL = "Mu (min-max scaled moments)"


# -- shared helpers ---------------------------------------------------------------------------
def typed(arr: np.ndarray) -> dict | Any:
    """Plotly's base64 typed-array spec of ``arr`` (``{"dtype", "bdata"[, "shape"]}``).

    Use it for arrays put into a ``dash.Patch``: Dash sends Patch values as plain JSON lists
    otherwise (≈3× larger), while figures are encoded by plotly itself.
    """
    return to_typed_array_spec(np.ascontiguousarray(arr))


def empty_figure(message: str, title: str = "") -> go.Figure:
    """A figure with no data and ``message`` in the middle (the empty state of a figure)."""
    fig = go.Figure(layout=_layout(title))
    fig.add_annotation(
        text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font_size=14
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _layout(title: str = "", uirevision: str | None = None, **extra: Any) -> dict:
    return {
        "title": {"text": title, "x": 0.02, "font": {"size": 15}},
        "template": TEMPLATE,
        "margin": {"l": 55, "r": 20, "t": 45, "b": 45},
        "uirevision": uirevision,
        "legend": {"itemsizing": "constant"},
        **extra,
    }


def _embedding_axes(x_title: str = "UMAP 1", y_title: str = "UMAP 2") -> dict:
    """Layout axes of an embedding: equal aspect, no grid or tick labels."""
    axis = {"showgrid": False, "zeroline": False, "showticklabels": False}
    return {
        "xaxis": {"title": {"text": x_title}, **axis},
        "yaxis": {"title": {"text": y_title}, "scaleanchor": "x", "scaleratio": 1, **axis},
    }


def _plot_axes(x_title: str, y_title: str, **extra: Any) -> dict:
    """Layout axes of an ordinary x/y plot (titles; ``extra`` applies to both axes)."""
    return {
        "xaxis": {"title": {"text": x_title}, **extra},
        "yaxis": {"title": {"text": y_title}, **extra},
    }


def _robust_range(values: np.ndarray, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    """The [p_low, p_high] percentiles of the finite values (padded when degenerate)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, [low, high]))
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def _palette(n: int) -> list[str]:
    """n distinct qualitative colours (D3 up to 10, Alphabet up to 26, then Turbo samples)."""
    if n <= len(pcolors.qualitative.D3):
        return pcolors.qualitative.D3[:n]
    if n <= len(pcolors.qualitative.Alphabet):
        return pcolors.qualitative.Alphabet[:n]
    return pcolors.sample_colorscale("Turbo", np.linspace(0, 1, n).tolist())


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
    return dict(zip(categories, _palette(len(categories)), strict=True))


def cell_type_colors(results: Results) -> dict[str, str]:
    """Cell type -> colour, identical in every figure of these results."""
    key = results.groupby or ""
    return results.memo(
        ("cell_type_colors",), lambda: category_colors(results, key, results.cell_types)
    )


@dataclass(frozen=True)
class _Hover:
    customdata: np.ndarray  # float32 (N, k): cell index, [latent time, intrinsic, extrinsic]
    template: str


def _hover(results: Results, full: bool = False) -> _Hover:
    """Hover of cell points: ``customdata[0]`` is always the cell index (for click callbacks);
    ``full`` adds latent time and the uncertainties (the main UMAP only, to keep the other
    figures' payloads small)."""

    def build() -> _Hover:
        columns = [np.arange(results.n_cells, dtype=np.float32)]
        lines = ["<b>%{fullData.name}</b>", "cell #%{customdata[0]}"]
        if full:
            lines.append("latent time %{customdata[1]:.3f}")
            columns.append(results.latent_time)
            for key, label in (("intrinsic", "intrinsic unc."), ("extrinsic", "extrinsic unc.")):
                if results.has(key):
                    lines.append(f"{label} %{{customdata[{len(columns)}]:.3g}}")
                    columns.append(results.obs_numeric(f"{key}_uncertainty"))
        return _Hover(
            np.ascontiguousarray(np.stack(columns, 1), dtype=np.float32), "<br>".join(lines)
        )

    return results.memo(("hover", full), build)


def _groups(codes: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """Cell indices of each group 0..n_groups-1 (code -1 is dropped); one sort, no cell loop."""
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n_groups + 1) - 0.5)
    return [order[a:b] for a, b in itertools.pairwise(bounds)]


def cell_layer_split(results: Results, color: str | None) -> str | None:
    """The obs column the cell layer is split by for ``color`` (the cell-type column unless
    ``color`` is another categorical column). Equal splits => a recolour can be a Patch."""
    if color is not None and results.obs_columns().get(color) == "categorical":
        return color
    return results.groupby


def _split(
    results: Results, color: str | None
) -> tuple[list[str], list[np.ndarray], dict[str, str]]:
    key = cell_layer_split(results, color)
    if key is None or key == results.groupby:
        names, codes, colors = (
            results.cell_types,
            results.cell_type_codes,
            cell_type_colors(results),
        )
    else:
        cv = results.color_values(key)
        names, codes = cv.categories or [], cv.values
        colors = category_colors(results, key, names)
    return names, _groups(codes, len(names)), colors


def _numeric_coloraxis(values: np.ndarray, title: str, diverging: bool = False) -> dict:
    if diverging:
        bound = max(float(np.nanpercentile(np.abs(values), 99)), 1e-12)
        return {
            "colorscale": DIVERGING,
            "cmin": -bound,
            "cmax": bound,
            "cmid": 0.0,
            "colorbar": {"title": {"text": title}},
        }
    lo, hi = _robust_range(values)
    return {
        "colorscale": SEQUENTIAL,
        "cmin": lo,
        "cmax": hi,
        "colorbar": {"title": {"text": title}},
    }


def _cell_markers(
    values: ColorValues | None, names: list[str], groups: list[np.ndarray], colors: dict[str, str]
) -> list[dict]:
    """Per-trace ``marker.color``/``marker.coloraxis``: a category colour, or typed values."""
    if values is None or values.kind == "categorical":
        return [{"color": colors[n], "coloraxis": None} for n in names]
    return [{"color": values.values[idx], "coloraxis": "coloraxis"} for idx in groups]


def _cell_traces(
    results: Results,
    xy: np.ndarray,
    color: str | None,
    values: ColorValues | None,
    size: float,
    opacity: float,
    full_hover: bool,
) -> list[go.Scattergl]:
    """The cell layer: one Scattergl per category of :func:`cell_layer_split`."""
    names, groups, colors = _split(results, color)
    hover = _hover(results, full_hover)
    template = hover.template
    if values is not None and values.kind == "numeric":
        template += f"<br>{values.label} %{{marker.color:.3g}}"
    markers = _cell_markers(values, names, groups, colors)
    return [
        go.Scattergl(
            x=xy[idx, 0],
            y=xy[idx, 1],
            mode="markers",
            name=name,
            legendgroup=name,
            customdata=hover.customdata[idx],
            hovertemplate=template + "<extra></extra>",
            marker={"size": size, "opacity": opacity, **marker},
        )
        for name, idx, marker in zip(names, groups, markers, strict=True)
    ]


def _cell_figure(
    results: Results,
    xy: np.ndarray,
    color: str | None,
    values: ColorValues | None,
    title: str,
    uirevision: str,
    size: float = 3.0,
    opacity: float = 0.8,
    diverging: bool = False,
    extra: list | None = None,
    axes: dict | None = None,
    full_hover: bool = False,
) -> go.Figure:
    """Cell layer (+ ``extra`` traces on top) built in one go (each plotly update call
    re-validates, which dominated the gene-click latency)."""
    cells = _cell_traces(results, xy, color, values, size, opacity, full_hover)
    # Legend below the plot so it never overlaps the colour bar of numeric colourings.
    layout = _layout(
        title,
        uirevision,
        legend={"orientation": "h", "y": -0.08, "itemsizing": "constant"},
        **(axes if axes is not None else _embedding_axes()),
    )
    if values is not None and values.kind == "numeric":
        layout["coloraxis"] = _numeric_coloraxis(values.values, values.label, diverging)
    return go.Figure(data=[*cells, *(extra or [])], layout=layout)


# -- embedding (UMAP) with velocity streams ---------------------------------------------------
def embedding_figure(
    results: Results,
    color: str | None = None,
    velocity: Literal["streams", "arrows", "none"] = "streams",
    density: float = 1.0,
    smooth: float = 0.5,
    layer: str = "Ms",
    point_size: float = 3.0,
    opacity: float = 0.8,
) -> go.Figure:
    """UMAP of all cells coloured by ``color`` (cell types when None, an obs column, or a gene's
    ``layer`` values) with velocity drawn on top as streamlines (width ∝ speed, arrowheads) or
    an arrow grid. ``density`` scales the number of streamlines/arrows (1 = scVelo's stream
    default; the arrow grid then has 30 nodes per axis),
    ``smooth`` is the Gaussian kernel width in grid spacings. Cell traces come first (indices
    0..k-1), velocity traces after them."""
    values = results.color_values(color, layer) if color is not None else None
    title = f"UMAP coloured by {values.label if values else results.groupby or 'cell type'}"
    extra = []
    if velocity != "none" and results.velocity_umap is not None:
        extra = (_stream_traces if velocity == "streams" else _arrow_traces)(
            results, density, smooth
        )
    fig = _cell_figure(
        results,
        results.umap,
        color,
        values,
        title,
        f"{results.key}:umap",
        point_size,
        opacity,
        extra=extra,
        full_hover=True,
    )
    if velocity != "none" and results.velocity_umap is None:
        fig.add_annotation(
            text=results.missing_reason("streams"),
            x=0.5,
            y=1.0,
            xref="paper",
            yref="paper",
            showarrow=False,
            yanchor="bottom",
        )
    return fig


def recolor_patch(
    results: Results, color: str | None, previous: str | None = None, layer: str = "Ms"
) -> dict | None:
    """The partial update that recolours an :func:`embedding_figure` built with colour
    ``previous`` to ``color``, or None when the cell layer's split changes (rebuild instead).

    Returns ``{"markers": [{"color", "coloraxis"} per cell trace, in trace order],
    "coloraxis": layout.coloraxis dict or None, "title": str}`` with numeric colours as typed
    arrays; apply with ``patch["data"][i]["marker"]["color"] = m["color"]`` etc.
    """
    if cell_layer_split(results, color) != cell_layer_split(results, previous):
        return None
    values = results.color_values(color, layer) if color is not None else None
    names, groups, colors = _split(results, color)
    markers = _cell_markers(values, names, groups, colors)
    numeric = values is not None and values.kind == "numeric"
    return {
        "markers": [
            {"color": typed(m["color"]) if numeric else m["color"], "coloraxis": m["coloraxis"]}
            for m in markers
        ],
        "coloraxis": _numeric_coloraxis(values.values, values.label) if numeric else None,
        "title": f"UMAP coloured by {values.label if values else results.groupby or 'cell type'}",
    }


@dataclass(frozen=True)
class StreamGeometry:
    """Streamline segments binned by speed (one (x, y) polyline array per width class, NaN
    separators, float32) and arrowheads (x, y, angle in degrees clockwise from north)."""

    classes: list[tuple[np.ndarray, np.ndarray]]
    arrow_x: np.ndarray
    arrow_y: np.ndarray
    arrow_angle: np.ndarray


def speed_classes(
    x: np.ndarray, y: np.ndarray, speed: np.ndarray, n_classes: int = 4
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split the segments of NaN-separated polylines (x, y (M,), per-vertex ``speed`` (M,)) into
    ``n_classes`` classes by segment speed relative to the fastest (class k holds speeds in
    (k/n, (k+1)/n] of the maximum); each class is float32 (x, y) of 2-point segments joined by
    NaN, drawn as one trace of one line width."""
    x, y, speed = (np.asarray(a, dtype=np.float64) for a in (x, y, speed))
    valid = np.isfinite(x) & np.isfinite(y)
    seg = np.flatnonzero(valid[:-1] & valid[1:])  # segment i joins vertices i and i+1
    seg_speed = np.nan_to_num(0.5 * (speed[seg] + speed[seg + 1]))
    rel = seg_speed / max(float(seg_speed.max(initial=0.0)), 1e-12)
    cls = np.clip(np.ceil(rel * n_classes).astype(int) - 1, 0, n_classes - 1)
    classes = []
    for c in range(n_classes):
        s = seg[cls == c]
        nan = np.full(s.size, np.nan)
        classes.append(
            (
                np.stack([x[s], x[s + 1], nan], 1).ravel().astype(np.float32),
                np.stack([y[s], y[s + 1], nan], 1).ravel().astype(np.float32),
            )
        )
    return classes


def _velocity_grid(results: Results, density: float, smooth: float, mode: str):
    from core.graph import velocity_grid

    return velocity_grid(
        results.umap, results.velocity_umap, density=density, smooth=smooth, mode=mode
    )


def _streams(results: Results, density: float, smooth: float) -> StreamGeometry:
    def build() -> StreamGeometry:
        from core.graph import streamlines

        grid = _velocity_grid(results, 1.0, smooth, "stream")
        lines = streamlines(grid, density=2.0 * density)
        classes = speed_classes(lines.x, lines.y, lines.speed, len(STREAM_WIDTHS))
        return StreamGeometry(
            classes,
            *(
                np.asarray(a, dtype=np.float32)
                for a in (lines.arrow_x, lines.arrow_y, lines.arrow_angle)
            ),
        )

    return results.memo(("streams", float(density), float(smooth)), build)


def _stream_traces(results: Results, density: float, smooth: float) -> list[go.Scattergl]:
    geo = _streams(results, density, smooth)
    traces = [
        go.Scattergl(
            x=x,
            y=y,
            mode="lines",
            line={"color": STREAM_COLOR, "width": w},
            name="velocity streams",
            legendgroup="velocity",
            showlegend=i == 0,
            hoverinfo="skip",
        )
        for i, (w, (x, y)) in enumerate(zip(STREAM_WIDTHS, geo.classes, strict=True))
    ]
    traces.append(_arrowheads(geo.arrow_x, geo.arrow_y, geo.arrow_angle, 9))
    return traces


def _arrowheads(x: np.ndarray, y: np.ndarray, angle: np.ndarray, size: float) -> go.Scattergl:
    return go.Scattergl(
        x=x,
        y=y,
        mode="markers",
        legendgroup="velocity",
        showlegend=False,
        hoverinfo="skip",
        marker={"symbol": "arrow", "angle": angle, "size": size, "color": STREAM_COLOR},
    )


def _arrow_traces(results: Results, density: float, smooth: float) -> list[go.Scattergl]:
    def build() -> tuple[np.ndarray, ...]:
        # 30 nodes per axis at density 1 (scVelo's 50 crowds a page-sized plot); UMAP units.
        grid = _velocity_grid(results, ARROW_GRID * density, smooth, "arrows")
        gx, gy = np.meshgrid(grid.x, grid.y)
        keep = np.isfinite(grid.u) & np.isfinite(grid.v)
        u, v = grid.u[keep], grid.v[keep]
        x0, y0 = gx[keep], gy[keep]
        x1, y1 = x0 + u, y0 + v
        nan = np.full(x0.size, np.nan)
        shafts_x = np.stack([x0, x1, nan], 1).ravel().astype(np.float32)
        shafts_y = np.stack([y0, y1, nan], 1).ravel().astype(np.float32)
        angle = (90.0 - np.degrees(np.arctan2(v, u))).astype(np.float32)
        return shafts_x, shafts_y, x1.astype(np.float32), y1.astype(np.float32), angle

    sx, sy, hx, hy, angle = results.memo(("arrows", float(density), float(smooth)), build)
    shafts = go.Scattergl(
        x=sx,
        y=sy,
        mode="lines",
        line={"color": STREAM_COLOR, "width": 1.2},
        name="velocity arrows",
        legendgroup="velocity",
        hoverinfo="skip",
    )
    return [shafts, _arrowheads(hx, hy, angle, 7)]


# -- uncertainty ------------------------------------------------------------------------------
def uncertainty_figures(results: Results, point_size: float = 3.0) -> go.Figure:
    """Intrinsic and extrinsic uncertainty on the UMAP, side by side in ONE figure whose two
    panels share both axes, so zoom/pan is linked client-side (and the page spends one WebGL
    context, not two). Colours: Viridis on the robust p1–p99 range, one colour bar per panel;
    a panel whose analysis was skipped says so."""
    kinds = ("intrinsic", "extrinsic")
    fig = make_subplots(
        rows=1,
        cols=2,
        shared_xaxes="all",
        shared_yaxes="all",
        horizontal_spacing=0.1,
        subplot_titles=[f"{k} uncertainty" for k in kinds],
    )
    hover = _hover(results)
    xy = results.umap
    for col, kind in enumerate(kinds, start=1):
        axis = "coloraxis" if col == 1 else "coloraxis2"
        if not results.has(kind):
            fig.add_annotation(
                text=results.missing_reason(kind),
                row=1,
                col=col,
                showarrow=False,
                x=float(xy[:, 0].mean()),
                y=float(xy[:, 1].mean()),
            )
            continue
        values = results.obs_numeric(f"{kind}_uncertainty")
        lo, hi = _robust_range(values)
        fig.add_trace(
            go.Scattergl(
                x=xy[:, 0],
                y=xy[:, 1],
                mode="markers",
                name=f"{kind} uncertainty",
                showlegend=False,
                customdata=hover.customdata,
                hovertemplate=hover.template + "<br>%{marker.color:.3g}<extra></extra>",
                marker={"size": point_size, "color": values, "coloraxis": axis},
            ),
            row=1,
            col=col,
        )
        fig.update_layout(
            {
                axis: {
                    "colorscale": SEQUENTIAL,
                    "cmin": lo,
                    "cmax": hi,
                    "colorbar": {
                        "title": {"text": kind},
                        "x": 0.45 if col == 1 else 1.0,
                        "len": 0.9,
                    },
                }
            }
        )
    fig.update_layout(_layout("", f"{results.key}:umap", showlegend=False))
    fig.update_xaxes(showgrid=False, zeroline=False, showticklabels=False)
    fig.update_yaxes(
        showgrid=False, zeroline=False, showticklabels=False, scaleanchor="x", scaleratio=1
    )
    return fig


def uncertainty_by_type_figure(
    results: Results, which: Literal["intrinsic", "extrinsic"] = "intrinsic"
) -> go.Figure:
    """Box plot of one uncertainty per cell type, summarised server-side (quartiles, whiskers at
    the 5th/95th percentiles), so the payload is a few numbers per type, not every cell."""
    if not results.has(which):
        return empty_figure(results.missing_reason(which), f"{which} uncertainty by cell type")
    values = results.obs_numeric(f"{which}_uncertainty")
    groups = _groups(results.cell_type_codes, len(results.cell_types))
    colors = cell_type_colors(results)
    fig = go.Figure()
    for name, idx in zip(results.cell_types, groups, strict=True):
        if idx.size == 0:
            continue
        p5, q1, med, q3, p95 = np.nanpercentile(values[idx], [5, 25, 50, 75, 95])
        fig.add_trace(
            go.Box(
                name=name,
                x=[name],
                lowerfence=[p5],
                q1=[q1],
                median=[med],
                q3=[q3],
                upperfence=[p95],
                mean=[float(np.nanmean(values[idx]))],
                marker_color=colors[name],
                boxpoints=False,
            )
        )
    fig.update_layout(
        _layout(
            f"{which} uncertainty by cell type (whiskers: 5th–95th pct)",
            f"{results.key}:unc-{which}",
            showlegend=False,
        )
    )
    fig.update_yaxes(title=f"{which} uncertainty")
    return fig


# -- gene views -------------------------------------------------------------------------------
def fitted_curve(results: Results, gene: str, n_points: int = 200) -> dict[str, np.ndarray]:
    """The gene's fitted trajectory from ``var['fit_*']`` (scVelo convention) via
    :func:`core.kinetics.trajectory`: float64 arrays ``t`` (0–t_max axis), ``u`` (× fit_scaling)
    and ``s``, plus the index ``switch`` of the switch point."""

    def build() -> dict[str, np.ndarray]:
        g = results.gene_arrays(gene)
        t_max = max(20.0, float(np.nanmax(g.fit_t)))
        t, u, s = trajectory(g.alpha, g.beta, g.gamma, g.t_switch, t_max=t_max, n_points=n_points)
        return {"t": t, "u": u * g.scaling, "s": s, "switch": np.searchsorted(t, g.t_switch)}

    return results.memo(("curve", gene, n_points), build)


def _fit_title(results: Results, gene: str, what: str) -> str:
    g = results.gene_arrays(gene)
    parts = [f"<b>{gene}</b> — {what}"]
    if g.likelihood is not None:
        parts.append(f"likelihood {g.likelihood:.3f}")
    if g.mse is not None:
        parts.append(f"MSE {g.mse:.3g}")
    return ", ".join(parts)


def phase_portrait_figure(
    results: Results,
    gene: str,
    color_by: Literal["cell_type", "latent_time", "state"] = "cell_type",
    point_size: float = 4.0,
) -> go.Figure:
    """Mu vs Ms of every cell (coloured by cell type, latent time or most likely state), the
    fitted induction and repression curve, and the steady-state line
    u = (γ/β)(s − min s) + min u through the lower-left corner of the data."""
    if color_by not in ("cell_type", "latent_time", "state"):
        raise ValueError(
            f"color_by must be 'cell_type', 'latent_time' or 'state', not {color_by!r}"
        )
    g = results.gene_arrays(gene)
    if color_by == "state" and g.state is None:
        return empty_figure(results.missing_reason("states"), f"{gene} phase portrait")
    curve = fitted_curve(results, gene)
    k = int(curve["switch"])
    s_min, u_min = float(np.nanmin(g.ms)), float(np.nanmin(g.mu))
    s_line = np.array([s_min, float(np.nanmax(g.ms))], dtype=np.float32)
    slope = g.gamma / g.beta
    fits = [
        go.Scattergl(
            x=curve["s"][: k + 1].astype(np.float32),
            y=curve["u"][: k + 1].astype(np.float32),
            mode="lines",
            name="induction (fit)",
            line={"color": FIT_COLORS["induction"], "width": 3},
        ),
        go.Scattergl(
            x=curve["s"][k:].astype(np.float32),
            y=curve["u"][k:].astype(np.float32),
            mode="lines",
            name="repression (fit)",
            line={"color": FIT_COLORS["repression"], "width": 3},
        ),
        go.Scattergl(
            x=s_line,
            y=(slope * (s_line - s_min) + u_min).astype(np.float32),
            mode="lines",
            name=f"steady state u = {slope:.3g}·s",
            line={"color": FIT_COLORS["steady"], "dash": "dash"},
        ),
    ]
    title = _fit_title(results, gene, "phase portrait")
    uirevision = f"{results.key}:phase:{gene}"
    axes = _plot_axes(MS_LABEL, MU_LABEL, rangemode="tozero")
    xy = np.stack([g.ms, g.mu], 1)
    if color_by == "state":
        hover = _hover(results)
        states = [
            go.Scattergl(
                x=g.ms[idx],
                y=g.mu[idx],
                mode="markers",
                name=state,
                customdata=hover.customdata[idx],
                hovertemplate=hover.template + "<extra></extra>",
                marker={"size": point_size, "opacity": 0.7, "color": STATE_COLORS[state]},
            )
            for state, idx in zip(STATES, _groups(g.state, len(STATES)), strict=True)
        ]
        return go.Figure(data=[*states, *fits], layout=_layout(title, uirevision, **axes))
    values = results.color_values("latent_time") if color_by == "latent_time" else None
    color = "latent_time" if color_by == "latent_time" else None
    return _cell_figure(
        results, xy, color, values, title, uirevision, point_size, 0.7, extra=fits, axes=axes
    )


def gene_over_time_figure(results: Results, gene: str, point_size: float = 3.0) -> go.Figure:
    """Mu and Ms of every cell against the gene's latent time (``layers['fit_t']``, 0–20 axis)
    with the fitted u(t) and s(t) and a dotted line at the switch time."""
    g = results.gene_arrays(gene)
    curve = fitted_curve(results, gene)
    colors = {"u": "#ff7f0e", "s": "#1f77b4"}
    traces = []
    for key, values, label in (("u", g.mu, "Mu (unspliced)"), ("s", g.ms, "Ms (spliced)")):
        traces += [
            go.Scattergl(
                x=g.fit_t,
                y=values,
                mode="markers",
                name=label,
                hovertemplate=f"{label}<br>t %{{x:.2f}}: %{{y:.3g}}<extra></extra>",
                marker={"size": point_size, "opacity": 0.5, "color": colors[key]},
            ),
            go.Scattergl(
                x=curve["t"].astype(np.float32),
                y=curve[key].astype(np.float32),
                mode="lines",
                name=f"{key}(t) fit",
                line={"color": colors[key], "width": 3},
            ),
        ]
    switch = {"x0": g.t_switch, "x1": g.t_switch, "y0": 0, "y1": 1, "yref": "paper"}
    layout = _layout(
        _fit_title(results, gene, "abundance over latent time"),
        f"{results.key}:time:{gene}",
        shapes=[{"type": "line", "line": {"dash": "dot", "color": "#666"}, **switch}],
        annotations=[
            {"x": g.t_switch, "y": 1, "yref": "paper", "text": "switch", "showarrow": False}
        ],
        **_plot_axes("latent time t (gene time axis, 0–20)", "min-max scaled moments"),
    )
    return go.Figure(data=traces, layout=layout)


def gene_velocity_embedding_figure(
    results: Results, gene: str, point_size: float = 3.0
) -> go.Figure:
    """The gene's velocity (``layers['velocity']``) on the UMAP, diverging colours centred at 0
    with a symmetric p99 |v| range."""
    g = results.gene_arrays(gene)
    values = ColorValues(gene, f"{gene} velocity", "numeric", g.velocity)
    return _cell_figure(
        results,
        results.umap,
        None,
        values,
        f"<b>{gene}</b> — velocity on UMAP",
        f"{results.key}:umap",
        point_size,
        0.8,
        diverging=True,
    )


def permutation_effect_figure(results: Results, gene: str) -> go.Figure:
    """Bar per cell type of the gene's permutation effect (t-statistic, ``varm``)."""
    effect = results.varm_matrix("permutation_effect")
    title = f"<b>{gene}</b> — permutation effect per cell type"
    if effect is None:
        return empty_figure(results.missing_reason("permutation"), title)
    row = effect[results.resolve_gene(gene)]
    colors = cell_type_colors(results)
    fig = go.Figure(
        go.Bar(
            x=results.cell_types,
            y=row,
            marker_color=[colors[c] for c in results.cell_types],
            hovertemplate="%{x}: t = %{y:.3g}<extra></extra>",
        )
    )
    fig.update_layout(_layout(title, f"{results.key}:perm:{gene}", showlegend=False))
    fig.update_yaxes(title="t-statistic (permuted − original error)")
    return fig


def baseline_agreement_figure(results: Results, gene: str, point_size: float = 3.0) -> go.Figure:
    """Per cell: veloVI velocity (x) against the scVelo steady-state baseline velocity (y),
    coloured by cell type, titled with the sign agreement and Pearson r."""
    title = f"<b>{gene}</b> — veloVI vs scVelo steady-state velocity"
    g = results.gene_arrays(gene)
    if g.baseline is None:
        return empty_figure(results.missing_reason("baseline"), title)
    var = results.adata.var
    stats = [
        f"{label} {var[key].iloc[g.index]:.3f}"
        for key, label in (
            ("baseline_sign_agreement", "sign agreement"),
            ("baseline_pearson", "Pearson r"),
        )
        if key in var
    ]
    return _cell_figure(
        results,
        np.stack([g.velocity, g.baseline], 1),
        None,
        None,
        ", ".join([title, *stats]),
        f"{results.key}:baseline:{gene}",
        point_size,
        0.7,
        axes=_plot_axes(
            "veloVI velocity", "scVelo steady-state velocity", zeroline=True, zerolinecolor="#999"
        ),
    )


# -- coherence --------------------------------------------------------------------------------
def coherence_ecdf(results: Results) -> tuple[np.ndarray, np.ndarray]:
    """ECDF of gene coherence per cell type on a fixed grid: ``grid`` float32 (ECDF_POINTS,)
    from the smallest to the largest coherence and ``cdf`` float32 (ECDF_POINTS, C) in [0, 1]."""

    def build() -> tuple[np.ndarray, np.ndarray]:
        coherence = results.varm_matrix("coherence")  # (G, C)
        finite = np.isfinite(coherence)
        grid = np.linspace(np.nanmin(coherence), np.nanmax(coherence), ECDF_POINTS)
        below = (coherence[None, :, :] <= grid[:, None, None]) & finite[None]
        cdf = below.sum(1) / np.maximum(finite.sum(0), 1)
        return grid.astype(np.float32), cdf.astype(np.float32)

    return results.memo(("coherence_ecdf",), build)


def coherence_cdf_figure(results: Results, cell_types: list[str] | None = None) -> go.Figure:
    """Cumulative distribution over genes of velocity coherence, one line per chosen cell type
    (all when None), computed server-side on a fixed grid of ``ECDF_POINTS`` values."""
    title = "Velocity coherence of genes, per cell type (CDF)"
    if not results.has("coherence"):
        return empty_figure(results.missing_reason("coherence"), title)
    chosen = results.cell_types if cell_types is None else cell_types
    unknown = sorted(set(chosen) - set(results.cell_types))
    if unknown:
        raise KeyError(f"unknown cell types {unknown}; the results have {results.cell_types}")
    grid, cdf = coherence_ecdf(results)
    colors = cell_type_colors(results)
    fig = go.Figure(
        [
            go.Scatter(
                x=grid,
                y=cdf[:, results.cell_types.index(name)],
                mode="lines",
                name=name,
                line={"color": colors[name], "width": 2, "shape": "hv"},
                hovertemplate=f"{name}<br>coherence ≤ %{{x:.3g}}: %{{y:.1%}} genes<extra></extra>",
            )
            for name in chosen
        ]
    )
    fig.update_layout(_layout(title, f"{results.key}:coherence"))
    fig.update_xaxes(title="velocity coherence")
    fig.update_yaxes(title="fraction of genes", range=[0, 1.02])
    return fig


def top_bottom_coherence(
    results: Results, cell_type: str, n: int = 10
) -> tuple[list[str], list[str]]:
    """The ``n`` most and least coherent genes for ``cell_type`` (most first / least first);
    empty lists when coherence was not computed."""
    coherence = results.varm_matrix("coherence")
    if coherence is None:
        return [], []
    if cell_type not in results.cell_types:
        raise KeyError(f"unknown cell type {cell_type!r}; the results have {results.cell_types}")
    column = coherence[:, results.cell_types.index(cell_type)]
    order = np.argsort(column, kind="stable")
    finite = order[np.isfinite(column[order])]
    names = np.asarray(results.gene_names)
    return names[finite[::-1][:n]].tolist(), names[finite[:n]].tolist()


# -- permutation ------------------------------------------------------------------------------
def permutation_kde(results: Results) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian KDE (scipy, Scott's bandwidth) of the permutation scores on a fixed grid of
    ``KDE_POINTS`` values spanning the scores ± 3 bandwidths: (grid, density) float64."""

    def build() -> tuple[np.ndarray, np.ndarray]:
        scores = results.adata.var["permutation_score"].to_numpy(dtype=np.float64)
        scores = scores[np.isfinite(scores)]
        kde = gaussian_kde(scores)
        pad = 3.0 * float(np.sqrt(kde.covariance[0, 0]))
        grid = np.linspace(scores.min() - pad, scores.max() + pad, KDE_POINTS)
        return grid, kde(grid)

    return results.memo(("permutation_kde",), build)


def permutation_density_figure(results: Results) -> go.Figure:
    """Density of the per-gene permutation scores, annotated with skewness and kurtosis."""
    title = "Permutation scores of genes (density)"
    if not results.has("permutation"):
        return empty_figure(results.missing_reason("permutation"), title)
    grid, density = permutation_kde(results)
    fig = go.Figure(
        go.Scatter(
            x=grid,
            y=density,
            mode="lines",
            fill="tozeroy",
            name="density",
            line={"color": "#4c78a8"},
        )
    )
    stats = results.permutation_stats()
    text = ", ".join(f"{k} {stats[k]:.2f}" for k in ("skewness", "kurtosis") if k in stats)
    if text:
        fig.add_annotation(
            text=text, x=0.98, y=0.95, xref="paper", yref="paper", showarrow=False, xanchor="right"
        )
    fig.update_layout(_layout(title, f"{results.key}:perm-density", showlegend=False))
    fig.update_xaxes(title="permutation score (max t-statistic over cell types)")
    fig.update_yaxes(title="density")
    return fig


def permutation_heatmap_figure(results: Results, n_top: int = 30) -> go.Figure:
    """Genes × cell types heatmap of the permutation effect for the ``n_top`` genes with the
    highest permutation score (best on top); ``customdata`` holds the gene name of each cell so
    a click can open that gene."""
    title = f"Permutation effect of the top {n_top} genes"
    if not results.has("permutation"):
        return empty_figure(results.missing_reason("permutation"), title)
    scores = results.adata.var["permutation_score"].to_numpy(dtype=np.float64)
    top = np.argsort(np.nan_to_num(-scores, nan=np.inf), kind="stable")[:n_top]
    z = results.varm_matrix("permutation_effect")[top]
    genes = np.asarray(results.gene_names)[top]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=results.cell_types,
            y=genes,
            colorscale="Reds",
            customdata=np.repeat(genes[:, None], len(results.cell_types), axis=1),
            colorbar={"title": {"text": "t"}},
            hovertemplate="%{customdata} in %{x}: t = %{z:.3g}<extra></extra>",
        )
    )
    fig.update_layout(
        _layout(title, f"{results.key}:perm-heatmap", height=max(350, 18 * len(top) + 120))
    )
    fig.update_yaxes(autorange="reversed", title="gene")
    fig.update_xaxes(title="cell type")
    return fig


# -- training ---------------------------------------------------------------------------------
def training_curve_figure(history: dict[str, Any] | None) -> go.Figure:
    """Train and validation ELBO (negative, lower is better) per epoch, from
    ``Results.history()`` or a live ``{"elbo_train": [...], "elbo_validation": [...]}``."""
    title = "Training curve"
    curves = (
        {
            k: np.asarray(history.get(k, []), dtype=np.float64)
            for k in ("elbo_train", "elbo_validation")
        }
        if history
        else {}
    )
    if not any(v.size for v in curves.values()):
        return empty_figure("No training history yet.", title)
    names = {"elbo_train": "train", "elbo_validation": "validation"}
    fig = go.Figure(
        [
            go.Scatter(x=np.arange(1, v.size + 1), y=v, mode="lines", name=names[k])
            for k, v in curves.items()
            if v.size
        ]
    )
    fig.update_layout(_layout(title, "training"))
    fig.update_xaxes(title="epoch")
    fig.update_yaxes(title="ELBO loss")
    return fig
