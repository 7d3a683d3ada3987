"""Which cells a big scatter draws (dashboard/data/overview.py) and the figures built from it:
the overview keeps every cell type, is deterministic and respects the point budget; a zoomed
window draws exactly the cells inside it; a recolour's colours match the points drawn."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from dashboard.data import overview
from dashboard.data.overview import CellView, priority_order, relayout_window, window_view
from dashboard.figures.common import cell_layer_patch
from dashboard.figures.embedding import embedding_figure, recolor_patch

FAKE_RESULTS = dict(n_cells=6000, n_genes=12, n_types=5, seed=3)
BUDGET = 1500


@pytest.fixture
def budget(monkeypatch):
    """A point budget below the fake results' 6,000 cells (the module constant is the setting
    every figure reads)."""
    monkeypatch.setattr(overview, "POINT_BUDGET", BUDGET)
    return BUDGET


def _drawn(fig, n_traces: int) -> np.ndarray:
    """Cell indices drawn by the first ``n_traces`` traces (customdata[:, 0])."""
    return np.sort(np.concatenate([np.asarray(t.customdata)[:, 0] for t in fig.data[:n_traces]]))


def test_priority_is_a_deterministic_permutation_keeping_rare_types():
    codes = np.r_[np.zeros(50_000, int), np.ones(40, int), np.full(3000, 2), np.full(5, -1)]
    rank = priority_order(codes)
    assert np.array_equal(np.sort(rank), np.arange(len(codes)))
    assert np.array_equal(rank, priority_order(codes.copy()))
    assert not np.array_equal(rank, priority_order(codes, seed=1))
    first = codes[rank < 5000]
    # every cell of the 40-cell type and of the 5 unlabelled cells, the rest proportional
    assert (first == 1).sum() == 40 and (first == -1).sum() == 5
    big = (first == 0).sum() / 50_000
    assert (first == 2).sum() / 3000 == pytest.approx(big, abs=0.01)


def test_overview_respects_the_budget_and_keeps_every_type(results, budget):
    view = overview.overview(results)
    assert len(view.cells) == budget and view.subsampled
    assert np.all(np.diff(view.cells) > 0)
    counts = np.bincount(results.cell_type_codes[view.cells], minlength=len(results.cell_types))
    assert counts.min() >= min(overview.MIN_PER_TYPE, np.bincount(results.cell_type_codes).min())
    assert np.array_equal(view.cells, overview.overview(results).cells)
    assert "1,500 of 6,000 cells" in view.note()
    assert overview.overview(results, budget=10_000).note() is None


def test_a_zoomed_window_draws_exactly_the_cells_inside_it(results, budget):
    xy = results.umap
    centre = np.median(xy, 0)
    window = (centre[0] - 0.5, centre[0] + 0.5, centre[1] - 0.5, centre[1] + 0.5)
    x, y = xy[:, 0], xy[:, 1]
    expected = np.flatnonzero(
        (x >= window[0]) & (x <= window[1]) & (y >= window[2]) & (y <= window[3])
    )
    assert 0 < len(expected) <= budget
    view = window_view(results, xy, window)
    assert np.array_equal(view.cells, expected) and not view.subsampled
    assert f"all {len(expected):,} cells in view" in view.note()
    # a window with more cells than the budget: the budget's worth of them, all inside
    wide = (x.min(), np.median(x), y.min(), y.max())
    many = window_view(results, xy, wide)
    assert len(many.cells) == budget and many.n_in_view > budget
    assert np.all(x[many.cells] <= wide[1])
    # zooming in only adds points: the overview's cells inside the window stay drawn
    first = overview.overview(results).cells
    assert set(first[x[first] <= wide[1]]) <= set(many.cells)
    # a window holding every cell is the overview
    everything = (x.min() - 1, x.max() + 1, y.min() - 1, y.max() + 1)
    whole = window_view(results, xy, everything)
    assert whole.window is None and np.array_equal(whole.cells, first)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            {"xaxis.range[0]": 2, "xaxis.range[1]": 1, "yaxis.range[0]": 0, "yaxis.range[1]": 3},
            (1, 2, 0, 3),
        ),
        ({"xaxis2.range": [0, 1], "yaxis2.range": [4, 5]}, (0, 1, 4, 5)),
        ({"xaxis.autorange": True, "yaxis.autorange": True}, None),
        ({"autosize": True}, False),
        ({"dragmode": "lasso"}, False),
        (None, False),
        ({"xaxis.range[0]": "nan", "xaxis.range[1]": 1}, False),
    ],
)
def test_relayout_events(event, expected):
    assert relayout_window(event) == expected


def test_figure_recolour_and_zoom_patch_draw_the_same_cells(results, budget):
    n_types = len(results.cell_types)
    fig = embedding_figure(results, velocity="none")
    drawn = _drawn(fig, n_types)
    assert np.array_equal(drawn, overview.overview(results).cells)
    assert "zoom in to see all" in fig.layout.title.subtitle.text
    # a gene recolour sends one value per drawn cell, the gene's values of those cells
    gene = results.gene_names[0]
    update = recolor_patch(results, gene, results.groupby)
    values = results.color_values(gene).values
    for trace, marker in zip(fig.data[:n_types], update["markers"], strict=False):
        cells = np.asarray(trace.customdata)[:, 0].astype(int)
        colours = np.frombuffer(_bytes(marker["color"]), dtype=np.float32)
        assert np.array_equal(colours, values[cells])
    # zoomed: the rebuilt figure, the recolour and the zoom Patch all draw the window's cells
    x = results.umap[:, 0]
    window = [float(x.min()), float(np.quantile(x, 0.1)), -1e9, 1e9]
    view = window_view(results, results.umap, window)
    zoomed = embedding_figure(results, velocity="none", window=window)
    assert np.array_equal(_drawn(zoomed, n_types), view.cells)
    patch = cell_layer_patch(results, results.umap, gene, results.color_values(gene), view, True)
    patched = np.concatenate([_array(t["customdata"])[:, 0] for t in patch["traces"]])
    assert np.array_equal(np.sort(patched).astype(int), view.cells)
    recolour = recolor_patch(results, gene, results.groupby, window=window)
    sizes = [len(_bytes(m["color"])) // 4 for m in recolour["markers"]]
    assert sum(sizes) == len(view.cells)


def _bytes(spec: dict | np.ndarray) -> bytes:
    if isinstance(spec, np.ndarray):
        return spec.tobytes()
    return base64.b64decode(spec["bdata"])


def _array(spec: dict | np.ndarray) -> np.ndarray:
    """A plotly typed-array spec as numpy (float32 here); an empty array stays as it is."""
    if isinstance(spec, np.ndarray):
        return spec
    shape = [int(n) for n in str(spec.get("shape", "-1")).split(",")]
    return np.frombuffer(_bytes(spec), dtype=np.float32).reshape(shape)


def test_small_results_draw_every_cell(results):
    fig = embedding_figure(results, velocity="none")
    assert len(_drawn(fig, len(results.cell_types))) == results.n_cells
    assert not fig.layout.title.subtitle.text
    assert isinstance(overview.overview(results), CellView)


def test_the_gene_over_time_figure_draws_the_overview_and_says_so(results, budget):
    from dashboard.figures.genes import gene_over_time_figure

    gene = results.gene_names[2]
    fig = gene_over_time_figure(results, gene)
    cells = overview.overview(results).cells
    arrays = results.gene_arrays(gene)
    points = [t for t in fig.data if t.mode == "markers"]
    assert [len(_array(t.x)) for t in points] == [budget, budget]
    np.testing.assert_array_equal(_array(points[0].y), arrays.mu[cells])
    np.testing.assert_array_equal(_array(points[1].x), arrays.fit_t[cells])
    assert f"showing {budget:,} of {results.n_cells:,} cells" in fig.layout.title.subtitle.text
