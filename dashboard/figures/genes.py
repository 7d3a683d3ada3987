"""One gene's figures: phase portrait with the fitted kinetics, abundance over latent time,
velocity on the UMAP, permutation effect per cell type and agreement with the scVelo baseline."""

from __future__ import annotations

from typing import Literal

import numpy as np
import plotly.graph_objects as go

from core.kinetics import trajectory, transcription_rate
from dashboard.data.contract import STATES
from dashboard.data.overview import overview
from dashboard.data.rate_models import rate_pair
from dashboard.data.results import Results
from dashboard.data.values import ColorValues
from dashboard.figures.common import (
    base_layout,
    cell_figure,
    cell_hover,
    cell_type_colors,
    empty_figure,
    group_indices,
    plot_axes,
)

STATE_COLORS = dict(zip(STATES, ("#1f77b4", "#9ecae1", "#d62728", "#fcae91"), strict=True))
FIT_COLORS = {"induction": "#6a3d9a", "repression": "#b15928", "steady": "#444444"}
MS_LABEL = "Ms (min-max scaled moments)"
MU_LABEL = "Mu (min-max scaled moments)"
#: Height (px) of one legend entry at the template's 12 px font, entries stacked without the
#: 10 px gap plotly puts between legend groups (each cell type is its own group).
LEGEND_ENTRY_PX = 19
#: The legend box's padding and border above and below its entries (px).
LEGEND_PAD_PX = 12
#: Room a horizontal colour bar under the plot takes from the plot's height (px).
COLORBAR_PX = 50


def gene_graph_height(n_legend_entries: int, minimum: int, colorbar: bool = False) -> int:
    """Height (px) of a gene figure (title and subtitle, vertical legend beside the plot, a
    colour bar under it when ``colorbar``) at which a legend of ``n_legend_entries`` fits the
    plot's height, so none scrolls out of sight; at least ``minimum``."""
    margin = base_layout("title", subtitle="subtitle")["margin"]
    legend = n_legend_entries * LEGEND_ENTRY_PX + LEGEND_PAD_PX
    return max(minimum, margin["t"] + margin["b"] + legend + (COLORBAR_PX if colorbar else 0))


def _compact_legend(fig: go.Figure) -> go.Figure:
    """``fig`` with its legend entries stacked without gaps between groups (see
    :data:`LEGEND_ENTRY_PX`)."""
    fig.layout.legend.tracegroupgap = 0
    return fig


def fitted_curve(results: Results, gene: str, n_points: int = 200) -> dict[str, np.ndarray]:
    """The gene's fitted trajectory from ``var['fit_*']`` (scVelo convention) via
    :func:`core.kinetics.trajectory` (with α(t) for a time-dependent fit): float64 arrays ``t``
    (0–t_max axis), ``u`` (× fit_scaling), ``s`` and ``rate`` (the transcription rate α(t) on
    ``t``, 0 from the switch on), plus the index ``switch`` of the switch point."""

    def build() -> dict[str, np.ndarray]:
        g = results.gene_arrays(gene)
        t_max = max(20.0, float(np.nanmax(g.fit_t)))
        t, u, s = trajectory(
            g.alpha,
            g.beta,
            g.gamma,
            g.t_switch,
            t_max=t_max,
            n_points=n_points,
            alpha_1=g.alpha_1,
            lambda_alpha=g.lambda_alpha,
        )
        alpha_1 = g.alpha if g.alpha_1 is None else g.alpha_1
        rate = transcription_rate(g.alpha, alpha_1, g.lambda_alpha, g.t_switch, t)
        return {
            "t": t,
            "u": u * g.scaling,
            "s": s,
            "rate": rate,
            "switch": np.searchsorted(t, g.t_switch),
        }

    return results.memo(("curve", gene, n_points), build)


def rate_label(results: Results) -> str:
    """How a fit's transcription rate reads in legends: "constant α" or "α(t)"."""
    return "α(t)" if results.time_dependent else "constant α"


def _fit_lines(results: Results, gene: str, overlay: bool) -> list[go.Scattergl]:
    """The fitted induction and repression curves: solid for a constant rate, dashed for α(t)
    (the paper's Fig. 5c); named by the rate when two fits are overlaid."""
    curve = fitted_curve(results, gene)
    k = int(curve["switch"])
    label = rate_label(results) if overlay or results.time_dependent else "fit"
    dash = "dash" if results.time_dependent else "solid"
    return [
        go.Scattergl(
            x=curve["s"][part].astype(np.float32),
            y=curve["u"][part].astype(np.float32),
            mode="lines",
            name=f"{phase} ({label})",
            line={"color": FIT_COLORS[phase], "width": 3, "dash": dash},
        )
        for phase, part in (("induction", slice(0, k + 1)), ("repression", slice(k, None)))
    ]


