"""Uncertainty view: intrinsic and extrinsic uncertainty maps with linked zoom, and their
distribution per cell type."""

from __future__ import annotations

import dash
from dash import dcc, html

from dashboard import components as ui
from dashboard import figures

dash.register_page(
    __name__, path="/uncertainty", name="Uncertainty", title="velodash · uncertainty", order=2
)


def layout(ds: str | None = None, **_query) -> html.Div:
    """Both uncertainty maps (one figure, shared axes) and per-cell-type box plots."""
    _, results, problem = ui.resolve(ds)
    if problem is not None:
        return problem
    return html.Div(
        [
            html.Div(
                [
                    dcc.Graph(
                        id="uncertainty-maps",
                        figure=figures.uncertainty_figures(results),
                        style={"height": "520px"},
                        config={"displaylogo": False, "scrollZoom": True},
                    ),
                    html.P(
                        "Intrinsic: how much the posterior velocity samples of a cell disagree "
                        "in direction. Extrinsic: how much the direction changes over the cell's "
                        "neighbourhood. Both are the variance of the cosine similarity to the "
                        "mean velocity (veloVI); zooming one map zooms the other.",
                        className="caveat",
                    ),
                ],
                className="card",
            ),
            html.Div(
                [
                    html.Div(
                        dcc.Graph(
                            id="uncertainty-by-type-intrinsic",
                            figure=figures.uncertainty_by_type_figure(results, "intrinsic"),
                        ),
                        className="card",
                    ),
                    html.Div(
                        dcc.Graph(
                            id="uncertainty-by-type-extrinsic",
                            figure=figures.uncertainty_by_type_figure(results, "extrinsic"),
                        ),
                        className="card",
                    ),
                ],
                className="grid-2",
            ),
        ]
    )
