"""The exploring views' pure functions against independent oracles: portrait grid (deterministic
downsampling, exact curves), latent-time heatmap (pandas/numpy brute force of scVelo's recipe),
gene rankings and lists, the scVelo-baseline projection, agreement and stream confidence,
ground-truth recovery (scipy), and the export helpers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from fake_results import closed_form_induction, closed_form_repression
from scipy import stats

from core.graph import add_velocity_graph
from core.ground_truth import column_pearson, column_spearman, recovery
from dashboard import figures as F
from dashboard.data import projections as P
from dashboard.data.datasets import Dataset
from dashboard.data.exports import cell_type_labels, cells_table, fit_parameters
from dashboard.data.genesets import parse_gene_list, rank_genes
from dashboard.data.results import Results
from dashboard.web import widgets as ui

FAKE_RESULTS = dict(n_cells=400, n_genes=30, n_types=5, seed=5)


# -- portrait grid -----------------------------------------------------------------------------
def test_downsampling_is_deterministic_stratified_and_bounded():
    rng = np.random.default_rng(0)
    codes = rng.choice([0, 1, 2, -1], size=5000, p=[0.7, 0.25, 0.045, 0.005])
    a = F.downsample_cells(codes, 400)
    b = F.downsample_cells(codes.copy(), 400)
    np.testing.assert_array_equal(a, b)  # same input, same cells
    assert not np.array_equal(a, F.downsample_cells(codes, 400, seed=1))
    assert len(a) <= 400 and np.all(np.diff(a) > 0)
    share = pd.Series(codes[a]).value_counts(normalize=True)
    full = pd.Series(codes).value_counts(normalize=True)
    for code in (0, 1, 2):
        assert share[code] == pytest.approx(full[code], abs=0.01)
    assert -1 in share.index  # a rare group keeps a cell
    np.testing.assert_array_equal(F.downsample_cells(codes[:300], 400), np.arange(300))


def test_portrait_grid_panels_points_and_exact_curves(adata, results):
    genes = list(adata.var_names[[3, 7, 11, 12, 20]])
    fig = F.portrait_grid_figure(results, genes, columns=2, link="/genes?ds=x&gene={gene}")
    cells = F.portrait_cells(results)
    assert len(cells) == F.POINTS_PER_PANEL <= results.n_cells
    titles = [a.text for a in fig.layout.annotations]
    assert titles[1] == f'<a href="/genes?ds=x&gene={genes[1]}" target="_self">{genes[1]}</a>'
    assert all(isinstance(t, go.Scatter) for t in fig.data)  # SVG: no WebGL context per panel
    for k, gene in enumerate(genes):
        axis = f"x{k + 1}" if k else "x"
        panel = [t for t in fig.data if t.xaxis == axis]
        points = [t for t in panel if t.mode == "markers"]
        assert sum(len(t.x) for t in points) == len(cells)
        custom = np.concatenate([t.customdata for t in points])
        assert set(custom[:, 1].astype(int)) == {adata.var_names.get_loc(gene)}
        j = adata.var_names.get_loc(gene)
        np.testing.assert_array_equal(
            np.sort(np.concatenate([t.x for t in points])),
            np.sort(adata.layers["Ms"][custom[:, 0].astype(int), j]),
        )
        # The curve is the exact fitted kinetics (independent closed form), not subsampled.
        a, b, g, ts = (
            adata.var[c].iloc[j] for c in ("fit_alpha", "fit_beta", "fit_gamma", "fit_t_")
        )
        curve = F.fitted_curve(results, gene)
        ind = next(t for t in panel if t.name == "induction (fit)")
        rep = next(t for t in panel if t.name == "repression (fit)")
        t_ind = curve["t"][: len(ind.x)]
        u_ind, s_ind = closed_form_induction(a, b, g, t_ind)
        np.testing.assert_allclose(ind.x, s_ind, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(ind.y, u_ind, rtol=1e-6, atol=1e-9)
        u0, s0 = closed_form_induction(a, b, g, ts)
        u_rep, s_rep = closed_form_repression(u0, s0, b, g, curve["t"][len(ind.x) - 1 :] - ts)
        np.testing.assert_allclose(rep.x, s_rep, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(rep.y, u_rep, rtol=1e-6, atol=1e-9)
    # Legend: one key per cell type (toggling a type in every panel) and the curve styles.
    shown = [t.name for t in fig.data if t.showlegend is not False]
    assert shown == ["induction (fit)", "repression (fit)", "steady state", *results.cell_types]


def test_portrait_grid_latent_time_and_bad_input(adata, results):
    fig = F.portrait_grid_figure(results, [adata.var_names[0]], color_by="latent_time")
    points = [t for t in fig.data if t.mode == "markers"]
    assert len(points) == 1 and points[0].marker.coloraxis == "coloraxis"
    with pytest.raises(KeyError, match="unknown gene"):
        F.portrait_grid_figure(results, ["NotAGene"])
    assert "No genes" in F.portrait_grid_figure(results, []).layout.annotations[0].text


# -- latent-time heatmap ----------------------------------------------------------------------
def test_moving_average_matches_convolution_inside_and_the_window_mean_at_the_edges():
    X = np.random.default_rng(1).normal(size=(50, 3))
    got = F.moving_average(X, 6)
    for g in range(3):
        full = np.convolve(X[:, g], np.ones(6) / 6, mode="same")  # scVelo's smoothing
        np.testing.assert_allclose(got[3:-3, g], full[3:-3])
    # at the edges: the mean of the rows inside the window (rows i-3 … i+2; no zero padding)
    np.testing.assert_allclose(got[0], X[:3].mean(0))
    np.testing.assert_allclose(got[-1], X[-4:].mean(0))
    np.testing.assert_allclose(F.moving_average(X, 1), X)


def test_heatmap_data_matches_a_pandas_brute_force(adata, results):
    genes = list(adata.var_names[[2, 9, 14, 21]])
    data = F.heatmap_data(results, genes, n_convolve=10, max_columns=50)
    frame = pd.DataFrame(adata[:, genes].layers["Ms"].astype(np.float64), columns=genes)
    frame["t"] = adata.obs["latent_time"].to_numpy()
    frame["type"] = adata.obs["clusters"].astype(str).to_numpy()
    frame = frame.sort_values("t", kind="stable").reset_index(drop=True)
    smooth = frame[genes].rolling(10, center=True, min_periods=1).mean()
    frame["bin"] = np.arange(len(frame)) * 50 // len(frame)
    binned = smooth.groupby(frame["bin"]).mean()
    scaled = (binned - binned.min()) / (binned.max() - binned.min())
    order = scaled.idxmax().sort_values(kind="stable").index.tolist()
    assert data.genes == order
    np.testing.assert_allclose(data.z, scaled[order].T.to_numpy(), atol=1e-6)
    np.testing.assert_allclose(data.time, frame.groupby("bin")["t"].mean(), rtol=1e-6)
    majority = frame.groupby("bin")["type"].agg(lambda s: s.value_counts().index[0])
    names = np.asarray(results.cell_types)[data.cell_type]
    # value_counts breaks ties arbitrarily: require the picked type to be a most frequent one
    counts = frame.groupby("bin")["type"].value_counts().unstack(fill_value=0)
    for b, name in enumerate(names):
        assert counts.loc[b, name] == counts.loc[b].max(), (b, name, majority[b])
    assert data.n_cells.sum() == results.n_cells and len(data.time) == 50


def test_heatmap_figure_rows_and_type_bar(adata, results):
    genes = list(adata.var_names[:6])
    fig = F.heatmap_figure(results, genes, max_columns=80)
    bar, heat = fig.data[0], fig.data[1]
    assert list(heat.y) == F.heatmap_data(results, genes, max_columns=80).genes
    assert heat.z.shape == (6, 80) and bar.z.shape == (1, 80)
    keys = [t.name for t in fig.data[2:]]
    assert keys == results.cell_types
    colors = F.cell_type_colors(results)
    # the stepped colour scale maps code k to the k-th type's colour
    scale = [c for _, c in bar.colorscale]
    assert scale[::2] == [colors[c] for c in results.cell_types]


# -- gene rankings and lists -----------------------------------------------------------------
def test_rankings_match_pandas(adata, results):
    var = adata.var
    assert (
        rank_genes(results, "permutation", 5) == var["permutation_score"].nlargest(5).index.tolist()
    )
    assert rank_genes(results, "likelihood", 4) == var["fit_likelihood"].nlargest(4).index.tolist()
    mean_coherence = pd.Series(adata.varm["coherence"].mean(1), index=var.index)
    assert rank_genes(results, "coherence", 3) == mean_coherence.nlargest(3).index.tolist()
    with pytest.raises(ValueError, match="unknown ranking"):
        rank_genes(results, "magic", 3)
    slim = adata.copy()
    del slim.varm["permutation_effect"]
    with pytest.raises(ValueError, match="no permutation score"):
        rank_genes(Results(slim), "permutation", 3)


def test_gene_list_parsing(results):
    names = results.gene_names
    text = f"{names[3]}, {names[1].lower()}\n{names[3]};  Nope17 {names[0]}"
    parsed = parse_gene_list(results, text)
    assert parsed.genes == [names[3], names[1], names[0]]  # input order, case-insensitive, once
    assert parsed.unknown == ["Nope17"] and "Not in these results: Nope17" in parsed.message()
    many = parse_gene_list(results, " ".join(names), limit=10)
    assert len(many.genes) == 10 and many.truncated and "first" in many.message()
    assert parse_gene_list(results, "").genes == []


# -- veloVI vs scVelo, confidence --------------------------------------------------------------
def test_baseline_projection_equals_core_graph_on_the_anndata(adata, results):
    copy = adata.copy()
    copy.var["velocity_baseline_genes"] = copy.var["velocity_genes"]
    add_velocity_graph(copy, vkey="velocity_baseline", xkey="Ms", basis="umap", device="cpu")
    got = P.projected_velocity(results, "scvelo")
    np.testing.assert_allclose(got, copy.obsm["velocity_baseline_umap"], rtol=1e-4, atol=1e-6)
    stored = adata.copy()
    stored.obsm["velocity_baseline_umap"] = np.ones((adata.n_obs, 2), dtype=np.float32)
    assert P.projected_velocity(Results(stored), "scvelo").sum() == 2 * adata.n_obs


def test_agreement_is_the_cosine_per_cell(results):
    a, b = P.projected_velocity(results, "velovi"), P.projected_velocity(results, "scvelo")
    cos = P.agreement(results)
    for i in (0, 17, 399):
        want = a[i] @ b[i] / (np.linalg.norm(a[i]) * np.linalg.norm(b[i]))
        assert cos[i] == pytest.approx(want, abs=1e-5)
    fig = F.agreement_figure(results)
    axis = fig.layout.coloraxis
    assert (axis.cmin, axis.cmax) == (-1.0, 1.0)
    assert f"median {np.nanmedian(cos):.2f}" in fig.layout.title.subtitle.text


def test_missing_baseline_or_knn_is_explained(adata):
    no_knn = adata.copy()
    del no_knn.obsp["distances"]
    r = Results(no_knn)
    assert P.projected_velocity(r, "scvelo") is None
    fig = F.embedding_figure(r, velocity="streams", source="both")
    assert "obsp['distances']" in fig.layout.annotations[0].text
    assert any(t.legendgroup == "velocity" for t in fig.data)  # veloVI still drawn
    assert "kNN graph" in F.agreement_figure(r).layout.annotations[0].text


def test_local_uncertainty_matches_brute_force_neighbours():
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 10, (300, 2))
    unc = rng.lognormal(-3, 1, 300)
    points = rng.uniform(0, 10, (20, 2))
    got = P.local_uncertainty(xy, unc, points, k=7)
    for p, value in zip(points, got, strict=True):
        nearest = np.argsort(np.linalg.norm(xy - p, axis=1))[:7]
        assert value == pytest.approx(np.log10(unc[nearest]).mean())


def test_confidence_fades_streams_where_extrinsic_uncertainty_is_high(adata):
    fuzzy = adata.copy()
    x = fuzzy.obsm["X_umap"][:, 0]
    # uncertainty grows from left to right: 0.001 … 0.1
    rank = (x - x.min()) / (x.max() - x.min())
    fuzzy.obs["extrinsic_uncertainty"] = (10 ** (2 * rank - 3)).astype(np.float32)
    r = Results(fuzzy)
    fig = F.embedding_figure(r, velocity="streams", confidence=True)
    lines = [t for t in fig.data if t.legendgroup == "velocity" and t.mode == "lines"]
    alpha = {F.CONFIDENCE_ALPHA[k]: k for k in range(3)}
    mid = {}
    for t in lines:
        level = alpha[float(t.line.color.rsplit(",", 1)[1].rstrip(")"))]
        xs = np.asarray(t.x, dtype=float).reshape(-1, 3)[:, :2].mean(1)
        mid.setdefault(level, []).append(xs)
    faint, solid = np.concatenate(mid[0]), np.concatenate(mid[2])
    assert np.median(faint) > np.quantile(x, 0.6) and np.median(solid) < np.quantile(x, 0.4)
    plain = F.embedding_figure(r, velocity="streams")
    widths = [t.line.width for t in plain.data if t.legendgroup == "velocity" and t.mode == "lines"]
    assert widths == list(F.STREAM_WIDTHS)  # without confidence: one trace per width class


def test_both_sources_are_drawn_with_their_own_legend_groups(results):
    fig = F.embedding_figure(results, velocity="arrows", source="both")
    groups = {t.legendgroup for t in fig.data if (t.legendgroup or "").startswith("velocity")}
    assert groups == {"velocity", "velocity-scvelo"}
    names = {t.name for t in fig.data if t.showlegend and t.legendgroup in groups}
    assert names == {"veloVI arrows", "scVelo baseline arrows"}


# -- ground truth -------------------------------------------------------------------------------
def test_recovery_metrics_match_scipy_per_gene():
    rng = np.random.default_rng(4)
    true_t = rng.uniform(0, 20, 200)
    fit_t = true_t[:, None] * rng.uniform(0.5, 2, 6) + rng.normal(0, 4, (200, 6))
    fit_t[:, 2] = np.round(fit_t[:, 2])  # ties
    fit_t[:, 5] = 3.0  # constant: undefined
    velocity = rng.normal(size=(200, 6))
    truth = velocity * 2 + rng.normal(size=(200, 6))
    got = recovery(fit_t, true_t, velocity, truth)
    for g in range(5):
        assert got["spearman_time"][g] == pytest.approx(stats.spearmanr(fit_t[:, g], true_t)[0])
        assert got["pearson_velocity"][g] == pytest.approx(
            stats.pearsonr(velocity[:, g], truth[:, g])[0]
        )
    assert np.isnan(got["spearman_time"][5])
    assert column_pearson(velocity, velocity[:, 0]).shape == (6,)
    assert column_spearman(fit_t[:, :2], true_t)[0] == pytest.approx(got["spearman_time"][0])


def test_ground_truth_panel_data(adata):
    truth = adata.copy()
    rng = np.random.default_rng(0)
    truth.obs["true_t"] = truth.obs["latent_time"] * 20 + rng.normal(0, 0.5, truth.n_obs)
    truth.layers["true_velocity"] = truth.layers["velocity"] * 3
    r = Results(truth)
    summary = F.ground_truth_summary(r)
    assert summary["median_pearson_velocity"] == pytest.approx(1.0)
    assert summary["spearman_latent_time"] > 0.9
    fig = F.ground_truth_figure(r)
    assert [t.type for t in fig.data] == ["histogram", "histogram"]
    assert F.ground_truth_summary(Results(adata)) is None
    assert "no ground truth" in F.ground_truth_figure(Results(adata)).layout.annotations[0].text


def test_uncertainty_calibration_panel(adata):
    """A true velocity that differs from the fit by noise growing with the intrinsic
    uncertainty: intrinsic finds the wrong cells (ρ and AUROC near 1, a rising line), an
    extrinsic that is noise does not (near 0 and 0.5), and the panel matches core's numbers."""
    from core.ground_truth import direction_error, uncertainty_calibration

    truth = adata.copy()
    rng = np.random.default_rng(2)
    n_cells, n_genes = truth.shape
    noise = np.linspace(0.05, 1.0, n_cells)[rng.permutation(n_cells)]
    velocity = truth.layers["velocity"]
    standardised = velocity / velocity.std(0)
    size = np.linalg.norm(standardised - standardised.mean(1, keepdims=True), axis=1)
    # noise of a given share of each cell's (standardised) velocity, in the velocity's units
    relative = noise * size / np.sqrt(n_genes)
    truth.layers["true_velocity"] = velocity + (
        relative[:, None] * rng.normal(size=(n_cells, n_genes)) * velocity.std(0)
    )
    truth.obs["intrinsic_uncertainty"] = noise
    truth.obs["extrinsic_uncertainty"] = rng.random(n_cells)
    summary = F.uncertainty_calibration_summary(Results(truth))
    assert summary["intrinsic"]["spearman"] > 0.8 and summary["intrinsic"]["auroc"] > 0.9
    assert abs(summary["extrinsic"]["spearman"]) < 0.15
    assert 0.35 < summary["extrinsic"]["auroc"] < 0.65
    expected = uncertainty_calibration(
        noise, *direction_error(velocity, truth.layers["true_velocity"])
    )
    assert summary["intrinsic"] == pytest.approx(expected)
    fig = F.calibration_figure(Results(truth))
    rising = np.asarray(fig.data[0].y)
    assert len(rising) == 10 and np.all(np.diff(rising) > 0)
    assert F.uncertainty_calibration_summary(Results(adata)) is None  # no true velocity
    assert "no ground truth" in F.calibration_figure(Results(adata)).layout.annotations[0].text


