"""The home page's report on a fit beyond its summary: how well it recovered the ground truth
when the data carry one (the bundled simulation does), how well its uncertainties find the cells
whose velocity is wrong, and the page's "download data" (the training history per epoch and,
with ground truth, the per-gene recovery)."""

from __future__ import annotations

import dash
import numpy as np
import pandas as pd
from dash import Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from dashboard import figures
from dashboard.web import context
from dashboard.web import widgets as ui


def sections(ds: str | None) -> list[html.Section]:
    """The ground-truth card (only for results with ground truth) and the data card."""
    dataset, results, problem = context.resolve(ds)
    if problem is not None:
        return []
    out = []
    summary = figures.ground_truth_summary(results)
    if summary is not None:
        stats = [
            ("median latent-time ρ per gene", summary["median_spearman_time"]),
            ("median velocity r per gene", summary.get("median_pearson_velocity", np.nan)),
            ("cell latent time ρ", summary["spearman_latent_time"]),
        ]
        out.append(
            ui.section(
                "Ground truth recovery (simulated data)",
                _stat_row(stats, "truth-stats", digits=3),
                ui.graph(
                    "truth-figure",
                    dataset,
                    "ground_truth",
                    "300px",
                    figure=figures.ground_truth_figure(results),
                ),
                html.P(
                    "Per fitted gene: Spearman ρ of its latent time (fit_t) with the simulated "
                    "time, and Pearson r of its velocity with the simulated velocity. Both are "
                    "blind to per-gene rescaling. Close to 1: the fit recovered the truth; use "
                    "this to judge how far to trust the model before opening your own data.",
                    className="caveat",
                ),
            )
        )
        calibration = figures.uncertainty_calibration_summary(results)
        if calibration is not None:
            out.append(_calibration_section(dataset, results, calibration))
    buttons = [ui.download_button("home-history-csv", "Training history (CSV)")]
    if summary is not None:
        buttons.append(ui.download_button("home-truth-csv", "Ground truth per gene (CSV)"))
    out.append(
        ui.section(
            "Download data",
            html.Div(buttons, className="controls"),
            dcc.Download(id="home-download"),
            dcc.Store(id="home-report-ds", data=dataset.id),
        )
    )
    return out


def _stat_row(stats: list[tuple[str, float]], id: str, digits: int) -> html.Div:
    """A row of big numbers with their names ("–" for a missing value)."""
    return html.Div(
        [
            html.Div(
                [
                    html.Div(f"{v:.{digits}f}" if np.isfinite(v) else "–", className="value"),
                    html.Div(k, className="name"),
                ],
                className="stat",
            )
            for k, v in stats
        ],
        className="stats",
        id=id,
    )


def _calibration_section(dataset, results, calibration: dict) -> html.Section:
    """Does the uncertainty point at the cells whose velocity direction is wrong?"""
    stats = [
        (f"{kind}: {label}", value)
        for kind, scores in calibration.items()
        for label, value in (
            ("ρ with direction error", scores["spearman"]),
            ("AUROC, worst 10 % of cells", scores["auroc"]),
        )
    ]
    return ui.section(
        "Uncertainty against the truth (simulated data)",
        _stat_row(stats, "calibration-stats", digits=2),
        ui.graph(
            "calibration-figure",
            dataset,
            "uncertainty_calibration",
            "300px",
            figure=figures.calibration_figure(results),
        ),
        html.P(
            "Each cell's direction error is 1 − the cosine between its fitted and its true "
            "velocity over genes (each gene scaled to unit variance, each cell centred over "
            "genes as the uncertainty is); the quarter of cells with the slowest true velocity, "
            "whose direction is undefined, is left out. ρ: Spearman correlation of the "
            "uncertainty with that error (0: unrelated). AUROC: how well the uncertainty picks "
            "out the tenth of cells with the largest error (0.5: chance, 1: perfectly). A "
            "rising line: the more uncertain cells are the ones whose velocity is wrong.",
            className="caveat",
        ),
    )


def download(_history: int, _truth: int, ds: str):
    """The training history (epoch, train and validation ELBO) or the per-gene recovery."""
    if not dash.ctx.triggered or not any(t["value"] for t in dash.ctx.triggered):
        raise PreventUpdate
    dataset, results, problem = context.resolve(ds)
    if problem is not None:
        raise PreventUpdate
    if dash.ctx.triggered_id == "home-truth-csv":
        metrics = figures.ground_truth_metrics(results)
        if metrics is None:
            raise PreventUpdate
        table = pd.DataFrame({"gene": results.gene_names, **metrics})
        name = ui.export_name(dataset, "ground_truth")
    else:
        history = results.history() or {}
        table = pd.DataFrame({k: pd.Series(v) for k, v in history.items()}, columns=list(history))
        table.insert(0, "epoch", np.arange(1, len(table) + 1))
        name = ui.export_name(dataset, "training_history")
    return dcc.send_data_frame(table.to_csv, f"{name}.csv", index=False)


def register() -> None:
    """Register this module's callbacks for the app being built. Page modules call it when
    they load: Dash runs them once per app, whereas this module is imported once per process
    (a ``@callback`` here would reach only the first app)."""
    dash.callback(
        Output("home-download", "data"),
        Input("home-history-csv", "n_clicks"),
        Input("home-truth-csv", "n_clicks"),
        State("home-report-ds", "data"),
        prevent_initial_call=True,
    )(download)
