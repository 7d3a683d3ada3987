"""Intrinsic and extrinsic uncertainty: both maps in one linked figure, and per-type boxes."""

from __future__ import annotations

from typing import Literal

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.data.overview import Window, window_view
from dashboard.data.results import Results
from dashboard.figures.common import (
    SEQUENTIAL,
    base_layout,
    cell_hover,
    cell_type_colors,
    empty_figure,
    group_indices,
    robust_range,
    view_note,
    wrapped,
)

#: Unit line of every uncertainty axis: the paper's measure, drawn on its log scale.
UNIT = "cosine variance (log scale)"


def log10_uncertainty(values: np.ndarray) -> np.ndarray:
    """log10 of uncertainties (N,), float32; NaN where not positive (no direction)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, np.log10(values), np.nan).astype(np.float32)


#: Tick mantissas tried in turn until at least two ticks fall inside the colour range.
TICK_MANTISSAS = ((1,), (1, 2, 5), tuple(range(1, 10)))


def power_ticks(lo: float, hi: float) -> dict:
    """Colour-bar ticks in [lo, hi] (log10 units), written m×10ᵏ: the powers of ten when at
    least two fall inside, else the 1-2-5 steps, else every mantissa 1–9 (a range narrower
    than ×2.5); the two ends (two significant digits) if even those do not give two."""
    decades = range(int(np.floor(lo)), int(np.ceil(hi)) + 1)
    for mantissas in TICK_MANTISSAS:
        values = [k + np.log10(m) for k in decades for m in mantissas]
        values = [v for v in values if lo - 1e-9 <= v <= hi + 1e-9]
        if len(values) >= 2:
            break
    else:
        values = [lo, hi]
    return {"tickvals": values, "ticktext": [_power_label(v) for v in values]}


def _power_label(value: float) -> str:
    """``value`` (log10) as "10⁻⁴" or "3×10⁻⁴" (HTML superscript), mantissa to 2 digits."""
    exponent = int(np.floor(value + 1e-9))
    mantissa = float(f"{10 ** (value - exponent):.2g}")
    if mantissa >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    power = f"10<sup>{exponent}</sup>"
    return power if mantissa == 1 else f"{mantissa:g}×{power}"


def uncertainty_figures(
    results: Results, point_size: float = 3.0, window: Window | None = None
) -> go.Figure:
    """Intrinsic and extrinsic uncertainty on the UMAP, side by side in ONE figure whose two
    panels share both axes, so zoom/pan is linked client-side (and the page spends one WebGL
    context, not two). Colours: Viridis on log10 of the cosine variance (the paper's figures
    are on that scale; its values span decades), clipped to the p1–p99 range so a few outliers
    do not darken the rest, the colour bar labelled in powers of ten; the hover gives the raw
    value. A panel whose analysis was skipped says so. Above the point budget each panel draws
    the cells of ``window`` (the zoomed ranges; None: the overview) and a note says so."""
    kinds = ("intrinsic", "extrinsic")
    fig = make_subplots(
        rows=1,
        cols=2,
        shared_xaxes="all",
        shared_yaxes="all",
        horizontal_spacing=0.1,
        subplot_titles=[f"{k} uncertainty" for k in kinds],
    )
    hover = cell_hover(results)
    view = window_view(results, results.umap, window)
    cells = view.cells
    xy = results.umap[cells]
    for col, kind in enumerate(kinds, start=1):
        axis = "coloraxis" if col == 1 else "coloraxis2"
        if not results.has(kind):
            suffix = "" if col == 1 else str(col)  # in the panel's middle, data or not
            fig.add_annotation(
                text=wrapped(results.missing_reason(kind), 48),
                showarrow=False,
                xref="paper",
                yref="paper",
                x=float(np.mean(fig.layout[f"xaxis{suffix}"].domain)),
                y=float(np.mean(fig.layout[f"yaxis{suffix}"].domain)),
            )
            continue
        values = results.obs_numeric(f"{kind}_uncertainty")
        logged = log10_uncertainty(values)
        lo, hi = robust_range(logged)  # the colours of every cell, drawn or not
        fig.add_trace(
            go.Scattergl(
                x=xy[:, 0],
                y=xy[:, 1],
                mode="markers",
                name=f"{kind} uncertainty",
                showlegend=False,
                customdata=np.column_stack([hover.customdata[cells], values[cells]]),
                hovertemplate=hover.template
                + f"<br>{kind} uncertainty %{{customdata[{hover.customdata.shape[1]}]:.3g}}"
                + "<extra></extra>",
                marker={"size": point_size, "color": logged[cells], "coloraxis": axis},
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
                        "title": {"text": f"{kind}<br>{UNIT}<br>p1–p99", "side": "top"},
                        "x": 0.45 if col == 1 else 1.0,
                        "len": 0.8,
                        **power_ticks(lo, hi),
                    },
                }
            }
        )
    layout = base_layout("", f"{results.key}:umap", showlegend=False)
    layout["margin"]["t"] = 64  # the panel titles sit below the modebar row
    fig.update_layout(layout)
    note = view.note()
    if note:
        fig.add_annotation(view_note(note))
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
    groups = group_indices(results.cell_type_codes, len(results.cell_types))
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
        base_layout(
            f"{which} uncertainty by cell type (whiskers: 5th–95th pct)",
            f"{results.key}:unc-{which}",
            showlegend=False,
        )
    )
    # log axis: the per-type medians differ by decades (the paper's Fig. 4a is on this scale)
    # the panel's title names the uncertainty; the axis gives the unit (a longer title was
    # cut off at the plot's left edge at 1280 px)
    fig.update_yaxes(title=UNIT, type="log", exponentformat="power", automargin=True)
    return fig
