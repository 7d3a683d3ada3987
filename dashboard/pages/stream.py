"""Velocity view: the UMAP coloured by cell type, an obs column or a gene, with streamlines or
an arrow grid. Recolouring sends a typed-array Patch; the view state lives in the URL."""

from __future__ import annotations

import dash
from dash import Input, Output, Patch, State, callback, ctx, dcc, html
from dash.exceptions import PreventUpdate

from dashboard import components as ui
from dashboard import figures

dash.register_page(__name__, path="/stream", name="Velocity", title="velodash · velocity", order=1)

MODES = [
    {"label": "streamlines", "value": "streams"},
    {"label": "arrow grid", "value": "arrows"},
    {"label": "none", "value": "none"},
]
DEFAULTS = {"mode": "streams", "density": 1.0, "smooth": 0.5}


def _number(value, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def split_color(results, color: str | None) -> tuple[str | None, str | None]:
    """(obs column, gene) for a URL `color` value: an obs column wins over a same-named gene."""
    if color in results.obs_columns():
        return color, None
    if color in results.gene_index:
        return results.groupby, color
    return results.groupby, None


def layout(
    ds: str | None = None,
    color: str | None = None,
    mode: str = "streams",
    density: str | float = 1.0,
    smooth: str | float = 0.5,
    **_query,
) -> html.Div:
    """The velocity page; every argument comes from the URL query string."""
    dataset, results, problem = ui.resolve(ds)
    if problem is not None:
        return problem
    obs_color, gene = split_color(results, color)
    mode = mode if mode in {m["value"] for m in MODES} else "streams"
    return html.Div(
        [
            dcc.Store(id="stream-ds", data=dataset.id),
            dcc.Store(id="stream-shown"),
            ui.url_state_store(),
            html.Div(
                [
                    html.Div(
                        [
                            html.Label("Colour by", className="label"),
                            dcc.Dropdown(
                                list(results.obs_columns()),
                                obs_color,
                                id="stream-color",
                                clearable=False,
                            ),
                        ],
                        className="control",
                    ),
                    html.Div(
                        [
                            html.Label("Gene (type to search)", className="label"),
                            dcc.Dropdown(
                                [gene] if gene else [],
                                gene,
                                id="stream-gene",
                                placeholder="e.g. " + results.gene_names[0],
                            ),
                        ],
                        className="control",
                    ),
                    html.Div(
                        [
                            html.Label("Velocity", className="label"),
                            dcc.RadioItems(MODES, mode, id="stream-mode", inline=True),
                        ],
                        className="control",
                    ),
                    html.Div(
                        [
                            html.Label("Density", className="label"),
                            dcc.Slider(
                                0.5,
                                3,
                                0.25,
                                value=_number(density, 1.0),
                                id="stream-density",
                                marks=None,
                                tooltip={"placement": "bottom"},
                            ),
                        ],
                        className="control",
                    ),
                    html.Div(
                        [
                            html.Label("Smoothing", className="label"),
                            dcc.Slider(
                                0.1,
                                1.5,
                                0.1,
                                value=_number(smooth, 0.5),
                                id="stream-smooth",
                                marks=None,
                                tooltip={"placement": "bottom"},
                            ),
                        ],
                        className="control",
                    ),
                ],
                className="controls card",
            ),
            html.Div(
                [
                    dcc.Loading(
                        dcc.Graph(
                            id="stream-graph",
                            style={"height": "72vh"},
                            config={"displaylogo": False, "scrollZoom": True},
                        )
                    ),
                    html.P(
                        [
                            "2-D projections of velocity can mislead: a smooth stream may hide "
                            "uncertain cells. Check the ",
                            dcc.Link(
                                "uncertainty maps", href=ui.page_href("/uncertainty", dataset.id)
                            ),
                            ". Click a legend entry to hide a cell type, double-click to "
                            "isolate it.",
                        ],
                        className="caveat",
                    ),
                    html.Div(id="stream-gene-link"),
                ],
                className="card",
            ),
        ]
    )


@callback(
    Output("stream-gene", "options"),
    Input("stream-gene", "search_value"),
    State("stream-gene", "value"),
    State("stream-ds", "data"),
    prevent_initial_call=True,
)
def gene_options(search: str | None, current: str | None, ds: str) -> list[str]:
    """Type-ahead: genes matching what the user typed (the selected gene stays listed)."""
    if not search:
        raise PreventUpdate
    _, results, _ = ui.resolve(ds)
    matches = results.search_genes(search, limit=30)
    return ([current] if current and current not in matches else []) + matches


@callback(
    Output("stream-graph", "figure"),
    Output("stream-shown", "data"),
    Output(ui.URL_STATE, "data"),
    Output("stream-gene-link", "children"),
    Input("stream-color", "value"),
    Input("stream-gene", "value"),
    Input("stream-mode", "value"),
    Input("stream-density", "value"),
    Input("stream-smooth", "value"),
    State("stream-shown", "data"),
    State("stream-ds", "data"),
)
def draw(obs_color, gene, mode, density, smooth, shown, ds):
    """Rebuild the embedding, or only recolour it (typed-array Patch) when colour changed."""
    _, results, _ = ui.resolve(ds)
    color = gene or obs_color
    state = {"color": color, "mode": mode, "density": density, "smooth": smooth}
    recolour_only = (
        shown is not None
        and ctx.triggered_id in ("stream-color", "stream-gene")
        and {k: v for k, v in shown.items() if k != "color"}
        == {k: v for k, v in state.items() if k != "color"}
    )
    update = figures.recolor_patch(results, color, shown["color"]) if recolour_only else None
    if update is None:
        figure = figures.embedding_figure(
            results, color=color, velocity=mode, density=density, smooth=smooth
        )
    else:
        figure = Patch()
        for i, marker in enumerate(update["markers"]):
            figure["data"][i]["marker"]["color"] = marker["color"]
            figure["data"][i]["marker"]["coloraxis"] = marker["coloraxis"]
        if update["coloraxis"] is not None:
            figure["layout"]["coloraxis"] = update["coloraxis"]
        figure["layout"]["title"]["text"] = update["title"]
    query = {k: str(v) for k, v in state.items() if k != "color" and v != DEFAULTS[k]}
    search = ui.page_href("", ds, color=color, **query)
    link = html.P(["Gene view: ", ui.gene_link(gene, ds)]) if gene else None
    return figure, state, search, link
