"""The velocity page's colourings: the "Colour by" choices (cell types, the columns biologists
look at first, the rest under "more", a gene, saved selections), keeping the colour dropdown and
the gene box in step, and what a colouring draws (a saved selection as its cells against the
rest)."""

from __future__ import annotations

import dash
import numpy as np

from dashboard.data.results import Results
from dashboard.data.selections import COLOR_PREFIX, SelectionError
from dashboard.data.values import OBS_LABELS, ColorValues
from dashboard.web import selection_panel
from dashboard.web import widgets as ui

SELECTED_COLOR, REST_COLOR = "#d62728", "#c9ced6"
#: The colourings biologists look at first, after the cell types (obs column -> label); offered
#: when the results have them, before the file's other categorical annotations. Every other
#: column is listed under "more" by its own name.
COLOR_FIRST = {column: name for column, (name, _unit) in OBS_LABELS.items()}
MORE = {"label": "— more —", "value": "", "disabled": True}
#: A gene colouring in the "Colour by" dropdown (the gene box holds the gene itself).
GENE_PREFIX = "gene:"


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


def resolve_color(results, ds: str, color: str | None):
    """(colour for the figure, message): a saved selection becomes its ColorValues; an unusable
    one falls back to the cell types with a message."""
    if color and color.startswith(COLOR_PREFIX):
        try:
            return selection_colors(results, ds, color), None
        except SelectionError as err:
            return None, ui.alert(str(err), "warning")
    return color, None


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


def figure_values(results: Results, color: str | ColorValues | None) -> ColorValues | None:
    """The per-cell values a colouring (as :func:`resolve_color` gives it) draws."""
    if isinstance(color, str):
        return results.color_values(color)
    return color
