"""Derived views shared across processes and restarts through diskcache (issue 16 item 3).

Two fresh interpreters open the same results file with the same view cache: the first builds the
stream geometry and the gene table, the second reads them, and is made unable to build them (the
streamline tracer and the gene-table builder raise), so a pass means the views came from the
cache. The cache stays within its size limit, a changed file gets its own views, and a cache
that cannot be read costs only the view's computation.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from fake_results import make_fake_results

from dashboard.data import view_cache
from dashboard.data.results import Results, load_results

REPO = Path(__file__).resolve().parents[1]

VIEWS = """
import sys
from pathlib import Path
from dashboard import figures
from dashboard.data import view_cache
from dashboard.data.results import load_results

cache_dir, results_path, forbid = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "forbid"
if forbid:  # a second process must not build what the first one stored
    import core.streams
    from dashboard.data import results as results_module

    def refuse(*args, **kwargs):
        raise AssertionError("built again instead of read from the shared cache")

    core.streams.streamlines = refuse
    results_module.Results._gene_table = refuse
view_cache.use(cache_dir, 64)
results = load_results(results_path)
figure = figures.embedding_figure(results, velocity="streams")
table = results.gene_table()
print(len(figure.data), len(table), round(float(table["fit_mse"].sum()), 6))
"""


@pytest.fixture(scope="module")
def results_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("views") / "fit.h5ad"
    make_fake_results(n_cells=400, n_genes=30, n_types=4, seed=5).write_h5ad(path)
    return path


def _run(cache_dir: Path, results_path: Path, mode: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(VIEWS), str(cache_dir), str(results_path), mode],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_a_second_process_reads_the_views_the_first_one_built(results_file, tmp_path):
    first = _run(tmp_path / "views", results_file, "build")
    assert _run(tmp_path / "views", results_file, "forbid") == first
    # the guard works: without the shared cache the second process would have to build them
    with pytest.raises(AssertionError, match="built again"):
        _run(tmp_path / "other", results_file, "forbid")


def test_the_cache_stays_within_its_limit(tmp_path):
    cache = view_cache.use(tmp_path / "small", 1)  # 1 MB
    try:
        for i in range(40):
            view_cache.get_or_compute("content", ("blob", i), lambda: np.ones(2**15))  # 256 KB
        assert cache.volume() <= 1.5 * 2**20  # diskcache culls on set; a little slack for SQLite
        assert len(cache) < 40
    finally:
        view_cache.use(tmp_path / "after", 64)


def test_views_are_keyed_by_content_and_code(results_file, tmp_path):
    results = load_results(results_file)
    assert results.content_key is not None
    in_memory = ad.read_h5ad(results_file)
    assert Results(in_memory).content_key is None  # in memory: nothing to share
    copy = tmp_path / "copy.h5ad"
    copy.write_bytes(results_file.read_bytes())
    assert load_results(copy).content_key == results.content_key  # same content, other path
    other = make_fake_results(n_cells=400, n_genes=30, n_types=4, seed=6)
    other.write_h5ad(tmp_path / "other.h5ad")
    assert load_results(tmp_path / "other.h5ad").content_key != results.content_key
    # same provenance, other embedding: other views
    edited = in_memory.copy()
    edited.obsm["X_umap"] = edited.obsm["X_umap"][::-1].copy()
    edited.write_h5ad(tmp_path / "edited.h5ad")
    assert load_results(tmp_path / "edited.h5ad").content_key != results.content_key
    key = view_cache.entry_key(results.content_key, ("gene_table",))
    assert key != view_cache.entry_key(results.content_key, ("streams", "velovi", 1.0, 0.5))


def test_an_unreadable_cache_builds_the_view(tmp_path, caplog):
    cache = view_cache.use(tmp_path / "broken", 64)
    try:
        name = view_cache.entry_key("content", ("view",))
        cache.set(name, b"x")
        # an entry whose pickle no longer loads (e.g. written by other library versions)
        with cache.transact():
            cache._sql("UPDATE Cache SET value = ?, mode = 4 WHERE key = ?", (b"garbage", name))
        with caplog.at_level("WARNING", logger="dashboard.data.view_cache"):
            assert view_cache.get_or_compute("content", ("view",), lambda: 42) == 42
        assert "cannot read" in caplog.text
        assert view_cache.get_or_compute("content", ("view",), lambda: 0) == 42  # stored again
    finally:
        view_cache.use(tmp_path / "after", 64)


def test_a_finished_fit_leaves_its_default_views_for_the_first_visit(tiny_counts, tmp_path):
    """A fit job (real fit interpreter) builds the default views into cache_dir/views after
    writing its results: a dashboard process then draws the velocity page and the gene table
    without building either (the same guard as above)."""
    from fake_results import QUICK_FIT

    from dashboard.jobs.runner import run_fit

    output = tmp_path / "cache" / "results" / "fit.h5ad"
    assert run_fit(str(tiny_counts), str(output), QUICK_FIT)["status"] == "done"
    assert (tmp_path / "cache" / view_cache.VIEWS).is_dir()
    _run(tmp_path / "cache" / view_cache.VIEWS, output, "forbid")


def test_warming_reports_each_view_and_never_fails_the_fit(results_file, tmp_path):
    from dashboard.data.warm import warm_results_file

    placed = tmp_path / "cache" / "results" / "fit.h5ad"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(results_file.read_bytes())
    try:
        seconds = warm_results_file(placed)
        assert {"gene table", "veloVI streams", "velocity moments"} <= set(seconds)
        broken = placed.with_name("broken.h5ad")
        broken.write_bytes(b"not an h5ad file")
        assert warm_results_file(broken) is None
    finally:
        view_cache.use(tmp_path / "after", 64)


KEY_AGAIN = """
import sys
from pathlib import Path
import core.io
from dashboard.data import datasets

def refuse(path):
    raise AssertionError("hashed the file again")

datasets.file_fingerprint = refuse
print(datasets.fingerprint(Path(sys.argv[1])))
"""


def test_the_content_hash_is_kept_on_the_file_for_other_processes(results_file, tmp_path):
    """A results file's sha256 is computed once per machine (seconds at atlas scale): other
    processes read it from the file's extended attribute; a rewrite (new mtime) hashes again."""
    from dashboard.data.datasets import FINGERPRINT_XATTR, fingerprint

    path = tmp_path / "fit.h5ad"
    path.write_bytes(results_file.read_bytes())
    digest = fingerprint(path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert os.getxattr(path, FINGERPRINT_XATTR).decode().endswith(digest)

    def key_in_fresh_process() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(KEY_AGAIN), str(path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert key_in_fresh_process().stdout.strip() == digest
    path.write_bytes(path.read_bytes() + b"\0")  # rewritten: size and mtime change
    assert "hashed the file again" in key_in_fresh_process().stderr
