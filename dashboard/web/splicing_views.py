"""What every page shows of a fit whose spliced/unspliced counts were predicted by SplicedVAE
from a reference: the badge, and the validation panel (held-out reference cells)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dash import dcc, html

from dashboard.data.results import Results
from dashboard.figures import splicing as figures
from dashboard.web import widgets as ui

BADGE_ID = "splicing-badge"


def record_of(results: Results | None) -> Mapping[str, Any] | None:
    """``uns['velodash']['splicing']`` of a fit with predicted S/U, else None."""
    if results is None:
        return None
    record = results.info.get("splicing")
    return record if isinstance(record, Mapping) and record.get("predicted") else None


def badge_text(record: Mapping[str, Any]) -> str:
    """ "S/U predicted (SplicedVAE, reference X; held-out R = …)"."""
    held = record["held_out"]
    return (
        f"S/U predicted (SplicedVAE, reference {record['reference']}; held-out R = "
        f"{float(held['ratio_pearson']):.2f})"
    )


def badge(record: Mapping[str, Any] | None) -> html.Div | None:
    """The badge every page of such a fit carries (None for measured S/U)."""
    if record is None:
        return None
    return html.Div(
        [
            html.Strong(badge_text(record)),
            html.Span(
                " · velocity from predicted counts: see the validation on the home page; "
                "uncertainties do not include the prediction's error.",
                className="caveat",
            ),
        ],
        className="alert alert-warning splicing-badge",
        role="status",
    )


def validation_panel(record: Mapping[str, Any] | None, dataset_label: str) -> html.Div | None:
    """Predicted vs true spliced share and the velocity cosine on held-out reference cells."""
    if record is None:
        return None
    velocity = record.get("velocity") or {}
    text = (
        f"{dataset_label} had no spliced/unspliced counts: SplicedVAE learnt them from "
        f"{record['reference']} (sha256 {str(record['reference_sha256'])[:12]}…) over "
        f"{int(record['n_genes']):,} shared genes and was measured on "
        f"{int(record['n_cells_held_out']):,} reference cells it did not train on. "
        "Each gene's mean share alone scores about as well as the prediction here; the "
        "velocity cosine below says how far the velocity itself can be trusted."
    )
    if velocity:
        text += f" Median velocity cosine to true S/U: {float(velocity['cosine_median']):.2f}."
    graphs = [
        dcc.Graph(
            id=f"splicing-{name}",
            figure=draw(record),
            config={"displaylogo": False},
            style={"height": "340px"},
        )
        for name, draw in (("ratio", figures.ratio_scatter), ("cosine", figures.cosine_histogram))
    ]
    return ui.section(
        "Predicted spliced/unspliced: validation",
        html.P(text, className="caveat"),
        html.Div(graphs, className="grid-2"),
    )