# -- exports -----------------------------------------------------------------------------------
def test_export_names_config_and_tables(tmp_path, adata, results):
    sample = Dataset("sample", "Sample data (simulated branching)", tmp_path, "raw", "sample")
    mine = Dataset("abc123", "my data/v2.h5ad", tmp_path / "v2.h5ad", "results", "upload")
    assert ui.export_name(sample, "stream") == "sample_stream"
    assert ui.export_name(mine, "heatmap") == "v2_heatmap"
    config = ui.graph_config(sample, "portraits", scrollZoom=True)
    assert config["toImageButtonOptions"] == {
        "format": "png",
        "scale": 3,
        "filename": "sample_portraits",
    }
    assert config["scrollZoom"] and not config["displaylogo"]
    table = cells_table(results, results.color_values(adata.var_names[2]), ("velovi", "scvelo"))
    assert len(table) == results.n_cells and table["cell_id"].tolist() == list(adata.obs_names)
    np.testing.assert_allclose(table["velocity_velovi_umap_1"], adata.obsm["velocity_umap"][:, 0])
    assert {"velovi_scvelo_cosine", f"{adata.var_names[2]} (Ms)"} <= set(table.columns)
    params = fit_parameters(results, [adata.var_names[4], adata.var_names[1]])
    assert params["gene"].tolist() == [adata.var_names[4], adata.var_names[1]]
    assert params["alpha"].iloc[0] == pytest.approx(adata.var["fit_alpha"].iloc[4])


def test_cell_type_labels_per_cell_subset_and_unlisted(adata):
    other = adata.copy()
    clusters = other.obs["clusters"].astype(str).to_numpy()
    clusters[[0, 9]] = "Not in the fit"  # a type the fit never listed: code -1
    other.obs["clusters"] = pd.Categorical(clusters)
    results = Results(other)
    want = np.where(clusters == "Not in the fit", "", clusters)
    np.testing.assert_array_equal(cell_type_labels(results), want)
    mask = np.arange(other.n_obs) % 3 == 0
    np.testing.assert_array_equal(cell_type_labels(results, mask), want[mask])
    np.testing.assert_array_equal(cell_type_labels(results, np.array([9, 4])), want[[9, 4]])
    assert cells_table(results)["cell_type"].tolist() == want.tolist()
