"""The latent-time heatmap, as ``scv.pl.heatmap`` draws it: genes × cells ordered by latent
time, spliced moments (``Ms``) smoothed along time with a moving average of ``n_convolve``
cells, scaled to [0, 1] per gene, genes sorted by where they peak; a cell-type bar on top.

Differences from scVelo, by design: the moving average divides by the cells actually in the
window (scVelo's ``np.convolve(mode="same")`` pads with zeros, which darkens the first and last
``n_convolve / 2`` cells), and columns are then averaged into at most ``max_columns`` bins of
consecutive cells so that 50k cells stay a small payload; each bin's colour-bar entry is its
most frequent cell type.

The x axis is the cells' rank in latent time, as in scVelo: every column holds about the same
number of cells, so a program's genes get room where the cells are, and the smoothing window is a
number of cells. Latent time is far from even along it (on the pancreas a fifth of the cells
share a tenth of the time axis), so the ticks are not spaced evenly in rank: each tick sits
where latent time reaches a round value (:func:`latent_time_ticks`), and the uneven spacing of
the ticks shows where time runs fast or slow. A column's hover gives its latent times and which
cells it holds. Plotting columns at their true latent time instead would squeeze the densest
stretches of cells into slivers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.data.results import Results
from dashboard.figures.common import (
    SEQUENTIAL,
    base_layout,
    cell_type_colors,
    empty_figure,
    legend_keys,
)

N_CONVOLVE = 30
MAX_COLUMNS = 600
#: about this many latent-time ticks at the coarsest round step
TIME_TICKS = 10
#: neighbouring ticks keep at least this fraction of the cells between them (labels stay apart)
MIN_TICK_GAP = 0.04
#: a stretch of more than this fraction of the cells without a tick gets finer ticks
MAX_TICK_GAP = 0.2


@dataclass(frozen=True)
class HeatmapData:
    """``genes`` (rows, peak order), ``z`` float32 (rows, B) scaled smoothed expression,
    ``time`` float32 (B,) mean latent time per column, ``cell_type`` int16 (B,) the most
    frequent type code per column, ``n_cells`` (B,) cells per column, ``sorted_time`` float64
    (N,) the latent time of the drawn cells in column order (column k holds ranks
    ``edges[k]`` … ``edges[k + 1] − 1``)."""

    genes: list[str]
    z: np.ndarray
    time: np.ndarray
    cell_type: np.ndarray
    n_cells: np.ndarray
    sorted_time: np.ndarray

    @property
    def edges(self) -> np.ndarray:
        """Rank of each column's first cell, and N at the end: int (B + 1,)."""
        return np.concatenate([[0], np.cumsum(self.n_cells)])


