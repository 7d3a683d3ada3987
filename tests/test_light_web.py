"""A web process imports neither torch nor scanpy/scVelo/pynndescent (issue 14: light web
workers): a fresh interpreter builds the app, renders every page and runs the gene and velocity
callbacks on a results file as current fits write it (with the scVelo baseline's projection,
`obsm['velocity_baseline_umap']`; for older files without it the velocity page projects the
baseline in the web process, with torch), then lists the heavy modules it holds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anndata
import numpy as np
from fake_results import write_fake_results

HEAVY = ("torch", "scanpy", "scvelo", "pynndescent", "numba", "llvmlite")

SCRIPT = """
import json, sys
from contextvars import copy_context
from pathlib import Path

import dash
from dash._callback_context import context_value
from dash._utils import AttributeDict

from dashboard.web import app as app_module
from dashboard.config import AppConfig
from dashboard.data.datasets import DatasetRegistry

results, cache, heavy = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
config = AppConfig(data=(results,), cache_dir=cache, sample_path=None)
app = app_module.create_app(config)
ds = DatasetRegistry(config).default_id()
with app.server.test_request_context("/"):
    for page in dash.page_registry.values():
        page["layout"](ds=ds)
    from dashboard.web.pages import genes, stream

    genes.show_gene("Gene001", "state", ds)

    def draw():
        context_value.set(AttributeDict(triggered_inputs=[{"prop_id": ".", "value": 1}]))
        return stream.draw("clusters", "Gene001", "streams", 1.0, 0.5, "both", [], None, ds)

    copy_context().run(draw)
print(json.dumps([name for name in heavy if name in sys.modules]))
"""


def test_web_process_imports_no_torch_or_scanpy(tmp_path):
    results = write_fake_results(tmp_path / "fit.h5ad", n_cells=80, n_genes=6)
    adata = anndata.read_h5ad(results)
    adata.obsm["velocity_baseline_umap"] = np.asarray(adata.obsm["velocity_umap"]) * 0.5
    adata.write_h5ad(results)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(results), str(tmp_path / "cache"), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
