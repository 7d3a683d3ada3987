"""Ground-truth recovery on simulated data (the bundled sample carries its truth): per-gene
latent-time Spearman and velocity Pearson (:mod:`core.ground_truth`), summarised and drawn."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy.stats import spearmanr

from core.ground_truth import recovery
from dashboard.figures.common import base_layout, empty_figure
from dashboard.results import Results

NO_TRUTH = "The data carry no ground truth (only simulated data such as the sample do)."
LABELS = {
    "spearman_time": "latent time, Spearman ρ per gene",
    "pearson_velocity": "velocity, Pearson r per gene",
}


def ground_truth_metrics(results: Results) -> dict[str, np.ndarray] | None:
    """Per-gene ``spearman_time`` and (with ``layers['true_velocity']``) ``pearson_velocity``,
    float64 (G,), memoised; None when the results carry no ``obs['true_t']`` (only simulated
    data do; this is not an analysis a fit could skip, so it is not a results feature)."""
    if results.obs_numeric("true_t") is None:
        return None

    def build() -> dict[str, np.ndarray]:
        return recovery(
            results.layer_matrix("fit_t"),
            results.obs_numeric("true_t"),
            results.layer_matrix("velocity"),
            results.layer_matrix("true_velocity"),
        )

    return results.memo(("ground_truth",), build)


def ground_truth_summary(results: Results) -> dict[str, float] | None:
    """Medians of the per-gene metrics (NaN genes left out), the number of genes, and the
    cell-level Spearman of ``obs['latent_time']`` with ``obs['true_t']``; None without truth."""
    metrics = ground_truth_metrics(results)
    if metrics is None:
        return None
    summary = {f"median_{k}": float(np.nanmedian(v)) for k, v in metrics.items()}
    summary["n_genes"] = float(len(metrics["spearman_time"]))
    rho = spearmanr(results.latent_time, results.obs_numeric("true_t"), nan_policy="omit")[0]
    summary["spearman_latent_time"] = float(rho)
    return summary


def ground_truth_figure(results: Results) -> go.Figure:
    """Histograms of the per-gene recovery metrics, one panel each, with the median marked."""
    metrics = ground_truth_metrics(results)
    if metrics is None:
        return empty_figure(NO_TRUTH)
    fig = make_subplots(rows=1, cols=len(metrics), horizontal_spacing=0.12)
    for col, (key, values) in enumerate(metrics.items(), start=1):
        finite = values[np.isfinite(values)]
        median = float(np.median(finite)) if finite.size else np.nan
        fig.add_trace(
            go.Histogram(
                x=finite,
                xbins={"start": -1.0, "end": 1.0001, "size": 0.05},
                marker_color="#4c78a8",
                name=LABELS[key],
                showlegend=False,
                hovertemplate="%{x}: %{y} genes<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.add_vline(
            x=median,
            line={"color": "#d62728", "dash": "dash"},
            annotation_text=f"median {median:.2f}",
            annotation_position="top left",
            row=1,
            col=col,
        )
        fig.update_xaxes(title={"text": LABELS[key]}, range=[-1, 1.02], row=1, col=col)
        fig.update_yaxes(title={"text": "genes" if col == 1 else ""}, row=1, col=col)
    fig.update_layout(base_layout("", f"{results.key}:truth", bargap=0.05))
    return fig