def _fit_title(
    results: Results, gene: str, what: str, companion: Results | None = None
) -> tuple[str, str]:
    """(title, subtitle with the fit's likelihood and MSE; with a `companion` fit, the MSE
    under each transcription rate)."""
    g = results.gene_arrays(gene)
    stats = []
    if g.likelihood is not None:
        stats.append(f"likelihood {g.likelihood:.3f}")
    fits = [results] if companion is None else list(rate_pair(results, companion))
    for fit in fits:
        mse = fit.gene_arrays(gene).mse if gene in fit.gene_index else None
        if mse is not None:
            stats.append(
                f"MSE {mse:.3g}" if companion is None else f"MSE {rate_label(fit)} {mse:.3g}"
            )
    return f"<b>{gene}</b> — {what}", ", ".join(stats)


def phase_portrait_figure(
    results: Results,
    gene: str,
    color_by: Literal["cell_type", "latent_time", "state"] = "cell_type",
    point_size: float = 4.0,
    companion: Results | None = None,
) -> go.Figure:
    """Mu vs Ms of every cell (coloured by cell type, latent time or most likely state), the
    fitted induction and repression curve, and the steady-state line
    u = (γ/β)(s − min s) + min u through the lower-left corner of the data. With a `companion`
    fit of the other transcription rate, both fits: constant α solid, α(t) dashed."""
    if color_by not in ("cell_type", "latent_time", "state"):
        raise ValueError(
            f"color_by must be 'cell_type', 'latent_time' or 'state', not {color_by!r}"
        )
    g = results.gene_arrays(gene)
    if color_by == "state" and g.state is None:
        return empty_figure(results.missing_reason("states"), f"{gene} phase portrait")
    s_min, u_min = float(np.nanmin(g.ms)), float(np.nanmin(g.mu))
    s_line = np.array([s_min, float(np.nanmax(g.ms))], dtype=np.float32)
    slope = g.gamma / g.beta
    overlay = companion is not None and gene in companion.gene_index
    fits = [
        *_fit_lines(results, gene, overlay),
        *(_fit_lines(companion, gene, overlay) if overlay else []),
        go.Scattergl(
            x=s_line,
            y=(slope * (s_line - s_min) + u_min).astype(np.float32),
            mode="lines",
            name=f"steady state u = {slope:.3g}·s",
            line={"color": FIT_COLORS["steady"], "dash": "dot"},
        ),
    ]
    title, subtitle = _fit_title(results, gene, "phase portrait", companion if overlay else None)
    uirevision = f"{results.key}:phase:{gene}"
    axes = plot_axes(MS_LABEL, MU_LABEL, rangemode="tozero")
    xy = np.stack([g.ms, g.mu], 1)
    if color_by == "state":
        hover = cell_hover(results)
        states = [
            go.Scattergl(
                x=g.ms[idx],
                y=g.mu[idx],
                mode="markers",
                name=state,
                customdata=hover.customdata[idx],
                hovertemplate=hover.template + "<extra></extra>",
                marker={"size": point_size, "opacity": 0.7, "color": STATE_COLORS[state]},
            )
            for state, idx in zip(STATES, group_indices(g.state, len(STATES)), strict=True)
        ]
        return _compact_legend(
            go.Figure(
                data=[*states, *fits], layout=base_layout(title, uirevision, subtitle, **axes)
            )
        )
    values = results.color_values("latent_time") if color_by == "latent_time" else None
    color = "latent_time" if color_by == "latent_time" else None
    return _compact_legend(
        cell_figure(
            results,
            xy,
            color,
            values,
            title,
            uirevision,
            point_size,
            0.7,
            extra=fits,
            axes=axes,
            subtitle=subtitle,
        )
    )


