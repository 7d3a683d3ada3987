"""Latent-time heatmap: the top genes (by the same rankings as the portrait grid, or a typed
list) × cells ordered by latent time, smoothed and scaled spliced expression as
``scv.pl.heatmap`` draws it, with a cell-type bar on top; a click on a row opens that gene."""

from __future__ import annotations

import dash
import pandas as pd
from dash import Input, Output, State, callback, dcc, html
from dash.exceptions import PreventUpdate

from dashboard import figures
from dashboard.web import context
from dashboard.web import widgets as ui
from dashboard.web.multigene import gene_choice_controls, number, resolve_genes

dash.register_page(__name__, path="/heatmap", name="Heatmap", title="velodash · heatmap", order=7)

N_DEFAULT, N_RANGE = 30, (5, 100)
SMOOTH_DEFAULT, SMOOTH_RANGE = figures.N_CONVOLVE, (1, 200)


def layout(
    ds: str | None = None,
    rank: str | None = None,
    n: str | int = N_DEFAULT,
    genes: str | None = None,
    smooth: str | int = SMOOTH_DEFAULT,
    **_query,
) -> html.Div:
    """The heatmap for the top ``n`` genes by ``rank`` (or ``genes``), smoothed over
    ``smooth`` cells."""
    dataset, results, problem = context.resolve(ds)
    if problem is not None:
        return problem
    controls = gene_choice_controls(
        "heatmap", results, rank, number(n, N_DEFAULT, *N_RANGE), genes, N_RANGE
    )
    smoothing = html.Div(
        [
            html.Label("Smoothing window (cells)", className="label"),
            dcc.Slider(
                *SMOOTH_RANGE,
                step=1,
                value=number(smooth, SMOOTH_DEFAULT, *SMOOTH_RANGE),
                id="heatmap-smooth",
                marks=None,
                tooltip={"placement": "bottom", "always_visible": True},
            ),
        ],
        className="control",
    )
    return html.Div(
        [
            dcc.Store(id="heatmap-ds", data=dataset.id),
            dcc.Store(id="heatmap-shown"),
            dcc.Download(id="heatmap-download"),
            ui.url_state_store(),
            context.stage_watch(dataset, results, __name__, ("coherence", "permutation")),
            html.Div([*controls, smoothing], className="controls card"),
            ui.graph_card(
                "heatmap",
                ui.graph("heatmap-graph", dataset, "heatmap", "auto"),
                "As scv.pl.heatmap: cells sorted by latent time, Ms smoothed with a moving "
                "average, scaled to [0, 1] per gene, genes sorted by where they peak. Every "
                "column holds about the same number of cells, so a tick marks where latent time "
                "reaches its value and equal steps in time are unevenly spaced. Click a row to "
                "open the gene.",
            ),
        ]
    )


@callback(
    Output("heatmap-graph", "figure"),
    Output("heatmap-message", "children"),
    Output("heatmap-shown", "data"),
    Output(ui.URL_STATE, "data"),
    Input("heatmap-rank", "value"),
    Input("heatmap-n", "value"),
    Input("heatmap-show", "n_clicks"),
    Input("heatmap-smooth", "value"),
    State("heatmap-genes", "value"),
    State("heatmap-ds", "data"),
)
def draw(rank: str, n: int, _show: int, smooth: int, text: str | None, ds: str):
    """The heatmap for the ranking or the typed list (unknown names are reported)."""
    _, results = context.fitted(ds)
    genes, message, query = resolve_genes(results, rank, n, text, N_DEFAULT, N_RANGE)
    window = number(smooth, SMOOTH_DEFAULT, *SMOOTH_RANGE)
    figure = figures.heatmap_figure(results, genes, n_convolve=window)
    query["smooth"] = None if window == SMOOTH_DEFAULT else str(window)
    alert = ui.alert(message, "warning") if message else None
    shown = {"genes": genes, "smooth": window}
    return figure, alert, shown, ui.page_href("", ds, **query)


@callback(
    Output(ui.URL, "href", allow_duplicate=True),
    Input("heatmap-graph", "clickData"),
    State("heatmap-ds", "data"),
    prevent_initial_call=True,
)
def open_gene(click: dict | None, ds: str) -> str:
    """A click on a gene's row opens that gene (the cell-type bar is not a gene)."""
    points = (click or {}).get("points") or []
    gene = points[0].get("y") if points else None
    _, results = context.fitted(ds)
    if not isinstance(gene, str) or gene not in results.gene_index:
        raise PreventUpdate
    return ui.page_href("/genes", ds, gene=gene)


@callback(
    Output("heatmap-download", "data"),
    Input("heatmap-csv", "n_clicks"),
    State("heatmap-shown", "data"),
    State("heatmap-ds", "data"),
    prevent_initial_call=True,
)
def download(clicks: int, shown: dict | None, ds: str):
    """The drawn matrix: one row per gene (peak order), one column per latent-time bin."""
    if not clicks or not shown or not shown.get("genes"):
        raise PreventUpdate
    dataset, results = context.fitted(ds)
    data = figures.heatmap_data(results, shown["genes"], n_convolve=shown["smooth"])
    columns = [f"bin{k:03d}_t={t:.4f}" for k, t in enumerate(data.time)]
    table = pd.DataFrame(data.z, index=pd.Index(data.genes, name="gene"), columns=columns)
    name = ui.export_name(dataset, "heatmap")
    return dcc.send_data_frame(table.to_csv, f"{name}.csv")
