"""The home page's report on a fit beyond its summary: how well it recovered the ground truth
when the data carry one (the bundled simulation does), and the page's "download data" (the
training history per epoch and, with ground truth, the per-gene recovery)."""

from __future__ import annotations

import dash
import numpy as np
import pandas as pd
from dash import Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from dashboard import components as ui
from dashboard import figures


def sections(ds: str | None) -> list[html.Section]:
    """The ground-truth card (only for results with ground truth) and the data card."""
    dataset, results, problem = ui.resolve(ds)
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
                html.Div(
                    [
                        html.Div(
                            [
                                html.Div(f"{v:.3f}" if np.isfinite(v) else "–", className="value"),
                                html.Div(k, className="name"),
                            ],
                            className="stat",
                        )
                        for k, v in stats
                    ],
                    className="stats",
                    id="truth-stats",
                ),
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


@dash.callback(
    Output("home-download", "data"),
    Input("home-history-csv", "n_clicks"),
    Input("home-truth-csv", "n_clicks"),
    State("home-report-ds", "data"),
    prevent_initial_call=True,
)
def download(_history: int, _truth: int, ds: str):
    """The training history (epoch, train and validation ELBO) or the per-gene recovery."""
    if not dash.ctx.triggered or not any(t["value"] for t in dash.ctx.triggered):
        raise PreventUpdate
    dataset, results, problem = ui.resolve(ds)
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
