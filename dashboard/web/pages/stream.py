"""Velocity view: the UMAP coloured by cell type, an obs column (the few biologists want first,
the rest under "more"), a gene (named in "Colour by") or a saved selection, with streamlines or
an arrow grid from veloVI, the scVelo baseline or both (optionally faded where extrinsic
uncertainty is high), their per-cell agreement, and the selection panel (lasso or box). The
graphs are sized so that the equal-aspect UMAP fills them. Recolouring sends a typed-array
Patch; the view state lives in the URL. Above the point budget the UMAP draws a subsample of
the cells, and a zoom or pan sends the cells inside the window (:mod:`dashboard.web.zoom`)."""

from __future__ import annotations

import dash
import numpy as np
from dash import Input, Output, Patch, State, callback, ctx, dcc, html
from dash.exceptions import PreventUpdate

from dashboard import figures
from dashboard.data.exports import cells_table
from dashboard.data.results import Results
from dashboard.data.selections import COLOR_PREFIX, SelectionError
from dashboard.data.values import ColorValues
from dashboard.figures.common import cell_layer_patch
from dashboard.figures.embedding import cells_shown, embedding_aspect
from dashboard.web import context, selection_panel, zoom
from dashboard.web import widgets as ui

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
DEFAULTS = {"mode": "streams", "density": 1.0, "smooth": 0.5, "source": "velovi", "fade": False}
SELECTED_COLOR, REST_COLOR = "#d62728", "#c9ced6"
#: The colourings biologists look at first, after the cell types (obs column -> label); offered
#: when the results have them, before the file's other categorical annotations. Every other
#: column is listed under "more" by its own name.
COLOR_FIRST = {
    "latent_time": "latent time",
    "intrinsic_uncertainty": "intrinsic uncertainty",
    "extrinsic_uncertainty": "extrinsic uncertainty",
    "velocity_length": "velocity speed",
    "velocity_confidence": "velocity confidence",
}
MORE = {"label": "— more —", "value": "", "disabled": True}
#: A gene colouring in the "Colour by" dropdown (the gene box holds the gene itself).
GENE_PREFIX = "gene:"


def _number(value, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def split_color(results, color: str | None) -> tuple[str | None, str | None]:
    """(colour-dropdown value, gene) for a URL `color`: an obs column wins over a same-named
    gene; a saved selection (``sel:ID``) is a dropdown value too; a gene shows in the dropdown
    as ``gene:NAME``."""
    if color in results.obs_columns() or (color or "").startswith(COLOR_PREFIX):
        return color, None
    if color in results.gene_index:
        return GENE_PREFIX + color, color
    return results.groupby, None


def _option(column: str, label: str) -> dict:
    """A dropdown option showing ``label``, found by it or the raw column name (its tooltip)."""
    return {"label": label, "value": column, "title": column, "search": f"{label} {column}"}


def color_options(results: Results, ds: str, gene: str | None = None) -> list[dict]:
    """Colour choices: the gene colouring the cells (when one does); the cell types,
    ``COLOR_FIRST``'s columns and the file's other categorical annotations; under "more" every
    other numeric column; then the dataset's saved selections."""
    columns = results.obs_columns()
    group = results.groupby
    first = [_option(group, f"cell type ({group})")] if group in columns else []
    first += [_option(c, label) for c, label in COLOR_FIRST.items() if c in columns]
    first += [_option(c, c) for c, k in columns.items() if k == "categorical" and c != group]
    more = [_option(c, c) for c, k in columns.items() if k == "numeric" and c not in COLOR_FIRST]
    genes = [{"label": f"gene: {gene}", "value": GENE_PREFIX + gene}] if gene else []
    selections = [
        {"label": f"selection: {o['label']}", "value": COLOR_PREFIX + o["value"]}
        for o in selection_panel.saved_options(ds)
    ]
    return genes + first + ([MORE, *more] if more else []) + selections


def selection_colors(results, ds: str, color: str) -> ColorValues:
    """The colouring of a saved selection: its cells against the rest (SelectionError when the
    id is bad or unknown)."""
    saved = selection_panel.store().load(ds, color[len(COLOR_PREFIX) :], results.cell_ids)
    codes = np.where(saved.mask, 1, 0).astype(np.int16)
    categories = ["other cells", saved.name]  # the selection is drawn on top
    return ColorValues(
        color,
        f"selection {saved.name}",
        "categorical",
        codes,
        categories,
        {"other cells": REST_COLOR, saved.name: SELECTED_COLOR},
    )


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
    density: str | float = 1.0,
    smooth: str | float = 0.5,
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
            _control("Density", _slider("stream-density", 0.5, 3, 0.25, _number(density, 1.0))),
            _control("Smoothing", _slider("stream-smooth", 0.1, 1.5, 0.1, _number(smooth, 0.5))),
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


def _resolve_color(results, ds: str, color: str | None):
    """(colour for the figure, message): a saved selection becomes its ColorValues; an unusable
    one falls back to the cell types with a message."""
    if color and color.startswith(COLOR_PREFIX):
        try:
            return selection_colors(results, ds, color), None
        except SelectionError as err:
            return None, ui.alert(str(err), "warning")
    return color, None


def _agreement_style(source: str) -> dict:
    """The agreement card: shown when the scVelo baseline is drawn."""
    return {"display": "block" if source != "velovi" else "none", **SIZED_CARD}


def colour_controls(
    results: Results, ds: str, trigger: str | None, picked: str | None, gene: str | None
) -> tuple:
    """(colour, "Colour by" value, its options, gene box value) after ``trigger`` changed one
    of the two colour controls (``dash.no_update`` where a control stays): a gene puts
    "gene: NAME" into Colour by; a column or saved selection picked there clears the gene;
    clearing the gene goes back to the cell types."""
    keep = dash.no_update
    if trigger == "stream-gene":
        value = GENE_PREFIX + gene if gene else results.groupby
        return gene or results.groupby, value, color_options(results, ds, gene), keep
    picked_gene = (picked or "").startswith(GENE_PREFIX)
    if trigger == "stream-color" and not picked_gene and gene:
        return picked, keep, color_options(results, ds), None
    return gene or (picked[len(GENE_PREFIX) :] if picked_gene else picked), keep, keep, keep


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
    values = color if isinstance(color, ColorValues) else None
    if isinstance(color, str):
        values = results.color_values(color)
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
    values = color if isinstance(color, ColorValues) or color is None else None
    if isinstance(color, str):
        values = results.color_values(color)
    sources = ("velovi", "scvelo") if shown.get("source") == "both" else (shown["source"],)
    table = cells_table(results, values, sources)
    return dcc.send_data_frame(
        table.to_csv, f"{ui.export_name(dataset, 'stream')}.csv", index=False
    )
