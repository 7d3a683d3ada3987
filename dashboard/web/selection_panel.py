"""The selection panel shared by the UMAP pages (velocity, uncertainty): what a lasso or box
selected, against the rest, with the selection's velocity drivers; save, reopen, download.

A page calls :func:`panel` in its layout and :func:`register` once at import, with a prefix
that makes the ids unique (``stream``, ``uncertainty``). The graph's ``selectedData`` goes
through a clientside callback that keeps only the shape (``assets/velodash.js``), so the server
never receives the per-point list; the cells are resolved here from the polygon or box.
State, in ``<prefix>-sel-active``: ``{"geometry": {kind, x, y}}`` for a fresh selection,
``{"id": ID}`` for a saved one, or None.
"""

from __future__ import annotations

import dash
import flask
import numpy as np
import pandas as pd
from dash import ClientsideFunction, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from dashboard import figures
from dashboard.data.exports import cell_type_labels
from dashboard.data.results import Results
from dashboard.data.selections import (
    SavedSelection,
    SelectionError,
    SelectionStore,
    mask_from_geometry,
    summarise,
)
from dashboard.hosting import auth
from dashboard.web import context
from dashboard.web import widgets as ui

N_DRIVERS = 15
RANKS = [
    {"label": "velocity and coherence", "value": "score"},
    {"label": "velocity", "value": "velocity"},
    {"label": "coherence", "value": "coherence"},
]
HINT = (
    "Draw a lasso or a box on the UMAP (tools at the top right of the plot) to see the selected "
    "cells' types, uncertainty and latent time against the rest, and the genes that drive "
    "velocity there."
)


def ids(prefix: str) -> dict[str, str]:
    """Component ids of the panel with ``prefix``."""
    names = (
        "shape active body name save clear rank open download cells-csv drivers-csv message status"
    ).split()
    return {n: f"{prefix}-sel-{n}" for n in names}


def store() -> SelectionStore:
    """The saved-selection store of the app serving this request."""
    return SelectionStore(flask.current_app.config[context.CONFIG_KEY].cache_dir)


def saved_options(ds: str) -> list[dict]:
    """Dropdown options of ``ds``'s saved selections."""
    try:
        items = store().list(ds)
    except SelectionError:
        return []
    return [{"label": _option_label(s), "value": s["id"]} for s in items]


def _option_label(saved: dict) -> str:
    """ "name (N cells)", with "by owner" when the server has sign-in (several users)."""
    label = f"{saved['name']} ({saved['n_selected']} cells"
    if auth.sign_in_enabled() and saved.get("owner"):
        label += f", by {saved['owner']}"
    return label + ")"


def _save_controls(i: dict[str, str]) -> list:
    """Name box and Save button for editors; viewers browse and download but do not save."""
    if not auth.current_user().can("editor"):
        return [html.P("Saving selections needs the editor role.", className="caveat")]
    return [
        dcc.Input(
            id=i["name"], placeholder="name this selection", maxLength=60, className="sel-name"
        ),
        html.Button("Save", id=i["save"], className="btn btn-small", n_clicks=0),
    ]


def shared_link(page: str, ds: str, sel_id: str) -> str:
    """The full address that opens ``page`` of ``ds`` with the saved selection ``sel_id``
    highlighted (host and any path prefix of this server included)."""
    path = ui.page_href(dash.get_relative_path(f"/{page}"), ds, sel=sel_id)
    return flask.request.host_url.rstrip("/") + path


def save_selection(
    ds: str, active: dict | None, name: str | None, page: str
) -> tuple[SavedSelection | None, html.Div]:
    """Save the active selection of ``ds`` for the signed-in user (editors only, checked
    here on the server) under ``name``; returns (the saved selection or None, the message,
    which on success carries the selection's full link on ``page`` with a copy button)."""
    _, results, problem = context.resolve(ds)
    if problem is not None:
        return None, problem
    try:
        user = auth.require("editor", "Saving a selection")
        mask, old_name = resolve_mask(results, ds, active)
        saved = store().save(ds, name or old_name, mask, results.cell_ids, user.name)
    except (auth.Forbidden, SelectionError, ValueError) as err:
        return None, ui.alert(str(err), "warning")
    link = shared_link(page, ds, saved.id)
    message = ui.alert(
        [
            f"Saved “{saved.name}”. Anyone with access opens it at ",
            html.Code(link, className="sel-link"),
            dcc.Clipboard(content=link, title="Copy the link", className="sel-copy"),
        ],
        "success",
    )
    return saved, message


