"""Coherence view: per-cell-type CDFs of gene velocity coherence and the most and least
coherent genes of a chosen cell type (each a link to the gene view)."""

from __future__ import annotations

import dash
import pandas as pd
from dash import Input, Output, State, callback, dcc, html
from dash.exceptions import PreventUpdate

from dashboard import figures
from dashboard.data.results import Results
from dashboard.figures.coherence import gene_coherence
from dashboard.web import context
from dashboard.web import widgets as ui

dash.register_page(
    __name__, path="/coherence", name="Coherence", title="velodash · coherence", order=4
)


def layout(ds: str | None = None, type: str | None = None, **_query) -> html.Div:
    """CDF figure with a cell-type filter, and top/bottom genes of cell type `type`."""
    dataset, results, problem = context.resolve(ds)
    if problem is not None:
        return problem
    if not results.has("coherence"):
        return html.Div(
            [
                ui.alert(results.missing_reason("coherence"), "info"),
                context.stage_watch(dataset, results, __name__, ("coherence",)),
            ]
        )
    cell_type = type if type in results.cell_types else results.cell_types[0]
    return html.Div(
        [
            dcc.Store(id="coherence-ds", data=dataset.id),
            dcc.Download(id="coherence-download"),
            ui.url_state_store(),
            context.stage_watch(dataset, results, __name__, ("coherence",)),
            html.Div(
                [
                    html.Label("Cell types in the CDF", className="label"),
                    dcc.Checklist(
                        results.cell_types, results.cell_types, id="coherence-types", inline=True
                    ),
                    ui.graph("coherence-cdf", dataset, "coherence_cdf", "460px"),
                    html.P(
                        "Coherence of a gene in a cell type (veloVI paper): the mean over the "
                        "type's cells of the gene's velocity × its change in expression towards "
                        "the cell's predicted future state. Positive: the gene's velocity points "
                        "where the cells are going; negative: against it. A curve further "
                        "right: more genes of that type agree with the flow.",
                        className="caveat",
                    ),
                    html.Div(ui.download_button("coherence-csv"), className="card-foot"),
                ],
                className="card",
            ),
            html.Div(
                [
                    html.Label("Top and bottom genes for", className="label"),
                    dcc.Dropdown(
                        results.cell_types,
                        cell_type,
                        id="coherence-type",
                        clearable=False,
                        style={"maxWidth": "320px"},
                    ),
                    html.Div(id="coherence-genes", className="grid-2"),
                ],
                className="card",
            ),
        ]
    )


@callback(
    Output("coherence-cdf", "figure"),
    Input("coherence-types", "value"),
    State("coherence-ds", "data"),
)
def cdf(cell_types: list[str], ds: str):
    """CDF lines of the ticked cell types."""
    _, results = context.fitted(ds)
    return figures.coherence_cdf_figure(results, cell_types or None)


def gene_table(results: Results, cell_type: str, genes: list[str], ds: str) -> html.Table:
    """Rank, gene (a link to the gene view) and coherence in ``cell_type`` (3 significant
    digits), one row per gene of ``genes``."""
    values = gene_coherence(results, cell_type, genes)
    number = {"textAlign": "right", "fontVariantNumeric": "tabular-nums", "paddingLeft": "24px"}
    head = html.Tr([html.Th("#"), html.Th("gene"), html.Th("coherence", style=number)])
    rows = [
        html.Tr([html.Td(k), html.Td(ui.gene_link(g, ds)), html.Td(f"{v:#.3g}", style=number)])
        for k, (g, v) in enumerate(zip(genes, values, strict=True), start=1)
    ]
    return html.Table(
        [html.Thead(head), html.Tbody(rows)], className="simple", style={"width": "auto"}
    )


@callback(
    Output("coherence-genes", "children"),
    Output(ui.URL_STATE, "data"),
    Input("coherence-type", "value"),
    State("coherence-ds", "data"),
)
def top_bottom(cell_type: str, ds: str):
    """The 10 most and least coherent genes of `cell_type` with their coherence, as gene
    links."""
    _, results = context.fitted(ds)
    top, bottom = figures.top_bottom_coherence(results, cell_type, n=10)
    lists = [
        html.Div([html.H3(title), gene_table(results, cell_type, genes, ds)])
        for title, genes in (("Most coherent", top), ("Least coherent", bottom))
    ]
    return lists, ui.page_href("", ds, type=cell_type)


@callback(
    Output("coherence-download", "data"),
    Input("coherence-csv", "n_clicks"),
    State("coherence-ds", "data"),
    prevent_initial_call=True,
)
def download(clicks: int, ds: str):
    """Genes × cell types mean velocity coherence (what the CDFs and lists are drawn from)."""
    if not clicks:
        raise PreventUpdate
    dataset, results = context.fitted(ds)
    table = pd.DataFrame(
        results.varm_matrix("coherence"),
        index=pd.Index(results.gene_names, name="gene"),
        columns=results.cell_types,
    )
    return dcc.send_data_frame(table.to_csv, f"{ui.export_name(dataset, 'coherence')}.csv")
