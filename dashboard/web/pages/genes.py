"""Gene view: a searchable, sortable gene table (CSV download) and the selected gene's phase
portrait, expression over latent time, velocity on the UMAP, permutation effect and baseline.
The selected gene is in the URL (``/genes?ds=sample&gene=Top2a``). Above the point budget the
velocity UMAP draws a subsample, a zoom the cells in the window, and each gene opens unzoomed."""

from __future__ import annotations

import dash
import numpy as np
import pandas as pd
from dash import Input, Output, State, callback, dash_table, dcc, html
from dash.dash_table.Format import Format, Scheme
from dash.exceptions import PreventUpdate

from dashboard import figures
from dashboard.data import gene_filter, overview
from dashboard.data.contract import STATES
from dashboard.data.exports import cell_type_labels
from dashboard.data.results import Results
from dashboard.data.values import ColorValues
from dashboard.figures.common import cell_layer_patch
from dashboard.figures.genes import gene_graph_height
from dashboard.web import context, rate_views, zoom
from dashboard.web import widgets as ui

dash.register_page(__name__, path="/genes", name="Genes", title="velodash · genes", order=3)
rate_views.register()

COLOR_BY = [
    {"label": "cell type", "value": "cell_type"},
    {"label": "latent time", "value": "latent_time"},
    {"label": "state", "value": "state"},
]
#: Columns shown at first; the rest are one click away ("Toggle Columns").
MAIN_COLUMNS = ("gene", "permutation_score", "fit_likelihood", "fit_mse")
#: Compact headers so the main columns fit the side panel.
SHORT_NAMES = {"permutation_score": "perm. score", "fit_likelihood": "likelihood", "fit_mse": "MSE"}
#: The opening order: the first of these columns the results have, descending.
DEFAULT_SORT_COLUMNS = ("permutation_score", "fit_likelihood")
PAGE_SIZE = 15


def default_sort(results: Results) -> list[dict]:
    """The table's opening order (DataTable ``sort_by``): best permutation score first, else
    best fit likelihood first; file order when the results have neither."""
    table = results.gene_table()
    column = next((c for c in DEFAULT_SORT_COLUMNS if c in table), None)
    return [{"column_id": column, "direction": "desc"}] if column else []


def sorted_table(results: Results, search: str | None, sort_by: list[dict] | None) -> pd.DataFrame:
    """Gene-table rows whose name contains `search` (ignoring case), ordered by `sort_by`
    (DataTable's ``[{"column_id", "direction"}]``; names ignore case, missing values last,
    ties keep file order)."""
    table = results.gene_table()
    if search and search.strip():
        table = table[table["gene"].str.contains(search.strip(), case=False, regex=False)]
    keys = [s for s in sort_by or [] if s.get("column_id") in table]
    if not keys:
        return table
    return table.sort_values(
        [s["column_id"] for s in keys],
        ascending=[s.get("direction") != "desc" for s in keys],
        na_position="last",
        kind="stable",
        key=lambda col: col.str.lower() if pd.api.types.is_string_dtype(col) else col,
    )


def table_records(
    results: Results, search: str | None, sort_by: list[dict] | None = None
) -> list[dict]:
    """Rows of :func:`sorted_table` as records with an ``id`` (= gene) for the DataTable."""
    table = sorted_table(results, search, sort_by)
    return table.assign(id=table["gene"]).to_dict("records")


def default_gene(results: Results) -> str:
    """The gene a bare /genes opens: the first row of the default order."""
    return str(sorted_table(results, None, default_sort(results))["gene"].iloc[0])


def page_of(rows: list[dict], gene: str | None) -> int:
    """The table page (0-based, ``PAGE_SIZE`` rows each) that shows `gene`; 0 if not listed."""
    index = next((i for i, row in enumerate(rows) if row["gene"] == gene), 0)
    return index // PAGE_SIZE


