"""The UMAP with velocity drawn on top — streamlines (width ∝ speed, arrowheads) or an arrow
grid, from veloVI, the scVelo baseline or both (in colours chosen apart from the cell types'),
optionally faded where extrinsic uncertainty is high — on axes that hug the cells, the
typed-array recolouring patch, and the veloVI–scVelo agreement map."""

from __future__ import annotations

from typing import Literal

import numpy as np
import plotly.graph_objects as go

from dashboard.data.overview import CellView, Window, window_view
from dashboard.data.projections import (
    SOURCES,
    agreement,
    baseline_missing_reason,
    confidence_levels,
    projected_velocity,
)
from dashboard.data.results import Results
from dashboard.data.stream_geometry import (
    DEFAULT_DENSITY,
    DEFAULT_SMOOTH,
    StreamGeometry,
    arrow_geometry,
    segments,
    stream_geometry,
)
from dashboard.data.values import ColorValues
from dashboard.figures.common import (
    cell_figure,
    cell_layer_split,
    cell_markers,
    cell_type_colors,
    cielab,
    embedding_axes,
    empty_figure,
    numeric_coloraxis,
    shown_groups,
    split_cells,
    typed,
)

#: Line colours (RGB) each velocity source may take, in order of preference: veloVI dark, the
#: scVelo baseline a saturated hue; :func:`source_colors` takes the first one that stands apart
#: from every cell-type colour (alpha comes from the confidence level).
SOURCE_RGB = {
    "velovi": ((0, 0, 0), (77, 0, 75), (0, 68, 27)),  # black, dark plum, dark green
    "scvelo": ((255, 0, 255), (0, 199, 217), (0, 80, 255)),  # magenta, cyan, strong blue
}
#: CIELAB distance a source colour (as drawn) keeps from the white plot, every cell-type colour
#: and the other source.
MIN_DELTA_E = 30.0
#: Drawing order when both sources are shown: the baseline first, as a wide translucent band
#: (width and opacity scaled by these factors), veloVI's thin dark lines on top of it, so both
#: stay visible where they coincide and where they part.
BOTH_ORDER = ("scvelo", "velovi")
BASELINE_WIDTH_SCALE, BASELINE_ALPHA_SCALE, BASELINE_HEAD_SCALE = 2.5, 0.7, 1.5
RANGE_PAD = 0.04  # axis range around the cells, as a fraction of their extent per axis
#: Opacity of streams by confidence level (0 low, 1 medium, 2 high; see projections).
CONFIDENCE_ALPHA = (0.12, 0.4, 0.85)
STREAM_WIDTHS = (0.6, 1.2, 1.9, 2.7)  # px, one trace per speed class (slow → fast)
ARROW_WIDTH = 1.2


VelocityMode = Literal["streams", "arrows", "none"]
SourceChoice = Literal["velovi", "scvelo", "both"]


def _title(results: Results, values: ColorValues | None) -> str:
    return f"UMAP coloured by {values.label if values else results.groupby or 'cell type'}"


def embedding_ranges(xy: np.ndarray) -> tuple[list[float], list[float]]:
    """x and y axis ranges of an embedding (N, 2): the finite points' extent padded by
    ``RANGE_PAD`` per axis, so the cells fill the plot (plotly widens one range to keep the
    equal aspect)."""
    finite = xy[np.isfinite(xy).all(1)]
    if not len(finite):
        return [0.0, 1.0], [0.0, 1.0]
    lo, hi = finite.min(0).astype(float), finite.max(0).astype(float)
    pad = np.maximum(hi - lo, 1e-9) * RANGE_PAD
    return [lo[0] - pad[0], hi[0] + pad[0]], [lo[1] - pad[1], hi[1] + pad[1]]


def embedding_aspect(results: Results) -> float:
    """Width / height of the UMAP's padded ranges (what sizes the page's graph)."""
    x, y = embedding_ranges(results.umap)
    return (x[1] - x[0]) / (y[1] - y[0])


def _ranged_axes(results: Results) -> dict:
    """Equal-aspect embedding axes whose ranges hug the cells."""
    axes = embedding_axes()
    axes["xaxis"]["range"], axes["yaxis"]["range"] = embedding_ranges(results.umap)
    return axes


