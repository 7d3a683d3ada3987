"""The results layout (core.results_io) and the lazy reader (dashboard.data.store): files are
chunked by gene, round-trip bit for bit, open without loading layers, answer every view as the
same results in memory do, and old files either open or name the command that converts them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from fake_results import make_fake_results

from core import results_io
from core.derived_layers import STATE_NAMES
from core.preprocess import PreprocessConfig, preprocess
from core.results_io import (
    FAST_LAYERS,
    genes_per_chunk,
    read_results,
    write_results,
)
from core.simulate import simulate_branching
from dashboard.cli import main as cli_main
from dashboard.data import store
from dashboard.data.contract import ResultsError
from dashboard.data.results import Results, load_results
from dashboard.data.selections import drivers_table
from dashboard.figures.ground_truth import ground_truth_metrics, uncertainty_calibration_summary
from dashboard.figures.heatmap import heatmap_data

REPO = Path(__file__).resolve().parents[1]
#: One thread everywhere: BLAS and malloc reserve per-thread memory that the limit would count.
SINGLE_THREADED = {"MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _dense(x) -> np.ndarray:
    return x.toarray() if sp.issparse(x) else np.asarray(x)


@pytest.fixture(scope="module")
def preprocessed() -> ad.AnnData:
    """Real preprocessing output (counts, connectivities, raw and scaled moments)."""
    raw = simulate_branching(n_cells=300, n_genes=60, seed=2)
    return preprocess(raw, PreprocessConfig(n_neighbors=15, n_pcs=10, min_shared_counts=5))


def test_layers_are_chunked_by_gene_and_raw_moments_rebuilt_bit_for_bit(preprocessed, tmp_path):
    path = write_results(preprocessed, tmp_path / "r.h5ad")
    n_cells = preprocessed.n_obs
    with h5py.File(path, "r") as f:
        stored = set(f["layers"])
        for key in ("Ms", "Mu"):
            ds = f["layers"][key]
            assert ds.chunks == (n_cells, min(preprocessed.n_vars, genes_per_chunk(n_cells)))
            assert ds.compression == "gzip" and ds.shuffle
    assert {"Ms_raw", "Mu_raw"}.isdisjoint(stored), "exactly rebuildable: not stored"
    back = read_results(path)
    assert set(back.layers) == set(preprocessed.layers)
    for key, values in preprocessed.layers.items():
        assert np.array_equal(_dense(back.layers[key]), _dense(values)), key
    # anndata alone reads everything else (what scVelo and CellRank open)
    plain = ad.read_h5ad(path)
    assert "Ms" in plain.layers and "connectivities" in plain.obsp


def test_raw_moments_are_kept_when_they_do_not_rebuild_exactly(preprocessed, tmp_path):
    """A file whose connectivities changed after the moments (as sc.tl.umap did, scanpy#4028)
    keeps Ms_raw/Mu_raw: nothing is dropped that cannot be rebuilt bit for bit."""
    changed = preprocessed.copy()
    graph = changed.obsp["connectivities"].tocsr(copy=True)
    graph.data[graph.data < np.quantile(graph.data, 0.05)] = 0.0
    changed.obsp["connectivities"] = graph
    path = write_results(changed, tmp_path / "r.h5ad")
    with h5py.File(path, "r") as f:
        assert {"Ms_raw", "Mu_raw"} <= set(f["layers"])
    assert np.array_equal(read_results(path).layers["Ms_raw"], changed.layers["Ms_raw"])


@pytest.fixture(scope="module")
def fake() -> ad.AnnData:
    adata = make_fake_results(n_cells=600, n_genes=70, n_types=4, seed=3, planted_driver="Drv")
    rng = np.random.default_rng(0)
    adata.obs["true_t"] = adata.obs["latent_time"].to_numpy() + rng.normal(0, 0.05, adata.n_obs)
    noise = rng.normal(0, 0.2, adata.shape).astype(np.float32)
    adata.layers["true_velocity"] = adata.layers["velocity"] + noise
    return adata


@pytest.fixture
def lazy(fake, tmp_path, monkeypatch) -> Results:
    monkeypatch.setattr(results_io, "CHUNK_BYTES", 600 * 4 * 4)  # chunks of 4 genes
    monkeypatch.setattr(store, "BLOCK_BYTES", 600 * 4 * 9)  # blocks of 2 chunks: many blocks
    return load_results(write_results(fake, tmp_path / "fake.h5ad"))


def test_the_lazy_file_holds_no_layer_and_answers_as_the_results_in_memory(fake, lazy):
    eager = Results(fake)
    assert len(lazy.adata.layers) == 0 and lazy.adata.X is None
    with h5py.File(lazy.path, "r") as f:
        assert all(f["layers"][k].compression is None for k in FAST_LAYERS)
        assert f["layers"]["fit_t"].compression == "gzip"
    assert set(lazy.store.layers) == set(fake.layers)
    for gene in ("Drv", fake.var_names[0], fake.var_names[33]):
        a, b = lazy.gene_arrays(gene), eager.gene_arrays(gene)
        for field in ("ms", "mu", "velocity", "fit_t", "fit_s", "fit_u", "velocity_var", "state"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), (gene, field)
        assert np.array_equal(lazy.color_values(gene).values, eager.color_values(gene).values)
    idx = [5, 2, 2, 60]  # any order, repeats
    assert np.array_equal(lazy.layer_columns("Ms", idx), fake.layers["Ms"][:, idx])
    blocks = list(lazy.layer_blocks("velocity", "fit_t"))
    assert len(blocks) > 1
    assert np.array_equal(np.hstack([v for _, (v, _) in blocks]), fake.layers["velocity"])
    mask = np.zeros(fake.n_obs, dtype=bool)
    mask[::3] = True
    a, b = drivers_table(lazy, mask), drivers_table(eager, mask)
    assert list(a["gene"]) == list(b["gene"])
    # float32 block sums (BLAS) round differently by block width: t agrees to ~1e-5
    np.testing.assert_allclose(a["t_velocity"], b["t_velocity"], rtol=1e-4, atol=1e-4)
    genes = list(fake.var_names[:12])
    np.testing.assert_array_equal(heatmap_data(lazy, genes).z, heatmap_data(eager, genes).z)
    for key, values in ground_truth_metrics(eager).items():
        np.testing.assert_allclose(ground_truth_metrics(lazy)[key], values, rtol=1e-12)
    assert uncertainty_calibration_summary(lazy) == uncertainty_calibration_summary(eager)
    assert lazy.obsp("distances").shape == (fake.n_obs, fake.n_obs)


def test_derived_layers_are_left_out_and_served_as_the_stored_layers(fake, tmp_path):
    """A steady-state baseline (Mu − γ·Ms) and, in a file of an older version, the four state
    planes: the file leaves the baseline out, the store lists both derived layers and answers
    a gene as the stored layer would, bit for bit; one bit off and the layer is kept."""
    rng = np.random.default_rng(4)
    old = fake.copy()
    del old.layers["state_assignment"]
    planes = rng.dirichlet(np.ones(4), size=old.shape).astype(np.float32)  # (N, G, 4)
    for k, name in enumerate(STATE_NAMES):
        old.layers[f"state_{name}"] = planes[..., k]
    gamma = rng.uniform(0.2, 2.0, old.n_vars).astype(np.float32)
    old.var["baseline_gamma"] = gamma
    old.uns["velodash"] = {**old.uns.get("velodash", {}), "baseline": {"mode": "steady_state"}}
    baseline = np.asarray(old.layers["Mu"] - gamma * old.layers["Ms"], dtype=np.float32)
    old.layers["velocity_baseline"] = baseline
    path = write_results(old, tmp_path / "old.h5ad")
    with h5py.File(path, "r") as f:
        assert "velocity_baseline" not in f["layers"] and "state_induction" in f["layers"]
    results = load_results(path)
    assert results.store.layers["velocity_baseline"].derived
    assert results.store.layers["state_assignment"].derived and results.has("states")
    for j in (0, 17, old.n_vars - 1):
        np.testing.assert_array_equal(results.store.column("velocity_baseline", j), baseline[:, j])
        state = results.gene_arrays(old.var_names[j]).state
        np.testing.assert_array_equal(state, planes[:, j].argmax(-1))
    np.testing.assert_array_equal(read_results(path).layers["velocity_baseline"], baseline)
    off = old.copy()
    off.layers["velocity_baseline"][3, 5] = np.nextafter(baseline[3, 5], np.float32(np.inf))
    with h5py.File(write_results(off, tmp_path / "off.h5ad"), "r") as f:
        assert "velocity_baseline" in f["layers"]


def test_drivers_streamed_by_block_match_the_whole_matrix_oracle(fake, lazy):
    """The blocked Welch test equals core.selection's whole-matrix one (independent path)."""
    from core.selection import velocity_drivers

    mask = fake.obs["clusters"].astype(str).str.startswith("Alpha").to_numpy()
    ours = drivers_table(lazy, mask).set_index("gene")
    oracle = velocity_drivers(fake.layers["velocity"], mask, fake.layers["velocity_coherence"])
    oracle.index = fake.var_names[oracle.index]
    np.testing.assert_allclose(
        ours.loc[oracle.index, "t_coherence"], oracle["t_coherence"], rtol=1e-4, atol=1e-4
    )
    assert ours.index[0] == "Drv" == oracle.index[0]


def test_old_unchunked_files_open_or_name_the_convert_command(fake, tmp_path, monkeypatch):
    old = tmp_path / "old.h5ad"
    fake.write_h5ad(old)  # how velodash wrote results before: layers stored whole
    small = load_results(old)
    assert np.array_equal(
        small.gene_arrays("Drv").velocity, fake[:, "Drv"].layers["velocity"][:, 0]
    )
    monkeypatch.setattr(store, "CONTIGUOUS_LIMIT_BYTES", 1000)
    big = tmp_path / "big.h5ad"
    fake.write_h5ad(big)
    with pytest.raises(ResultsError, match=r"velodash convert .*big\.h5ad"):
        load_results(big)
    assert cli_main(["convert", str(big)]) == 0
    converted = load_results(big)
    assert np.array_equal(converted.gene_arrays("Drv").ms, small.gene_arrays("Drv").ms)
    with h5py.File(big, "r") as f:
        assert f["layers"]["Ms"].chunks is not None


def test_convert_refuses_a_counts_file(tmp_path, capsys):
    counts = tmp_path / "counts.h5ad"
    simulate_branching(n_cells=40, n_genes=10, seed=0).write_h5ad(counts)
    assert cli_main(["convert", str(counts)]) == 2
    assert "not a velodash results file" in capsys.readouterr().err


def test_every_view_is_drawn_under_a_memory_limit_smaller_than_the_layers(tmp_path):
    """A fresh process, its data segment capped at its size after start-up plus 96 MB, opens a
    results file whose layers hold 11 × 16 MB (and a 4 MB state assignment) and draws every
    page's figures, selection statistics included; reading the file whole, as the dashboard
    did, runs out of memory."""
    adata = make_fake_results(n_cells=4000, n_genes=1000, n_types=5, seed=1)
    layer_bytes = sum(v.nbytes for v in adata.layers.values())
    assert layer_bytes > 175e6
    path = write_results(adata, tmp_path / "big.h5ad")
    del adata
    script = textwrap.dedent(
        f"""
        import resource, numpy as np
        from dashboard.data import store
        store.BLOCK_BYTES = 4 << 20
        from dashboard.data.results import load_results
        from dashboard.data.selections import summarise
        from dashboard.figures import coherence, embedding, genes, heatmap, permutation
        from dashboard.figures import portraits, uncertainty

        def vm_data():
            for line in open("/proc/self/status"):
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024

        # numpy's and scipy's OpenBLAS allocate their buffers on first use: before the limit
        # (scipy 1.17's Cholesky, in the permutation density's KDE, spins when its first
        # allocation is refused)
        from scipy import linalg
        from scipy.linalg import blas
        np.ones((64, 64), np.float32) @ np.ones((64, 64), np.float32)
        blas.sgemm(1.0, np.ones((64, 64), np.float32), np.ones((64, 64), np.float32))
        linalg.cholesky(np.eye(2))
        limit = vm_data() + (96 << 20)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        r = load_results({str(path)!r})
        gene = r.gene_names[7]
        top = r.gene_names[:40]
        figures = [
            embedding.embedding_figure(r),
            embedding.embedding_figure(r, color=gene),
            genes.phase_portrait_figure(r, gene, color_by="state"),
            genes.gene_over_time_figure(r, gene),
            genes.permutation_effect_figure(r, gene),
            genes.baseline_agreement_figure(r, gene),
            portraits.portrait_grid_figure(r, top[:12]),
            heatmap.heatmap_figure(r, top),
            coherence.coherence_cdf_figure(r),
            permutation.permutation_density_figure(r),
            permutation.permutation_heatmap_figure(r),
            uncertainty.uncertainty_figures(r),
            r.gene_table(),
        ]
        mask = np.zeros(r.n_cells, dtype=bool)
        mask[: r.n_cells // 3] = True
        summary = summarise(r, mask)
        print("OK", summary.n_selected, len(summary.drivers), vm_data() - limit)
        """
    )

    def run(code: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={"PATH": "/usr/bin:/bin", **SINGLE_THREADED},
            timeout=300,
        )

    lazy = run(script)
    assert lazy.returncode == 0 and "OK" in lazy.stdout, lazy.stderr[-3000:]
    # the same process reading the file whole (what the dashboard did) runs out of memory
    eager = run(script.replace("r = load_results(", "import anndata; anndata.read_h5ad("))
    assert eager.returncode != 0 and "MemoryError" in eager.stderr
