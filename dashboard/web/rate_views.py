"""The gene page's views of the two transcription-rate models (veloVI paper, Fig. 5): α(t) under
the phase portrait, the gene's MSE under each fit, and the per-gene comparison of a constant-rate
fit with its time-dependent companion (`dashboard.data.rate_models`)."""

from __future__ import annotations

from dash import Input, Output, State, callback, dcc, html
from dash.exceptions import PreventUpdate

from dashboard import figures
from dashboard.data.rate_models import mse_comparison, rate_pair
from dashboard.data.results import Results
from dashboard.hosting import auth
from dashboard.web import context
from dashboard.web import widgets as ui

#: How many of the genes α(t) helps most the comparison card links to.
TOP_RATE_GENES = 10


def rate_hint(dataset, results: Results, companion: Results | None) -> html.P | None:
    """For a raw dataset fitted with one transcription rate only: how to get the other (for
    a viewer, whom to ask)."""
    if companion is not None or dataset.kind != "raw":
        return None
    other = "constant rate" if results.time_dependent else "time-dependent rate α(t)"
    tick = "unticked" if results.time_dependent else "ticked"
    how = (
        f"fit this dataset again on the home page with “time-dependent rate α(t)” {tick}"
        if auth.current_user().can("editor")
        else "an editor can fit this dataset again with the other rate"
    )
    return html.P(
        f"To compare with a {other} (veloVI paper, Fig. 5), {how}: both fits then show here.",
        className="caveat",
        id="rate-hint",
    )


def rate_note(dataset, results: Results) -> html.P:
    """The home summary's line on the transcription rate the shown fit used, and whether the
    other rate's fit is there to compare (on the gene page)."""
    rate = "time-dependent α(t)" if results.time_dependent else "constant α"
    text = [f"Transcription rate: {rate}."]
    if context.companion(results) is not None:
        other = "constant α" if results.time_dependent else "α(t)"
        text += [
            f" The {other} fit of this dataset is there too: ",
            dcc.Link("compare them on the Genes page", href=ui.page_href("/genes", dataset.id)),
            ".",
        ]
    return html.P(text, className="caveat", id="rate-note")


def rate_models_card(dataset, results: Results, companion: Results) -> html.Section:
    """Every gene's MSE under both transcription rates (Fig. 5b) and the genes α(t) helps most,
    each a link to its gene view."""
    constant, time_dependent = rate_pair(results, companion)
    table = mse_comparison(constant, time_dependent)
    top = table.head(TOP_RATE_GENES)
    return ui.section(
        "Constant vs time-dependent transcription rate",
        ui.graph("rate-models", dataset, "rate_models", "300px"),
        html.P(
            [
                f"Genes that α(t) fits best (largest MSE ratio, top {len(top)}): ",
                *[
                    item
                    for i, row in enumerate(top.itertuples())
                    for item in (
                        ", " if i else "",
                        ui.gene_link(row.gene, dataset.id),
                        f" ({row.log10_ratio:+.2f})",
                    )
                ],
            ],
            id="rate-top-genes",
        ),
        html.P(
            "log10 of each gene's fit MSE (ŝ and û against the moments) under a constant "
            "transcription rate over its MSE under α(t) = α₁ − (α₁ − α)e^(−λt): right of the "
            "dotted line, the time-dependent rate fits the gene better. The two fits are two "
            "jobs of this dataset with identical options otherwise.",
            className="caveat",
        ),
        id="rate-models-card",
    )


def show_rate(gene: str, ds: str):
    """The selected gene's transcription rate under each fit, and its MSE under each (with the
    gene's place in the comparison when both fits exist)."""
    _, results = context.fitted(ds)
    gene = gene if gene in results.gene_index else results.gene_ignoring_case(gene or "")
    if gene is None:
        return figures.empty_figure("Pick a gene from the table."), None
    companion = context.companion(results)
    fits = [fit for fit in rate_pair(results, companion) if fit is not None]
    return figures.transcription_rate_figure(fits, gene), _models_summary(fits, gene)


def show_rate_models(gene: str, ds: str):
    """The per-gene comparison of the two fits, with the selected gene marked."""
    _, results = context.fitted(ds)
    constant, time_dependent = rate_pair(results, context.companion(results))
    if constant is None or time_dependent is None:
        raise PreventUpdate
    return figures.mse_ratio_figure(mse_comparison(constant, time_dependent), highlight=gene)


def _models_summary(fits: list[Results], gene: str) -> html.Div:
    """The gene's fit MSE under each transcription rate, and with both the log10 ratio and
    its rank among the genes."""
    rows = [
        html.Tr([html.Td(figures.rate_label(fit)), html.Td(f"{fit.gene_arrays(gene).mse:.4g}")])
        for fit in fits
        if fit.gene_arrays(gene).mse is not None
    ]
    children: list = [
        html.H3("Fit error by transcription rate"),
        html.Table(
            [html.Thead(html.Tr([html.Th("rate"), html.Th("MSE")])), html.Tbody(rows)],
            className="models-table",
        ),
    ]
    if len(fits) == 2:
        table = mse_comparison(*fits)
        match = table.index[table["gene"] == gene]
        if len(match):
            ratio = float(table.loc[match[0], "log10_ratio"])
            better = "α(t)" if ratio > 0 else "the constant rate"
            children.append(
                html.P(
                    f"log10 MSE ratio {ratio:+.3f}: {better} fits {gene} better "
                    f"(rank {match[0] + 1} of {len(table)} by how much α(t) helps).",
                    id="gene-models-ratio",
                )
            )
    else:
        children.append(
            html.P("Only the time-dependent fit exists for this dataset.", className="caveat")
        )
    return html.Div(children)


def register() -> None:
    """Register this module's callbacks for the app being built. Page modules call it when
    they load: Dash runs them once per app, whereas this module is imported once per process
    (a ``@callback`` here would reach only the first app)."""
    callback(
        Output("gene-rate", "figure"),
        Output("gene-models", "children"),
        Input("genes-selected", "data"),
        State("genes-ds", "data"),
    )(show_rate)
    callback(
        Output("rate-models", "figure"),
        Input("genes-selected", "data"),
        State("genes-ds", "data"),
    )(show_rate_models)
