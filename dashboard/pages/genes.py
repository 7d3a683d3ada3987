"""Gene view: a searchable, sortable gene table (CSV download) and the selected gene's phase
portrait, expression over latent time, velocity on the UMAP, permutation effect and baseline.
The selected gene is in the URL (``/genes?ds=sample&gene=Top2a``)."""

from __future__ import annotations

import dash
import numpy as np
import pandas as pd
from dash import Input, Output, State, callback, dash_table, dcc, html
from dash.dash_table.Format import Format, Scheme
from dash.exceptions import PreventUpdate

from dashboard import components as ui
from dashboard import figures
from dashboard.results import STATES

dash.register_page(__name__, path="/genes", name="Genes", title="velodash · genes", order=3)

COLOR_BY = [
    {"label": "cell type", "value": "cell_type"},
    {"label": "latent time", "value": "latent_time"},
    {"label": "state", "value": "state"},
]
#: Columns shown at first; the rest are one click away ("Toggle Columns").
MAIN_COLUMNS = ("gene", "permutation_score", "fit_likelihood", "fit_mse")
#: Compact headers so the main columns fit the side panel.
SHORT_NAMES = {"permutation_score": "perm. score", "fit_likelihood": "likelihood", "fit_mse": "MSE"}


def default_gene(results) -> str:
    """The gene a bare /genes opens: the highest permutation score, else the first gene."""
    table = results.gene_table()
    if "permutation_score" in table:
        return str(table["gene"].iloc[int(np.nanargmax(table["permutation_score"]))])
    return results.gene_names[0]


def table_records(results, search: str | None) -> list[dict]:
    """Gene-table rows (with an ``id`` = gene) whose name contains `search` (case-insensitive)."""
    table = results.gene_table()
    if search:
        table = table[table["gene"].str.contains(search.strip(), case=False, regex=False)]
    return table.assign(id=table["gene"]).to_dict("records")


def _columns(results) -> list[dict]:
    table = results.gene_table()
    number = Format(precision=3, scheme=Scheme.decimal_or_exponent)
    columns = []
    for c in table.columns:
        column = {"name": SHORT_NAMES.get(c, c.replace("_", " ")), "id": c, "hideable": c != "gene"}
        if table[c].dtype.kind in "fiu":
            column.update(type="numeric", format=number)
        columns.append(column)
    return columns


def _graph(graph_id: str, dataset, height: str = "360px") -> dcc.Graph:
    return ui.graph(graph_id, dataset, graph_id.replace("-", "_"), height)


def layout(
    ds: str | None = None, gene: str | None = None, color_by: str = "cell_type", **_query
) -> html.Div:
    """The gene page; `gene` and `color_by` come from the URL query string."""
    dataset, results, problem = ui.resolve(ds)
    if problem is not None:
        return problem
    gene = gene or default_gene(results)
    color_by = color_by if color_by in {c["value"] for c in COLOR_BY} else "cell_type"
    return html.Div(
        [
            dcc.Store(id="genes-ds", data=dataset.id),
            dcc.Store(id="genes-selected", data=gene),
            ui.url_state_store(),
            dcc.Download(id="genes-download"),
            html.Div(
                [
                    ui.section(
                        "Genes",
                        html.Div(
                            [
                                dcc.Input(
                                    id="gene-search",
                                    type="search",
                                    placeholder="search genes…",
                                    debounce=0.3,
                                ),
                                ui.download_button("genes-csv", "Gene table (CSV)"),
                                ui.download_button("gene-cells-csv", "Gene's cells (CSV)"),
                            ],
                            className="controls",
                        ),
                        dash_table.DataTable(
                            id="gene-table",
                            columns=_columns(results),
                            data=table_records(results, None),
                            sort_action="native",
                            hidden_columns=[
                                c for c in results.gene_table().columns if c not in MAIN_COLUMNS
                            ],
                            page_size=15,
                            # minWidth: with fixed columns, DataTable otherwise clips the
                            # columns after the first few instead of scrolling to them
                            style_table={"overflowX": "auto", "minWidth": "100%"},
                            style_cell={"fontSize": 12, "padding": "3px 6px"},
                            style_header={"fontWeight": 600, "whiteSpace": "normal"},
                            fixed_columns={"headers": True, "data": 1},
                            style_data_conditional=[
                                {
                                    "if": {"column_id": "gene"},
                                    "color": "#2f6fde",
                                    "cursor": "pointer",
                                }
                            ],
                        ),
                        html.P(
                            "Click a row to show that gene. Sort by clicking a column header.",
                            className="caveat",
                        ),
                    ),
                    html.Div(
                        [
                            html.Div(
                                [
                                    html.H2(id="gene-title", style={"margin": "0 0 6px"}),
                                    html.Div(id="gene-problem"),
                                    html.Label("Colour cells by", className="label"),
                                    dcc.RadioItems(
                                        COLOR_BY, color_by, id="gene-color-by", inline=True
                                    ),
                                ],
                                className="card",
                            ),
                            html.Div(
                                [
                                    html.Div(
                                        _graph("phase-portrait", dataset, "420px"), className="card"
                                    ),
                                    html.Div(
                                        _graph("gene-over-time", dataset, "420px"), className="card"
                                    ),
                                ],
                                className="grid-2",
                            ),
                            html.Div(
                                [
                                    html.Div(
                                        _graph("gene-velocity-umap", dataset), className="card"
                                    ),
                                    html.Div(_graph("gene-permutation", dataset), className="card"),
                                ],
                                className="grid-2",
                            ),
                            html.Div(_graph("gene-baseline", dataset), className="card"),
                        ]
                    ),
                ],
                className="grid-side genes-layout",
            ),
        ]
    )