def gene_over_time_figure(results: Results, gene: str, point_size: float = 3.0) -> go.Figure:
    """Mu and Ms of every cell (of the overview subsample above the point budget, said in the
    subtitle) against the gene's latent time (``layers['fit_t']``, 0–20 axis) with the fitted
    u(t) and s(t) and a dotted line at the switch time."""
    g = results.gene_arrays(gene)
    view = overview(results)
    curve = fitted_curve(results, gene)
    colors = {"u": "#ff7f0e", "s": "#1f77b4"}
    traces = []
    for key, values, label in (("u", g.mu, "Mu (unspliced)"), ("s", g.ms, "Ms (spliced)")):
        traces += [
            go.Scattergl(
                x=g.fit_t[view.cells],
                y=values[view.cells],
                mode="markers",
                name=label,
                hovertemplate=f"{label}<br>t %{{x:.2f}}: %{{y:.3g}}<extra></extra>",
                marker={"size": point_size, "opacity": 0.5, "color": colors[key]},
            ),
            go.Scattergl(
                x=curve["t"].astype(np.float32),
                y=curve[key].astype(np.float32),
                mode="lines",
                name=f"{key}(t) fit",
                line={"color": colors[key], "width": 3},
            ),
        ]
    switch = {"x0": g.t_switch, "x1": g.t_switch, "y0": 0, "y1": 1, "yref": "paper"}
    title, subtitle = _fit_title(results, gene, "abundance over latent time")
    layout = base_layout(
        title,
        f"{results.key}:time:{gene}",
        " · ".join(filter(None, [subtitle, view.note(zoomable=False)])),
        shapes=[{"type": "line", "line": {"dash": "dot", "color": "#666"}, **switch}],
        annotations=[
            {"x": g.t_switch, "y": 1, "yref": "paper", "text": "switch", "showarrow": False}
        ],
        **plot_axes("latent time t (gene time axis, 0–20)", "min-max scaled moments"),
    )
    return go.Figure(data=traces, layout=layout)


def gene_velocity_embedding_figure(
    results: Results, gene: str, point_size: float = 3.0
) -> go.Figure:
    """The gene's velocity (``layers['velocity']``) on the UMAP, diverging colours centred at 0
    with a symmetric p99 |v| range."""
    g = results.gene_arrays(gene)
    values = ColorValues(gene, f"{gene} velocity", "numeric", g.velocity)
    return cell_figure(
        results,
        results.umap,
        None,
        values,
        f"<b>{gene}</b> — velocity on UMAP",
        f"{results.key}:umap",
        point_size,
        0.8,
        diverging=True,
        legend=False,
    )


def permutation_effect_figure(results: Results, gene: str) -> go.Figure:
    """Bar per cell type of the gene's permutation effect (t-statistic, ``varm``)."""
    effect = results.varm_matrix("permutation_effect")
    title = f"<b>{gene}</b> — permutation effect per cell type"
    if effect is None:
        return empty_figure(results.missing_reason("permutation"), title)
    row = effect[results.resolve_gene(gene)]
    colors = cell_type_colors(results)
    fig = go.Figure(
        go.Bar(
            x=results.cell_types,
            y=row,
            marker_color=[colors[c] for c in results.cell_types],
            hovertemplate="%{x}: t = %{y:.3g}<extra></extra>",
        )
    )
    fig.update_layout(base_layout(title, f"{results.key}:perm:{gene}", showlegend=False))
    fig.update_yaxes(title="t-statistic (permuted − original error)")
    return fig


def baseline_agreement_figure(results: Results, gene: str, point_size: float = 3.0) -> go.Figure:
    """Per cell: veloVI velocity (x) against the scVelo steady-state baseline velocity (y),
    coloured by cell type, titled with the sign agreement and Pearson r."""
    title = f"<b>{gene}</b> — veloVI vs scVelo steady-state velocity"
    g = results.gene_arrays(gene)
    if g.baseline is None:
        return empty_figure(results.missing_reason("baseline"), title)
    var = results.adata.var
    stats = [
        f"{label} {var[key].iloc[g.index]:.3f}"
        for key, label in (
            ("baseline_sign_agreement", "sign agreement"),
            ("baseline_pearson", "Pearson r"),
        )
        if key in var
    ]
    fig = cell_figure(
        results,
        np.stack([g.velocity, g.baseline], 1),
        None,
        None,
        title,
        f"{results.key}:baseline:{gene}",
        point_size,
        0.7,
        subtitle=", ".join(stats),
        axes=plot_axes(
            "veloVI velocity", "scVelo steady-state velocity", zeroline=True, zerolinecolor="#999"
        ),
    )
    return _compact_legend(fig)