def moving_average(X: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of the rows of ``X`` (N, G) over ``window`` consecutive rows,
    divided by the rows inside the array (no zero padding). The window covers rows
    i − window//2 … i + (window − 1)//2, as ``np.convolve(x, ones(window)/window, "same")``."""
    n = X.shape[0]
    if window <= 1 or n == 0:
        return np.asarray(X, dtype=np.float64)
    csum = np.vstack([np.zeros((1, X.shape[1])), np.cumsum(X, axis=0, dtype=np.float64)])
    i = np.arange(n)
    lo = np.clip(i - window // 2, 0, n)
    hi = np.clip(i + (window - 1) // 2 + 1, 0, n)
    return (csum[hi] - csum[lo]) / (hi - lo)[:, None]


def column_bins(n: int, max_columns: int) -> np.ndarray:
    """Bin index (n,) of n ordered cells into min(n, max_columns) bins of near-equal size."""
    n_bins = max(1, min(n, max_columns))
    return (np.arange(n) * n_bins) // max(n, 1)


def heatmap_data(
    results: Results,
    genes: list[str],
    n_convolve: int = N_CONVOLVE,
    max_columns: int = MAX_COLUMNS,
    sort_genes: bool = True,
) -> HeatmapData:
    """:class:`HeatmapData` of ``genes`` (unknown genes raise KeyError): cells with a finite
    latent time sorted by it, ``Ms`` smoothed (:func:`moving_average`), averaged per column bin
    (:func:`column_bins`), min-max scaled per gene, genes sorted by their peak column."""
    idx = [results.resolve_gene(g) for g in genes]
    t = results.latent_time
    cells = np.flatnonzero(np.isfinite(t))
    cells = cells[np.argsort(t[cells], kind="stable")]
    X = results.layer_columns("Ms", idx)[cells]
    smooth = moving_average(X, n_convolve)
    bins = column_bins(cells.size, max_columns)
    counts = np.bincount(bins)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    binned = np.add.reduceat(smooth, starts, axis=0) / counts[:, None]
    time = np.add.reduceat(t[cells].astype(np.float64), starts) / counts
    lo, hi = binned.min(0), binned.max(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = np.where(hi > lo, (binned - lo) / (hi - lo), 0.0)
    order = np.argsort(np.argmax(scaled, axis=0), kind="stable") if sort_genes else slice(None)
    codes = results.cell_type_codes[cells].astype(np.int64)
    n_types = len(results.cell_types)
    tally = np.zeros((counts.size, n_types + 1), dtype=np.int64)
    np.add.at(tally, (bins, np.where(codes >= 0, codes, n_types)), 1)
    majority = tally[:, :n_types].argmax(1)
    majority = np.where(tally[:, :n_types].sum(1) > 0, majority, -1)
    return HeatmapData(
        [genes[k] for k in np.arange(len(genes))[order]],
        scaled.T[order].astype(np.float32),
        time.astype(np.float32),
        majority.astype(np.int16),
        counts,
        t[cells].astype(np.float64),
    )


def _round_step(span: float) -> float:
    """The 1-2-5 × 10ᵏ step nearest above ``span`` (> 0)."""
    power = 10.0 ** np.floor(np.log10(span))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= span * (1 - 1e-9))


def latent_time_ticks(sorted_time: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Ticks for a cell-rank axis: where latent time reaches round values. ``sorted_time``
    (N,) is ascending; returns positions float (K,) in rank units (tick k sits between the last
    cell with time < value k and the first with time ≥ it, i.e. at that cell's rank − 0.5) and
    their labels (the values). Round steps of about ``TIME_TICKS`` per time range come first;
    stretches of more than ``MAX_TICK_GAP`` of the cells without a tick get ticks of finer steps
    (÷2, ÷5, ÷10); a tick closer than ``MIN_TICK_GAP`` of the cells to another is left out."""
    n = sorted_time.size
    lo, hi = float(sorted_time[0]), float(sorted_time[-1])
    if hi <= lo:
        return np.array([-0.5]), [f"{lo:.3g}"]
    coarse = _round_step((hi - lo) / TIME_TICKS)
    ticks: dict[float, str] = {}  # position -> label
    for step in (coarse, coarse / 2, coarse / 5, coarse / 10):
        decimals = max(0, int(-np.floor(np.log10(step) + 1e-9)))
        values = np.round(np.arange(np.ceil(lo / step), np.floor(hi / step) + 1) * step, 12)
        positions = np.searchsorted(sorted_time, values, side="left") - 0.5
        for position, value in zip(positions, values, strict=True):
            kept = np.array(sorted(ticks), dtype=float)
            before = kept[kept <= position].max(initial=-0.5)
            after = kept[kept >= position].min(initial=n - 0.5)
            fills_gap = step == coarse or after - before > MAX_TICK_GAP * n
            clear = np.abs(kept - position).min(initial=np.inf) >= MIN_TICK_GAP * n
            if fills_gap and clear:
                ticks[float(position)] = f"{value:.{decimals}f}"
    positions = np.array(sorted(ticks))
    return positions, [ticks[p] for p in positions]


def _type_colorscale(colors: list[str]) -> list[list]:
    """A stepped colour scale mapping integer codes 0..C-1 (zmin −0.5, zmax C−0.5) to colours."""
    n = len(colors)
    scale = []
    for k, color in enumerate(colors):
        scale += [[k / n, color], [(k + 1) / n, color]]
    return scale


def _column_hover(data: HeatmapData, type_names: np.ndarray) -> list[str]:
    """Hover text per column (B,): its cell type, which cells (ranks in latent-time order, from
    1) and their latent time; ``type_names`` maps the type codes (−1: the last name)."""
    n = int(data.edges[-1])
    texts = []
    for code, a, b in zip(data.cell_type, data.edges[:-1], data.edges[1:] - 1, strict=True):
        t_a, t_b = data.sorted_time[a], data.sorted_time[b]
        if a == b:
            texts.append(
                f"{type_names[code]}<br>cell {a + 1:,} of {n:,} in latent-time order"
                f"<br>latent time {t_a:.3f}"
            )
        else:
            texts.append(
                f"{type_names[code]} (most cells)<br>cells {a + 1:,}–{b + 1:,} of {n:,} "
                f"in latent-time order<br>latent time {t_a:.3f}–{t_b:.3f}"
            )
    return texts


def heatmap_figure(
    results: Results,
    genes: list[str],
    n_convolve: int = N_CONVOLVE,
    max_columns: int = MAX_COLUMNS,
) -> go.Figure:
    """Genes (rows, sorted by peak time) × cells ordered by latent time (columns), smoothed and
    per-gene scaled ``Ms``, with a cell-type colour bar above (legend: the types)."""
    if not genes:
        return empty_figure("No genes to show: pick a ranking or type gene names.")
    data = heatmap_data(results, genes, n_convolve, max_columns)
    colors = cell_type_colors(results)
    palette = [colors[c] for c in results.cell_types]
    names = np.asarray([*results.cell_types, "–"])
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.035, 0.965],
        vertical_spacing=0.008,
    )
    edges = data.edges - 0.5  # columns span their cells' ranks
    fig.add_trace(
        go.Heatmap(
            z=data.cell_type[None, :].astype(np.float32),
            x=edges,
            y=["cell type"],
            customdata=np.asarray(_column_hover(data, names))[None, :],
            colorscale=_type_colorscale(palette),
            zmin=-0.5,
            zmax=len(palette) - 0.5,
            showscale=False,
            hovertemplate="%{customdata}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    time = np.broadcast_to(data.time[None, :], data.z.shape)
    fig.add_trace(
        go.Heatmap(
            z=data.z,
            x=edges,
            y=data.genes,
            customdata=time,
            colorscale=SEQUENTIAL,
            zmin=0,
            zmax=1,
            colorbar={
                "title": {"text": "scaled Ms (per gene)", "side": "right"},
                "orientation": "h",
                "yref": "container",
                "y": 0,
                "yanchor": "bottom",
                "len": 0.4,
                "thickness": 12,
            },
            hovertemplate=(
                "<b>%{y}</b><br>latent time %{customdata:.3f} (column mean)"
                "<br>scaled Ms %{z:.2f}<extra></extra>"
            ),
        ),
        row=2,
        col=1,
    )
    fig.add_traces(legend_keys(results.cell_types, colors))
    tickvals, ticktext = latent_time_ticks(data.sorted_time)
    fig.update_layout(
        base_layout(
            f"Top {len(genes)} genes along latent time",
            f"{results.key}:heatmap",
            f"Ms smoothed over {n_convolve} cells, scaled to [0, 1] per gene, genes sorted by "
            f"peak time; {int(data.n_cells.sum()):,} cells in {data.time.size} columns",
            height=max(400, 20 * len(genes) + 230),
            legend={
                "x": 1.02,
                "xanchor": "left",
                "y": 1,
                "yanchor": "top",
                "itemsizing": "constant",
            },
        )
    )
    fig.update_xaxes(showgrid=False, zeroline=False, showticklabels=False, ticks="", row=1, col=1)
    fig.update_xaxes(
        title={
            "text": "latent time · each column holds about the same number of cells, "
            "so equal steps in time are unevenly spaced",
            "standoff": 6,
        },
        tickvals=tickvals,
        ticktext=ticktext,
        ticks="outside",
        range=[edges[0], edges[-1]],
        showgrid=False,
        row=2,
        col=1,
    )
    fig.update_yaxes(showgrid=False, automargin=True, row=1, col=1, tickfont={"size": 10})
    fig.update_yaxes(
        autorange="reversed", showgrid=False, automargin=True, tickfont={"size": 11}, row=2, col=1
    )
    return fig