def _drawn_lab(rgb: tuple[int, int, int], alphas: list[float]) -> np.ndarray:
    """CIELAB (len(alphas), 3) of ``rgb`` drawn at each opacity over the white plot."""
    return cielab([f"rgb{tuple(255 - a * (255 - v) for v in rgb)}" for a in alphas])


def source_colors(results: Results) -> dict[str, tuple[int, int, int]]:
    """Line colour (RGB) of each velocity source for these results: per source, the first of
    its ``SOURCE_RGB`` candidates that, as drawn (full confidence; the baseline also as its
    faint band), stays ``MIN_DELTA_E`` (CIELAB) from the white plot, every cell-type colour
    and the sources already chosen; else the candidate farthest from them."""

    def choose() -> dict[str, tuple[int, int, int]]:
        taken = cielab(["#ffffff", *cell_type_colors(results).values()])
        taken = taken[np.isfinite(taken).all(1)]
        chosen: dict[str, tuple[int, int, int]] = {}
        for source, candidates in SOURCE_RGB.items():
            alphas = [CONFIDENCE_ALPHA[2]]
            if source != BOTH_ORDER[-1]:  # drawn underneath as a faint band too
                alphas.append(CONFIDENCE_ALPHA[2] * BASELINE_ALPHA_SCALE)
            drawn = [_drawn_lab(rgb, alphas) for rgb in candidates]
            gaps = [
                np.linalg.norm(d[:, None] - taken[None], axis=2).min(initial=np.inf) for d in drawn
            ]
            ok = [i for i, gap in enumerate(gaps) if gap >= MIN_DELTA_E]
            pick = ok[0] if ok else int(np.argmax(gaps))
            chosen[source] = candidates[pick]
            taken = np.vstack([taken, drawn[pick]])
        return chosen

    return results.memo(("source_colors",), choose)


def embedding_figure(
    results: Results,
    color: str | ColorValues | None = None,
    velocity: VelocityMode = "streams",
    density: float = DEFAULT_DENSITY,
    smooth: float = DEFAULT_SMOOTH,
    layer: str = "Ms",
    point_size: float = 3.0,
    opacity: float = 0.8,
    source: SourceChoice = "velovi",
    confidence: bool = False,
    window: Window | None = None,
) -> go.Figure:
    """UMAP of all cells coloured by ``color`` (cell types when None, an obs column, a gene's
    ``layer`` values, or ready-made :class:`ColorValues` such as a selection) with velocity on
    top as streamlines (width ∝ speed, arrowheads) or an arrow grid.

    ``density`` scales the number of streamlines/arrows (1 = scVelo's stream default; the arrow
    grid then has 30 nodes per axis), ``smooth`` is the Gaussian kernel width in grid spacings.
    ``source``: veloVI's projected velocity, the scVelo baseline's (projected the same way, same
    density), or both overlaid (:func:`source_colors`; the baseline a wide faint band underneath,
    veloVI on top). ``confidence`` fades streams where the local extrinsic uncertainty is high
    (see :mod:`dashboard.data.projections`). Trace order: cells (one per category), velocity (per
    source), legend keys, one per category (out of the legend when the colouring is numeric: its
    colour bar explains the colours). The axis ranges hug the cells (equal aspect). The cells
    drawn are those of :func:`cells_shown` for ``window`` (the zoomed axis ranges; None: the
    overview); a subsample is named in the subtitle.
    """
    values = color if isinstance(color, ColorValues) else None
    if values is None and color is not None:
        values = results.color_values(color, layer)
    sources = list(BOTH_ORDER) if source == "both" else [source]
    extra: list = []
    missing = []
    if velocity != "none":
        for src in sources:
            if projected_velocity(results, src) is None:
                missing.append(
                    results.missing_reason("streams")
                    if src == "velovi"
                    else baseline_missing_reason(results)
                )
                continue
            build = _stream_traces if velocity == "streams" else _arrow_traces
            extra += build(results, src, density, smooth, confidence, label=len(sources) > 1)
    fig = cell_figure(
        results,
        results.umap,
        color,
        values,
        _title(results, values),
        f"{results.key}:umap",
        point_size,
        opacity,
        extra=extra,
        axes=_ranged_axes(results),
        full_hover=True,
        view=cells_shown(results, window),
        zoomable=True,
    )
    if _numeric(values):
        n_keys = len(split_cells(results, color)[0])
        for key in fig.data[len(fig.data) - n_keys :]:
            key.showlegend = False
    if missing:
        fig.add_annotation(
            text="<br>".join(missing),
            x=0.5,
            y=1.0,
            xref="paper",
            yref="paper",
            showarrow=False,
            yanchor="bottom",
        )
    return fig


