"""dashboard.data.results: validation, memoised loading, typed accessors, graceful absences."""

from __future__ import annotations

import difflib
import json
import os

import numpy as np
import pytest
from fake_results import write_fake_results

from dashboard.data.contract import REQUIRED_SLOTS, ResultsError, validate_results
from dashboard.data.results import Results, load_results

FAKE_RESULTS = dict(n_cells=300, n_genes=40, n_types=5, seed=1)


def _without(adata, *slots):
    """A copy of ``adata`` without the given "kind/key" slots."""
    out = adata.copy()
    for slot in slots:
        kind, key = slot.split("/")
        container = getattr(out, kind)
        if kind in ("obs", "var"):
            container.drop(columns=key, inplace=True)
        else:
            del container[key]
    return out


def test_load_results_is_memoised_per_file_version(tmp_path):
    path = write_fake_results(tmp_path / "r.h5ad", n_cells=60, n_genes=5)
    first = load_results(path)
    assert load_results(str(path)) is first
    write_fake_results(path, n_cells=80, n_genes=5)
    os.utime(path, ns=(1, 1))  # a new mtime even on coarse file systems
    second = load_results(path)
    assert second is not first and second.n_cells == 80


def test_load_results_rejects_missing_and_non_h5ad_files(tmp_path):
    with pytest.raises(ResultsError, match="does not exist"):
        load_results(tmp_path / "nope.h5ad")
    bad = tmp_path / "bad.h5ad"
    bad.write_text("not hdf5")
    with pytest.raises(ResultsError, match=r"cannot read .* as an \.h5ad"):
        load_results(bad)


def test_validate_results_names_every_missing_required_slot(adata):
    validate_results(adata)
    broken = _without(adata, "layers/velocity", "var/fit_t_", "obsm/X_umap")
    with pytest.raises(ResultsError) as err:
        validate_results(broken)
    message = str(err.value)
    for slot in ("layers/velocity", "var/fit_t_", "obsm/X_umap"):
        assert slot in message
    assert "layers/Ms" not in message


def test_counts_file_is_told_to_fit_first(adata):
    counts = adata[:, :3].copy()
    counts.layers = {"spliced": counts.X, "unspliced": counts.X}
    del counts.uns["velodash"]
    with pytest.raises(ResultsError, match="velodash fit"):
        validate_results(counts)
    assert len(REQUIRED_SLOTS) > 5


def test_cell_types_follow_fit_order_and_codes_match_labels(adata, results):
    assert results.cell_types == list(adata.uns["velodash"]["cell_types"])
    labels = np.asarray(results.cell_types)[results.cell_type_codes]
    np.testing.assert_array_equal(labels, adata.obs["clusters"].astype(str).to_numpy())
    assert results.umap.dtype == np.float32 and results.umap.shape == (adata.n_obs, 2)
    assert results.velocity_umap.dtype == np.float32


def test_color_values_for_obs_and_genes(adata, results):
    assert results.obs_columns() == {
        "clusters": "categorical",
        "latent_time": "numeric",
        "intrinsic_uncertainty": "numeric",
        "extrinsic_uncertainty": "numeric",
    }
    cat = results.color_values("clusters")
    assert cat.kind == "categorical" and cat.categories == results.cell_types
    gene = adata.var_names[7]
    num = results.color_values(gene, layer="Mu")
    assert num.kind == "numeric" and num.values.dtype == np.float32
    np.testing.assert_array_equal(num.values, adata.layers["Mu"][:, 7])
    with pytest.raises(KeyError, match="neither a gene name nor an obs column"):
        results.color_values("no_such_thing")


def test_close_genes_ignore_case_and_rank_as_difflib(adata):
    adata = adata.copy()
    adata.var_names = ["Sox9", "sox2", "Pax6", "Nsox1"] + [f"G{i}" for i in range(adata.n_vars - 4)]
    r = Results(adata)
    lower = [g.lower() for g in r.gene_names]
    # the same genes as difflib's own close matches (ties in file order), in the names' spelling
    expected = difflib.get_close_matches("sox", lower, n=5, cutoff=0.6)
    assert sorted(r.close_genes("SOX")) == sorted(r.gene_names[lower.index(g)] for g in expected)
    assert r.close_genes("sox", limit=2) == ["Sox9", "sox2"]
    assert r.close_genes("Sxo9")[0] == "Sox9"  # a typo
    assert r.close_genes("zzz") == []
    assert r.gene_ignoring_case(" PAX6 ") == "Pax6" and r.gene_ignoring_case("pax") is None
    with pytest.raises(KeyError, match="Did you mean Sox9"):
        r.resolve_gene("sox")


def test_gene_table_matches_var_and_varm(adata, results):
    table = results.gene_table()
    assert len(table) == adata.n_vars and table["gene"].tolist() == list(adata.var_names)
    np.testing.assert_allclose(table["switch_time"], adata.var["fit_t_"])
    np.testing.assert_allclose(table["permutation_score"], adata.var["permutation_score"])
    for c, name in enumerate(results.cell_types):
        np.testing.assert_allclose(table[f"coherence_{name}"], adata.varm["coherence"][:, c])
    assert {"baseline_agreement", "baseline_pearson", "alpha", "fit_mse"} <= set(table.columns)


def test_gene_arrays_equal_layers_and_state_argmax(adata, results):
    j = 11
    g = results.gene_arrays(adata.var_names[j])
    np.testing.assert_array_equal(g.ms, adata.layers["Ms"][:, j])
    np.testing.assert_array_equal(g.fit_t, adata.layers["fit_t"][:, j])
    np.testing.assert_array_equal(g.state, adata.layers["state_assignment"][:, j])
    assert g.state.dtype == np.int8
    assert g.beta == pytest.approx(adata.var["fit_beta"].iloc[j])
    assert results.gene_arrays(adata.var_names[j]) is g  # memoised


def test_summary_is_json_ready_and_counts_cells(adata, results):
    summary = results.summary()
    json.dumps(summary)
    assert sum(summary["cell_types"].values()) == adata.n_obs
    assert summary["device"] == "cpu" and summary["missing"] == {}
    assert summary["timings"]["train"] == pytest.approx(14.8)


def test_skipped_analyses_degrade_gracefully(adata):
    slim = _without(
        adata,
        "var/permutation_score",
        "varm/permutation_effect",
        "varm/coherence",
        "obs/extrinsic_uncertainty",
        "layers/velocity_baseline",
        "layers/state_assignment",
    )
    r = Results(slim)
    assert not r.has("permutation") and "--skip permutation" in r.missing_reason("permutation")
    assert r.has("intrinsic") and not r.has("extrinsic")
    table = r.gene_table()
    assert "permutation_score" not in table and not any(c.startswith("coherence_") for c in table)
    g = r.gene_arrays(r.gene_names[0])
    assert g.state is None and g.baseline is None
    assert set(r.summary()["missing"]) == {
        "permutation",
        "coherence",
        "extrinsic",
        "baseline",
        "states",
    }
