"""Permutation view: density of per-gene permutation scores (with skewness and kurtosis) and
the genes × cell types heatmap of permutation effects; clicking a heatmap cell opens the gene."""

from __future__ import annotations

import dash
import pandas as pd
from dash import Input, Output, State, callback, dcc, html
from dash.exceptions import PreventUpdate

from dashboard import figures
from dashboard.web import context
from dashboard.web import widgets as ui

dash.register_page(
    __name__, path="/permutation", name="Permutation", title="velodash · permutation", order=5
)


def _n_top(value, default: int = 30) -> int:
    try:
        return max(5, min(100, int(value)))
    except (TypeError, ValueError):
        return default


def layout(ds: str | None = None, top: str | int = 30, **_query) -> html.Div:
    """Score density, heatmap of the `top` best-scoring genes and their links."""
    dataset, results, problem = context.resolve(ds)
    if problem is not None:
        return problem
    if not results.has("permutation"):
        return html.Div(
            [
                ui.alert(results.missing_reason("permutation"), "info"),
                context.stage_watch(dataset, results, __name__, ("permutation",)),
            ]
        )
    return html.Div(
        [
            dcc.Store(id="permutation-ds", data=dataset.id),
            dcc.Download(id="permutation-download"),
            ui.url_state_store(),
            context.stage_watch(dataset, results, __name__, ("permutation",)),
            html.Div(
                [
                    html.Div(
                        [
                            ui.graph(
                                "permutation-density",
                                dataset,
                                "permutation_density",
                                "420px",
                                figure=figures.permutation_density_figure(results),
                            ),
                            html.P(
                                "Permutation score: how much a gene's fit worsens when its "
                                "spliced/unspliced values are shuffled within a cell type. "
                                "High: the gene's kinetics are well explained (veloVI).",
                                className="caveat",
                            ),
                        ],
                        className="card",
                    ),
                    html.Div(
                        [
                            html.Label("Genes in the heatmap", className="label"),
                            dcc.Slider(
                                5,
                                100,
                                5,
                                value=_n_top(top),
                                id="permutation-top",
                                marks=None,
                                tooltip={"placement": "bottom"},
                            ),
                            html.Div(id="permutation-top-genes", className="pill-list"),
                        ],
                        className="card",
                    ),
                ],
                className="grid-2",
            ),
            html.Div(
                [
                    ui.graph("permutation-heatmap", dataset, "permutation_heatmap", "auto"),
                    html.Div(
                        [
                            html.P("Click a cell to open that gene.", className="caveat"),
                            ui.download_button("permutation-csv"),
                        ],
                        className="card-foot",
                    ),
                ],
                className="card",
            ),
        ]
    )


@callback(
    Output("permutation-heatmap", "figure"),
    Output("permutation-top-genes", "children"),
    Output(ui.URL_STATE, "data"),
    Input("permutation-top", "value"),
    State("permutation-ds", "data"),
)
def heatmap(n_top: int, ds: str):
    """Heatmap and gene links for the `n_top` highest-scoring genes."""
    _, results = context.fitted(ds)
    table = results.gene_table().nlargest(_n_top(n_top), "permutation_score")
    links = [html.Span(ui.gene_link(g, ds), className="pill") for g in table["gene"]]
    return (
        figures.permutation_heatmap_figure(results, n_top=_n_top(n_top)),
        links,
        ui.page_href("", ds, top=str(_n_top(n_top))),
    )


@callback(
    Output(ui.URL, "href", allow_duplicate=True),
    Input("permutation-heatmap", "clickData"),
    State("permutation-ds", "data"),
    prevent_initial_call=True,
)
def open_gene(click: dict | None, ds: str) -> str:
    """Navigate to the gene of the clicked heatmap cell (its name is in customdata)."""
    if not click or not click.get("points"):
        raise PreventUpdate
    return ui.page_href("/genes", ds, gene=str(click["points"][0]["customdata"]))


@callback(
    Output("permutation-download", "data"),
    Input("permutation-csv", "n_clicks"),
    State("permutation-ds", "data"),
    prevent_initial_call=True,
)
def download(clicks: int, ds: str):
    """Every gene's permutation score and its effect (t-statistic) per cell type."""
    if not clicks:
        raise PreventUpdate
    dataset, results = context.fitted(ds)
    effect = pd.DataFrame(
        results.varm_matrix("permutation_effect"),
        columns=[f"effect_{c}" for c in results.cell_types],
    )
    table = pd.concat([results.gene_table()[["gene", "permutation_score"]], effect], axis=1)
    name = ui.export_name(dataset, "permutation")
    return dcc.send_data_frame(table.to_csv, f"{name}.csv", index=False)
