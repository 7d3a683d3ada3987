"""The gene page (issue 15, item 11): the table opens best gene first and on the selected gene's
page, and a name that is not a fitted gene says why (no such gene, or the preprocessing step
that removed it).

Layouts and callbacks are called directly in a request context, as in test_app_unit; what the
browser shows is in test_browser_genes.py. The step a gene was removed at is checked on the real
pancreas subset against an independent re-computation of scVelo's shared-counts filter and
Scanpy's highly-variable-gene selection.
"""

from __future__ import annotations

from contextvars import copy_context
from pathlib import Path

import anndata as ad
import dash
import numpy as np
import pytest
import scanpy as sc
import scvelo as scv
from dash._callback import GLOBAL_CALLBACK_LIST
from dash._callback_context import context_value
from dash._utils import AttributeDict
from fake_results import make_fake_results
from layout_tree import find
from scipy import sparse

from core.preprocess import GENE_FILTER_STEPS, PREPROCESS_UNS_KEY, PreprocessConfig, preprocess
from core.simulate import simulate_branching
from dashboard.config import AppConfig
from dashboard.data import gene_filter
from dashboard.data.datasets import DatasetRegistry
from dashboard.data.results import Results, load_results
from dashboard.web import app as app_module

PAGE = 15  # rows per table page


@pytest.fixture(scope="module")
def genes(tmp_path_factory):
    """The gene page module (pages register once an app exists)."""
    cache = tmp_path_factory.mktemp("cache")
    app_module.create_app(AppConfig(cache_dir=cache, auto_fit_sample=False, sample_path=None))
    from dashboard.web.pages import genes

    return genes


def _serve(tmp_path: Path, adata: ad.AnnData):
    """Write `adata` as the app's only results file; yields (dataset id, Results) in a request
    context of that app."""
    path = tmp_path / "fit.h5ad"
    adata.write_h5ad(path)
    config = AppConfig(data=(path,), cache_dir=tmp_path / "cache", sample_path=None)
    app = app_module.create_app(config)
    with app.server.test_request_context("/"):
        yield DatasetRegistry(config).default_id(), load_results(path)


@pytest.fixture
def site(tmp_path, genes):
    """A fitted dataset without a preprocessing record (as fitted before velodash kept one)."""
    yield from _serve(tmp_path, make_fake_results(n_cells=200, n_genes=60, n_types=8, seed=3))


def _triggered(prop_id: str, func, *args):
    """Call a callback as Dash would when `prop_id` ("component.property") changed."""

    def run():
        context_value.set(AttributeDict(triggered_inputs=[{"prop_id": prop_id, "value": 1}]))
        return func(*args)

    return copy_context().run(run)


def _order(results: Results, column: str, descending: bool) -> list[str]:
    """Oracle: gene names by a var column, stable, missing values last."""
    values = results.adata.var[column].to_numpy(dtype=float)
    key = np.where(np.isnan(values), np.inf, -values if descending else values)
    return list(results.adata.var_names[np.argsort(key, kind="stable")])


def _highlighted(styles: list[dict]) -> list[str]:
    return [s["if"]["filter_query"] for s in styles if "filter_query" in s["if"]]


def test_table_opens_sorted_by_descending_permutation_score(site, genes):
    ds, results = site
    layout = genes.layout(ds=ds)
    table = find(layout, "gene-table")
    expected = _order(results, "permutation_score", descending=True)
    assert [row["gene"] for row in table.data] == expected
    assert table.sort_by == [{"column_id": "permutation_score", "direction": "desc"}]
    assert table.sort_action == "custom"
    # a bare /genes opens the best gene, on the first page, highlighted
    assert find(layout, "genes-selected").data == expected[0]
    assert table.page_current == 0
    assert _highlighted(table.style_data_conditional) == [f'{{gene}} = "{expected[0]}"']


def test_without_permutation_scores_the_table_opens_by_likelihood(genes):
    adata = make_fake_results(n_cells=100, n_genes=30, seed=4)
    del adata.var["permutation_score"], adata.varm["permutation_effect"]
    adata.var.loc[adata.var_names[[2, 9]], "fit_likelihood"] = np.nan
    results = Results(adata)
    assert genes.default_sort(results) == [{"column_id": "fit_likelihood", "direction": "desc"}]
    rows = genes.table_records(results, None, genes.default_sort(results))
    assert [r["gene"] for r in rows] == _order(results, "fit_likelihood", descending=True)
    assert [r["gene"] for r in rows[-2:]] == ["Gene002", "Gene009"]  # missing values last
    assert genes.default_gene(results) == rows[0]["gene"]


