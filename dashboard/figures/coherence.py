"""Velocity coherence: per-cell-type CDFs over genes and the most/least coherent genes."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from dashboard.figures.common import base_layout, cell_type_colors, empty_figure
from dashboard.results import Results

ECDF_POINTS = 512


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
    fig.update_layout(base_layout(title, f"{results.key}:coherence"))
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
