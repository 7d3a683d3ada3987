"""Constant vs time-dependent transcription rate in the dashboard (issue 18 items 2-4): the
companion fit is found at its content address, the per-gene MSE comparison, the portrait's
overlay (constant solid, α(t) dashed), α(t) under it and the comparison card.

Fake results: a constant-rate fit and its time-dependent twin (same genes and moments; α₁, λ and
MSEs planted), the twin written where a fit with ``time_dependent_rate=True`` of the same input
would be cached. The expected values are computed here from the planted numbers.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import flask
import numpy as np
import pytest
from fake_results import make_fake_results
from layout_tree import find

from core.params import FitParams, results_key
from dashboard import figures
from dashboard.config import AppConfig
from dashboard.data.datasets import DatasetRegistry
from dashboard.data.rate_models import mse_comparison, rate_pair
from dashboard.data.results import load_results
from dashboard.web import context, rate_views
from dashboard.web.app import create_app

N_GENES = 30


class Pair(NamedTuple):
    """A constant-rate results file, a cache holding its α(t) twin, and the planted λ and α₁."""

    constant: Path
    cache: Path
    twin: Path
    lam: np.ndarray
    alpha_1: np.ndarray


def write_pair(folder: Path) -> Pair:
    """Fake constant-rate results in `folder` and their time-dependent twin (λ, α₁ and MSEs
    planted) at the content address its fit would have in `folder`/cache."""
    constant = make_fake_results(n_cells=200, n_genes=N_GENES, n_types=3, seed=3)
    twin = constant.copy()
    rng = np.random.default_rng(7)
    lam = rng.uniform(0.05, 0.8, N_GENES)
    alpha_1 = twin.var["fit_alpha"].to_numpy() * rng.uniform(0.3, 3.0, N_GENES)
    twin.var["fit_alpha_1"] = alpha_1
    twin.var["fit_lambda_alpha"] = lam
    twin.var["fit_mse"] = constant.var["fit_mse"].to_numpy() * rng.uniform(0.5, 1.6, N_GENES)
    info = dict(constant.uns["velodash"])
    twin_params = replace(FitParams.from_dict(info["params"]), time_dependent_rate=True)
    twin.uns["velodash"] = {**info, "params": twin_params.to_dict()}
    path = folder / "constant.h5ad"
    constant.write_h5ad(path)
    cache = folder / "cache"
    (cache / "results").mkdir(parents=True)
    twin_path = cache / "results" / f"{results_key(info['fingerprint'], twin_params)}.h5ad"
    twin.write_h5ad(twin_path)
    return Pair(path, cache, twin_path, lam, alpha_1)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(app, dataset id, constant results, time-dependent results, the planted λ and α₁)."""
    folder = tmp_path_factory.mktemp("rates")
    files = write_pair(folder)
    config = AppConfig(data=(files.constant,), cache_dir=files.cache, sample_path=folder / "x")
    return (
        create_app(config),
        DatasetRegistry(config).default_id(),
        load_results(files.constant),
        load_results(files.twin),
        files.lam,
        files.alpha_1,
    )


def test_the_companion_is_the_other_rates_fit_at_its_content_address(pair, tmp_path):
    app, _, constant, time_dependent, _, _ = pair
    with app.server.test_request_context():
        found = context.companion(constant)
        assert found is not None and found.time_dependent and not constant.time_dependent
        # the constant fit was opened from a file, not the cache: seen from the α(t) fit, it
        # is the companion once it sits at its own content address
        assert context.companion(time_dependent) is None
        registry = context.current_registry()
        key = results_key(
            constant.info["fingerprint"], FitParams.from_dict(constant.info["params"])
        )
        cached = registry.results_dir / f"{key}.h5ad"
        cached.write_bytes(constant.path.read_bytes())
        try:
            back = context.companion(time_dependent)
            assert back is not None and not back.time_dependent
        finally:
            cached.unlink()
    assert rate_pair(time_dependent, constant) == (constant, time_dependent)
    # elsewhere (another cache) there is no companion
    registry = DatasetRegistry(AppConfig(cache_dir=tmp_path))
    assert registry.companion_fit(constant.info) is None


def test_mse_comparison_is_the_log10_ratio_per_gene(pair):
    _, _, constant, time_dependent, _, _ = pair
    table = mse_comparison(constant, time_dependent)
    mse_c = constant.adata.var["fit_mse"].to_numpy()
    mse_t = time_dependent.adata.var["fit_mse"].to_numpy()
    expected = dict(zip(constant.gene_names, np.log10(mse_c / mse_t), strict=True))
    assert len(table) == N_GENES
    np.testing.assert_allclose(table["log10_ratio"], [expected[g] for g in table["gene"]])
    assert table["log10_ratio"].is_monotonic_decreasing
    figure = figures.mse_ratio_figure(table, highlight=table["gene"].iloc[0])
    share = np.mean(np.array(list(expected.values())) > 0)
    assert (
        f"{share:.0%} of {N_GENES} genes fit better with α(t)" in figure.layout.title.subtitle.text
    )
    assert figure.data[1].text == (table["gene"].iloc[0],)


