"""Intrinsic and extrinsic uncertainty: both maps in one linked figure, and per-type boxes."""

from __future__ import annotations

from typing import Literal

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures.common import (
    SEQUENTIAL,
    base_layout,
    cell_hover,
    cell_type_colors,
    empty_figure,
    group_indices,
    robust_range,
)
from dashboard.results import Results


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
    hover = cell_hover(results)
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
        lo, hi = robust_range(values)
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
    layout = base_layout("", f"{results.key}:umap", showlegend=False)
    layout["margin"]["t"] = 64  # the panel titles sit below the modebar row
    fig.update_layout(layout)
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
    fig.update_yaxes(title=f"{which} uncertainty")
    return fig
