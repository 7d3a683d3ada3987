"""The transcription rate of a gene's fit over its time axis, and the per-gene comparison of
a constant-rate fit with a time-dependent one (veloVI paper, Fig. 5b and 5c)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.data.results import Results
from dashboard.figures.common import base_layout, empty_figure, plot_axes
from dashboard.figures.genes import FIT_COLORS, fitted_curve, rate_label

RATE_COLOR = FIT_COLORS["induction"]


def transcription_rate_figure(fits: list[Results], gene: str) -> go.Figure:
    """α over the gene's time axis (0–20, as the phase portrait's fit) for each fit in `fits`:
    constant α solid, α(t) = α₁ − (α₁ − α)e^{−λt} dashed, 0 from each fit's switch time on
    (repression), with a dotted line at each switch."""
    title = f"<b>{gene}</b> — transcription rate over latent time"
    fits = [fit for fit in fits if gene in fit.gene_index]
    if not fits:
        return empty_figure(f"{gene} is not a fitted gene.", title)
    traces, shapes = [], []
    for fit in fits:
        curve = fitted_curve(fit, gene)
        dash = "dash" if fit.time_dependent else "solid"
        traces.append(
            go.Scatter(
                x=curve["t"].astype(np.float32),
                y=curve["rate"].astype(np.float32),
                mode="lines",
                name=rate_label(fit),
                line={"color": RATE_COLOR, "width": 3, "dash": dash, "shape": "linear"},
                hovertemplate=f"{rate_label(fit)}<br>t %{{x:.2f}}: α %{{y:.3g}}<extra></extra>",
            )
        )
        switch = float(fit.gene_arrays(gene).t_switch)
        shapes.append(
            {
                "type": "line",
                "x0": switch,
                "x1": switch,
                "y0": 0,
                "y1": 1,
                "yref": "paper",
                "line": {"dash": "dot", "color": "#666", "width": 1},
            }
        )
    g = fits[-1].gene_arrays(gene)
    subtitle = "constant during induction; 0 after the switch (dotted)"
    if fits[-1].time_dependent and g.alpha_1 is not None:
        subtitle = (
            f"α(t) = α₁ − (α₁ − α)e<sup>−λt</sup>: α {g.alpha:.3g} → α₁ {g.alpha_1:.3g}, "
            f"λ {g.lambda_alpha:.3g}; 0 after the switch (dotted)"
        )
    layout = base_layout(
        title,
        f"{fits[0].key}:rate:{gene}",
        subtitle,
        shapes=shapes,
        **plot_axes(
            "latent time t (gene time axis, 0–20)",
            "α (scaled moments per unit t)",
            rangemode="tozero",
        ),
    )
    return go.Figure(data=traces, layout=layout)


def mse_ratio_figure(comparison: pd.DataFrame, highlight: str | None = None) -> go.Figure:
    """A box (with every gene as a point) of log10(MSE constant / MSE α(t)) per gene, as the
    paper's Fig. 5b: right of 0, α(t) fits the gene better. `highlight` marks one gene."""
    title = "Per-gene fit error: constant α over α(t)"
    if comparison.empty:
        return empty_figure("No gene has a fit MSE in both fits.", title)
    ratio = comparison["log10_ratio"].to_numpy(dtype=np.float64)
    better = float(np.mean(ratio > 0))
    subtitle = (
        f"{better:.0%} of {len(ratio)} genes fit better with α(t); "
        f"median log10 ratio {np.median(ratio):.3f}"
    )
    traces = [
        go.Box(
            x=ratio.astype(np.float32),
            name="genes",
            boxpoints="all",
            jitter=0.5,
            pointpos=0,
            marker={"size": 4, "opacity": 0.5, "color": RATE_COLOR},
            line={"color": "#444"},
            fillcolor="rgba(106, 61, 154, 0.12)",
            customdata=comparison["gene"].to_numpy(dtype=object),
            hovertemplate="%{customdata}: log10 ratio %{x:.3f}<extra></extra>",
            orientation="h",
            showlegend=False,
        )
    ]
    if highlight is not None and highlight in set(comparison["gene"]):
        row = comparison.loc[comparison["gene"] == highlight].iloc[0]
        traces.append(
            go.Scatter(
                x=[row["log10_ratio"]],
                y=["genes"],
                mode="markers+text",
                text=[highlight],
                textposition="top center",
                marker={"size": 11, "color": "#d62728", "symbol": "diamond"},
                name=highlight,
                showlegend=False,
                hovertemplate=f"{highlight}: log10 ratio %{{x:.3f}}<extra></extra>",
            )
        )
    layout = base_layout(
        title,
        "rate-models",
        subtitle,
        shapes=[
            {
                "type": "line",
                "x0": 0,
                "x1": 0,
                "y0": 0,
                "y1": 1,
                "yref": "paper",
                "line": {"color": "#666", "dash": "dot"},
            }
        ],
        **plot_axes("log10(MSE constant α / MSE α(t))  — right: α(t) fits better", ""),
    )
    return go.Figure(data=traces, layout=layout)