def panel(prefix: str, ds: str, sel: str | None = None) -> html.Section:
    """The panel's layout; ``sel`` (a saved id from the URL) opens that selection."""
    i = ids(prefix)
    active = {"id": sel} if sel else None
    return html.Section(
        [
            dcc.Store(id=i["shape"]),
            dcc.Store(id=i["active"], data=active),
            dcc.Download(id=i["download"]),
            html.Div(
                [
                    html.H3("Selection", style={"margin": 0}),
                    dcc.Dropdown(
                        saved_options(ds),
                        sel,
                        id=i["open"],
                        placeholder="open a saved selection…",
                        className="sel-open",
                    ),
                ],
                className="sel-head",
            ),
            html.Div(
                [
                    *_save_controls(i),
                    ui.download_button(i["cells-csv"], "Cell ids (CSV)"),
                    ui.download_button(i["drivers-csv"], "Drivers (CSV)"),
                    html.Button(
                        "Clear", id=i["clear"], className="btn btn-outline btn-small", n_clicks=0
                    ),
                    html.Div(
                        [
                            html.Label("Rank drivers by", className="label"),
                            dcc.RadioItems(RANKS, "score", id=i["rank"], inline=True),
                        ],
                        className="sel-rank",
                    ),
                ],
                className="controls sel-actions",
            ),
            html.Div(id=i["status"]),
            html.Div(id=i["message"]),
            html.Div(html.P(HINT, className="caveat"), id=i["body"]),
        ],
        className="card selection-panel",
        id=f"{prefix}-selection",
    )


def resolve_mask(results: Results, ds: str, active: dict | None) -> tuple[np.ndarray, str | None]:
    """(mask (N,) bool, saved name or None) of the active selection; SelectionError if unusable."""
    if not active:
        raise SelectionError(HINT)
    if "id" in active:
        saved: SavedSelection = store().load(ds, active["id"], results.cell_ids)
        return saved.mask, saved.name
    return mask_from_geometry(results.umap, active.get("geometry")), None


def _fmt(value: float) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.3g}"


def _fmt_q(value: float) -> str:
    """A q-value; those that underflow to 0 are shown as below the smallest double."""
    return "< 1e-300" if value == 0 else _fmt(value)


def _types_table(results: Results, types: pd.DataFrame) -> html.Table:
    colors = figures.cell_type_colors(results)
    rows = [
        html.Tr(
            [
                html.Td([html.Span(className="swatch", style={"background": colors[t]}), t]),
                html.Td(f"{n:,}"),
                html.Td(f"{share:.0%}"),
                html.Td(f"{of_type:.0%}" if np.isfinite(of_type) else "–"),
            ]
        )
        for t, n, share, of_type in types[
            ["cell_type", "n_selected", "share_of_selection", "share_of_type"]
        ].itertuples(index=False)
        if n > 0
    ]
    head = html.Tr([html.Th(h) for h in ("cell type", "cells", "of selection", "of type")])
    return html.Table([html.Thead(head), html.Tbody(rows)], className="simple")


def _values_table(values: dict) -> html.Table:
    rows = []
    for label, v in values.items():
        if label == "latent time":
            rows.append(
                html.Tr(
                    [
                        html.Td("latent time (median, range)"),
                        html.Td(f"{_fmt(v.median_in)} ({_fmt(v.min_in)}–{_fmt(v.max_in)})"),
                        html.Td(f"{_fmt(v.median_out)} ({_fmt(v.min_out)}–{_fmt(v.max_out)})"),
                    ]
                )
            )
        else:
            rows.append(
                html.Tr(
                    [
                        html.Td(f"median {label}"),
                        html.Td(_fmt(v.median_in)),
                        html.Td(_fmt(v.median_out)),
                    ]
                )
            )
    head = html.Tr([html.Th(""), html.Th("selection"), html.Th("rest")])
    return html.Table([html.Thead(head), html.Tbody(rows)], className="simple")


def _drivers_table(drivers: pd.DataFrame, ds: str) -> html.Table:
    has_coherence = "t_coherence" in drivers
    head = ["gene", "score", "t velocity", "velocity sel. / rest", "q velocity"]
    if has_coherence:
        head.insert(4, "t coherence")
    rows = []
    for row in drivers.head(N_DRIVERS).itertuples(index=False):
        cells = [
            html.Td(ui.gene_link(row.gene, ds)),
            html.Td(_fmt(row.score)),
            html.Td(_fmt(row.t_velocity)),
            html.Td(f"{_fmt(row.velocity_in)} / {_fmt(row.velocity_out)}"),
            html.Td(_fmt_q(row.q_velocity)),
        ]
        if has_coherence:
            cells.insert(4, html.Td(_fmt(row.t_coherence)))
        rows.append(html.Tr(cells))
    return html.Table(
        [html.Thead(html.Tr([html.Th(h) for h in head])), html.Tbody(rows)],
        className="simple drivers",
    )