def test_a_gene_deep_in_the_list_opens_on_its_page_highlighted(site, genes):
    ds, results = site
    by_score = _order(results, "permutation_score", descending=True)
    gene = by_score[37]  # the 3rd page
    table = find(genes.layout(ds=ds, gene=gene), "gene-table")
    page = table.page_current
    assert page == 2
    assert gene in [row["gene"] for row in table.data[page * PAGE : (page + 1) * PAGE]]
    assert _highlighted(table.style_data_conditional) == [f'{{gene}} = "{gene}"']
    default = genes.default_sort(results)
    # selecting another gene (a row click) moves to its page; the rows are not resent
    other = by_score[50]
    data, page, styles, box, message = _triggered(
        "genes-selected.data", genes.update_table, None, default, other, ds
    )
    assert data is dash.no_update and page == 50 // PAGE and box is None and message is None
    assert _highlighted(styles) == [f'{{gene}} = "{other}"']
    # a new order (MSE, ascending) is sorted on the server and opens at its first page
    by_mse = [{"column_id": "fit_mse", "direction": "asc"}]
    data, page, *_ = _triggered("gene-table.sort_by", genes.update_table, None, by_mse, other, ds)
    assert [row["gene"] for row in data] == _order(results, "fit_mse", descending=False)
    assert page == 0
    # … and a gene selected in it lands on its page of that order
    gene = _order(results, "fit_mse", descending=False)[20]
    _, page, *_ = _triggered("genes-selected.data", genes.update_table, None, by_mse, gene, ds)
    assert page == 1


def test_a_gene_with_quotes_in_its_name_is_highlighted_with_another_quote(genes):
    assert _highlighted(genes.row_styles('Gene "A"')) == ["{gene} = 'Gene \"A\"'"]
    assert _highlighted(genes.row_styles("<script>window.__xss='gene'</script>")) == [
        "{gene} = \"<script>window.__xss='gene'</script>\""
    ]
    assert _highlighted(genes.row_styles("a\"b'c`d")) == []  # no quote left: no highlight


def test_searching_a_name_that_is_not_fitted_explains_instead_of_an_empty_table(site, genes):
    ds, results = site
    default = genes.default_sort(results)
    selected = results.gene_names[0]
    data, _, _, box, message = _triggered(
        "gene-search.value", genes.update_table, "Sst", default, selected, ds
    )
    assert data == [] and box == {"display": "none"}
    # results fitted before the preprocessing record: no step to name
    assert message.children == "Unknown gene 'Sst': not among the fitted genes of this dataset."
    # a typo gets the close fitted names
    *_, message = _triggered(
        "gene-search.value", genes.update_table, "gene0O5", default, selected, ds
    )
    assert "not among the fitted genes" in message.children
    assert "Did you mean Gene005" in message.children
    # part of a name lists the genes that contain it, without a message
    data, _, _, box, message = _triggered(
        "gene-search.value", genes.update_table, "ene01", default, selected, ds
    )
    assert [r["gene"] for r in data] == [g for g in _order(results, "permutation_score", True)
                                         if "ene01" in g]  # fmt: skip
    assert box is None and message is None
    # clearing the search brings the whole table back
    data, page, _, box, message = _triggered(
        "gene-search.value", genes.update_table, "", default, selected, ds
    )
    assert len(data) == results.n_genes and box is None and message is None
    assert page == _order(results, "permutation_score", True).index(selected) // PAGE


def test_a_shared_link_to_a_gene_that_is_not_fitted_says_why(site, genes):
    ds, _ = site
    title, problem, *figures, _ = genes.show_gene("Sst", "cell_type", ds)
    assert title == "Sst"
    assert problem.children == "Unknown gene 'Sst': not among the fitted genes of this dataset."
    assert all(len(f.data) == 0 for f in figures)
    # a link that writes a fitted gene in another case opens that gene (no "did you mean")
    fitted = site[1].gene_names[3]
    assert fitted != fitted.lower()
    title, problem, portrait, *_ = genes.show_gene(fitted.lower(), "cell_type", ds)
    assert (title, problem) == (fitted, None) and len(portrait.data) > 0
    # … and the page opens with it selected, so the table goes to its page and highlights it
    assert find(genes.layout(ds=ds, gene=fitted.lower()), "genes-selected").data == fitted


