"""Shared pytest fixtures for velodash."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep test runs on the 2-core CI machine predictable.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("NUMBA_NUM_THREADS", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
PANCREAS = SHARED_DATA / "pancreas_739.h5ad"


@pytest.fixture(scope="session")
def pancreas_path() -> Path:
    """Path to the real 739-cell pancreas subset in ../shared/data; skips when it is absent."""
    if not PANCREAS.exists():
        pytest.skip(f"real pancreas subset not found at {PANCREAS}")
    return PANCREAS
