"""Results that land stage by stage (issue 16, item 4): a real fit of a small simulation lands
its posterior and graph first, then each late stage atomically; the landings read together
equal the final file; a late stage that fails keeps the others; the pages' notices say which
stage is computing, stopped or failed, with the time left."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fake_results import QUICK_FIT

from core.params import FitParams
from core.pipeline import fit_file
from core.posterior import SPILLED_LAYERS
from core.progress import seconds_left
from core.stage_files import BASE, STATUS_FILE, failed_stages, is_complete, stages_dir
from core.staged_results import SPILL_DIR, StageFailed
from dashboard.data.results import Results, load_results
from dashboard.data.stages import StageReport, stage_report
from dashboard.data.store import ResultsStore

#: Every late stage runs, with few samples so the fit stays short.
STAGED = {**QUICK_FIT, "skip": [], "n_samples": 5, "n_samples_intrinsic": 10}
STAGED |= {"n_samples_extrinsic": 5, "permutation_cells": 100}
LATE = ["uncertainty", "coherence", "permutation", "baseline"]


class Snapshots:
    """Progress callback that copies the stages folder when each stage starts."""

    def __init__(self, output: Path, keep: Path) -> None:
        self.output, self.keep, self.seen, self.spilled = output, keep, {}, {}
        self.stage = None

    def __call__(self, event) -> None:
        if event.stage == self.stage:
            return
        self.stage = event.stage
        folder = stages_dir(self.output)
        files = sorted(p.name for p in folder.glob("*.h5ad")) if folder.is_dir() else None
        self.seen[event.stage] = files
        self.spilled[event.stage] = sorted(p.stem for p in (folder / SPILL_DIR).glob("*"))
        if event.stage == "write" and folder.is_dir():
            shutil.copytree(folder, self.keep)


@pytest.fixture(scope="module")
def staged(tiny_counts, tmp_path_factory):
    """(output, snapshots, copy of the stages folder just before the final write)."""
    folder = tmp_path_factory.mktemp("staged")
    output = folder / "out.h5ad"
    snapshots = Snapshots(output, folder / "landed")
    fit_file(tiny_counts, output, FitParams.from_dict(STAGED), progress=snapshots)
    return output, snapshots, folder / "landed"


def test_stages_land_in_order_and_the_folder_goes_at_the_end(staged):
    output, snapshots, _ = staged
    seen = snapshots.seen
    assert seen["train"] == [] and seen["graph"] == []  # nothing lands before the graph
    # the posterior's layers wait on disk for the base landing, which takes them along
    assert snapshots.spilled["graph"] == sorted(SPILLED_LAYERS)
    assert snapshots.spilled["uncertainty"] == []
    assert seen["uncertainty"] == ["base.h5ad"]
    assert seen["coherence"] == ["base.h5ad", "uncertainty.h5ad"]
    assert seen["permutation"] == ["base.h5ad", "coherence.h5ad", "uncertainty.h5ad"]
    assert set(seen["write"]) == {f"{s}.h5ad" for s in (BASE, *LATE)}
    assert output.is_file() and not stages_dir(output).exists()
    assert is_complete(output)


def test_landed_stages_read_together_equal_the_final_file(staged):
    output, _, landed = staged
    merged = ResultsStore(landed / "base.h5ad", [landed / f"{s}.h5ad" for s in LATE])
    final = ResultsStore(output)
    a, b = merged.adata, final.adata
    assert sorted(a.obs.columns) == sorted(b.obs.columns)
    assert sorted(a.var.columns) == sorted(b.var.columns)
    for column in b.obs.columns:
        assert np.array_equal(a.obs[column].to_numpy(), b.obs[column].to_numpy()), column
    for column in b.var.columns:
        assert np.array_equal(a.var[column].to_numpy(), b.var[column].to_numpy()), column
    for kind in ("obsm", "varm"):
        left, right = getattr(a, kind), getattr(b, kind)
        assert sorted(left.keys()) == sorted(right.keys()), kind
        for key in right:
            assert np.array_equal(np.asarray(left[key]), np.asarray(right[key])), key
    assert sorted(merged.layers) == sorted(final.layers)
    for key in final.layers:
        assert np.array_equal(merged.columns(key, slice(0, 7)), final.columns(key, slice(0, 7)))
    assert sorted(merged.uns_matrices) == sorted(final.uns_matrices)
    graph = merged.uns_matrix("velocity_baseline_graph")
    assert (graph != final.uns_matrix("velocity_baseline_graph")).nnz == 0
    velodash_keys = set(b.uns["velodash"]) - {"timings"}
    assert velodash_keys <= set(a.uns["velodash"])
    for key, value in b.uns["velodash"]["permutation"].items():
        assert np.array_equal(a.uns["velodash"]["permutation"][key], value), key


def test_the_final_file_holds_what_an_in_memory_fit_computes(staged, tiny_counts):
    """Once the base lands the fit drops the layers no late stage reads
    (`core.analyses.release_landed_layers`): the final file must still hold every layer, equal
    to `core.pipeline.run` of the same counts, which keeps the whole fit in memory."""
    from core.io import read_dataset
    from core.pipeline import run
    from core.results_io import read_results

    output, _, _ = staged
    whole = run(read_dataset(tiny_counts), FitParams.from_dict(STAGED))
    final = ResultsStore(output)
    dropped = set(whole.layers) - {"Ms", "Mu", "velocity"}
    assert {"fit_s", "state_assignment", "velocity_var"} <= dropped
    assert set(final.layers) | {"Ms_raw", "Mu_raw"} == set(whole.layers)  # raw: rebuilt on read
    # the file leaves out the layers its other slots rebuild; the store rebuilds them, and
    # below they must equal the in-memory fit's own layers
    derived = {key for key, info in final.layers.items() if info.derived}
    assert derived == {"velocity_baseline", "true_velocity"}
    for key in sorted(final.layers):
        expected = whole.layers[key]
        expected = expected.toarray() if hasattr(expected, "toarray") else expected
        got = final.columns(key, slice(0, whole.n_vars))
        got = got.toarray() if hasattr(got, "toarray") else got
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=key)
    # the fit dropped the raw moments once preprocessed; the file's counts rebuild them exactly,
    # and X (left out of the file) is the in-memory fit's, bit for bit
    restored = read_results(output)
    for raw in ("Ms_raw", "Mu_raw"):
        np.testing.assert_array_equal(restored.layers[raw], whole.layers[raw], err_msg=raw)
    assert (restored.X != whole.X).nnz == 0 and restored.X.dtype == whole.X.dtype


def _landed_copy(landed: Path, tmp_path: Path, stages: list[str], status: dict) -> Path:
    """A stages folder holding the base and ``stages`` files and ``status``."""
    folder = tmp_path / "out.h5ad.stages"
    folder.mkdir()
    for stage in (BASE, *stages):
        shutil.copy(landed / f"{stage}.h5ad", folder)
    status = {**json.loads((landed / STATUS_FILE).read_text()), "heartbeat": time.time(), **status}
    (folder / STATUS_FILE).write_text(json.dumps(status))
    return folder / "base.h5ad"


def test_a_page_says_which_stage_is_computing_and_about_how_long(staged, tmp_path):
    _, _, landed = staged
    now = 1000.0
    progress = {"stage": "uncertainty", "fraction": 0.85, "started": 0.0}
    progress |= {"stage_started": now - 50.0, "stage_fraction": 0.78}
    base = _landed_copy(landed, tmp_path, [], {"pid": os.getpid(), "progress": progress})
    results = load_results(base)
    assert results.has("streams") and not results.has("intrinsic")
    reason = results.missing_reason("intrinsic")
    assert reason.startswith("Computing: stage 2 of 5 (uncertainty), about"), reason
    assert "stage 3 of 5 (velocity coherence)" in results.missing_reason("coherence")
    # the closed form: 50 s for 0.07 of the bar so far, 0.07 to go; per share 950 s / 0.78
    left, bound = seconds_left(progress, 0.92, now)
    assert left == pytest.approx((0.92 - 0.85) * 50.0 / (0.85 - 0.78)) and not bound
    later, _ = seconds_left(progress, 0.99, now)  # the baseline lands after three more shares
    assert later == pytest.approx(left + (0.99 - 0.92) * 950.0 / 0.78)
    # a stage lands: the next open reads it
    shutil.copy(landed / "uncertainty.h5ad", base.parent)
    assert load_results(base).has("intrinsic") and load_results(base) is not results


def test_a_fit_that_died_is_shown_as_stopped(staged, tmp_path):
    _, _, landed = staged
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    base = _landed_copy(landed, tmp_path, ["uncertainty"], {"pid": int(dead.stdout)})
    report = stage_report(base)
    assert report.state("uncertainty") == "landed" and report.state("coherence") == "stopped"
    assert "fit stopped before its velocity coherence stage" in load_results(base).missing_reason(
        "coherence"
    )


def test_late_stages_that_fail_keep_the_others_and_are_fitted_again(
    tiny_counts, tmp_path, monkeypatch
):
    import core.analyses
    from core.baseline import add_baseline_to_adata
    from dashboard.config import AppConfig
    from dashboard.data.datasets import DatasetRegistry
    from dashboard.jobs.queue import JobQueue

    def broken_coherence(*_args, **_kwargs):
        raise RuntimeError("coherence broke (fault injected by the test)")

    def broken_baseline(result, *_args, **_kwargs):  # fails after writing part of its slots
        add_baseline_to_adata(result)
        raise MemoryError("baseline ran out of memory (fault injected by the test)")

    monkeypatch.setattr(core.analyses, "_coherence_stage", broken_coherence)
    monkeypatch.setattr(core.analyses, "_baseline_stage", broken_baseline)
    output = tmp_path / "out.h5ad"
    params = FitParams.from_dict(STAGED)
    with pytest.raises(StageFailed, match="the coherence, baseline stages failed") as raised:
        fit_file(tiny_counts, output, params)
    assert raised.value.path == output
    assert set(failed_stages(output)) == {"coherence", "baseline"} and not is_complete(output)
    results = Results(ResultsStore(output), path=output)
    assert results.has("intrinsic") and results.has("permutation")
    assert not results.has("coherence") and not results.has("baseline")
    assert "velocity_baseline" not in results.store.layers  # the half-written stage was dropped
    assert "baseline_pearson" not in results.adata.var
    assert results.missing_reason("coherence").startswith(
        "The velocity coherence stage failed (RuntimeError: coherence broke"
    )
    assert results.missing_reason("baseline").startswith("The scVelo baseline stage failed")
    assert not stages_dir(output).exists()

    # asking for the same fit again queues it instead of reusing the file
    config = AppConfig(data=(tiny_counts,), cache_dir=tmp_path / "cache", sample_path=None)
    registry = DatasetRegistry(config)
    dataset = registry.get(registry.default_id())
    target = registry.results_path_for_fit(dataset, params)
    target.parent.mkdir(parents=True)
    shutil.copy(output, target)
    job, new = JobQueue(config).submit(dataset, params, "local")
    assert new and job.state == "queued"


def test_report_states():
    report = StageReport(planned=(BASE, "uncertainty", "baseline"), landed=(BASE,), alive=True)
    assert [report.state(s) for s in ("uncertainty", "baseline")] == ["computing"] * 2
    assert report.state("coherence") == "unplanned" and report.reason("coherence") is None
    assert "time left not known yet" in report.reason("uncertainty")


def test_the_final_file_extends_the_base_landing_as_a_full_write_would(tmp_path):
    """`extend_results` (the final file: the base landing's bytes plus the late slots) against
    `write_results` of the whole AnnData, slot for slot."""
    import anndata as ad
    from fake_results import make_fake_results

    from core.results_io import extend_results, write_results
    from core.staged_results import added_since, slot_keys

    full = make_fake_results(n_cells=300, n_genes=40)
    base = full.copy()
    late = {"obs": ["intrinsic_uncertainty"], "var": ["permutation_score"]}
    base.obs = base.obs.drop(columns=late["obs"])
    base.var = base.var.drop(columns=late["var"])
    del base.layers["velocity_coherence"], base.varm["coherence"], base.obsm["velocity_umap"]
    full.uns["velocity_extra_graph"] = full.obsp["distances"]
    full.uns["velodash"]["stages"] = {"failed": {"baseline": "MemoryError: x"}}
    write_results(base, tmp_path / "base.h5ad")
    added = added_since(full, slot_keys(base))
    extend_results(tmp_path / "base.h5ad", full, added, tmp_path / "extended.h5ad")
    write_results(full, tmp_path / "whole.h5ad")
    a, b = (ad.read_h5ad(tmp_path / f"{n}.h5ad") for n in ("extended", "whole"))
    assert list(a.obs.columns) == list(b.obs.columns) and a.obs.equals(b.obs)
    assert list(a.var.columns) == list(b.var.columns) and a.var.equals(b.var)
    for kind in ("obsm", "varm", "layers", "obsp"):
        left, right = getattr(a, kind), getattr(b, kind)
        assert sorted(left.keys()) == sorted(right.keys()), kind
        for key in right:
            l_value, r_value = left[key], right[key]
            if hasattr(r_value, "toarray"):
                l_value, r_value = l_value.toarray(), r_value.toarray()
            assert np.array_equal(np.asarray(l_value), np.asarray(r_value)), (kind, key)
    assert sorted(a.uns) == sorted(b.uns)
    assert (a.uns["velocity_extra_graph"] != b.uns["velocity_extra_graph"]).nnz == 0
    assert dict(a.uns["velodash"]["stages"]["failed"]) == {"baseline": "MemoryError: x"}
    assert sorted(a.uns["velodash"]) == sorted(b.uns["velodash"])
    chunks = ResultsStore(tmp_path / "extended.h5ad").layers["velocity_coherence"].chunks
    assert chunks == ResultsStore(tmp_path / "whole.h5ad").layers["velocity_coherence"].chunks


def test_the_cli_reports_a_failed_stage_after_writing_the_others(
    tiny_counts, tmp_path, monkeypatch, capsys
):
    import core.analyses
    from dashboard.cli import STAGE_FAILED_STATUS, main

    def broken(*_args, **_kwargs):
        raise RuntimeError("coherence broke (fault injected by the test)")

    monkeypatch.setattr(core.analyses, "_coherence_stage", broken)
    out = tmp_path / "out.h5ad"
    skips = [a for s in ("intrinsic", "extrinsic", "baseline") for a in ("--skip", s)]
    code = main(
        ["fit", str(tiny_counts), "--out", str(out), "--max-epochs", "5", "--quiet", *skips]
    )
    captured = capsys.readouterr()
    assert code == STAGE_FAILED_STATUS and out.is_file()
    assert "velodash: 200 cells × " in captured.out and "results: " in captured.out  # summary
    assert "the coherence stage failed (RuntimeError: coherence broke" in captured.err
    assert "Traceback" not in captured.err
