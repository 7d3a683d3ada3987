"""Uncertainty view: intrinsic and extrinsic uncertainty maps with linked zoom, their
distribution per cell type, and the selection panel (lasso or box on either map). Above the
point budget the maps draw a subsample, and a zoom draws the cells in the window."""

from __future__ import annotations

import dash
from dash import Input, Output, State, callback, dcc, html
from dash.exceptions import PreventUpdate

from dashboard import figures
from dashboard.data.exports import cells_table
from dashboard.web import context, selection_panel, splicing_views, zoom
from dashboard.web import widgets as ui

dash.register_page(
    __name__, path="/uncertainty", name="Uncertainty", title="velodash · uncertainty", order=2
)


def layout(ds: str | None = None, sel: str | None = None, **_query) -> html.Div:
    """Both uncertainty maps (one figure, shared axes), per-cell-type box plots, selections."""
    dataset, results, problem = context.resolve(ds)
    if problem is not None:
        return problem
    return html.Div(
        [
            dcc.Store(id="uncertainty-ds", data=dataset.id),
            dcc.Store(id="uncertainty-window"),
            zoom.request_store("uncertainty-maps"),
            dcc.Download(id="uncertainty-download"),
            ui.url_state_store(),
            context.stage_watch(dataset, results, __name__, ("uncertainty",)),
            html.Div(
                [
                    ui.graph(
                        "uncertainty-maps",
                        dataset,
                        "uncertainty",
                        "520px",
                        figure=figures.uncertainty_figures(results),
                        config={"scrollZoom": True},
                    ),
                    html.Div(
                        [
                            html.P(
                                "Intrinsic: how much the posterior velocity samples of a cell "
                                "disagree in direction. Extrinsic: how much the future state "
                                "its velocity points to, through its neighbours, varies "
                                "between samples. Both are the variance of a cosine to the "
                                "mean (veloVI; unitless), on a log scale with colours clipped "
                                "to the 1st–99th percentile; hover a cell for its value. "
                                "Zooming one map zooms the other. Draw a lasso or box to "
                                "select cells.",
                                className="caveat",
                            ),
                            html.P(
                                "The spliced/unspliced counts of this fit were predicted "
                                "(SplicedVAE): intrinsic and extrinsic uncertainty are those "
                                "of veloVI given the predicted counts and do not include the "
                                "prediction's error (it is not propagated); the home page's "
                                "validation shows how far the velocity agrees with true counts.",
                                className="caveat",
                                id="uncertainty-splicing-note",
                            )
                            if splicing_views.record_of(results)
                            else None,
                            ui.download_button("uncertainty-csv"),
                        ],
                        className="card-foot",
                    ),
                ],
                className="card",
            ),
            selection_panel.panel("uncertainty", dataset.id, sel),
            html.Div(
                [
                    html.Div(
                        ui.graph(
                            "uncertainty-by-type-intrinsic",
                            dataset,
                            "intrinsic_by_type",
                            "400px",
                            figure=figures.uncertainty_by_type_figure(results, "intrinsic"),
                        ),
                        className="card",
                    ),
                    html.Div(
                        ui.graph(
                            "uncertainty-by-type-extrinsic",
                            dataset,
                            "extrinsic_by_type",
                            "400px",
                            figure=figures.uncertainty_by_type_figure(results, "extrinsic"),
                        ),
                        className="card",
                    ),
                ],
                className="grid-2",
            ),
        ]
    )


selection_panel.register("uncertainty", "uncertainty-maps", "uncertainty-ds")


@callback(
    Output("uncertainty-maps", "figure"),
    Output("uncertainty-window", "data"),
    Input(zoom.register("uncertainty-maps"), "data"),
    State("uncertainty-window", "data"),
    State("uncertainty-ds", "data"),
    prevent_initial_call=True,
)
def zoomed(relayout: dict | None, current: list | None, ds: str) -> tuple:
    """A zoom draws the cells inside the window on both maps, a double-click the overview."""
    _, results = context.fitted(ds)
    window = zoom.next_window(results, results.umap, relayout, current)
    return figures.uncertainty_figures(results, window=window), window


@callback(
    # Several pages write the URL store; allow_duplicate keeps their callbacks apart.
    Output(ui.URL_STATE, "data", allow_duplicate=True),
    Input(selection_panel.ids("uncertainty")["active"], "data"),
    State("uncertainty-ds", "data"),
    prevent_initial_call=True,
)
def url_state(active: dict | None, ds: str) -> str:
    """The address bar carries a saved selection (``sel``)."""
    return ui.page_href("", ds, sel=active.get("id") if active else None)


@callback(
    Output("uncertainty-download", "data"),
    Input("uncertainty-csv", "n_clicks"),
    State("uncertainty-ds", "data"),
    prevent_initial_call=True,
)
def download(clicks: int, ds: str):
    """Every cell with its coordinates, cell type and both uncertainties."""
    if not clicks:
        raise PreventUpdate
    dataset, results = context.fitted(ds)
    table = cells_table(results, sources=())
    name = ui.export_name(dataset, "uncertainty")
    return dcc.send_data_frame(table.to_csv, f"{name}.csv", index=False)
