"""The UMAP with velocity drawn on top: streamlines (width ∝ speed, arrowheads) or an arrow
grid, and the typed-array recolouring patch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import plotly.graph_objects as go

from dashboard.figures.common import (
    cell_figure,
    cell_layer_split,
    cell_markers,
    numeric_coloraxis,
    split_cells,
    typed,
)
from dashboard.results import Results

STREAM_COLOR = "rgba(40, 40, 40, 0.85)"
ARROW_GRID = 0.6  # arrow-grid density relative to scVelo's 50 nodes per axis
STREAM_WIDTHS = (0.6, 1.2, 1.9, 2.7)  # px, one trace per speed class (slow → fast)


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
    fig = cell_figure(
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
    names, groups, colors = split_cells(results, color)
    markers = cell_markers(values, names, groups, colors)
    numeric = values is not None and values.kind == "numeric"
    return {
        "markers": [
            {"color": typed(m["color"]) if numeric else m["color"], "coloraxis": m["coloraxis"]}
            for m in markers
        ],
        "coloraxis": numeric_coloraxis(values.values, values.label) if numeric else None,
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