def row_styles(gene: str | None) -> list[dict]:
    """``style_data_conditional``: gene names look like links, the selected gene's row is
    highlighted (matched by name in a filter query quoted with a quote it does not contain)."""
    styles = [{"if": {"column_id": "gene"}, "color": "#2f6fde", "cursor": "pointer"}]
    quote = next((q for q in "\"'`" if gene and q not in gene), None)
    if quote is not None:
        styles.append(
            {
                "if": {"filter_query": f"{{gene}} = {quote}{gene}{quote}"},
                "backgroundColor": "#e6f0ff",
                "fontWeight": 600,
            }
        )
    return styles


def search_message(results: Results, search: str | None, n_rows: int) -> html.Div | None:
    """What to say about a search: why a name that is not a fitted gene is missing (in place of
    an empty table, or above the genes whose names merely contain it); None otherwise."""
    name = (search or "").strip()
    if not name or results.gene_ignoring_case(name) is not None:
        return None
    if n_rows and gene_filter.dropped_at(results, name) is None:
        return None  # part of a name: the rows are the answer
    return ui.alert(gene_filter.unfitted_reason(results, name), "info" if n_rows else "warning")


def _columns(results: Results) -> list[dict]:
    table = results.gene_table()
    number = Format(precision=3, scheme=Scheme.decimal_or_exponent)
    columns = []
    for c in table.columns:
        column = {"name": SHORT_NAMES.get(c, c.replace("_", " ")), "id": c, "hideable": c != "gene"}
        if table[c].dtype.kind in "fiu":
            column.update(type="numeric", format=number)
        columns.append(column)
    return columns


def _graph(graph_id: str, dataset, height: int = 360) -> dcc.Graph:
    return ui.graph(graph_id, dataset, graph_id.replace("-", "_"), f"{height}px")


def _table_card(results: Results, gene: str) -> html.Section:
    """The searchable gene table, sorted by :func:`default_sort` and open at `gene`'s page."""
    sort_by = default_sort(results)
    rows = table_records(results, None, sort_by)
    return ui.section(
        "Genes",
        html.Div(
            [
                dcc.Input(
                    id="gene-search", type="search", placeholder="search genes…", debounce=0.3
                ),
                ui.download_button("genes-csv", "Gene table (CSV)"),
                ui.download_button("gene-cells-csv", "Gene's cells (CSV)"),
            ],
            className="controls",
        ),
        html.Div(id="gene-search-message"),
        html.Div(
            dash_table.DataTable(
                id="gene-table",
                columns=_columns(results),
                data=rows,
                # sorted on the server, so the page showing the selected gene is known
                sort_action="custom",
                sort_by=sort_by,
                hidden_columns=[c for c in results.gene_table().columns if c not in MAIN_COLUMNS],
                page_size=PAGE_SIZE,
                page_current=page_of(rows, gene),
                # minWidth: with fixed columns, DataTable otherwise clips the
                # columns after the first few instead of scrolling to them
                style_table={"overflowX": "auto", "minWidth": "100%"},
                style_cell={"fontSize": 12, "padding": "3px 6px"},
                style_header={"fontWeight": 600, "whiteSpace": "normal"},
                fixed_columns={"headers": True, "data": 1},
                style_data_conditional=row_styles(gene),
            ),
            id="gene-table-box",
        ),
        html.P(
            "Click a row to show that gene. Sort by clicking a column header.", className="caveat"
        ),
    )


