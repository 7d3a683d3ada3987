"""Cell selections: core.selection statistics against brute-force pandas/scipy computations, the
lasso/box geometry against independent point-in-shape tests, and the saved-selection store."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from core import selection as S
from dashboard.data import selections as D
from dashboard.data.results import Results

#: The fake results of the summary and store tests (conftest's adata, results).
FAKE_RESULTS = dict(n_cells=400, n_genes=30, seed=4, planted_driver="DriverA")


@pytest.fixture(scope="module")
def data():
    """(N, G) matrix with gene-specific shifts in a selection, some NaNs, and the mask."""
    rng = np.random.default_rng(3)
    n, g = 700, 25
    X = rng.normal(0, 1, (n, g)).astype(np.float32) * rng.uniform(0.2, 3, g).astype(np.float32)
    mask = rng.random(n) < 0.3
    X[mask] += np.linspace(-1, 1, g, dtype=np.float32)
    X[:, 5] = 7.0  # constant column: undefined test
    return X, mask


def _brute_force(X: np.ndarray, mask: np.ndarray) -> pd.DataFrame:
    """Per gene, pandas means and scipy's Welch test (NaNs omitted), one gene at a time."""
    rows = []
    frame = pd.DataFrame(X.astype(np.float64))
    groups = frame.groupby(pd.Series(mask, name="in")).mean()
    for j in range(X.shape[1]):
        a, b = X[mask, j].astype(np.float64), X[~mask, j].astype(np.float64)
        with warnings.catch_warnings():  # scipy warns about the constant column
            warnings.simplefilter("ignore", RuntimeWarning)
            res = stats.ttest_ind(a, b, equal_var=False, nan_policy="omit")
        rows.append((groups.loc[True, j], groups.loc[False, j], float(res.statistic), res.pvalue))
    return pd.DataFrame(rows, columns=["mean_in", "mean_out", "t", "p"])


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg by its definition: q_(i) = min_{k ≥ i} p_(k)·m/k."""
    m = p.size
    order = np.argsort(p)
    q = np.empty(m)
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p[i] * m / rank)
        q[i] = running
    return q


@pytest.mark.parametrize("fraction", [0.3, 0.8])
def test_welch_comparison_matches_scipy_per_gene(data, fraction):
    X, _ = data
    rng = np.random.default_rng(int(fraction * 10))
    mask = rng.random(X.shape[0]) < fraction  # > 0.5 exercises the complement path
    got = S.compare_selection(X, mask)
    want = _brute_force(X, mask)
    # float32 data summed in float32 blocks: agreement to float32 precision of the data scale
    np.testing.assert_allclose(got.mean_in, want["mean_in"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.mean_out, want["mean_out"], rtol=1e-5, atol=1e-6)
    defined = np.isfinite(want["t"].to_numpy())
    assert not np.isfinite(got.t[5]) and not defined[5]  # the constant gene
    np.testing.assert_allclose(got.t[defined], want["t"][defined], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.p[defined], want["p"][defined], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got.q[defined], _bh(got.p[defined]), rtol=1e-12)


def test_welch_t_matches_scipy_and_is_nan_for_tiny_or_constant_groups():
    rng = np.random.default_rng(5)
    a, b = rng.normal(1.0, 1.5, 9), rng.normal(0.0, 1.2, 7)
    constant, varied = np.full(5, 1.0), np.array([0.0, 1.0, -1.0, 2.0, -2.0])
    # Columns: two samples, a constant side, a group of one, both sides constant with equal and
    # with different means. scipy gives a finite t or ±inf for the last three: NaN here.
    mean_a = np.array([a.mean(), 1.0, 1.0, 1.0, 2.0])
    var_a = np.array([a.var(ddof=1), 0.0, np.nan, 0.0, 0.0])
    n_a = np.array([9, 5, 1, 5, 5])
    mean_b = np.array([b.mean(), 0.0, 0.0, 1.0, 0.0])
    var_b = np.array([b.var(ddof=1), varied.var(ddof=1), 1.0, 0.0, 0.0])
    n_b = np.array([7, 5, 5, 5, 5])
    t, p = S.welch_t(mean_a, var_a, n_a, mean_b, var_b, n_b)
    for column, (x, y) in enumerate([(a, b), (constant, varied)]):
        with warnings.catch_warnings():  # scipy warns about the constant sample
            warnings.simplefilter("ignore", RuntimeWarning)
            want = stats.ttest_ind(x, y, equal_var=False)
        assert t[column] == pytest.approx(want.statistic, rel=1e-12)
        assert p[column] == pytest.approx(want.pvalue, rel=1e-12)
    assert np.isnan(t[2:]).all() and np.isnan(p[2:]).all()


def test_non_finite_values_are_left_out_like_nan_policy_omit(data):
    X, mask = data
    X = X.copy()
    X[::7, 2] = np.nan
    X[3, 9] = np.inf
    totals = S.column_moments(X)
    assert not totals.all_finite
    got = S.compare_selection(X, mask, totals)
    clean = np.where(np.isfinite(X), X, np.nan)
    want = _brute_force(clean, mask)
    for j in (2, 9):
        assert got.t[j] == pytest.approx(want["t"][j], rel=1e-5, abs=1e-5)


def test_precomputed_totals_give_the_same_answer(data):
    X, mask = data
    a = S.compare_selection(X, mask)
    b = S.compare_selection(X, mask, S.column_moments(X))
    np.testing.assert_array_equal(a.t, b.t)


def test_empty_or_full_selection_is_refused(data):
    X, _ = data
    with pytest.raises(ValueError, match="empty"):
        S.compare_selection(X, np.zeros(X.shape[0], bool))
    with pytest.raises(ValueError, match="every cell"):
        S.compare_selection(X, np.ones(X.shape[0], bool))
    with pytest.raises(ValueError, match="shape"):
        S.compare_selection(X, np.ones(3, bool))


def test_driver_score_and_rankings(data):
    X, mask = data
    rng = np.random.default_rng(0)
    C = rng.normal(0, 1, X.shape).astype(np.float32)
    C[mask, 0] += 2.0  # gene 0 is far more coherent in the selection
    C[mask, 1] -= 2.0  # gene 1 is far less coherent: must not count
    table = S.velocity_drivers(X, mask, C)
    tv, tc = table["t_velocity"], table["t_coherence"]
    np.testing.assert_allclose(table["score"], np.sqrt(tv**2 + np.maximum(tc, 0) ** 2))
    score = table["score"].to_numpy()
    n_finite = int(np.isfinite(score).sum())
    assert np.all(np.diff(score[:n_finite]) <= 0) and np.isnan(score[n_finite:]).all()
    assert np.isnan(table.loc[5, "t_velocity"]) and table.index[-1] == 5  # NaN ranks last
    vel = S.compare_selection(X, mask)
    assert table.loc[1, "score"] == pytest.approx(abs(vel.t[1]))
    by_coherence = S.rank_drivers(table, "coherence")
    assert by_coherence.index[0] == 0
    by_velocity = S.rank_drivers(table, "velocity")
    finite = np.isfinite(vel.t)
    assert by_velocity.index[0] == np.flatnonzero(finite)[np.argmax(np.abs(vel.t[finite]))]
    with pytest.raises(ValueError, match="unknown ranking"):
        S.rank_drivers(table, "nope")
    with pytest.raises(ValueError, match="no t_coherence"):
        S.rank_drivers(S.velocity_drivers(X, mask), "coherence")


def test_value_summary_and_group_counts():
    values = np.array([1.0, 2.0, np.nan, 4.0, 10.0, 0.5])
    mask = np.array([True, True, True, False, False, False])
    s = S.summarise_values(values, mask)
    assert (s.median_in, s.min_in, s.max_in) == (1.5, 1.0, 2.0)
    assert (s.median_out, s.min_out, s.max_out) == (4.0, 0.5, 10.0)
    codes = np.array([0, 1, -1, 1, 2, 0])
    inside, total = S.group_counts(codes, mask, 3)
    assert inside.tolist() == [1, 1, 0] and total.tolist() == [2, 2, 1]


# -- geometry -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def points():
    return np.random.default_rng(1).uniform(-5, 5, (4000, 2)).astype(np.float32)


def test_box_mask_matches_a_pandas_query(points):
    frame = pd.DataFrame(points, columns=["x", "y"])
    want = frame.eval("x >= -1 and x <= 2.5 and y >= 0 and y <= 4").to_numpy()
    np.testing.assert_array_equal(D.box_mask(points, [2.5, -1], [0, 4]), want)


def test_lasso_mask_matches_half_plane_tests_for_a_convex_polygon(points):
    # A regular hexagon, counter-clockwise: inside = left of every edge (an independent oracle).
    angles = np.linspace(0, 2 * np.pi, 7)[:-1]
    xs, ys = 1 + 3 * np.cos(angles), -0.5 + 3 * np.sin(angles)
    inside = np.ones(len(points), bool)
    for k in range(6):
        x0, y0, x1, y1 = xs[k], ys[k], xs[(k + 1) % 6], ys[(k + 1) % 6]
        inside &= (x1 - x0) * (points[:, 1] - y0) - (y1 - y0) * (points[:, 0] - x0) > 0
    np.testing.assert_array_equal(D.polygon_mask(points, xs, ys), inside)


def test_geometry_from_plotly_events_and_bad_shapes(points):
    lasso = {"points": [], "lassoPoints": {"x2": [0, 1, 1], "y2": [0, 0, 1]}}
    assert D.geometry_from_event(lasso) == {"kind": "lasso", "x": [0, 1, 1], "y": [0, 0, 1]}
    box = {"points": [], "range": {"x": [0, 1], "y": [2, 3]}}
    assert D.geometry_from_event(box)["kind"] == "box"
    assert D.geometry_from_event(None) is None and D.geometry_from_event({"points": []}) is None
    for bad in (
        {"kind": "circle"},
        {"kind": "lasso", "x": [0, 1], "y": [0, 1]},
        {"kind": "lasso", "x": [0, 1, "a"], "y": [0, 1, 2]},
        {"kind": "box", "x": [0, float("nan")], "y": [0, 1]},
        "not a dict",
    ):
        with pytest.raises(D.SelectionError):
            D.mask_from_geometry(points, bad)


# -- the dashboard summary on fake results with a planted driver -------------------------------
def test_summary_finds_the_planted_driver_and_counts_types(adata, results):
    mask = adata.obs["clusters"].astype(str).str.startswith("Alpha").to_numpy()
    summary = D.summarise(results, mask)
    assert summary.drivers["gene"].iloc[0] == "DriverA"
    assert summary.n_selected == mask.sum()
    counts = adata.obs["clusters"][mask].value_counts()
    types = summary.types.set_index("cell_type")
    assert types.loc["Alpha 1", "n_selected"] == counts["Alpha 1"]
    assert types.loc["Progenitor", "n_selected"] == 0
    assert types["share_of_selection"].sum() == pytest.approx(1.0)
    lt = summary.values["latent time"]
    assert lt.min_in == pytest.approx(adata.obs["latent_time"][mask].min())
    assert {"intrinsic uncertainty", "extrinsic uncertainty"} <= set(summary.values)
    with pytest.raises(D.SelectionError, match="No cells"):
        D.summarise(results, np.zeros(results.n_cells, bool))


def test_summary_without_coherence_layer_ranks_by_velocity(adata):
    slim = adata.copy()
    del slim.layers["velocity_coherence"]
    mask = slim.obs["clusters"].astype(str).str.startswith("Alpha").to_numpy()
    table = D.drivers_table(Results(slim), mask)
    assert "t_coherence" not in table and table["gene"].iloc[0] == "DriverA"


# -- saved selections ---------------------------------------------------------------------------
def test_store_round_trip_ids_and_listing(tmp_path, results):
    store = D.SelectionStore(tmp_path)
    mask = np.zeros(results.n_cells, bool)
    mask[10:50] = True
    saved = store.save("sample", "  my   cells ", mask, results.cell_ids, "ann")
    assert D.SELECTION_ID.match(saved.id) and saved.name == "my cells"
    again = store.save("sample", "renamed", mask, results.cell_ids, "ann")
    assert again.id == saved.id  # same cells, same owner: same id; the name follows the last save
    loaded = store.load("sample", saved.id, results.cell_ids)
    np.testing.assert_array_equal(loaded.mask, mask)
    assert loaded.name == "renamed"
    assert store.list("sample") == [
        {"id": saved.id, "name": "renamed", "n_selected": 40, "owner": "ann"}
    ]
    assert store.list("other") == []
    files = list((tmp_path / "selections" / "sample").iterdir())
    assert [f.name for f in files] == [f"{saved.id}.json"]  # no temp files left
    assert json.loads(files[0].read_text())["n_cells"] == results.n_cells


def test_two_users_saving_the_same_cells_keep_their_own_names(tmp_path, results):
    """Issue 15: a second user saving the same cells renamed the first user's selection (one
    id per cells). Now each owner has their own selection of those cells."""
    store = D.SelectionStore(tmp_path)
    mask = np.zeros(results.n_cells, bool)
    mask[5:25] = True
    editor = store.save("sample", "Ngn3 high lasso", mask, results.cell_ids, "alice")
    other = store.save("sample", "carol copy", mask, results.cell_ids, "carol")
    assert other.id != editor.id
    assert store.load("sample", editor.id, results.cell_ids).name == "Ngn3 high lasso"
    assert store.load("sample", editor.id, results.cell_ids).owner == "alice"
    assert store.load("sample", other.id, results.cell_ids).owner == "carol"
    assert {(s["name"], s["owner"]) for s in store.list("sample")} == {
        ("Ngn3 high lasso", "alice"),
        ("carol copy", "carol"),
    }


def test_store_rejects_bad_ids_foreign_cells_and_empty_masks(tmp_path, results):
    store = D.SelectionStore(tmp_path)
    mask = np.zeros(results.n_cells, bool)
    mask[:5] = True
    saved = store.save("sample", "x", mask, results.cell_ids, "ann")
    for bad in ("../../etc/passwd", "ABCDEF0123", "0123", "0123456789/", ""):
        with pytest.raises(D.SelectionError, match="not a selection id"):
            store.load("sample", bad, results.cell_ids)
    for bad_ds in ("../x", "a/b", "", "x" * 65):
        with pytest.raises(D.SelectionError, match="bad dataset id"):
            store.save(bad_ds, "x", mask, results.cell_ids, "ann")
    with pytest.raises(D.SelectionError, match="No saved selection"):
        store.load("sample", "0123456789", results.cell_ids)
    other_cells = np.array([f"other_{i}" for i in range(results.n_cells)])
    with pytest.raises(D.SelectionError, match="other cells"):
        store.load("sample", saved.id, other_cells)
    with pytest.raises(D.SelectionError, match="nothing to save"):
        store.save("sample", "x", np.zeros(results.n_cells, bool), results.cell_ids, "ann")
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()


def test_large_offsets_keep_their_precision():
    # Expression-like values far from zero: the per-gene shift avoids cancellation in float32.
    rng = np.random.default_rng(9)
    X = (1000 + rng.normal(0, 0.5, (2000, 4))).astype(np.float32)
    mask = rng.random(2000) < 0.4
    X[mask, 1] += 0.2
    got = S.compare_selection(X, mask)
    want = _brute_force(X, mask)
    np.testing.assert_allclose(got.t, want["t"], rtol=1e-3)
    assert got.t[1] > 5
