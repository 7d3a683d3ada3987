"""Portrait grid: small-multiple phase portraits with the fitted kinetics for the top genes by a
ranking, or for a gene list typed or pasted; a click on a panel opens that gene."""

from __future__ import annotations

import dash
import pandas as pd
from dash import Input, Output, State, callback, dcc, html
from dash.exceptions import PreventUpdate

from dashboard import figures
from dashboard.data.exports import cell_type_labels, fit_parameters
from dashboard.web import context
from dashboard.web import widgets as ui
from dashboard.web.multigene import gene_choice_controls, number, resolve_genes

dash.register_page(
    __name__, path="/portraits", name="Portraits", title="velodash · portraits", order=6
)

COLOR_BY = [
    {"label": "cell type", "value": "cell_type"},
    {"label": "latent time", "value": "latent_time"},
]
N_DEFAULT, N_RANGE = 16, (4, 48)


def layout(
    ds: str | None = None,
    rank: str | None = None,
    n: str | int = N_DEFAULT,
    genes: str | None = None,
    color: str = "cell_type",
    **_query,
) -> html.Div:
    """The grid for the top ``n`` genes by ``rank``, or for the comma-separated ``genes``."""
    dataset, results, problem = context.resolve(ds)
    if problem is not None:
        return problem
    color = color if color in {c["value"] for c in COLOR_BY} else "cell_type"
    controls = gene_choice_controls(
        "portraits", results, rank, number(n, N_DEFAULT, *N_RANGE), genes, N_RANGE
    )
    return html.Div(
        [
            dcc.Store(id="portraits-ds", data=dataset.id),
            dcc.Store(id="portraits-shown"),
            dcc.Download(id="portraits-download"),
            ui.url_state_store(),
            context.stage_watch(dataset, results, __name__, ("coherence", "permutation")),
            html.Div(
                [
                    *controls,
                    html.Div(
                        [
                            html.Label("Colour cells by", className="label"),
                            dcc.RadioItems(COLOR_BY, color, id="portraits-color", inline=True),
                        ],
                        className="control",
                    ),
                ],
                className="controls card",
            ),
            ui.graph_card(
                "portraits",
                ui.graph("portraits-grid", dataset, "portraits", "auto"),
                "Click a panel (or its title) to open the gene. Each panel shows the same "
                "deterministic subsample of cells, stratified by cell type; the curves are the "
                "exact fitted kinetics.",
            ),
        ]
    )


@callback(
    Output("portraits-grid", "figure"),
    Output("portraits-message", "children"),
    Output("portraits-shown", "data"),
    Output(ui.URL_STATE, "data"),
    Input("portraits-rank", "value"),
    Input("portraits-n", "value"),
    Input("portraits-show", "n_clicks"),
    Input("portraits-color", "value"),
    State("portraits-genes", "value"),
    State("portraits-ds", "data"),
)
def draw(rank: str, n: int, _show: int, color: str, text: str | None, ds: str):
    """The grid for the ranking or the typed list (unknown names are reported, not fatal)."""
    _, results = context.fitted(ds)
    genes, message, query = resolve_genes(results, rank, n, text, N_DEFAULT, N_RANGE)
    figure = figures.portrait_grid_figure(
        results, genes, color_by=color, link=ui.page_href("/genes", ds) + "&gene={gene}"
    )
    query["color"] = None if color == "cell_type" else color
    alert = ui.alert(message, "warning") if message else None
    return figure, alert, genes, ui.page_href("", ds, **query)


@callback(
    Output(ui.URL, "href", allow_duplicate=True),
    Input("portraits-grid", "clickData"),
    State("portraits-ds", "data"),
    prevent_initial_call=True,
)
def open_gene(click: dict | None, ds: str) -> str:
    """A click on a panel's point opens that gene (customdata = [cell, gene index])."""
    points = (click or {}).get("points") or []
    custom = points[0].get("customdata") if points else None
    if not custom or len(custom) < 2:
        raise PreventUpdate
    _, results = context.fitted(ds)
    return ui.page_href("/genes", ds, gene=results.gene_names[int(custom[1])])


@callback(
    Output("portraits-download", "data"),
    Input("portraits-csv", "n_clicks"),
    State("portraits-shown", "data"),
    State("portraits-ds", "data"),
    prevent_initial_call=True,
)
def download(clicks: int, genes: list[str] | None, ds: str):
    """The plotted points (Ms, Mu of the subsampled cells per gene) with each gene's fit."""
    if not clicks or not genes:
        raise PreventUpdate
    dataset, results = context.fitted(ds)
    cells = figures.portrait_cells(results)
    types = cell_type_labels(results, cells)
    points = pd.concat(
        [
            pd.DataFrame(
                {
                    "gene": gene,
                    "cell_id": results.cell_ids[cells],
                    "cell_type": types,
                    "Ms": results.gene_arrays(gene).ms[cells],
                    "Mu": results.gene_arrays(gene).mu[cells],
                }
            )
            for gene in genes
        ]
    )
    table = points.merge(fit_parameters(results, genes), on="gene", how="left")
    name = ui.export_name(dataset, "portraits")
    return dcc.send_data_frame(table.to_csv, f"{name}.csv", index=False)
