"""Figures of a fit whose spliced/unspliced counts were predicted (SplicedVAE): how the
prediction held up on the reference cells it held out (``uns['velodash']['splicing']``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go

from dashboard.figures.common import base_layout, empty_figure, plot_axes, typed


def ratio_scatter(record: Mapping[str, Any]) -> go.Figure:
    """Predicted vs true spliced share (kNN moments) of held-out reference cell-gene entries,
    with the identity line; the title gives the held-out R and RMSE."""
    held = record["held_out"]
    scatter = held.get("scatter", {})
    true = np.asarray(scatter.get("true", []), dtype=np.float32)
    predicted = np.asarray(scatter.get("predicted", []), dtype=np.float32)
    if true.size == 0:
        return empty_figure("no held-out entries were recorded")
    figure = go.Figure(
        [
            go.Scattergl(
                x=typed(true),
                y=typed(predicted),
                mode="markers",
                marker={"size": 3, "opacity": 0.35, "color": "#3b6fb6"},
                name="cell × gene",
                hovertemplate="true %{x:.2f}<br>predicted %{y:.2f}<extra></extra>",
            ),
            go.Scatter(
                x=[0, 1],
                y=[0, 1],
                mode="lines",
                line={"color": "#999", "dash": "dot"},
                name="identity",
                hoverinfo="skip",
            ),
        ]
    )
    subtitle = (
        f"R = {float(held['ratio_pearson']):.3f}, RMSE = {float(held['ratio_rmse']):.3f} "
        "(count-weighted); each gene's mean share: R = "
        f"{float(record['gene_mean_baseline']['ratio_pearson']):.3f}"
    )
    figure.update_layout(
        **base_layout("Spliced share, held-out cells", subtitle=subtitle, showlegend=False),
        **plot_axes("true s / (s + u) (kNN moments)", "predicted"),
    )
    return figure


def cosine_histogram(record: Mapping[str, Any]) -> go.Figure:
    """Distribution over held-out reference cells of the cosine between veloVI's velocity from
    predicted and from true S/U (genes both fitted), with its median."""
    velocity = record.get("velocity")
    if not velocity:
        return empty_figure("the velocity check was not run for this fit")
    cosine = np.asarray(velocity["cosine"], dtype=np.float32)
    cosine = cosine[np.isfinite(cosine)]
    median = float(velocity["cosine_median"])
    figure = go.Figure(
        go.Histogram(
            x=typed(cosine),
            xbins={"start": -1, "end": 1, "size": 0.05},
            marker={"color": "#3b6fb6"},
            name="cells",
        )
    )
    figure.add_vline(x=median, line={"color": "#c0392b", "dash": "dash"})
    subtitle = (
        f"median {median:.2f} over {cosine.size} held-out cells · latent-time Spearman "
        f"{float(velocity['latent_time_spearman']):.2f}"
    )
    figure.update_layout(
        **base_layout("Velocity: predicted vs true S/U", subtitle=subtitle, showlegend=False),
        **plot_axes("cosine per cell", "cells"),
    )
    return figure
