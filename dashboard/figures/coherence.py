"""Velocity coherence: per-cell-type CDFs over genes and the most/least coherent genes.

Coherence of a gene in a cell type is the mean over its cells of velocity × displacement
towards the predicted future state (veloVI paper, Methods): positive when the gene's velocity
points where the cell is going. Its values are heavy tailed around 0 (on the pancreas a fifth
to two fifths of a type's genes lie within ±10⁻⁴ while a few reach ±10⁻²), so an axis from the
smallest to the largest value squeezes every curve into a vertical line at 0. The x axis
therefore spans where the curves rise and part, the 1st to 99th percentile of the coherence of
the shown cell types (widened to include 0, where the sign changes), and the figure says how
many values lie outside it. The axis stays linear, as the paper's coherence plots, so distances
read as differences in coherence; hover values are the true ones and the modebar's autoscale
shows every value.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from dashboard.data.results import Results
from dashboard.figures.common import base_layout, cell_type_colors, empty_figure

ECDF_POINTS = 512
#: percentiles of the shown cell types' coherence (all genes and types together) the x axis spans
VIEW_PERCENTILES = (1.0, 99.0)
#: margin added on both sides of the x range, as a fraction of its width
VIEW_PAD = 0.04


def coherence_ecdf(results: Results) -> tuple[np.ndarray, np.ndarray]:
    """ECDF of gene coherence per cell type on a fixed grid: ``grid`` float32 (ECDF_POINTS,)
    from the smallest to the largest coherence at evenly spaced quantiles of all values (so
    steps are dense where genes are) and ``cdf`` float32 (ECDF_POINTS, C) in [0, 1], the
    fraction of the type's genes with coherence ≤ grid."""

    def build() -> tuple[np.ndarray, np.ndarray]:
        coherence = results.varm_matrix("coherence")  # (G, C)
        finite = np.isfinite(coherence)
        grid = np.quantile(coherence[finite], np.linspace(0.0, 1.0, ECDF_POINTS))
        below = (coherence[None, :, :] <= grid[:, None, None]) & finite[None]
        cdf = below.sum(1) / np.maximum(finite.sum(0), 1)
        return grid.astype(np.float32), cdf.astype(np.float32)

    return results.memo(("coherence_ecdf",), build)


def _columns(results: Results, cell_types: list[str]) -> np.ndarray:
    """Coherence (G, len(cell_types)) of the given cell types, in that order."""
    return results.varm_matrix("coherence")[:, [results.cell_types.index(c) for c in cell_types]]


def gene_coherence(results: Results, cell_type: str, genes: list[str]) -> np.ndarray:
    """Coherence float (len(genes),) of ``genes`` in ``cell_type`` (unknown names raise)."""
    column = _columns(results, [cell_type])[:, 0]
    return column[[results.resolve_gene(g) for g in genes]]


def coherence_view_range(results: Results, cell_types: list[str]) -> tuple[float, float] | None:
    """The x range (lo, hi) of the CDF figure: the ``VIEW_PERCENTILES`` of the coherence of
    all genes in ``cell_types`` together, widened to include 0 and padded by ``VIEW_PAD``;
    None when they have no finite value."""
    columns = _columns(results, cell_types)
    values = columns[np.isfinite(columns)]
    if values.size == 0:
        return None
    lo, hi = (float(v) for v in np.percentile(values, VIEW_PERCENTILES))
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    pad = VIEW_PAD * (hi - lo) if hi > lo else 1e-6
    return lo - pad, hi + pad


def _clipping_note(values: np.ndarray, lo: float, hi: float) -> str:
    """What the x range leaves out of ``values`` (finite coherence of the shown types)."""
    outside = (values < lo) | (values > hi)
    if not outside.any():
        return "All values are in view."
    return (
        f"{outside.mean():.1%} of the values lie outside the axis (all values: "
        f"{values.min():.3g} to {values.max():.3g}); autoscale in the modebar shows them."
    )


def coherence_cdf_figure(results: Results, cell_types: list[str] | None = None) -> go.Figure:
    """Cumulative distribution over genes of velocity coherence, one line per chosen cell type
    (all when None), computed server-side on a grid of ``ECDF_POINTS`` values; the x axis spans
    :func:`coherence_view_range` and the subtitle says what it leaves out."""
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
    view = coherence_view_range(results, chosen)
    subtitle = ""
    if view is not None:
        columns = _columns(results, chosen)
        low, high = VIEW_PERCENTILES
        subtitle = f"x axis: percentiles {low:g}–{high:g} of the values shown, and 0. "
        subtitle += _clipping_note(columns[np.isfinite(columns)], *view)
    fig.update_layout(base_layout(title, f"{results.key}:coherence", subtitle))
    fig.update_xaxes(
        title="velocity coherence (mean of velocity × displacement to the predicted future state)",
        range=view,
        zeroline=True,
        zerolinecolor="#9aa5b1",
        exponentformat="power",
    )
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
