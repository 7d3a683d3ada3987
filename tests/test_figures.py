"""dashboard.figures: every figure builds from fake results, with compact typed payloads,
one palette, and values checked against independent oracles."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import plotly.graph_objects as go
import pytest
from fake_results import closed_form_induction, closed_form_repression

import core.streams
from core.kinetics import trajectory
from dashboard import figures as F
from dashboard.data.contract import STATES
from dashboard.data.results import Results

FAKE_RESULTS = dict(n_cells=400, n_genes=30, n_types=5, seed=2)


@pytest.fixture
def stub_field(monkeypatch):
    """A tiny known velocity field in place of core.streams': flow along +x, faster with y;
    three horizontal streams. Makes the drawn geometry checkable exactly."""

    def velocity_grid(X_emb, V_emb, density=1.0, smooth=0.5, mode="stream", **_):
        x, y = np.linspace(0, 4, 5), np.linspace(0, 2, 3)
        u = np.tile(1.0 + y[:, None], (1, 5))
        u[0, 0] = np.nan  # a masked node
        return SimpleNamespace(x=x, y=y, u=u, v=np.zeros_like(u), mass=np.ones_like(u))

    def streamlines(grid, density=2.0, max_length=4.0):
        xs, ys, sp = [], [], []
        for yy in (0.0, 1.0, 2.0):
            xs += [0, 1, 2, 3, np.nan]
            ys += [yy] * 4 + [np.nan]
            sp += [1 + yy] * 4 + [np.nan]
        return SimpleNamespace(
            x=np.array(xs),
            y=np.array(ys),
            speed=np.array(sp),
            arrow_x=np.array([1.5, 1.5, 1.5]),
            arrow_y=np.array([0.0, 1.0, 2.0]),
            arrow_angle=np.array([90.0, 90.0, 90.0]),
        )

    monkeypatch.setattr(core.streams, "velocity_grid", velocity_grid, raising=False)
    monkeypatch.setattr(core.streams, "streamlines", streamlines, raising=False)


def _json_traces(fig: go.Figure) -> list[dict]:
    return json.loads(fig.to_json())["data"]


def _values(spec) -> np.ndarray:
    """Decode a plotly typed-array spec (or plain list) to numpy."""
    if isinstance(spec, dict):
        import base64

        dtype = {"f4": np.float32, "f8": np.float64, "i1": np.int8, "i2": np.int16, "i4": np.int32}
        arr = np.frombuffer(base64.b64decode(spec["bdata"]), dtype=dtype[spec["dtype"]])
        return arr.reshape([int(s) for s in spec["shape"].split(",")]) if "shape" in spec else arr
    return np.asarray(spec, dtype=float)


def _cell_traces(fig: go.Figure, n_types: int) -> list:
    return list(fig.data[:n_types])


def test_embedding_cell_layer_is_typed_float32_webgl(results):
    fig = F.embedding_figure(results, velocity="none")
    cells = _cell_traces(fig, len(results.cell_types))
    assert all(isinstance(t, go.Scattergl) for t in cells)
    assert [t.name for t in cells] == results.cell_types
    assert sum(len(t.x) for t in cells) == results.n_cells
    for trace in _json_traces(fig)[: len(cells)]:
        assert trace["x"]["dtype"] == "f4" and trace["y"]["dtype"] == "f4"
        assert trace["customdata"]["dtype"] == "f4" and "text" not in trace
        assert "%{customdata[1]" in trace["hovertemplate"]
    assert fig.layout.uirevision and fig.layout.yaxis.scaleanchor == "x"
    # customdata[0] is the cell index: it maps every point back to its own coordinates.
    for t in cells:
        idx = t.customdata[:, 0].astype(int)
        np.testing.assert_array_equal(t.x, results.umap[idx, 0])


def test_gene_colouring_shares_one_coloraxis_with_robust_range(adata, results):
    gene = adata.var_names[4]
    fig = F.embedding_figure(results, gene, velocity="none")
    cells = _cell_traces(fig, len(results.cell_types))
    assert {t.marker.coloraxis for t in cells} == {"coloraxis"}
    ms = adata.layers["Ms"][:, 4]
    assert fig.layout.coloraxis.cmax == pytest.approx(np.percentile(ms, 99), rel=1e-5)
    colours = np.concatenate([t.marker.color for t in cells])
    idx = np.concatenate([t.customdata[:, 0] for t in cells]).astype(int)
    np.testing.assert_array_equal(colours, ms[idx])


def test_colour_bars_name_obs_columns_readably_with_their_unit(adata, results):
    """A colour bar shows what a biologist reads ("latent time", the uncertainty's unit), not
    the raw obs column name; a gene colouring names its layer."""
    titles = {}
    for key in ("latent_time", "intrinsic_uncertainty", adata.var_names[4]):
        fig = F.embedding_figure(results, key, velocity="none")
        titles[key] = fig.layout.coloraxis.colorbar.title.text
    assert titles["latent_time"] == "latent time"
    assert titles["intrinsic_uncertainty"] == "intrinsic uncertainty (cosine variance)"
    assert titles[adata.var_names[4]] == f"{adata.var_names[4]} (Ms)"
    assert (
        "UMAP coloured by latent time"
        in F.embedding_figure(results, "latent_time").layout.title.text
    )


def test_palette_is_the_same_in_every_figure(adata, results):
    colours = F.cell_type_colors(results)
    assert len(set(colours.values())) == len(results.cell_types)
    gene = adata.var_names[0]
    emb = F.embedding_figure(results, velocity="none")
    portrait = F.phase_portrait_figure(results, gene)
    bars = F.permutation_effect_figure(results, gene)
    boxes = F.uncertainty_by_type_figure(results, "extrinsic")
    cdf = F.coherence_cdf_figure(results)
    for fig in (emb, portrait):
        for t in _cell_traces(fig, len(results.cell_types)):
            assert t.marker.color == colours[t.name]
    assert list(bars.data[0].marker.color) == [colours[c] for c in results.cell_types]
    assert {t.name: t.marker.color for t in boxes.data} == colours
    assert {t.name: t.line.color for t in cdf.data} == colours


def test_scanpy_colours_in_uns_are_used(adata):
    custom = adata.copy()
    custom.uns["clusters_colors"] = np.array(
        ["#000001", "#000002", "#000003", "#000004", "#000005"]
    )
    r = Results(custom)
    stored = dict(
        zip(custom.obs["clusters"].cat.categories, custom.uns["clusters_colors"], strict=True)
    )
    assert F.cell_type_colors(r) == stored


def test_recolor_patch_matches_a_rebuilt_figure(adata, results):
    gene = adata.var_names[9]
    patch = F.recolor_patch(results, gene, previous=None)
    rebuilt = F.embedding_figure(results, gene, velocity="none")
    assert len(patch["markers"]) == len(results.cell_types)
    for m, t in zip(patch["markers"], _cell_traces(rebuilt, len(results.cell_types)), strict=True):
        assert m["color"]["dtype"] == "f4" and m["coloraxis"] == "coloraxis"
        np.testing.assert_array_equal(_values(m["color"]), t.marker.color)
    assert patch["coloraxis"]["cmax"] == pytest.approx(rebuilt.layout.coloraxis.cmax)
    back = F.recolor_patch(results, None, previous=gene)
    assert [m["color"] for m in back["markers"]] == [
        F.cell_type_colors(results)[c] for c in results.cell_types
    ]
    assert back["coloraxis"] is None


def test_other_categorical_column_splits_traces_and_needs_rebuild(adata):
    extra = adata.copy()
    extra.obs["batch"] = np.where(np.arange(extra.n_obs) % 3 == 0, "b1", "b2")
    extra.obs["batch"] = extra.obs["batch"].astype("category")
    r = Results(extra)
    fig = F.embedding_figure(r, "batch", velocity="none")
    assert [t.name for t in fig.data if isinstance(t, go.Scattergl)] == ["b1", "b2"]
    assert [t.name for t in fig.data if t.showlegend is not False] == ["b1", "b2"]  # keys
    assert F.recolor_patch(r, "batch", previous="latent_time") is None
    assert F.recolor_patch(r, "latent_time", previous="Gene001") is not None


def test_typed_helper_gives_plotly_spec():
    spec = F.typed(np.arange(4, dtype=np.float32))
    assert spec["dtype"] == "f4"
    np.testing.assert_array_equal(_values(spec), [0, 1, 2, 3])


def test_speed_classes_bin_segments_by_relative_speed():
    nan = np.nan
    x = np.array([0, 1, 2, nan, 0, 0, 0, 0])
    y = np.array([0, 0, 0, nan, 0, 1, 2, 3])
    speed = np.array([1, 1, 1, nan, 4, 4, 2.5, 2.5])
    classes = F.speed_classes(x, y, speed, n_classes=4)
    n_segments = [np.isfinite(cx).sum() // 2 for cx, _ in classes]
    # speeds relative to 4: 0.25 ×2 → class 0; 1.0 → class 3; 0.81 → class 3; 0.625 → class 2
    assert n_segments == [2, 0, 1, 2]
    cx, cy = classes[2]
    np.testing.assert_array_equal(cx[:2], [0, 0])
    np.testing.assert_array_equal(cy[:2], [2, 3])
    assert all(c[0].dtype == np.float32 for c in classes)


def test_embedding_with_streams_and_arrows(results, stub_field):
    n = len(results.cell_types)
    streams = F.embedding_figure(results, velocity="streams", density=1.3)
    lines = [t for t in streams.data[n:] if t.legendgroup == "velocity"]
    assert len(lines) == len(F.STREAM_WIDTHS) + 1
    assert [t.line.width for t in lines[:-1]] == list(F.STREAM_WIDTHS)
    assert lines[-1].marker.symbol == "arrow"
    np.testing.assert_allclose(lines[-1].marker.angle, 90.0)
    # The fastest stream (y = 2) lands in the widest class.
    widest_y = lines[len(F.STREAM_WIDTHS) - 1].y
    assert set(widest_y[np.isfinite(widest_y)]) == {2.0}
    arrows = F.embedding_figure(results, velocity="arrows")
    shafts, heads = (t for t in arrows.data[n:] if t.legendgroup == "velocity")
    assert np.isfinite(shafts.x).sum() == 2 * 14
    assert len(heads.x) == 14  # 15 grid nodes, one masked
    np.testing.assert_allclose(heads.marker.angle, 90.0)


def test_embedding_streams_with_core_graph(results):
    fig = F.embedding_figure(results, velocity="streams")
    lines = [t for t in fig.data if t.legendgroup == "velocity"]
    assert sum(np.isfinite(t.x).sum() for t in lines[:-1]) > 0 and len(lines[-1].x) > 0


def test_missing_projected_velocity_is_explained(adata):
    slim = adata.copy()
    del slim.obsm["velocity_umap"]
    fig = F.embedding_figure(Results(slim), velocity="streams")
    assert "--skip graph" in fig.layout.annotations[0].text


def test_phase_portrait_curve_matches_closed_form_and_cells_lie_on_it(adata, results):
    j = 6
    gene = adata.var_names[j]
    a, b, g, ts = (adata.var[k].iloc[j] for k in ("fit_alpha", "fit_beta", "fit_gamma", "fit_t_"))
    fig = F.phase_portrait_figure(results, gene)
    names = [t.name for t in fig.data]
    ind = fig.data[names.index("induction (fit)")]
    rep = fig.data[names.index("repression (fit)")]
    curve = F.fitted_curve(results, gene)
    t_ind, t_rep = curve["t"][: len(ind.x)], curve["t"][len(ind.x) - 1 :]
    u_ind, s_ind = closed_form_induction(a, b, g, t_ind)
    u0, s0 = closed_form_induction(a, b, g, ts)
    u_rep, s_rep = closed_form_repression(u0, s0, b, g, t_rep - ts)
    np.testing.assert_allclose(ind.x, s_ind, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ind.y, u_ind, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rep.x, s_rep, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rep.y, u_rep, rtol=1e-5, atol=1e-6)
    t_ref, u_ref, s_ref = trajectory(a, b, g, ts, t_max=curve["t"][-1])
    np.testing.assert_allclose(curve["u"], u_ref)
    # The posterior means (fit_s, fit_u) of every cell sit on the drawn curve at their fit_t.
    fit_t = adata.layers["fit_t"][:, j]
    np.testing.assert_allclose(
        np.interp(fit_t, t_ref, s_ref), adata.layers["fit_s"][:, j], atol=2e-3
    )
    assert fig.layout.xaxis.title.text == F.MS_LABEL and fig.layout.yaxis.title.text == F.MU_LABEL
    assert "likelihood" in fig.layout.title.subtitle.text


def test_steady_state_line_has_slope_gamma_over_beta(adata, results):
    j = 3
    fig = F.phase_portrait_figure(results, adata.var_names[j], color_by="latent_time")
    line = next(t for t in fig.data if t.name.startswith("steady state"))
    slope = (line.y[1] - line.y[0]) / (line.x[1] - line.x[0])
    assert slope == pytest.approx(
        adata.var["fit_gamma"].iloc[j] / adata.var["fit_beta"].iloc[j], rel=1e-4
    )
    assert fig.layout.coloraxis.colorscale  # latent-time colouring uses the shared coloraxis


def test_phase_portrait_by_state_uses_state_argmax(adata, results):
    j = 2
    fig = F.phase_portrait_figure(results, adata.var_names[j], color_by="state")
    counts = {t.name: len(t.x) for t in fig.data if t.name in STATES}
    expected = np.bincount(adata.layers["state_assignment"][:, j], minlength=4)
    assert [counts[s] for s in STATES] == expected.tolist()
    with pytest.raises(ValueError, match="color_by"):
        F.phase_portrait_figure(results, adata.var_names[j], color_by="nope")


def test_gene_over_time_and_velocity_map(adata, results):
    gene = adata.var_names[5]
    fig = F.gene_over_time_figure(results, gene)
    assert [t.name for t in fig.data] == ["Mu (unspliced)", "u(t) fit", "Ms (spliced)", "s(t) fit"]
    np.testing.assert_array_equal(fig.data[0].x, adata.layers["fit_t"][:, 5])
    vel = F.gene_velocity_embedding_figure(results, gene)
    axis = vel.layout.coloraxis
    assert axis.cmid == 0 and axis.cmin == pytest.approx(-axis.cmax)


def test_permutation_and_baseline_gene_figures(adata, results):
    j = 8
    gene = adata.var_names[j]
    bars = F.permutation_effect_figure(results, gene)
    np.testing.assert_allclose(bars.data[0].y, adata.varm["permutation_effect"][j])
    base = F.baseline_agreement_figure(results, gene)
    cells = _cell_traces(base, len(results.cell_types))
    idx = np.concatenate([t.customdata[:, 0] for t in cells]).astype(int)
    np.testing.assert_array_equal(
        np.concatenate([t.y for t in cells]), adata.layers["velocity_baseline"][idx, j]
    )
    assert "sign agreement" in base.layout.title.subtitle.text


def test_coherence_ecdf_is_monotone_ends_at_one_and_matches_counts(adata, results):
    grid, cdf = F.coherence_ecdf(results)
    assert grid.shape == (F.ECDF_POINTS,) and cdf.shape == (F.ECDF_POINTS, len(results.cell_types))
    assert np.all(np.diff(cdf, axis=0) >= 0) and np.allclose(cdf[-1], 1.0)
    k = 200
    np.testing.assert_allclose(cdf[k], (adata.varm["coherence"] <= grid[k]).mean(0), atol=1e-6)
    fig = F.coherence_cdf_figure(results, ["Alpha 1", "Beta 2"])
    assert [t.name for t in fig.data] == ["Alpha 1", "Beta 2"]
    with pytest.raises(KeyError, match="unknown cell types"):
        F.coherence_cdf_figure(results, ["Gamma"])


def test_top_bottom_coherence(adata, results):
    top, bottom = F.top_bottom_coherence(results, "Beta 1", n=4)
    column = adata.varm["coherence"][:, results.cell_types.index("Beta 1")]
    names = np.asarray(adata.var_names)
    assert top == names[np.argsort(-column)[:4]].tolist()
    assert bottom == names[np.argsort(column)[:4]].tolist()


def test_permutation_density_integrates_to_one_and_is_annotated(adata, results):
    grid, density = F.permutation_kde(results)
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=0.01)
    fig = F.permutation_density_figure(results)
    skew = adata.uns["velodash"]["permutation"]["skewness"]
    assert f"skewness {skew:.2f}" in fig.layout.annotations[0].text


def test_permutation_heatmap_top_genes(adata, results):
    fig = F.permutation_heatmap_figure(results, n_top=7)
    heat = fig.data[0]
    order = np.argsort(-adata.var["permutation_score"].to_numpy())[:7]
    assert list(heat.y) == list(adata.var_names[order])
    np.testing.assert_allclose(heat.z, adata.varm["permutation_effect"][order])
    assert heat.customdata[3][2] == adata.var_names[order[3]]
    # a signed t (issue 15): diverging colours, white at 0, symmetric about it
    assert heat.zmid == 0 and heat.zmin == -heat.zmax == -np.abs(heat.z).max()
    colours = [c for _, c in heat.colorscale]
    assert heat.reversescale and colours[len(colours) // 2].replace(" ", "") in (
        "rgb(247,247,247)",
        "rgb(255,255,255)",
    )


def test_training_curve(results):
    fig = F.training_curve_figure(results.history())
    assert [t.name for t in fig.data] == ["train", "validation"]
    assert len(fig.data[0].y) == len(results.history()["elbo_train"])
    assert len(F.training_curve_figure(None).data) == 0


def test_uncertainty_panels_share_axes(results):
    from dashboard.figures.uncertainty import power_ticks

    fig = F.uncertainty_figures(results)
    assert len(fig.data) == 2 and fig.data[1].xaxis == "x2"
    assert fig.layout.xaxis2.matches == "x" and fig.layout.yaxis2.matches == "y"
    # colours on the paper's log10 scale, clipped to its p1–p99; the hover keeps the raw value
    raw = results.obs_numeric("intrinsic_uncertainty")
    lo, hi = np.percentile(np.log10(raw), [1, 99])
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == pytest.approx(
        (lo, hi), rel=1e-5
    )
    np.testing.assert_allclose(fig.data[0].marker.color, np.log10(raw), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(fig.data[0].customdata)[:, -1], raw)
    assert "intrinsic uncertainty %{customdata[" in fig.data[0].hovertemplate
    bar = fig.layout.coloraxis.colorbar
    assert "log scale" in bar.title.text and "p1–p99" in bar.title.text
    assert all(lo - 1e-6 <= v <= hi + 1e-6 for v in bar.tickvals)
    assert (
        list(bar.ticktext)
        == power_ticks(fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax)["ticktext"]
    )
    boxes = F.uncertainty_by_type_figure(results, "intrinsic")
    assert boxes.layout.yaxis.type == "log" and "log scale" in boxes.layout.yaxis.title.text


def test_power_ticks_label_decades_and_short_ranges():
    from dashboard.figures.uncertainty import power_ticks

    ticks = power_ticks(-6.3, -2.2)
    assert ticks["tickvals"] == [-6, -5, -4, -3]
    assert ticks["ticktext"][0] == "10<sup>-6</sup>"
    # one power of ten inside (the sample's intrinsic, 3.5e-4 to 6.1e-3): 1-2-5 steps
    medium = power_ticks(np.log10(3.5e-4), np.log10(6.1e-3))
    np.testing.assert_allclose(10 ** np.array(medium["tickvals"]), [5e-4, 1e-3, 2e-3, 5e-3])
    assert medium["ticktext"] == [
        "5×10<sup>-4</sup>", "10<sup>-3</sup>", "2×10<sup>-3</sup>", "5×10<sup>-3</sup>"
    ]  # fmt: skip
    # under ×2.5 (the pancreas intrinsic, 2.9e-4 to 7.5e-4): every mantissa
    short = power_ticks(np.log10(2.9e-4), np.log10(7.5e-4))
    assert short["ticktext"] == [f"{m}×10<sup>-4</sup>" for m in (3, 4, 5, 6, 7)]
    tiny = power_ticks(-3.52, -3.50)  # no round value inside: the ends, two digits
    assert tiny["tickvals"] == [-3.52, -3.50] and tiny["ticktext"] == [
        "3×10<sup>-4</sup>", "3.2×10<sup>-4</sup>"
    ]  # fmt: skip


def test_skipped_analyses_give_empty_states(adata):
    slim = adata.copy()
    for key in ("permutation_effect", "coherence"):
        del slim.varm[key]
    slim.var = slim.var.drop(columns=["permutation_score"])
    slim.obs = slim.obs.drop(columns=["extrinsic_uncertainty"])
    del slim.layers["state_assignment"]
    del slim.layers["velocity_baseline"]
    r = Results(slim)
    gene = r.gene_names[0]
    empties = [
        F.permutation_effect_figure(r, gene),
        F.permutation_density_figure(r),
        F.permutation_heatmap_figure(r),
        F.coherence_cdf_figure(r),
        F.baseline_agreement_figure(r, gene),
        F.phase_portrait_figure(r, gene, color_by="state"),
        F.uncertainty_by_type_figure(r, "extrinsic"),
    ]
    for fig in empties:
        text = fig.layout.annotations[0].text.lower()
        assert len(fig.data) == 0
        assert "not computed" in text or "no posterior state" in text
    unc = F.uncertainty_figures(r)
    assert len(unc.data) == 1 and "--skip extrinsic" in unc.layout.annotations[-1].text
    assert F.top_bottom_coherence(r, r.cell_types[0]) == ([], [])
