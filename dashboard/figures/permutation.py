"""Permutation scores: their density (with skewness and kurtosis) and the genes × cell types
heatmap of permutation effects."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from scipy.stats import gaussian_kde

from dashboard.data.results import Results
from dashboard.figures.common import base_layout, empty_figure

KDE_POINTS = 512


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
    fig.update_layout(base_layout(title, f"{results.key}:perm-density", showlegend=False))
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
    # a signed t: diverging colours with white at 0, symmetric so that equal |t| look alike
    limit = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=results.cell_types,
            y=genes,
            colorscale="RdBu",
            reversescale=True,
            zmid=0.0,
            zmin=-limit,
            zmax=limit,
            customdata=np.repeat(genes[:, None], len(results.cell_types), axis=1),
            colorbar={
                "title": {"text": "t: fit error<br>permuted vs<br>original<br>(0 = no effect)"}
            },
            hovertemplate="%{customdata} in %{x}: t = %{z:.3g}<extra></extra>",
        )
    )
    fig.update_layout(
        base_layout(title, f"{results.key}:perm-heatmap", height=max(350, 18 * len(top) + 120))
    )
    # automargin: the gene labels push the margin and the title stands clear of them
    fig.update_yaxes(autorange="reversed", title={"text": "gene", "standoff": 8}, automargin=True)
    fig.update_xaxes(title={"text": "cell type", "standoff": 8}, automargin=True)
    return fig
