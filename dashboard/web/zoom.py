"""Zoom at full resolution: a page whose cell scatter draws a subsample (more cells than
``dashboard.data.overview.POINT_BUDGET``) answers a zoom or pan with the cells inside the new
window, and a double-click (autorange or the figure's own ranges) with the overview again.

A clientside callback (:func:`register`) passes on only the events that change an axis range:
plotly follows a zoom with an ``autosize`` event, and Dash drops the answer to a callback whose
input changes again while it runs, so the zoom's answer would be lost. The page keeps the
window it drew in a ``dcc.Store`` (so a recolour or rebuild draws the same cells) and sends the
new cells as a Patch of the cell traces (:func:`cells_patch`)."""

from __future__ import annotations

import dash
import numpy as np
from dash import Input, Output, Patch, dcc
from dash.exceptions import PreventUpdate

from dashboard.data import overview
from dashboard.data.results import Results

#: relayoutData -> the event when it sets or resets an axis range, else no update.
_RANGE_EVENTS = """
function (event) {
  const ranges = Object.keys(event || {}).filter((k) => /^[xy]axis[0-9]*[.](auto)?range/.test(k));
  return ranges.length ? event : window.dash_clientside.no_update;
}
"""


def request_store(graph_id: str) -> dcc.Store:
    """The store :func:`register` writes ``graph_id``'s range events into (put it in the
    page's layout; the page's zoom callback listens to it)."""
    return dcc.Store(id=f"{graph_id}-zoom")


def register(graph_id: str) -> str:
    """Register, once per page module, the clientside callback that copies ``graph_id``'s
    relayout events that change an axis range into its :func:`request_store`; returns that
    store's id."""
    store = f"{graph_id}-zoom"
    dash.clientside_callback(
        _RANGE_EVENTS,
        Output(store, "data"),
        Input(graph_id, "relayoutData"),
        prevent_initial_call=True,
    )
    return store


def next_window(
    results: Results, xy: np.ndarray, relayout: dict | None, current: list | None
) -> list[float] | None:
    """The window ``[x0, x1, y0, y1]`` to draw the points ``xy`` (N, 2) in after plotly's
    ``relayout`` event (None: the overview), or PreventUpdate when it changes nothing: the
    results fit the point budget, the event moved no axis, or the window is the one drawn. An
    axis the event left out spans the points; a window holding every point is the overview."""
    if results.n_cells <= overview.POINT_BUDGET:
        raise PreventUpdate
    window = overview.relayout_window(relayout)
    if window is False:
        raise PreventUpdate
    if window is not None:
        lo, hi = np.nanmin(xy, 0).astype(float), np.nanmax(xy, 0).astype(float)
        window = list(np.clip(window, np.repeat(lo, 2), np.repeat(hi, 2)).tolist())
        if len(overview.inside(xy, window)) == results.n_cells:
            window = None
    if window == (current or None):
        raise PreventUpdate
    return window


def cells_patch(update: dict, patch: Patch | None = None) -> Patch:
    """A Patch (or ``patch`` extended) that puts :func:`dashboard.figures.common.
    cell_layer_patch`'s cells into the first traces of a figure and its note into the subtitle
    (of a figure whose subtitle is only that note)."""
    patch = Patch() if patch is None else patch
    for i, trace in enumerate(update["traces"]):
        patch["data"][i]["x"] = trace["x"]
        patch["data"][i]["y"] = trace["y"]
        patch["data"][i]["customdata"] = trace["customdata"]
        if "color" in trace:
            patch["data"][i]["marker"]["color"] = trace["color"]
    patch["layout"]["title"]["subtitle"]["text"] = update["note"]
    return patch
