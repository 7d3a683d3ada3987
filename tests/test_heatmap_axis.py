"""The heatmap's latent-time axis tells the truth: columns are cells in latent-time order, each
tick sits exactly where latent time reaches its label, and each column's hover gives the latent
times of the cells it holds (oracle: the results' latent time, sorted here)."""

from __future__ import annotations

import numpy as np
import pytest

from dashboard import figures as F
from dashboard.data.results import Results
from dashboard.figures.heatmap import MAX_TICK_GAP, MIN_TICK_GAP, latent_time_ticks

N_CELLS = 600


def _skewed_time(rng: np.random.Generator) -> np.ndarray:
    """Latent time (N_CELLS,): 10 % of the cells before 0.8, 70 % in [0.8, 0.9), 20 % after,
    shuffled, and three cells without a latent time."""
    t = np.concatenate(
        [rng.uniform(0.0, 0.8, 60), rng.uniform(0.8, 0.9, 420), rng.uniform(0.9, 1.0, 120)]
    )
    t[[0, -1]] = [0.0, 1.0]
    t = rng.permutation(t)
    t[[5, 50, 500]] = np.nan
    return t


FAKE_RESULTS = dict(n_cells=N_CELLS, n_genes=12, n_types=4, seed=7)


@pytest.fixture(scope="module")
def adata(adata):
    """The fake results with :func:`_skewed_time` as their latent time."""
    adata.obs["latent_time"] = _skewed_time(np.random.default_rng(3)).astype(np.float32)
    return adata


@pytest.fixture(scope="module")
def figure(adata, results):
    return F.heatmap_figure(results, list(adata.var_names[:8]), max_columns=100)


def _sorted_time(adata) -> np.ndarray:
    t = adata.obs["latent_time"].to_numpy().astype(np.float64)
    return np.sort(t[np.isfinite(t)])


def test_each_tick_sits_where_latent_time_reaches_its_label(adata, figure):
    t = _sorted_time(adata)
    axis = figure.layout.xaxis2
    positions, labels = np.asarray(axis.tickvals), list(axis.ticktext)
    values = np.array([float(label) for label in labels])
    assert np.all(np.diff(positions) > 0) and np.all(np.diff(values) > 0)
    for position, value in zip(positions, values, strict=True):
        # the tick is the boundary between the cells before `value` and those from it on
        assert position == (t < value).sum() - 0.5, (position, value)
    assert values[0] == 0.0 and values[-1] == 1.0
    # the stretch holding 70 % of the cells gets ticks of its own, not one label per 0.1
    assert any(0.8 < v < 0.9 for v in values)
    gaps = np.diff(np.concatenate([[-0.5], positions, [t.size - 0.5]]))
    assert gaps[1:-1].min() >= MIN_TICK_GAP * t.size and gaps.max() <= MAX_TICK_GAP * t.size
    assert axis.range == (-0.5, t.size - 0.5)


def test_columns_span_their_cells_and_hover_their_latent_times(adata, figure):
    t = _sorted_time(adata)
    bar, heat = figure.data[0], figure.data[1]
    edges = np.asarray(heat.x)
    assert np.array_equal(edges, bar.x) and edges.size == heat.z.shape[1] + 1
    assert edges[0] == -0.5 and edges[-1] == t.size - 0.5
    for k in range(edges.size - 1):
        first, last = int(edges[k] + 0.5), int(edges[k + 1] - 0.5)  # ranks of its cells
        assert heat.customdata[0][k] == pytest.approx(t[first : last + 1].mean(), abs=1e-6)
        hover = bar.customdata[0][k]
        assert f"cells {first + 1:,}–{last + 1:,} of {t.size:,}" in hover
        assert f"latent time {t[first]:.3f}–{t[last]:.3f}" in hover


def test_one_cell_columns_name_the_cell(adata):
    t = _sorted_time(adata)
    one_each = F.heatmap_figure(Results(adata), list(adata.var_names[:3]), max_columns=10_000)
    hover = one_each.data[0].customdata[0]
    assert len(hover) == t.size
    assert hover[7].endswith(f"cell 8 of {t.size:,} in latent-time order<br>latent time {t[7]:.3f}")


def test_ticks_are_even_when_time_is_even_and_one_when_time_stands_still():
    even = np.linspace(0.0, 1.0, 1001)
    positions, labels = latent_time_ticks(even)
    assert labels == [f"{v:.1f}" for v in np.arange(11) / 10]
    np.testing.assert_allclose(positions, np.arange(11) * 100 - 0.5)
    positions, labels = latent_time_ticks(np.full(50, 0.25))
    assert positions.tolist() == [-0.5] and labels == ["0.25"]
