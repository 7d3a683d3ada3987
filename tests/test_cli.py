"""The `velodash` command: exit codes, one-line errors, the fit summary."""

from __future__ import annotations

import anndata
import numpy as np
import pytest

from core.simulate import simulate_branching
from dashboard.cli import main


def _one_line_error(capsys) -> str:
    """The single error line on stderr (stage progress lines may precede it)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if not line.startswith("[")]
    assert len(errors) == 1, err
    assert errors[0].startswith("velodash: error: ")
    return errors[0]


def test_missing_file(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "nope.h5ad")]) == 2
    assert "nope.h5ad" in _one_line_error(capsys)


def test_not_an_anndata_file(tmp_path, capsys):
    path = tmp_path / "notes.h5ad"
    path.write_text("hello")
    assert main(["fit", str(path)]) == 2
    _one_line_error(capsys)


def test_wrong_suffix(tmp_path, capsys):
    path = tmp_path / "counts.csv"
    path.write_text("a,b\n1,2\n")
    assert main(["fit", str(path)]) == 2
    assert ".h5ad" in _one_line_error(capsys)


def test_missing_unspliced_layer_names_the_layers_present(tmp_path, capsys):
    adata = simulate_branching(n_cells=100, n_genes=20, seed=0)
    del adata.layers["unspliced"]
    path = tmp_path / "nounspliced.h5ad"
    adata.write_h5ad(path)
    assert main(["fit", str(path)]) == 2
    line = _one_line_error(capsys)
    assert "unspliced" in line and "spliced" in line


def test_negative_counts(tmp_path, capsys):
    adata = simulate_branching(n_cells=100, n_genes=20, seed=0)
    spliced = adata.layers["spliced"].toarray()
    spliced[0, 0] = -1
    adata.layers["spliced"] = spliced
    path = tmp_path / "negative.h5ad"
    adata.write_h5ad(path)
    assert main(["fit", str(path)]) == 2
    assert "negative" in _one_line_error(capsys).lower()


def test_too_few_cells(tmp_path, capsys):
    path = tmp_path / "tiny.h5ad"
    simulate_branching(n_cells=20, n_genes=40, seed=0).write_h5ad(path)
    assert main(["fit", str(path), "--no-normalize"]) == 2
    assert "cells" in _one_line_error(capsys)


def test_simulate_then_fit_prints_a_summary(tmp_path, capsys):
    raw = tmp_path / "sim.h5ad"
    assert main(["simulate", str(raw), "--n-cells", "300", "--n-genes", "60", "--seed", "1"]) == 0
    out = tmp_path / "fit.h5ad"
    argv = ["fit", str(raw), "--out", str(out), "--max-epochs", "4", "--n-samples", "3"]
    argv += ["--n-top-genes", "100", "--skip", "permutation", "--skip", "baseline", "--quiet"]
    assert main(argv) == 0
    summary = capsys.readouterr().out
    assert "300 cells" in summary and str(out) in summary
    result = anndata.read_h5ad(out)
    assert result.uns["velodash"]["params"]["skip"].tolist() == ["permutation", "baseline"]
    assert np.isfinite(result.layers["velocity"]).all()


def test_unknown_skip_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", str(tmp_path / "x.h5ad"), "--skip", "everything"])
    assert exit_info.value.code == 2


def test_out_of_memory_gets_a_fix_it_message_not_a_traceback():
    import torch

    from dashboard.cli import out_of_memory_message

    try:  # a real allocation failure from torch's CPU allocator (4 TiB)
        torch.empty(2**40, dtype=torch.float32)
    except RuntimeError as error:
        message = out_of_memory_message(error)
    else:  # pragma: no cover - a machine with 4 TiB to spare
        pytest.skip("the allocation succeeded")
    assert message is not None and "ran out of RAM" in message and "--n-top-genes" in message
    assert out_of_memory_message(MemoryError()) is not None
    assert out_of_memory_message(RuntimeError("shape mismatch")) is None


def test_fit_summary_lists_stages_in_pipeline_order(tmp_path, capsys):
    """The stored timings come back alphabetically; the summary says them as the fit ran."""
    from fake_results import write_fake_results

    from core.options import STAGES
    from dashboard.cli import _print_summary

    _print_summary(write_fake_results(tmp_path / "r.h5ad", n_cells=30, n_genes=4), 12.0)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("velodash: 30 cells × 4 genes fitted on cpu in 12.0s")
    line = next(x for x in out if "stages:" in x)
    names = [part.split()[0] for part in line.split("stages:")[1].split(",")]
    assert len(names) == 8 and names == [s for s in STAGES if s in names]
