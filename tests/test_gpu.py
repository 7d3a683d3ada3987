"""The CUDA path, end to end: training, posterior and every analysis on the GPU, agreeing with
the CPU fit of the same data. Skipped on machines without a CUDA GPU (CI has none)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.params import FitParams
from core.pipeline import run
from core.simulate import simulate_branching

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def fits():
    counts = simulate_branching(n_cells=600, n_genes=60, seed=3)
    params = {"max_epochs": 60, "n_pcs": 10, "n_neighbors": 15}
    return {
        device: run(counts, FitParams(**params, device=device), fingerprint="gpu-test")
        for device in ("cpu", "cuda")
    }


def test_gpu_fit_runs_every_stage_on_the_device(fits):
    gpu = fits["cuda"]
    assert gpu.uns["velodash"]["device"].startswith("cuda")
    for stage in ("train", "posterior", "graph", "uncertainty", "coherence", "permutation"):
        assert stage in gpu.uns["velodash"]["timings"]
    for key in ("intrinsic_uncertainty", "extrinsic_uncertainty", "latent_time"):
        assert np.isfinite(gpu.obs[key]).all(), key


def test_gpu_and_cpu_fits_agree(fits):
    cpu, gpu = fits["cpu"], fits["cuda"]
    assert list(cpu.var_names) == list(gpu.var_names)
    # different random streams and float reductions: the same model, not the same bits
    assert np.corrcoef(cpu.obs["latent_time"], gpu.obs["latent_time"])[0, 1] > 0.9
    v_cpu, v_gpu = cpu.layers["velocity"].ravel(), gpu.layers["velocity"].ravel()
    assert np.corrcoef(v_cpu, v_gpu)[0, 1] > 0.8