def test_a_new_colouring_redraws_the_phase_portrait_alone(site, genes):
    """Colouring the portrait by latent time sends that figure and the URL, not the gene's
    four other figures (the colouring is only read by `show_gene`, as State)."""
    ds, results = site
    gene = results.gene_names[2]
    portrait, search = genes.recolour_portrait("latent_time", gene.lower(), ds)
    assert portrait.layout.coloraxis.colorbar.title.text  # numeric colouring: a colour bar
    cells = [t for t in portrait.data if t.mode == "markers" and t.x is not None and len(t.x) > 1]
    drawn = np.concatenate([np.asarray(t.marker.color) for t in cells])
    assert np.allclose(np.sort(drawn), np.sort(results.latent_time.astype(np.float32)))
    assert f"gene={gene}" in search and "color_by=latent_time" in search
    # the only callback the colouring triggers writes the portrait and the URL
    triggered = [c for c in GLOBAL_CALLBACK_LIST if {"id": "gene-color-by", "property": "value"}
                 in c["inputs"]]  # fmt: skip
    outputs = {
        tuple(o.split("@")[0] for o in c["output"].strip(".").split("...")) for c in triggered
    }
    assert outputs == {("phase-portrait.figure", f"{genes.ui.URL_STATE}.data")}


def test_steps_are_core_steps():
    assert tuple(gene_filter.STEPS) == GENE_FILTER_STEPS


# -- the preprocessing record ------------------------------------------------------------------
@pytest.fixture(scope="module")
def pancreas_preprocessed(pancreas_path):
    """(raw pancreas subset, its default preprocessing)."""
    raw = ad.read_h5ad(pancreas_path)
    return raw, preprocess(raw, PreprocessConfig(compute_umap=False))


def _oracle_steps(raw: ad.AnnData, min_shared_counts: int = 20, n_top_genes: int = 2000):
    """Independent re-computation of the genes the first two steps keep: scVelo's shared-counts
    rule written out in numpy (counts of spliced + unspliced in cells that detect both), then
    Scanpy's 'seurat' HVG on log1p counts normalised by each cell's spliced size over all input
    genes (scVelo's ``use_initial_size``), scaled to the median size."""
    s, u = raw.layers["spliced"].tocsr(), raw.layers["unspliced"].tocsr()
    both = (s > 0).multiply(u > 0)
    shared = np.asarray((both.multiply(s) + both.multiply(u)).sum(0)).ravel()
    filtered = raw.var_names[shared >= min_shared_counts]
    sizes = np.asarray(s.sum(1)).ravel()
    x = ad.AnnData(sparse.diags((np.median(sizes) / sizes).astype(np.float32)) @ s)
    x.var_names = raw.var_names
    x = x[:, filtered].copy()
    sc.pp.log1p(x)
    sc.pp.highly_variable_genes(x, flavor="seurat", n_top_genes=n_top_genes)
    return filtered, x.var_names[x.var["highly_variable"].to_numpy()]


def _fit_with_record(prepared: ad.AnnData, min_shared_counts: int = 20) -> ad.AnnData:
    """Fake fit results over the genes `prepared` kept, carrying its preprocessing record."""
    adata = make_fake_results(n_cells=100, n_genes=prepared.n_vars, n_types=8, seed=5)
    adata.var_names = prepared.var_names
    adata.uns[PREPROCESS_UNS_KEY] = prepared.uns[PREPROCESS_UNS_KEY]
    adata.uns["velodash"]["params"]["min_shared_counts"] = min_shared_counts
    return adata


def test_pancreas_genes_removed_at_each_step_match_scvelo_and_scanpy(pancreas_preprocessed):
    raw, out = pancreas_preprocessed
    filtered, hvg = _oracle_steps(raw)
    dropped = out.uns[PREPROCESS_UNS_KEY]["dropped_genes"]
    assert set(dropped) == set(GENE_FILTER_STEPS)
    assert set(dropped["min_shared_counts"]) == set(raw.var_names) - set(filtered)
    assert set(dropped["highly_variable"]) == set(filtered) - set(hvg)
    assert set(dropped["velocity_genes"]) == set(hvg) - set(out.var_names)
    assert len(hvg) == 2000 and 0 < out.n_vars < 2000


