"""Shared pytest fixtures for velodash.

Fake fitted results come from one factory, :func:`fake_results.make_fake_results`, with the
arguments the test module declares as ``FAKE_RESULTS`` (a dict; the factory's defaults when the
module declares none). Every module-scoped view of them is a fixture here: the AnnData
(:func:`adata`), its :class:`Results` (:func:`results`), the results file (:func:`results_path`)
and an app serving that file (:func:`served`). A module that needs changed results overrides
:func:`adata` (requesting ``adata`` to start from these). Raw counts to fit are
:func:`tiny_counts`, with ``fake_results.QUICK_FIT`` as the options of a fit short enough for a
test.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pytest

if TYPE_CHECKING:
    import anndata as ad
    from dash import Dash

    from dashboard.data.results import Results

# Keep test runs on the 2-core CI machine predictable.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("NUMBA_NUM_THREADS", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Each pytest-xdist worker serves its test apps from its own range of ports: dash.testing
#: numbers them from 58050 in every process, so two workers could take the same port at once.
PORTS_PER_WORKER = 500


def pytest_configure(config: pytest.Config) -> None:
    """Give this process's dash_duo servers a port range of their own."""
    from dash.testing.application_runners import BaseDashRunner

    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    BaseDashRunner._next_port = 58050 + PORTS_PER_WORKER * int(worker.removeprefix("gw") or 0)


SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
PANCREAS = SHARED_DATA / "pancreas_739.h5ad"


@pytest.fixture(scope="session")
def pancreas_path() -> Path:
    """Path to the real 739-cell pancreas subset in ../shared/data; skips when it is absent."""
    if not PANCREAS.exists():
        pytest.skip(f"real pancreas subset not found at {PANCREAS}")
    return PANCREAS


@pytest.fixture(scope="module")
def adata(request: pytest.FixtureRequest) -> ad.AnnData:
    """The module's fake fitted results: ``make_fake_results(**FAKE_RESULTS)``. The module's
    tests share them: a test that changes them works on a copy."""
    from fake_results import make_fake_results

    return make_fake_results(**getattr(request.module, "FAKE_RESULTS", {}))


@pytest.fixture(scope="module")
def results(adata: ad.AnnData) -> Results:
    """:class:`Results` over the module's :func:`adata` (in memory, no file)."""
    from dashboard.data.results import Results

    return Results(adata)


@pytest.fixture(scope="module")
def results_path(adata: ad.AnnData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's :func:`adata` written as a results file, ``fit.h5ad`` in a folder of its
    own."""
    path = tmp_path_factory.mktemp("results") / "fit.h5ad"
    adata.write_h5ad(path)
    return path


class Served(NamedTuple):
    """A dashboard app serving one results file, the file's dataset id and its results."""

    app: Dash
    ds: str
    results: Results


@pytest.fixture(scope="module")
def served(results_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Served:
    """The dashboard app with :func:`results_path` as its only dataset (no sample); call its
    callbacks inside ``app.server.test_request_context()``."""
    from dashboard.config import AppConfig
    from dashboard.data.datasets import DatasetRegistry
    from dashboard.data.results import load_results
    from dashboard.web.app import create_app

    folder = tmp_path_factory.mktemp("served")
    config = AppConfig(
        data=(results_path,), cache_dir=folder / "cache", sample_path=folder / "none.h5ad"
    )
    app = create_app(config)
    return Served(app, DatasetRegistry(config).default_id(), load_results(results_path))


@pytest.fixture(scope="module")
def tiny_counts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Raw counts to fit: ``fake_results.write_raw_counts``'s 200-cell, 40-gene simulation."""
    from fake_results import write_raw_counts

    return write_raw_counts(tmp_path_factory.mktemp("tiny") / "tiny.h5ad")
