"""The coherence page on constructed coherence with known values: the CDF's x axis spans where
the curves rise (percentiles 1–99 of the shown values, and 0), leaves far outliers out and says
so; the top and bottom gene lists print each gene's coherence next to its link."""

from __future__ import annotations

import numpy as np
import pytest
from test_explore_pages import _call

from dashboard import figures as F
from dashboard.data.results import Results
from dashboard.figures.coherence import coherence_view_range

N_GENES = 300
WIDE, NARROW, DISCRETE = 0, 1, 2  # columns of the constructed coherence


def _known_coherence(n_types: int) -> np.ndarray:
    """(N_GENES, n_types) float32: a wide type with two far outliers and a NaN, a narrow type,
    and a type holding only four distinct values (nothing lies beyond its percentiles)."""
    values = np.zeros((N_GENES, n_types), np.float32)
    values[:, WIDE] = np.linspace(-1e-3, 3e-3, N_GENES)
    values[:3, WIDE] = [-0.5, 0.8, np.nan]
    values[:, NARROW] = np.linspace(-2e-4, 5e-4, N_GENES)[::-1]
    values[:, DISCRETE] = np.resize([-1e-4, 0.0, 1e-4, 2e-4], N_GENES)
    values[:, 3:] = values[:, [NARROW]]
    return values


FAKE_RESULTS = dict(n_cells=200, n_genes=N_GENES, n_types=3, seed=4)


@pytest.fixture(scope="module")
def adata(adata):
    """The fake results with :func:`_known_coherence` in place of their coherence."""
    adata.varm["coherence"] = _known_coherence(adata.varm["coherence"].shape[1])
    return adata


def _finite(adata, types: list[int]) -> np.ndarray:
    columns = adata.varm["coherence"][:, types]
    return columns[np.isfinite(columns)]


def test_x_axis_spans_percentiles_1_to_99_and_0_and_leaves_the_outliers_out(adata, results):
    fig = F.coherence_cdf_figure(results)
    lo, hi = fig.layout.xaxis.range
    values = _finite(adata, list(range(len(results.cell_types))))
    p1, p99 = np.percentile(values, [1, 99])
    assert lo <= min(p1, 0.0) and hi >= max(p99, 0.0)
    assert hi - lo <= 1.1 * (max(p99, 0.0) - min(p1, 0.0))  # the range is not padded widely
    assert lo > -0.5 and hi < 0.8  # the outliers are out of view
    # every curve rises through the view: the wide type's from ≤ 2 % to ≥ 98 %
    wide = adata.varm["coherence"][:, WIDE]
    wide = wide[np.isfinite(wide)]
    assert (wide <= lo).mean() <= 0.02 and (wide <= hi).mean() >= 0.98
    outside = ((values < lo) | (values > hi)).mean()
    note = fig.layout.title.subtitle.text
    assert outside > 0 and f"{outside:.1%} of the values lie outside" in note
    assert "-0.5 to 0.8" in note and "percentiles 1–99" in note


def test_x_axis_follows_the_ticked_types_and_says_when_nothing_is_clipped(adata, results):
    names = results.cell_types
    narrow = F.coherence_cdf_figure(results, [names[NARROW]])
    lo, hi = narrow.layout.xaxis.range
    p1, p99 = np.percentile(_finite(adata, [NARROW]), [1, 99])
    assert lo <= p1 < p99 <= hi and hi - lo < 1e-3  # not stretched by the wide type
    discrete = F.coherence_cdf_figure(results, [names[DISCRETE]])
    lo, hi = discrete.layout.xaxis.range
    assert lo <= -1e-4 and hi >= 2e-4
    assert "All values are in view." in discrete.layout.title.subtitle.text
    assert "outside" not in discrete.layout.title.subtitle.text
    no_cells = adata.copy()  # a cell type without cells has NaN coherence for every gene
    no_cells.varm["coherence"][:, DISCRETE] = np.nan
    empty = Results(no_cells)
    assert coherence_view_range(empty, [names[DISCRETE]]) is None
    autorange = F.coherence_cdf_figure(empty, [names[DISCRETE]])
    assert autorange.layout.xaxis.range is None and not autorange.layout.title.subtitle.text


def test_cdf_hover_values_are_the_true_fractions(adata, results):
    fig = F.coherence_cdf_figure(results)
    for trace in fig.data:
        column = adata.varm["coherence"][:, results.cell_types.index(trace.name)]
        column = column[np.isfinite(column)]
        truth = (column[None, :] <= np.asarray(trace.x)[:, None]).mean(1)
        np.testing.assert_allclose(trace.y, truth, atol=1e-6)
    # the grid reaches the outliers, so autoscale shows them
    assert min(fig.data[WIDE].x) == pytest.approx(-0.5) and max(fig.data[WIDE].x) == 0.8


def _rows(table) -> list[tuple[str, str, str]]:
    """(gene, link href, value text) per body row of a gene table."""
    body = table.children[1].children
    return [
        (row.children[1].children.children, row.children[1].children.href, row.children[2].children)
        for row in body
    ]


def test_top_and_bottom_lists_print_each_genes_coherence(adata, served):
    app, ds, results = served
    from dashboard.web.pages import coherence

    cell_type = results.cell_types[WIDE]
    lists, _ = _call(app, coherence.top_bottom, cell_type, ds)
    column = adata.varm["coherence"][:, WIDE]
    names = np.asarray(adata.var_names)
    finite = np.flatnonzero(np.isfinite(column))
    order = finite[np.argsort(column[finite])]
    for block, expected in zip(lists, (order[::-1][:10], order[:10]), strict=True):
        rows = _rows(block.children[1])
        assert [gene for gene, _, _ in rows] == names[expected].tolist()
        for (gene, href, text), j in zip(rows, expected, strict=True):
            assert text == f"{column[j]:#.3g}"
            assert float(text) == pytest.approx(column[j], rel=5e-3)
            assert href.startswith("/genes?") and f"gene={gene}" in href
    top_text = [text for _, _, text in _rows(lists[0].children[1])]
    assert top_text[0] == "0.800"  # the planted outlier leads the most coherent list