def cells_shown(results: Results, window: Window | None) -> CellView:
    """The cells the UMAP draws when zoomed to ``window`` (None: the overview)."""
    return window_view(results, results.umap, window)


def _numeric(values: ColorValues | None) -> bool:
    return values is not None and values.kind == "numeric"


def recolor_patch(
    results: Results,
    color: str | None,
    previous: str | None = None,
    layer: str = "Ms",
    window: Window | None = None,
) -> dict | None:
    """The partial update that recolours an :func:`embedding_figure` built with colour
    ``previous`` (and ``window``) to ``color``, or None when the cell layer's split changes
    (rebuild instead). The colours are those of the cells drawn for ``window``.

    Returns ``{"markers": [{"color", "coloraxis"} per cell trace, in trace order],
    "coloraxis": layout.coloraxis dict or None, "title": str, "legend": bool}`` with numeric
    colours as typed arrays; apply with ``patch["data"][i]["marker"]["color"] = m["color"]``
    etc., and ``legend`` as ``showlegend`` of the last ``len(markers)`` traces (the category
    legend keys, shown only for a categorical colouring).
    """
    if cell_layer_split(results, color) != cell_layer_split(results, previous):
        return None
    values = results.color_values(color, layer) if color is not None else None
    names, groups, colors = split_cells(results, color)
    groups = shown_groups(groups, cells_shown(results, window).cells, results.n_cells)
    markers = cell_markers(values, names, groups, colors)
    numeric = _numeric(values)
    return {
        "markers": [
            {"color": typed(m["color"]) if numeric else m["color"], "coloraxis": m["coloraxis"]}
            for m in markers
        ],
        "coloraxis": numeric_coloraxis(values.values, values.label) if numeric else None,
        "title": _title(results, values),
        "legend": not numeric,
    }


def _speed_class(speed: np.ndarray, n_classes: int) -> np.ndarray:
    """Class k of each segment: speeds in (k/n, (k+1)/n] of the fastest (int (S,))."""
    rel = speed / max(float(speed.max(initial=0.0)), 1e-12)
    return np.clip(np.ceil(rel * n_classes).astype(int) - 1, 0, n_classes - 1)


def _joined(x0, y0, x1, y1) -> tuple[np.ndarray, np.ndarray]:
    """Segments as one NaN-separated float32 polyline pair (one plotly trace)."""
    nan = np.full(len(x0), np.nan)
    return (
        np.stack([x0, x1, nan], 1).ravel().astype(np.float32),
        np.stack([y0, y1, nan], 1).ravel().astype(np.float32),
    )


