"""The training curve (train and validation ELBO per epoch)."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from dashboard.figures.common import base_layout, empty_figure


def training_curve_figure(history: dict[str, Any] | None, title: str = "") -> go.Figure:
    """Train and validation ELBO (negative, lower is better) per epoch, from
    ``Results.history()`` or a live ``{"elbo_train": [...], "elbo_validation": [...]}``.
    No title by default: the home page's card is titled already."""
    curves = (
        {
            k: np.asarray(history.get(k, []), dtype=np.float64)
            for k in ("elbo_train", "elbo_validation")
        }
        if history
        else {}
    )
    if not any(v.size for v in curves.values()):
        return empty_figure("No training history yet.", title)
    names = {"elbo_train": "train", "elbo_validation": "validation"}
    fig = go.Figure(
        [
            go.Scatter(x=np.arange(1, v.size + 1), y=v, mode="lines", name=names[k])
            for k, v in curves.items()
            if v.size
        ]
    )
    fig.update_layout(base_layout(title, "training"))
    fig.update_xaxes(title="epoch")
    fig.update_yaxes(title="ELBO loss")
    return fig