@callback(
    Output("gene-table", "data"),
    Input("gene-search", "value"),
    State("genes-ds", "data"),
    prevent_initial_call=True,
)
def filter_table(search: str | None, ds: str) -> list[dict]:
    """Rows whose gene name contains the search text."""
    _, results, _ = ui.resolve(ds)
    return table_records(results, search)


@callback(
    Output("genes-selected", "data"),
    Input("gene-table", "active_cell"),
    prevent_initial_call=True,
)
def select_from_table(active_cell: dict | None) -> str:
    """Clicking any cell of a row selects that row's gene (row ids are gene names)."""
    if not active_cell or not active_cell.get("row_id"):
        raise PreventUpdate
    return active_cell["row_id"]


@callback(
    Output("gene-title", "children"),
    Output("gene-problem", "children"),
    Output("phase-portrait", "figure"),
    Output("gene-over-time", "figure"),
    Output("gene-velocity-umap", "figure"),
    Output("gene-permutation", "figure"),
    Output("gene-baseline", "figure"),
    Output(ui.URL_STATE, "data"),
    Input("genes-selected", "data"),
    Input("gene-color-by", "value"),
    State("genes-ds", "data"),
)
def show_gene(gene: str, color_by: str, ds: str):
    """Every figure of the selected gene, and the URL that reopens this view."""
    _, results, _ = ui.resolve(ds)
    search = ui.page_href("", ds, gene=gene, color_by=None if color_by == "cell_type" else color_by)
    try:
        results.resolve_gene(gene)
    except KeyError as err:
        empty = figures.empty_figure("Pick a gene from the table.")
        return gene, ui.alert(err.args[0], "danger"), *[empty] * 5, search
    return (
        gene,
        None,
        figures.phase_portrait_figure(results, gene, color_by=color_by),
        figures.gene_over_time_figure(results, gene),
        figures.gene_velocity_embedding_figure(results, gene),
        figures.permutation_effect_figure(results, gene),
        figures.baseline_agreement_figure(results, gene),
        search,
    )


@callback(
    Output("genes-download", "data"),
    Input("genes-csv", "n_clicks"),
    State("genes-ds", "data"),
    prevent_initial_call=True,
)
def download_csv(clicks: int | None, ds: str):
    """The full gene table as CSV."""
    dataset, results, _ = ui.resolve(ds)
    return dcc.send_data_frame(
        results.gene_table().to_csv, f"velodash_genes_{dataset.id}.csv", index=False
    )


@callback(
    Output("genes-download", "data", allow_duplicate=True),
    Input("gene-cells-csv", "n_clicks"),
    State("genes-selected", "data"),
    State("genes-ds", "data"),
    prevent_initial_call=True,
)
def download_gene(clicks: int | None, gene: str | None, ds: str):
    """The selected gene's per-cell values: what its figures show."""
    if not clicks or not gene:
        raise PreventUpdate
    dataset, results, _ = ui.resolve(ds)
    try:
        g = results.gene_arrays(gene)
    except KeyError:
        raise PreventUpdate from None
    columns = {"Ms": g.ms, "Mu": g.mu, "velocity": g.velocity, "fit_t": g.fit_t}
    optional = {"fit_s": g.fit_s, "fit_u": g.fit_u, "velocity_baseline": g.baseline}
    columns.update({k: v for k, v in optional.items() if v is not None})
    if g.state is not None:
        columns["state"] = np.asarray(STATES)[g.state]
    table = pd.DataFrame(
        {
            "cell_id": results.cell_ids,
            "cell_type": np.asarray([*results.cell_types, ""])[results.cell_type_codes],
            "latent_time": results.latent_time,
            **columns,
        }
    )
    name = ui.export_name(dataset, f"gene_{gene}")
    return dcc.send_data_frame(table.to_csv, f"{name}.csv", index=False)
