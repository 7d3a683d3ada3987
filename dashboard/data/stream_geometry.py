"""The velocity drawn on the UMAP as geometry: streamlines or an arrow grid, as float32 line
segments and arrowheads, built from a velocity projection (``core.streams``) and shared per
machine through the view cache. Figures style it (``dashboard.figures.embedding``); a finished
fit builds the default one ahead of the first visit (``dashboard.data.warm``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dashboard.data.projections import Source, projected_velocity
from dashboard.data.results import Results

#: The velocity page's default stream density and smoothing (its controls start here).
DEFAULT_DENSITY = 1.0
DEFAULT_SMOOTH = 0.5
#: Arrow-grid density relative to scVelo's 50 nodes per axis (30 per axis at density 1: 50
#: crowds a page-sized plot).
ARROW_GRID = 0.6


@dataclass(frozen=True)
class StreamGeometry:
    """Velocity drawn as 2-point line segments: start (x0, y0) and end (x1, y1) points (S,),
    each segment's speed (S,) (0 for arrows, whose length already shows speed), and arrowheads
    (x, y, angle in degrees clockwise from north) (H,). float32, UMAP units."""

    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    speed: np.ndarray
    head_x: np.ndarray
    head_y: np.ndarray
    head_angle: np.ndarray


def segments(
    x: np.ndarray, y: np.ndarray, speed: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 2-point segments of NaN-separated polylines: x0, y0, x1, y1 and mean speed (S,)."""
    x, y, speed = (np.asarray(a, dtype=np.float64) for a in (x, y, speed))
    valid = np.isfinite(x) & np.isfinite(y)
    seg = np.flatnonzero(valid[:-1] & valid[1:])  # segment i joins vertices i and i+1
    seg_speed = np.nan_to_num(0.5 * (speed[seg] + speed[seg + 1]))
    return x[seg], y[seg], x[seg + 1], y[seg + 1], seg_speed


def _velocity_grid(results: Results, source: Source, density: float, smooth: float, mode: str):
    from core.streams import velocity_grid

    V_emb = projected_velocity(results, source)
    return velocity_grid(results.umap, V_emb, density=density, smooth=smooth, mode=mode)


def stream_geometry(
    results: Results,
    source: Source = "velovi",
    density: float = DEFAULT_DENSITY,
    smooth: float = DEFAULT_SMOOTH,
) -> StreamGeometry:
    """Streamlines of ``source``'s projected velocity (matplotlib's integrator on scVelo's
    grid), cached per machine by content, source, density and smoothing."""

    def build() -> StreamGeometry:
        from core.streams import streamlines

        grid = _velocity_grid(results, source, 1.0, smooth, "stream")
        lines = streamlines(grid, density=2.0 * density)
        return StreamGeometry(
            *(a.astype(np.float32) for a in segments(lines.x, lines.y, lines.speed)),
            *(
                np.asarray(a, dtype=np.float32)
                for a in (lines.arrow_x, lines.arrow_y, lines.arrow_angle)
            ),
        )

    return results.memo(("streams", source, float(density), float(smooth)), build, shared=True)


def arrow_geometry(
    results: Results,
    source: Source = "velovi",
    density: float = DEFAULT_DENSITY,
    smooth: float = DEFAULT_SMOOTH,
) -> StreamGeometry:
    """One arrow per grid node (:data:`ARROW_GRID` × density), its length the smoothed
    projected velocity there; cached like :func:`stream_geometry`."""

    def build() -> StreamGeometry:
        grid = _velocity_grid(results, source, ARROW_GRID * density, smooth, "arrows")
        gx, gy = np.meshgrid(grid.x, grid.y)
        keep = np.isfinite(grid.u) & np.isfinite(grid.v)
        u, v = grid.u[keep], grid.v[keep]
        x0, y0 = gx[keep], gy[keep]
        angle = 90.0 - np.degrees(np.arctan2(v, u))
        f32 = (np.asarray(a, dtype=np.float32) for a in (x0, y0, x0 + u, y0 + v))
        x0, y0, x1, y1 = f32
        return StreamGeometry(x0, y0, x1, y1, np.zeros_like(x0), x1, y1, angle.astype(np.float32))

    return results.memo(("arrows", source, float(density), float(smooth)), build, shared=True)