@pytest.fixture
def pancreas_site(pancreas_preprocessed, tmp_path, genes):
    """The app serving fake fit results over the genes the pancreas preprocessing kept, with
    its preprocessing record."""
    yield from _serve(tmp_path, _fit_with_record(pancreas_preprocessed[1]))


def test_pancreas_messages_name_the_step_that_removed_a_gene(
    pancreas_preprocessed, pancreas_site, genes
):
    raw, out = pancreas_preprocessed
    filtered, hvg = _oracle_steps(raw)
    ds, results = pancreas_site
    removed_by = {
        "the shared-counts filter": sorted(set(raw.var_names) - set(filtered)),
        "'highly variable genes'": sorted(set(filtered) - set(hvg)),
        "veloVI's velocity-gene selection": sorted(set(hvg) - set(out.var_names)),
    }
    kept = {
        "the shared-counts filter": f"{len(filtered)} of {raw.n_vars} genes kept",
        "'highly variable genes'": f"{len(hvg)} of {len(filtered)} genes kept",
        "veloVI's velocity-gene selection": f"{out.n_vars} of {len(hvg)} genes kept",
    }
    default = genes.default_sort(results)
    for step, names in removed_by.items():
        gene = names[len(names) // 2]
        expected = f"{gene} is not among the fitted genes: it was filtered out at {step} ("
        reason = gene_filter.unfitted_reason(results, gene.lower())
        assert reason.startswith(expected) and reason.endswith(f"{kept[step]}).")
        # the search says it, in place of the table or above genes whose names contain it
        data, _, _, box, message = _triggered(
            "gene-search.value", genes.update_table, gene.upper(), default, None, ds
        )
        assert message.children == reason
        assert (box is None) == bool(data)
    assert "20 counts in cells that detect both spliced and unspliced" in gene_filter.step_detail(
        results, "min_shared_counts"
    )
    # a gene the subset never had (Sst, Neurog3 are not among its 7192 genes)
    for absent in ("Sst", "Neurog3"):
        assert absent not in raw.var_names
        assert gene_filter.unfitted_reason(results, absent).startswith(
            f"No gene named '{absent}' in this dataset."
        )
    fitted = str(out.var_names[0])
    assert f"Did you mean {fitted}" in gene_filter.unfitted_reason(results, fitted + "x")


def test_generated_data_record_partitions_the_input_genes(tmp_path):
    raw = simulate_branching(n_cells=300, n_genes=240, seed=2)
    out = preprocess(raw, PreprocessConfig(n_top_genes=120, n_pcs=10, compute_umap=False))
    record = out.uns[PREPROCESS_UNS_KEY]
    dropped = record["dropped_genes"]
    parts = [set(out.var_names), *(set(dropped[s]) for s in GENE_FILTER_STEPS)]
    assert sum(len(p) for p in parts) == raw.n_vars and set().union(*parts) == set(raw.var_names)
    left = [record[k] for k in ("n_genes_input", "n_genes_filtered", "n_genes_hvg")]
    removed = [len(dropped[s]) for s in GENE_FILTER_STEPS]
    assert [a - b for a, b in zip(left, [*left[1:], out.n_vars], strict=True)] == removed
    assert len(dropped["highly_variable"]) > 0 and len(dropped["velocity_genes"]) > 0
    # the record survives the results file
    path = tmp_path / "fit.h5ad"
    _fit_with_record(out).write_h5ad(path)
    results = load_results(path)
    gene = str(dropped["highly_variable"][0])
    assert "filtered out at 'highly variable genes'" in gene_filter.unfitted_reason(results, gene)


def test_unnormalised_data_only_drops_at_velocity_gene_selection():
    data = scv.datasets.simulation(n_obs=300, n_vars=20, random_seed=0)
    out = preprocess(data, PreprocessConfig(normalize=False, compute_umap=False))
    dropped = out.uns[PREPROCESS_UNS_KEY]["dropped_genes"]
    assert len(dropped["min_shared_counts"]) == len(dropped["highly_variable"]) == 0
    assert set(dropped["velocity_genes"]) == set(data.var_names) - set(out.var_names)
