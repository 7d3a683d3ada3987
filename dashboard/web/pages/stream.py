"""Velocity view: the UMAP coloured by cell type, an obs column (the few biologists want first,
the rest under "more"), a gene (named in "Colour by") or a saved selection, with streamlines or
an arrow grid from veloVI, the scVelo baseline or both (optionally faded where extrinsic
uncertainty is high), their per-cell agreement, and the selection panel (lasso or box). The
graphs are sized so that the equal-aspect UMAP fills them. Recolouring sends a typed-array
Patch; the view state lives in the URL. Above the point budget the UMAP draws a subsample of
the cells, and a zoom or pan sends the cells inside the window (:mod:`dashboard.web.zoom`)."""

from __future__ import annotations

import dash
from dash import Input, Output, Patch, State, callback, ctx, dcc, html
from dash.exceptions import PreventUpdate

from dashboard import figures
from dashboard.data.exports import cells_table
from dashboard.data.selections import COLOR_PREFIX
from dashboard.data.stream_geometry import DEFAULT_DENSITY, DEFAULT_SMOOTH
from dashboard.figures.common import cell_layer_patch
from dashboard.figures.embedding import cells_shown, embedding_aspect
from dashboard.web import context, selection_panel, zoom
from dashboard.web import widgets as ui
from dashboard.web.stream_colors import (  # selection_colors: the page's colourings, too
    color_options,
    colour_controls,
    figure_values,
    selection_colors,  # noqa: F401
    split_color,
)
from dashboard.web.stream_colors import resolve_color as _resolve_color

dash.register_page(__name__, path="/stream", name="Velocity", title="velodash · velocity", order=1)

MODES = [
    {"label": "streamlines", "value": "streams"},
    {"label": "arrow grid", "value": "arrows"},
    {"label": "none", "value": "none"},
]
SOURCES = [
    {"label": "veloVI", "value": "velovi"},
    {"label": "scVelo baseline", "value": "scvelo"},
    {"label": "both", "value": "both"},
]
CONFIDENCE = [{"label": "fade where extrinsic uncertainty is high", "value": "fade"}]
DEFAULTS = {
    "mode": "streams",
    "density": DEFAULT_DENSITY,
    "smooth": DEFAULT_SMOOTH,
    "source": "velovi",
    "fade": False,
}