def test_the_portrait_overlays_both_fits_and_alpha_t_follows_its_formula(pair):
    _, _, constant, time_dependent, lam, alpha_1 = pair
    gene = constant.gene_names[4]
    fig = figures.phase_portrait_figure(constant, gene, companion=time_dependent)
    lines = {t.name: t.line.dash for t in fig.data if t.mode == "lines" and "(" in t.name}
    assert lines == {
        "induction (constant α)": "solid",
        "repression (constant α)": "solid",
        "induction (α(t))": "dash",
        "repression (α(t))": "dash",
    }
    assert "MSE constant α" in fig.layout.title.subtitle.text
    assert "MSE α(t)" in fig.layout.title.subtitle.text
    rate = figures.transcription_rate_figure([constant, time_dependent], gene)
    by_name = {t.name: t for t in rate.data}
    t = np.asarray(by_name["α(t)"].x, dtype=np.float64)
    alpha = constant.adata.var["fit_alpha"].iloc[4]
    switch = constant.adata.var["fit_t_"].iloc[4]
    expected = np.where(t < switch, alpha_1[4] - (alpha_1[4] - alpha) * np.exp(-lam[4] * t), 0)
    np.testing.assert_allclose(by_name["α(t)"].y, expected, rtol=1e-5)
    flat = np.asarray(by_name["constant α"].y)
    np.testing.assert_allclose(flat[t < switch], alpha, rtol=1e-6)
    # without λ the α(t) fit's curve would be the constant one: here it is not
    curve_t = figures.fitted_curve(time_dependent, gene)
    curve_c = figures.fitted_curve(constant, gene)
    assert not np.allclose(curve_t["s"], curve_c["s"])


def test_the_genes_page_shows_the_rate_views_with_both_fits(pair):
    app, ds, constant, time_dependent, _, _ = pair
    with app.server.test_request_context():
        from dashboard.web.pages import genes

        layout = genes.layout(ds=ds)
        assert find(layout, "gene-rate") is not None and find(layout, "rate-models") is not None
        links = find(layout, "rate-top-genes").children
        table = mse_comparison(constant, time_dependent)
        named = [item.children for item in links if hasattr(item, "href")]
        assert named == list(table["gene"].head(rate_views.TOP_RATE_GENES))
        gene = table["gene"].iloc[-1]  # the constant rate fits it best
        figure, summary = rate_views.show_rate(gene, ds)
        assert {t.name for t in figure.data} == {"constant α", "α(t)"}
        ratio = find(summary, "gene-models-ratio").children
        assert "the constant rate fits" in ratio and f"rank {len(table)} of {len(table)}" in ratio


def test_a_single_fit_has_no_comparison_and_a_hint(tmp_path):
    results_file = tmp_path / "fit.h5ad"
    make_fake_results(n_cells=120, n_genes=10, n_types=3, seed=1).write_h5ad(results_file)
    config = AppConfig(data=(results_file,), cache_dir=tmp_path / "c", sample_path=tmp_path / "x")
    app = create_app(config)
    with app.server.test_request_context():
        from dashboard.web.pages import genes

        layout = genes.layout(ds=DatasetRegistry(config).default_id())
        assert find(layout, "rate-models") is None and find(layout, "gene-rate") is None


def test_fit_params_read_back_from_a_results_file(tmp_path):
    """``uns`` comes back from an .h5ad with numpy values (an empty skip list is a float
    array): the options and so the companion's content address survive the round trip."""
    adata = make_fake_results(n_cells=60, n_genes=6, n_types=3, seed=2)
    for params in (FitParams(), FitParams(skip=("baseline",), time_dependent_rate=True)):
        adata.uns["velodash"]["params"] = params.to_dict()
        adata.write_h5ad(tmp_path / "r.h5ad")
        back = load_results(tmp_path / "r.h5ad").info["params"]
        assert FitParams.from_dict(back) == params
        assert results_key("f", FitParams.from_dict(back)) == results_key("f", params)