def panel_body(results: Results, ds: str, mask: np.ndarray, name: str | None, rank: str) -> list:
    """The panel's content for ``mask`` (raises SelectionError for an empty/full selection)."""
    s = summarise(results, mask, rank)
    title = f"{s.n_selected:,} cells selected ({s.n_selected / s.n_cells:.1%} of {s.n_cells:,})"
    return [
        html.P([html.B(name + ": ") if name else None, title], className="sel-count"),
        html.Div(
            [
                html.Div([html.H4("Cells by type"), _types_table(results, s.types)]),
                html.Div([html.H4("Against the rest"), _values_table(s.values)]),
            ],
            className="grid-2",
        ),
        html.H4("Velocity drivers"),
        _drivers_table(s.drivers, ds),
        html.P(
            "Welch t-tests per gene, selection vs rest, of velocity and of velocity coherence "
            "(Δ ⊙ v); score = √(t velocity² + max(t coherence, 0)²); q: Benjamini–Hochberg. "
            "Click a gene to open it.",
            className="caveat",
        ),
    ]


def selection_view(results: Results, ds: str, active: dict, rank: str) -> tuple[list, object]:
    """(panel content, message): the selection's panel, or the hint and a warning saying what
    is wrong with it (empty, malformed, unknown or foreign saved id) — never an exception."""
    try:
        mask, name = resolve_mask(results, ds, active)
        return panel_body(results, ds, mask, name, rank), None
    except (SelectionError, ValueError) as err:
        return [html.P(HINT, className="caveat")], ui.alert(str(err), "warning")


def register(prefix: str, graph_id: str, ds_store: str) -> None:
    """Register the panel's callbacks for a page whose UMAP graph is ``graph_id`` and whose
    dataset id is in the store ``ds_store``; ``prefix`` is also the page's path (shared
    links of saved selections point there)."""
    i = ids(prefix)
    dash.clientside_callback(
        ClientsideFunction("velodash", "selectionShape"),
        Output(i["shape"], "data"),
        Input(graph_id, "selectedData"),
        prevent_initial_call=True,
    )

    @dash.callback(
        Output(i["active"], "data"),
        Input(i["shape"], "data"),
        Input(i["open"], "value"),
        Input(i["clear"], "n_clicks"),
        prevent_initial_call=True,
    )
    def activate(shape: dict | None, opened: str | None, _clear: int):
        """A new lasso/box, a saved selection picked from the list, or Clear."""
        trigger = dash.ctx.triggered_id
        if trigger == i["clear"]:
            return None
        if trigger == i["open"]:
            return {"id": opened} if opened else no_update
        return {"geometry": shape} if shape else no_update

    @dash.callback(
        Output(i["body"], "children"),
        Output(i["message"], "children"),
        Input(i["active"], "data"),
        Input(i["rank"], "value"),
        State(ds_store, "data"),
    )
    def render(active: dict | None, rank: str, ds: str):
        """The panel's content (or the hint, or what is wrong with the selection)."""
        if not active:
            return html.P(HINT, className="caveat"), None
        _, results, problem = context.resolve(ds)
        if problem is not None:
            return None, problem
        return selection_view(results, ds, active, rank or "score")

    @dash.callback(
        Output(i["active"], "data", allow_duplicate=True),
        Output(i["open"], "options"),
        Output(i["open"], "value"),
        Output(i["status"], "children"),
        Input(i["save"], "n_clicks"),
        State(i["active"], "data"),
        State(i["name"], "value"),
        State(ds_store, "data"),
        prevent_initial_call=True,
    )
    def save(clicks: int, active: dict | None, name: str | None, ds: str):
        """Save the current selection under ``name``; it then has an id for links."""
        if not clicks:
            raise PreventUpdate
        saved, message = save_selection(ds, active, name, prefix)
        if saved is None:
            return no_update, no_update, no_update, message
        return {"id": saved.id}, saved_options(ds), saved.id, message

    @dash.callback(
        Output(i["download"], "data"),
        Input(i["cells-csv"], "n_clicks"),
        Input(i["drivers-csv"], "n_clicks"),
        State(i["active"], "data"),
        State(i["rank"], "value"),
        State(ds_store, "data"),
        prevent_initial_call=True,
    )
    def download(_cells: int, _drivers: int, active: dict | None, rank: str, ds: str):
        """Cell ids (with type and latent time) or the full drivers table, as CSV."""
        if not dash.ctx.triggered or not any(t["value"] for t in dash.ctx.triggered):
            raise PreventUpdate
        dataset, results, problem = context.resolve(ds)
        if problem is not None:
            raise PreventUpdate
        try:
            mask, _ = resolve_mask(results, ds, active)
        except (SelectionError, ValueError):
            raise PreventUpdate from None
        stem = ui.export_name(dataset, f"selection_{active.get('id', 'lasso')}")
        if dash.ctx.triggered_id == i["cells-csv"]:
            cells = pd.DataFrame(
                {
                    "cell_id": results.cell_ids[mask],
                    "cell_type": cell_type_labels(results, mask),
                    "latent_time": results.latent_time[mask],
                }
            )
            return dcc.send_data_frame(cells.to_csv, f"{stem}_cells.csv", index=False)
        try:
            drivers = summarise(results, mask, rank or "score").drivers
        except SelectionError:
            raise PreventUpdate from None
        return dcc.send_data_frame(drivers.to_csv, f"{stem}_drivers.csv", index=False)
