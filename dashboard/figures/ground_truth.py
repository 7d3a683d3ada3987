"""Ground-truth recovery on simulated data (the bundled sample carries its truth): per-gene
latent-time Spearman and velocity Pearson, and how well the uncertainties point at the cells
whose velocity direction is wrong (:mod:`core.ground_truth`), summarised and drawn."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy.stats import spearmanr

from core.ground_truth import direction_error_blocks, recovery, uncertainty_calibration
from dashboard.data.results import Results
from dashboard.figures.common import base_layout, empty_figure

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
        true_t = results.obs_numeric("true_t")
        keys = ["fit_t", "velocity"] + ["true_velocity"] * results.has_layer("true_velocity")
        parts = [
            recovery(fit_t, true_t, velocity, *(truth or [None]))
            for _, (fit_t, velocity, *truth) in results.layer_blocks(*keys)
        ]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

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


#: Uncertainty columns whose calibration is shown, with their labels.
UNCERTAINTIES = {"intrinsic": "intrinsic uncertainty", "extrinsic": "extrinsic uncertainty"}
#: Bins of cells by uncertainty in the calibration figure (deciles).
CALIBRATION_BINS = 10


def _direction_error(results: Results) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-cell direction error and its mask (:func:`core.ground_truth.direction_error`),
    memoised; None without ``layers['true_velocity']``."""
    if not results.has_layer("true_velocity"):
        return None
    return results.memo(
        ("direction_error",),
        lambda: direction_error_blocks(
            blocks for _, blocks in results.layer_blocks("velocity", "true_velocity")
        ),
    )


def uncertainty_calibration_summary(results: Results) -> dict[str, dict[str, float]] | None:
    """Per uncertainty the fit has: ``spearman`` with the direction error and ``auroc`` for
    the worst 10 % of cells (:func:`core.ground_truth.uncertainty_calibration`); None
    without a true velocity or without any uncertainty."""
    errors = _direction_error(results)
    if errors is None:
        return None
    out = {
        kind: uncertainty_calibration(results.obs_numeric(f"{kind}_uncertainty"), *errors)
        for kind in UNCERTAINTIES
        if results.has(kind)
    }
    return out or None


def calibration_figure(results: Results) -> go.Figure:
    """Median direction error of the cells in each decile of each uncertainty: a line that
    rises means the uncertainty points at the cells whose velocity is wrong."""
    errors = _direction_error(results)
    kinds = [k for k in UNCERTAINTIES if results.has(k)]
    if errors is None or not kinds:
        return empty_figure(NO_TRUTH if errors is None else "No uncertainty in this fit.")
    error, defined = errors
    fig = go.Figure()
    for kind, color in zip(kinds, ("#4c78a8", "#f58518"), strict=False):
        values = results.obs_numeric(f"{kind}_uncertainty")
        keep = defined & np.isfinite(values)
        ranks = np.argsort(np.argsort(values[keep])) * CALIBRATION_BINS // keep.sum()
        medians = [float(np.median(error[keep][ranks == b])) for b in range(CALIBRATION_BINS)]
        fig.add_trace(
            go.Scatter(
                x=np.arange(1, CALIBRATION_BINS + 1),
                y=medians,
                mode="lines+markers",
                name=UNCERTAINTIES[kind],
                line={"color": color},
                hovertemplate="decile %{x}: median error %{y:.3f}<extra>%{fullData.name}</extra>",
            )
        )
    fig.update_layout(
        base_layout("", f"{results.key}:calibration"),
        xaxis={"title": {"text": "uncertainty decile (1 = most certain tenth of cells)"},
               "dtick": 1},
        yaxis={"title": {"text": "median direction error, 1 − cos"}, "rangemode": "tozero"},
        legend={"orientation": "h", "y": 1.12},
    )  # fmt: skip
    return fig
