"""The portrait grid: small-multiple phase portraits (Mu vs Ms) with the fitted kinetics, as
``scv.pl.velocity`` users expect, for many genes at once.

One figure of SVG subplots (no WebGL context per panel: browsers allow only a few), each with
a deterministic, cell-type-stratified subsample of the cells (the same cells in every panel)
and the exact fitted curve (:func:`dashboard.figures.genes.fitted_curve`, not subsampled).
"""

from __future__ import annotations

from html import escape
from typing import Literal
from urllib.parse import quote

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.data.results import Results
from dashboard.figures.common import (
    SEQUENTIAL,
    base_layout,
    cell_type_colors,
    empty_figure,
    group_indices,
    legend_keys,
    robust_range,
)
from dashboard.figures.genes import FIT_COLORS, fitted_curve

POINTS_PER_PANEL = 400
PANEL_HEIGHT = 230  # px per row of panels
COLUMNS = 4


def downsample_cells(codes: np.ndarray, n_max: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``n_max`` cells, stratified by ``codes`` (N,) (each group keeps
    its share, rounded down, and at least one cell while the budget allows), drawn with a
    seeded generator: the same input always gives the same cells. All cells when N ≤ n_max."""
    codes = np.asarray(codes)
    n = codes.size
    if n <= n_max:
        return np.arange(n)
    keys = np.random.default_rng(seed).random(n)
    _, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
    quota = np.floor(counts * n_max / n).astype(int)
    spare = n_max - quota.sum()
    empty = np.flatnonzero(quota == 0)[: max(spare, 0)]  # rare groups get one cell first
    quota[empty] = 1
    order = np.lexsort((keys, inverse))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(n, dtype=int)
    rank[order] = np.arange(n) - starts[inverse[order]]
    return np.flatnonzero(rank < quota[inverse])


def portrait_cells(results: Results, n_max: int = POINTS_PER_PANEL) -> np.ndarray:
    """The cells drawn in every panel (memoised per results): :func:`downsample_cells` of the
    cell types."""
    return results.memo(
        ("portrait_cells", n_max), lambda: downsample_cells(results.cell_type_codes, n_max)
    )


def portrait_grid_figure(
    results: Results,
    genes: list[str],
    color_by: Literal["cell_type", "latent_time"] = "cell_type",
    n_points: int = POINTS_PER_PANEL,
    columns: int = COLUMNS,
    link: str | None = None,
) -> go.Figure:
    """Phase portraits of ``genes`` in a grid of ``columns``: Mu vs Ms of the subsampled cells
    coloured by cell type (legend entries toggle a type in every panel) or latent time, with
    the fitted induction/repression curve and the steady-state line u = (γ/β)(s − min s) + min u.

    ``customdata`` of every point is ``[cell index, gene index]`` (a click opens that gene);
    ``link`` (e.g. ``"/genes?ds=sample&gene={gene}"``) makes each panel title a link.
    """
    if not genes:
        return empty_figure("No genes to show: pick a ranking or type gene names.")
    for gene in genes:
        results.resolve_gene(gene)  # KeyError with suggestions for an unknown gene
    if color_by not in ("cell_type", "latent_time"):
        raise ValueError(f"color_by must be 'cell_type' or 'latent_time', not {color_by!r}")
    cells = portrait_cells(results, n_points)
    columns = max(1, min(columns, len(genes)))
    rows = int(np.ceil(len(genes) / columns))
    titles = [
        f'<a href="{link.format(gene=quote(g))}" target="_self">{escape(g)}</a>'
        if link
        else escape(g)
        for g in genes
    ]
    fig = make_subplots(
        rows=rows,
        cols=columns,
        subplot_titles=titles,
        horizontal_spacing=0.06 if columns > 1 else 0.0,
        vertical_spacing=min(0.12, 0.5 / rows) if rows > 1 else 0.0,
    )
    colors = cell_type_colors(results)
    type_idx = group_indices(results.cell_type_codes[cells], len(results.cell_types))
    lt = results.latent_time[cells]
    traces = []
    for k, gene in enumerate(genes):
        axes = {"xaxis": f"x{k + 1 if k else ''}", "yaxis": f"y{k + 1 if k else ''}"}
        traces += _panel(results, gene, cells, type_idx, lt, color_by, colors, first=k == 0, **axes)
    if color_by == "cell_type":
        traces += legend_keys(results.cell_types, colors)
    fig.add_traces(traces)
    layout = base_layout(
        f"Phase portraits of {len(genes)} genes",
        f"{results.key}:portraits",
        f"Mu (y) against Ms (x), min-max scaled moments; {len(cells):,} of {results.n_cells:,} "
        "cells per panel; curves: fitted kinetics",
        height=PANEL_HEIGHT * rows + 130,
    )
    layout["margin"] = {**layout["margin"], "t": layout["margin"]["t"] + 22}  # gene titles
    if color_by == "latent_time":
        lo, hi = robust_range(results.latent_time)
        layout["coloraxis"] = {
            "colorscale": SEQUENTIAL,
            "cmin": lo,
            "cmax": hi,
            "colorbar": {"title": {"text": "latent time"}, "len": min(1.0, 400 / layout["height"])},
        }
    fig.update_layout(layout)
    fig.update_xaxes(rangemode="tozero", tickfont={"size": 9}, nticks=4)
    fig.update_yaxes(rangemode="tozero", tickfont={"size": 9}, nticks=4)
    fig.update_annotations(font={"size": 12})
    return fig


def _panel(
    results: Results,
    gene: str,
    cells: np.ndarray,
    type_idx: list[np.ndarray],
    lt: np.ndarray,
    color_by: str,
    colors: dict[str, str],
    first: bool,
    xaxis: str,
    yaxis: str,
) -> list[go.Scatter]:
    """One panel's traces: cells (per type, or one trace coloured by latent time), the fitted
    induction and repression curve and the steady-state line."""
    g = results.gene_arrays(gene)
    ms, mu = g.ms[cells], g.mu[cells]
    custom = np.column_stack([cells, np.full(cells.size, g.index)]).astype(np.float32)
    hover = f"<b>{gene}</b><br>Ms %{{x:.3g}}, Mu %{{y:.3g}}<extra>%{{fullData.name}}</extra>"
    axes = {"xaxis": xaxis, "yaxis": yaxis}
    marker = {"size": 3, "opacity": 0.7}
    if color_by == "cell_type":
        points = [
            go.Scatter(
                x=ms[idx],
                y=mu[idx],
                mode="markers",
                name=name,
                legendgroup=name,
                showlegend=False,
                customdata=custom[idx],
                hovertemplate=hover,
                marker={**marker, "color": colors[name]},
                **axes,
            )
            for name, idx in zip(results.cell_types, type_idx, strict=True)
            if idx.size
        ]
    else:
        points = [
            go.Scatter(
                x=ms,
                y=mu,
                mode="markers",
                name="cells",
                showlegend=False,
                customdata=custom,
                hovertemplate=hover,
                marker={**marker, "color": lt, "coloraxis": "coloraxis"},
                **axes,
            )
        ]
    curve = fitted_curve(results, gene)
    k = int(curve["switch"])
    s_min, u_min = float(np.nanmin(g.ms)), float(np.nanmin(g.mu))
    s_line = np.array([s_min, float(np.nanmax(g.ms))])
    lines = [
        ("induction (fit)", curve["s"][: k + 1], curve["u"][: k + 1], FIT_COLORS["induction"], {}),
        ("repression (fit)", curve["s"][k:], curve["u"][k:], FIT_COLORS["repression"], {}),
        (
            "steady state",
            s_line,
            g.gamma / g.beta * (s_line - s_min) + u_min,
            FIT_COLORS["steady"],
            {"dash": "dash", "width": 1},
        ),
    ]
    return points + [
        go.Scatter(
            x=x,
            y=y,
            mode="lines",
            name=name,
            legendgroup=name,
            showlegend=first,
            hoverinfo="skip",
            line={"color": color, "width": 2, **style},
            **axes,
        )
        for name, x, y, color, style in lines
    ]