def _number(value, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def graph_height(aspect: float) -> str:
    """CSS height of a graph showing the UMAP (width / height ``aspect``) on equal axes: tall
    enough for the cells to span the plot's width (its card's width, ``100cqw``, less about
    250 px of side margins and legend; plus 116 px of title and axis margins), at most the
    window's height below the top bar, at least 420 px."""
    fit_width = f"calc((100cqw - 250px) / {aspect:.3f} + 116px)"
    return f"max(420px, min(calc(100vh - 80px), {fit_width}))"


#: Style of a card whose graphs size themselves by its width (see :func:`graph_height`).
SIZED_CARD = {"containerType": "inline-size"}


def _control(label: str, component) -> html.Div:
    return html.Div([html.Label(label, className="label"), component], className="control")


def _slider(component_id: str, lo: float, hi: float, step: float, value) -> dcc.Slider:
    return dcc.Slider(
        lo,
        hi,
        step,
        value=value,
        id=component_id,
        marks=None,
        tooltip={"placement": "bottom", "always_visible": True},
    )


def layout(
    ds: str | None = None,
    color: str | None = None,
    mode: str = "streams",
    density: str | float = DEFAULT_DENSITY,
    smooth: str | float = DEFAULT_SMOOTH,
    source: str = "velovi",
    fade: str | None = None,
    sel: str | None = None,
    **_query,
) -> html.Div:
    """The velocity page; every argument comes from the URL query string (a shared ``sel``
    opens that selection and, without a ``color``, colours the cells by it)."""
    dataset, results, problem = context.resolve(ds)
    if problem is not None:
        return problem
    if sel and not color:
        color = COLOR_PREFIX + sel
    obs_color, gene = split_color(results, color)
    mode = mode if mode in {m["value"] for m in MODES} else "streams"
    source = source if source in {s["value"] for s in SOURCES} else "velovi"
    height = graph_height(embedding_aspect(results))
    controls = html.Div(
        [
            _control(
                "Colour by",
                dcc.Dropdown(
                    color_options(results, dataset.id, gene),
                    obs_color,
                    id="stream-color",
                    clearable=False,
                    maxHeight=360,  # the first choices and the "more" header at a glance
                ),
            ),
            _control(
                "Gene (type to search)",
                # Every fitted gene (a few thousand names at most) as options, filtered in the
                # browser as the user types: a server round trip per keystroke (the previous
                # type-ahead) re-rendered the box mid-typing and dropped keys (issue 15).
                dcc.Dropdown(
                    sorted(results.gene_names, key=str.lower),
                    gene,
                    id="stream-gene",
                    placeholder="e.g. " + results.gene_names[0],
                ),
            ),
            _control("Velocity", dcc.RadioItems(MODES, mode, id="stream-mode", inline=True)),
            _control("From", dcc.RadioItems(SOURCES, source, id="stream-source", inline=True)),
            _control(
                "Confidence",
                dcc.Checklist(CONFIDENCE, ["fade"] if fade else [], id="stream-fade"),
            ),
            _control(
                "Density",
                _slider("stream-density", 0.5, 3, 0.25, _number(density, DEFAULT_DENSITY)),
            ),
            _control(
                "Smoothing",
                _slider("stream-smooth", 0.1, 1.5, 0.1, _number(smooth, DEFAULT_SMOOTH)),
            ),
        ],
        className="controls card",
    )
    return html.Div(
        [
            dcc.Store(id="stream-ds", data=dataset.id),
            dcc.Store(id="stream-shown"),
            dcc.Store(id="stream-window"),  # the zoomed window drawn (None: the overview)
            zoom.request_store("stream-graph"),
            dcc.Download(id="stream-download"),
            ui.url_state_store(),
            context.stage_watch(dataset, results, __name__, ("baseline",)),
            controls,
            html.Div(
                [
                    html.Div(id="stream-message"),
                    dcc.Loading(
                        ui.graph(
                            "stream-graph",
                            dataset,
                            "stream",
                            height,
                            config={"scrollZoom": True},
                        )
                    ),
                    html.Div(
                        [
                            html.P(
                                [
                                    "2-D projections of velocity can mislead: a smooth stream "
                                    "may hide uncertain cells. Check the ",
                                    dcc.Link(
                                        "uncertainty maps",
                                        href=ui.page_href("/uncertainty", dataset.id),
                                    ),
                                    " or fade uncertain streams (Confidence). Click a legend "
                                    "entry to hide a cell type, double-click to isolate it; "
                                    "draw a lasso or box to select cells.",
                                ],
                                className="caveat",
                            ),
                            ui.download_button("stream-csv"),
                        ],
                        className="card-foot",
                    ),
                    html.Div(id="stream-gene-link"),
                ],
                className="card",
                style=SIZED_CARD,
            ),
            html.Div(
                dcc.Loading(ui.graph("stream-agreement", dataset, "agreement", height)),
                id="stream-agreement-card",
                className="card",
                style=_agreement_style(source),
            ),
            selection_panel.panel("stream", dataset.id, sel),
        ]
    )


selection_panel.register("stream", "stream-graph", "stream-ds")


@callback(
    Output("stream-color", "options", allow_duplicate=True),
    Input(selection_panel.ids("stream")["open"], "options"),
    State("stream-ds", "data"),
    State("stream-gene", "value"),
    prevent_initial_call=True,
)
def refresh_colors(_saved: list, ds: str, gene: str | None) -> list[dict]:
    """A newly saved selection becomes a colouring."""
    _, results = context.fitted(ds)
    return color_options(results, ds, gene)


def _agreement_style(source: str) -> dict:
    """The agreement card: shown when the scVelo baseline is drawn."""
    return {"display": "block" if source != "velovi" else "none", **SIZED_CARD}


@callback(
    Output("stream-graph", "figure"),
    Output("stream-shown", "data"),
    Output("stream-gene-link", "children"),
    Output("stream-message", "children"),
    Output("stream-agreement", "figure"),
    Output("stream-agreement-card", "style"),
    Output("stream-color", "value"),
    Output("stream-color", "options"),
    Output("stream-gene", "value"),
    Input("stream-color", "value"),
    Input("stream-gene", "value"),
    Input("stream-mode", "value"),
    Input("stream-density", "value"),
    Input("stream-smooth", "value"),
    Input("stream-source", "value"),
    Input("stream-fade", "value"),
    State("stream-shown", "data"),
    State("stream-ds", "data"),
    State("stream-window", "data"),
)
def draw(
    picked: str | None,
    gene: str | None,
    mode: str,
    density: float,
    smooth: float,
    source: str,
    fade: list[str],
    shown: dict | None,
    ds: str,
    window: list | None = None,
) -> tuple:
    """Rebuild the embedding, or only recolour it (typed-array Patch) when colour changed; keep
    the two colour controls in step (:func:`colour_controls`). Either draws the cells of the
    zoomed ``window`` (None: the overview)."""
    _, results = context.fitted(ds)
    color, picked_out, options, gene_out = colour_controls(
        results, ds, ctx.triggered_id, picked, gene
    )
    gene = None if gene_out is None else gene
    state = {
        "color": color,
        "mode": mode,
        "density": density,
        "smooth": smooth,
        "source": source,
        "fade": bool(fade),
    }
    same_velocity = shown is not None and all(
        shown.get(k) == v for k, v in state.items() if k != "color"
    )
    state["window"] = window  # the cells drawn (see `zoomed`)
    plain = not (color or "").startswith(COLOR_PREFIX) and not (
        shown and (shown.get("color") or "").startswith(COLOR_PREFIX)
    )
    recolour_only = same_velocity and plain and ctx.triggered_id in ("stream-color", "stream-gene")
    update = (
        figures.recolor_patch(results, color, shown["color"], window=window)
        if recolour_only
        else None
    )
    message = None
    if update is None:
        figure_color, message = _resolve_color(results, ds, color)
        figure = figures.embedding_figure(
            results,
            color=figure_color,
            velocity=mode,
            density=density,
            smooth=smooth,
            source=source,
            confidence=bool(fade),
            window=window,
        )
    else:
        figure = Patch()
        for i, marker in enumerate(update["markers"]):
            figure["data"][i]["marker"]["color"] = marker["color"]
            figure["data"][i]["marker"]["coloraxis"] = marker["coloraxis"]
            figure["data"][-1 - i]["showlegend"] = update["legend"]  # the category keys
        if update["coloraxis"] is not None:
            figure["layout"]["coloraxis"] = update["coloraxis"]
        figure["layout"]["title"]["text"] = update["title"]
    link = html.P(["Gene view: ", ui.gene_link(gene, ds)]) if gene else None
    show_agreement = source != "velovi"
    agreement = figures.agreement_figure(results) if show_agreement else dash.no_update
    return (
        figure,
        state,
        link,
        message,
        agreement,
        _agreement_style(source),
        picked_out,
        options,
        gene_out,
    )


@callback(
    Output("stream-graph", "figure", allow_duplicate=True),
    Output("stream-window", "data"),
    Input(zoom.register("stream-graph"), "data"),
    Input("stream-shown", "data"),
    State("stream-window", "data"),
    State("stream-ds", "data"),
    prevent_initial_call=True,
)
def zoomed(relayout: dict | None, shown: dict | None, current: list | None, ds: str) -> tuple:
    """A zoom or pan draws the cells inside the window (all of them up to the point budget),
    a double-click the overview again: a Patch of the cell traces, coloured as shown. A
    figure drawn for another window (a rebuild or recolour that was under way while the user
    zoomed) gets the cells of the window zoomed to."""
    _, results = context.fitted(ds)
    if ctx.triggered_id == "stream-shown":
        if not shown or shown.get("window") == current:
            raise PreventUpdate
        window = current
    else:
        window = zoom.next_window(results, results.umap, relayout, current)
    color, _ = _resolve_color(results, ds, (shown or {}).get("color"))
    values = figure_values(results, color)
    view = cells_shown(results, window)
    update = cell_layer_patch(results, results.umap, color, values, view, full_hover=True)
    return zoom.cells_patch(update), window


@callback(
    # Several pages write the URL store; allow_duplicate keeps their callbacks apart.
    Output(ui.URL_STATE, "data", allow_duplicate=True),
    Input("stream-shown", "data"),
    Input(selection_panel.ids("stream")["active"], "data"),
    State("stream-ds", "data"),
    prevent_initial_call=True,
)
def url_state(shown: dict | None, active: dict | None, ds: str) -> str:
    """The address bar: every knob that differs from its default, and a saved selection.
    The default colouring (the cell types) is left out, so that a link with a saved
    selection opens coloured by that selection, as the colleague it is shared with expects;
    any other colouring is kept."""
    if not shown:
        raise PreventUpdate
    query = {
        k: ("1" if v is True else str(v))
        for k, v in shown.items()
        if k in DEFAULTS and v != DEFAULTS[k] and v is not False
    }
    sel = active.get("id") if active else None
    _, results, problem = context.resolve(ds)
    color = shown.get("color")
    if problem is None and color == results.groupby:
        color = None
    return ui.page_href("", ds, color=color, sel=sel, **query)


@callback(
    Output("stream-download", "data"),
    Input("stream-csv", "n_clicks"),
    State("stream-shown", "data"),
    State("stream-ds", "data"),
    prevent_initial_call=True,
)
def download(clicks: int, shown: dict | None, ds: str):
    """Every cell with its coordinates, projected velocity (per source shown) and colour."""
    if not clicks or not shown:
        raise PreventUpdate
    dataset, results = context.fitted(ds)
    color, _ = _resolve_color(results, ds, shown.get("color"))
    values = figure_values(results, color)
    sources = ("velovi", "scvelo") if shown.get("source") == "both" else (shown["source"],)
    table = cells_table(results, values, sources)
    return dcc.send_data_frame(
        table.to_csv, f"{ui.export_name(dataset, 'stream')}.csv", index=False
    )