def test_a_raw_dataset_fitted_with_one_rate_says_how_to_get_the_other(tmp_path):
    """Editors are sent to the home page's α(t) box, viewers to an editor; no rate views."""
    from fake_results import write_raw_counts

    from core.io import file_fingerprint
    from dashboard.hosting.users import User

    raw = write_raw_counts(tmp_path / "raw.h5ad", n_cells=60, n_genes=12)
    fitted = make_fake_results(n_cells=120, n_genes=10, n_types=3, seed=1)
    fitted.uns["velodash"]["fingerprint"] = file_fingerprint(raw)
    fitted.uns["velodash"]["params"] = FitParams().to_dict()
    cache = tmp_path / "cache"
    (cache / "results").mkdir(parents=True)
    key = results_key(file_fingerprint(raw), FitParams())
    fitted.write_h5ad(cache / "results" / f"{key}.h5ad")
    config = AppConfig(data=(raw,), cache_dir=cache, sample_path=tmp_path / "x")
    app = create_app(config)
    ds = DatasetRegistry(config).default_id()
    with app.server.test_request_context():
        from dashboard.web.pages import genes

        layout = genes.layout(ds=ds)
        assert find(layout, "gene-rate") is None
        hint = find(layout, "rate-hint").children
        assert "“time-dependent rate α(t)” ticked" in hint and "unticked" not in hint
        dataset, results, _ = context.resolve(ds)
        flask.g.velodash_user = User("vera", "viewer")
        assert "an editor can fit" in rate_views.rate_hint(dataset, results, None).children


def test_the_home_summary_names_the_rate_and_links_the_comparison(pair):
    app, ds, *_ = pair
    with app.server.test_request_context():
        from dashboard.web.pages import home

        note = find(home.summary_view(ds), "rate-note").children
        assert note[0] == "Transcription rate: constant α."
        assert "The α(t) fit of this dataset is there too" in note[1]
        assert note[2].href == f"/genes?ds={ds}"


def test_every_app_in_a_process_gets_the_rate_and_report_callbacks(tmp_path):
    """Callbacks of helper modules (rate views, run report) are registered by the page modules,
    which Dash runs once per app: each new app in the same process serves them too (a
    module-level ``@callback`` would reach only the first app to start)."""
    for name in ("a", "b", "c"):
        app = create_app(AppConfig(cache_dir=tmp_path / name, sample_path=tmp_path / "x"))
        outputs = {c["output"] for c in app.server.test_client().get("/_dash-dependencies").json}
        assert {"..gene-rate.figure...gene-models.children..", "rate-models.figure"} <= outputs
        assert "home-download.data" in outputs


def test_a_results_file_is_not_queued_for_a_fit(pair):
    """The page's Fit callback, like the API (409), refuses a results file: the queue says so."""
    app, ds, *_ = pair
    with app.server.test_request_context():
        from dashboard.web.pages import home

        message, _ = home.submit_fit(1, ds, 0, {"device": "cpu", "max_epochs": 5})
        assert "already a results file: there is nothing to fit" in str(message.children)
        assert context.current_queue().active_for(ds) == []


def test_rate_callbacks_of_a_vanished_dataset_change_nothing(pair):
    from dash.exceptions import PreventUpdate

    app = pair[0]
    with app.server.test_request_context():
        for call in (rate_views.show_rate, rate_views.show_rate_models):
            with pytest.raises(PreventUpdate):
                call("Gene001", "000000000000")


GONE = "000000000000"  # a dataset id that is not (or no longer) offered


def test_result_callbacks_of_a_vanished_dataset_leave_the_page_as_it_is(pair):
    """Every callback that reads a page's results raises PreventUpdate, rather than a server
    error, when the dataset went away while its page was open (`context.fitted`)."""
    from dash.exceptions import PreventUpdate

    app = pair[0]
    with app.server.test_request_context():
        from dashboard.web.pages import coherence, genes, heatmap, permutation, portraits, stream

        calls = [
            lambda: coherence.cdf(["a"], GONE),
            lambda: coherence.top_bottom("a", GONE),
            lambda: coherence.download(1, GONE),
            lambda: genes.show_gene("Gene001", "cell_type", GONE),
            lambda: genes.download_csv(1, GONE),
            lambda: genes.download_gene(1, "Gene001", GONE),
            lambda: heatmap.draw("permutation_score", 10, 0, 5, None, GONE),
            lambda: heatmap.open_gene({"points": [{"y": "Gene001"}]}, GONE),
            lambda: permutation.heatmap(10, GONE),
            lambda: permutation.download(1, GONE),
            lambda: portraits.draw("permutation_score", 6, 0, "cell_type", None, GONE),
            lambda: portraits.download(1, ["Gene001"], GONE),
            lambda: stream.refresh_colors([], GONE, None),
            lambda: stream.download(1, {}, GONE),
        ]
        for call in calls:
            with pytest.raises(PreventUpdate):
                call()