def _figures(dataset, results: Results, color_by: str, companion: Results | None) -> html.Div:
    """The selected gene's header card and figures; graphs with a cell-type legend are tall
    enough for every legend entry to show. A time-dependent fit, or a fit with a `companion`
    of the other transcription rate, adds α(t) under the portrait and the models' MSEs."""
    n_types = len(results.cell_types)
    # the portrait: a key per cell type (or state) and its fit lines; latent time adds a colour bar
    fit_lines = 3 if companion is None else 5
    portrait = gene_graph_height(max(n_types, len(STATES)) + fit_lines, 420, colorbar=True)
    baseline = gene_graph_height(n_types, 360)
    header = html.Div(
        [
            html.H2(id="gene-title", style={"margin": "0 0 6px"}),
            html.Div(id="gene-problem"),
            html.Label("Colour cells by", className="label"),
            dcc.RadioItems(COLOR_BY, color_by, id="gene-color-by", inline=True),
            rate_views.rate_hint(dataset, results, companion),
        ],
        className="card",
    )
    pair = [("phase-portrait", portrait), ("gene-over-time", portrait)]
    rows = [
        header,
        html.Div(
            [html.Div(_graph(g, dataset, h), className="card") for g, h in pair],
            className="grid-2",
        ),
    ]
    if results.time_dependent or companion is not None:
        rows.append(
            html.Div(
                [
                    html.Div(_graph("gene-rate", dataset, 300), className="card"),
                    html.Div(html.Div(id="gene-models"), className="card"),
                ],
                className="grid-2",
            )
        )
    rows += [
        html.Div(
            [
                html.Div(_graph(g, dataset), className="card")
                for g in ("gene-velocity-umap", "gene-permutation")
            ],
            className="grid-2",
        ),
        html.Div(_graph("gene-baseline", dataset, baseline), className="card"),
    ]
    if companion is not None:
        rows.append(rate_views.rate_models_card(dataset, results, companion))
    return html.Div(rows)


def layout(
    ds: str | None = None, gene: str | None = None, color_by: str = "cell_type", **_query
) -> html.Div:
    """The gene page; `gene` (a fitted gene written in another case opens that gene, on its
    table page) and `color_by` come from the URL query string."""
    dataset, results, problem = context.resolve(ds)
    if problem is not None:
        return problem
    gene = (results.gene_ignoring_case(gene) or gene) if gene else default_gene(results)
    color_by = color_by if color_by in {c["value"] for c in COLOR_BY} else "cell_type"
    companion = context.companion(results)
    return html.Div(
        [
            dcc.Store(id="genes-ds", data=dataset.id),
            dcc.Store(id="genes-selected", data=gene),
            dcc.Store(id="gene-velocity-window"),  # {"gene", "window"} drawn when zoomed
            zoom.request_store("gene-velocity-umap"),
            ui.url_state_store(),
            context.stage_watch(
                dataset, results, __name__, ("coherence", "permutation", "baseline")
            ),
            dcc.Download(id="genes-download"),
            html.Div(
                [_table_card(results, gene), _figures(dataset, results, color_by, companion)],
                className="grid-side genes-layout",
            ),
        ]
    )


@callback(
    Output("gene-table", "data"),
    Output("gene-table", "page_current"),
    Output("gene-table", "style_data_conditional"),
    Output("gene-table-box", "style"),
    Output("gene-search-message", "children"),
    Input("gene-search", "value"),
    Input("gene-table", "sort_by"),
    Input("genes-selected", "data"),
    State("genes-ds", "data"),
    prevent_initial_call=True,
)
def update_table(
    search: str | None, sort_by: list[dict] | None, gene: str | None, ds: str
) -> tuple:
    """Rows matching the search in the chosen order (on a new order: its first page; else the
    page with the selected gene, highlighted); in place of an empty table, why nothing matches."""
    _, results = context.fitted(ds)
    rows = table_records(results, search, sort_by)
    trigger = dash.ctx.triggered_id
    return (
        dash.no_update if trigger == "genes-selected" else rows,
        0 if trigger == "gene-table" else page_of(rows, gene),
        row_styles(gene),
        None if rows else {"display": "none"},
        search_message(results, search, len(rows)),
    )


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
    State("gene-color-by", "value"),
    State("genes-ds", "data"),
)
def show_gene(gene: str, color_by: str, ds: str):
    """Every figure of the selected gene (a link's name in another case opens the fitted gene),
    and the URL that reopens this view."""
    _, results = context.fitted(ds)
    gene = fitted_name(results, gene)
    search = gene_search(ds, gene, color_by)
    if gene not in results.gene_index:
        empty = figures.empty_figure("Pick a gene from the table.")
        problem = ui.alert(gene_filter.unfitted_reason(results, gene), "warning")
        return gene, problem, *[empty] * 5, search
    return (
        gene,
        None,
        phase_portrait(results, gene, color_by),
        figures.gene_over_time_figure(results, gene),
        velocity_umap(results, gene),
        figures.permutation_effect_figure(results, gene),
        figures.baseline_agreement_figure(results, gene),
        search,
    )