def speed_classes(
    x: np.ndarray, y: np.ndarray, speed: np.ndarray, n_classes: int = 4
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split the segments of NaN-separated polylines (x, y (M,), per-vertex ``speed`` (M,)) into
    ``n_classes`` classes by segment speed relative to the fastest (class k holds speeds in
    (k/n, (k+1)/n] of the maximum); each class is float32 (x, y) of 2-point segments joined by
    NaN, drawn as one trace of one line width."""
    x0, y0, x1, y1, seg_speed = segments(x, y, speed)
    cls = _speed_class(seg_speed, n_classes)
    return [
        _joined(x0[cls == c], y0[cls == c], x1[cls == c], y1[cls == c]) for c in range(n_classes)
    ]


def _levels(results: Results, x: np.ndarray, y: np.ndarray, confidence: bool) -> np.ndarray:
    """Confidence level (0–2) of points; all high when not asked for or not available."""
    levels = confidence_levels(results, np.c_[x, y]) if confidence and len(x) else None
    return np.full(len(x), 2, dtype=np.int8) if levels is None else levels


def _rgba(rgb: tuple[int, int, int], level: int, fade: float = 1.0) -> str:
    r, g, b = rgb
    return f"rgba({r}, {g}, {b}, {CONFIDENCE_ALPHA[level] * fade:.3g})"


def _velocity_traces(
    results: Results,
    source: str,
    geo: StreamGeometry,
    widths: tuple[float, ...],
    confidence: bool,
    what: str,
    label: bool,
) -> list[go.Scattergl]:
    """Segments as one trace per (width class, confidence level) — every width class even when
    empty without ``confidence``, so the trace layout is stable — plus one arrowhead trace.
    ``label`` (both sources shown): named by source, the baseline's lines and heads wider and
    fainter; the legend lists veloVI first whatever the drawing order."""
    speed_cls = _speed_class(geo.speed.astype(np.float64), len(widths))
    mid_x, mid_y = (geo.x0 + geo.x1) / 2, (geo.y0 + geo.y1) / 2
    seg_level = _levels(results, mid_x, mid_y, confidence)
    name = f"{SOURCES[source]} {what}" if label else f"velocity {what}"
    group = "velocity" if source == "velovi" else f"velocity-{source}"
    rgb = source_colors(results)[source]
    under = label and source != "velovi"
    scale, fade, head = (
        (BASELINE_WIDTH_SCALE, BASELINE_ALPHA_SCALE, BASELINE_HEAD_SCALE) if under else (1, 1, 1)
    )
    levels = (2, 1, 0) if confidence else (2,)
    traces = []
    for level in levels:
        for c, width in enumerate(widths):
            keep = (speed_cls == c) & (seg_level == level)
            if confidence and not keep.any():
                continue
            x, y = _joined(geo.x0[keep], geo.y0[keep], geo.x1[keep], geo.y1[keep])
            traces.append(
                go.Scattergl(
                    x=x,
                    y=y,
                    mode="lines",
                    line={"color": _rgba(rgb, level, fade), "width": width * scale},
                    name=name,
                    legendgroup=group,
                    legendrank=1 + list(SOURCES).index(source),
                    showlegend=not traces,
                    hoverinfo="skip",
                )
            )
    head_level = _levels(results, geo.head_x, geo.head_y, confidence)
    head_colors = [_rgba(rgb, int(lv), fade) for lv in head_level] if confidence else None
    traces.append(
        go.Scattergl(
            x=geo.head_x,
            y=geo.head_y,
            mode="markers",
            legendgroup=group,
            showlegend=False,
            hoverinfo="skip",
            marker={
                "symbol": "arrow",
                "angle": geo.head_angle,
                "size": (9 if what == "streams" else 7) * head,
                "color": head_colors or _rgba(rgb, 2, fade),
            },
        )
    )
    return traces


def _stream_traces(
    results: Results, source: str, density: float, smooth: float, confidence: bool, label: bool
) -> list[go.Scattergl]:
    geo = stream_geometry(results, source, density, smooth)
    return _velocity_traces(results, source, geo, STREAM_WIDTHS, confidence, "streams", label)


def _arrow_traces(
    results: Results, source: str, density: float, smooth: float, confidence: bool, label: bool
) -> list[go.Scattergl]:
    geo = arrow_geometry(results, source, density, smooth)
    return _velocity_traces(results, source, geo, (ARROW_WIDTH,), confidence, "arrows", label)


def agreement_figure(results: Results, point_size: float = 3.0) -> go.Figure:
    """Per cell, the cosine between veloVI's and the scVelo baseline's velocity on the UMAP
    (−1 opposite, 1 same direction; diverging colours fixed to [−1, 1]); the title gives the
    median and the share of cells with a positive cosine. Axis ranges as the velocity map's."""
    cos = agreement(results)
    title = "Agreement of veloVI and scVelo on the UMAP (cosine per cell)"
    if cos is None:
        reason = baseline_missing_reason(results) or results.missing_reason("streams")
        return empty_figure(reason or "", title)
    finite = cos[np.isfinite(cos)]
    stats = f"median {np.median(finite):.2f}, {np.mean(finite > 0):.0%} of cells agree (cos > 0)"
    values = ColorValues("agreement", "cosine", "numeric", cos)
    fig = cell_figure(
        results,
        results.umap,
        None,
        values,
        title,
        f"{results.key}:umap",
        point_size,
        0.8,
        diverging=True,
        axes=_ranged_axes(results),
        legend=False,
        subtitle=stats,
    )
    fig.layout.coloraxis.update(cmin=-1.0, cmax=1.0, cmid=0.0)
    return fig