@callback(
    Output("phase-portrait", "figure", allow_duplicate=True),
    Output(ui.URL_STATE, "data", allow_duplicate=True),
    Input("gene-color-by", "value"),
    State("genes-selected", "data"),
    State("genes-ds", "data"),
    prevent_initial_call=True,
)
def recolour_portrait(color_by: str, gene: str, ds: str):
    """A new colouring redraws the phase portrait alone: no other figure depends on it (at
    50,000 cells a fifth of the bytes and work of all the gene's figures)."""
    _, results = context.fitted(ds)
    gene = fitted_name(results, gene)
    if gene not in results.gene_index:
        raise PreventUpdate
    return phase_portrait(results, gene, color_by), gene_search(ds, gene, color_by)


def fitted_name(results: Results, gene: str | None) -> str | None:
    """``gene`` as the results spell it when it differs only in case, else unchanged."""
    if gene in results.gene_index:
        return gene
    return results.gene_ignoring_case(gene or "") or gene


def gene_search(ds: str, gene: str | None, color_by: str) -> str:
    """The URL query that reopens the gene view of ``gene`` coloured by ``color_by``."""
    return ui.page_href("", ds, gene=gene, color_by=None if color_by == "cell_type" else color_by)


def phase_portrait(results: Results, gene: str, color_by: str):
    """The gene's phase portrait, with the other transcription rate's fit when there is one."""
    return figures.phase_portrait_figure(
        results, gene, color_by=color_by, companion=context.companion(results)
    )


def velocity_umap(results: Results, gene: str):
    """The gene's velocity on the UMAP; above the point budget (a subsample, whose zoomed cells
    depend on the gene) every gene opens unzoomed."""
    fig = figures.gene_velocity_embedding_figure(results, gene)
    if results.n_cells > overview.POINT_BUDGET:
        fig.layout.uirevision = f"{results.key}:umap:{gene}"
    return fig


@callback(
    Output("gene-velocity-umap", "figure", allow_duplicate=True),
    Output("gene-velocity-window", "data"),
    Input(zoom.register("gene-velocity-umap"), "data"),
    State("gene-velocity-window", "data"),
    State("genes-selected", "data"),
    State("genes-ds", "data"),
    prevent_initial_call=True,
)
def zoom_velocity_umap(relayout: dict | None, drawn: dict | None, gene: str, ds: str) -> tuple:
    """A zoom of the velocity UMAP draws the cells inside the window, a double-click the
    overview (:mod:`dashboard.web.zoom`)."""
    _, results = context.fitted(ds)
    if gene not in results.gene_index:
        raise PreventUpdate
    current = drawn["window"] if drawn and drawn.get("gene") == gene else None
    window = zoom.next_window(results, results.umap, relayout, current)
    velocity = results.gene_arrays(gene).velocity
    values = ColorValues(gene, f"{gene} velocity", "numeric", velocity)
    view = overview.window_view(results, results.umap, window)
    update = cell_layer_patch(results, results.umap, None, values, view)
    return zoom.cells_patch(update), {"gene": gene, "window": window}


@callback(
    Output("genes-download", "data"),
    Input("genes-csv", "n_clicks"),
    State("genes-ds", "data"),
    prevent_initial_call=True,
)
def download_csv(clicks: int | None, ds: str):
    """The full gene table as CSV."""
    dataset, results = context.fitted(ds)
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
    dataset, results = context.fitted(ds)
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
            "cell_type": cell_type_labels(results),
            "latent_time": results.latent_time,
            **columns,
        }
    )
    name = ui.export_name(dataset, f"gene_{gene}")
    return dcc.send_data_frame(table.to_csv, f"{name}.csv", index=False)
