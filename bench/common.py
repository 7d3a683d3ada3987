"""Shared helpers of the benchmarks: simulated data with ground truth, the one shared
preprocessing, ground-truth metrics, timing with machine load, and JSON output.

Both models (the reference ``scvi.external.VELOVI`` and velodash's ``core.velovi.VeloVI``) are
fitted on the same AnnData produced by :func:`simulated_dataset`, so they see identical Ms/Mu.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Numba (scanpy's kNN via pynndescent, untimed preprocessing) otherwise leaves a worker thread
# that keeps a core busy and slowed the timed torch code up to 3x on a loaded 2-core machine.
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import anndata as ad
import numpy as np
import scipy.stats
import scvelo as scv
import torch
from scvelo.tools._em_model_utils import spliced, unspliced, vectorize

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from core.preprocess import PreprocessConfig, preprocess  # noqa: E402

OUT_DIR = REPO_ROOT / "bench" / "out"
N_CLUSTERS = 6


def set_threads(n_threads: int) -> None:
    """Use ``n_threads`` intra-op threads in torch (and BLAS via the env, for child imports)."""
    torch.set_num_threads(n_threads)
    os.environ["OMP_NUM_THREADS"] = str(n_threads)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"3000x500,10000x500"`` -> [(3000, 500), (10000, 500)] (cells × genes)."""
    sizes = []
    for item in text.split(","):
        cells, _, genes = item.strip().lower().partition("x")
        if not cells.isdigit() or not genes.isdigit():
            raise ValueError(f"size {item!r} is not CELLSxGENES, e.g. 3000x500.")
        sizes.append((int(cells), int(genes)))
    return sizes


def load() -> float:
    """1-minute load average of the machine (os.getloadavg)."""
    return os.getloadavg()[0]


@dataclass
class Timing:
    """Wall-clock seconds of one call plus the 1-min load average right after it."""

    seconds: float
    load: float


def timed(fn: Callable[[], Any]) -> tuple[Any, Timing]:
    """Run ``fn()`` once; return its result and the :class:`Timing`."""
    started = time.perf_counter()
    result = fn()
    return result, Timing(time.perf_counter() - started, load())


def report(label: str, timing: Timing, extra: str = "") -> None:
    """Print one measurement with the machine load (flushed, so logs interleave correctly)."""
    print(f"  {label:<42s} {timing.seconds:9.3f} s   load {timing.load:5.2f}  {extra}", flush=True)


def summary(timings: list[Timing]) -> dict[str, Any]:
    """Median/min seconds, every repeat, and the loads seen, as a JSON-ready dict."""
    seconds = [t.seconds for t in timings]
    return {
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "runs_s": seconds,
        "loads": [t.load for t in timings],
    }


def ground_truth_velocity(
    t: np.ndarray, t_switch: np.ndarray, alpha: np.ndarray, beta: np.ndarray, gamma: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise-free (u, s, β u − γ s), each (N, G), of scVelo's simulation model.

    ``t`` (N,) cell times, ``t_switch``/``alpha``/``beta``/``gamma`` (G,): the simulation's
    ``obs['true_t']`` and ``var['true_t_'|'true_alpha'|'true_beta'|'true_gamma']``. Uses
    scVelo's own ``vectorize``/``unspliced``/``spliced`` (induction from (0, 0) until t_switch,
    then repression with α = 0), i.e. the curves the simulation adds noise to.
    """
    tau, alpha_t, u0, s0 = vectorize(t[:, None], t_switch, alpha, beta, gamma)
    u = unspliced(tau, u0, alpha_t, beta)
    s = spliced(tau, s0, u0, alpha_t, beta, gamma)
    return u, s, beta * u - gamma * s


def simulate(n_cells: int, n_genes: int, seed: int = 0) -> ad.AnnData:
    """scVelo simulation (``scv.datasets.simulation``, offline) with per-gene kinetics.

    Rates are log-normal per gene (α around 5, β and γ around 0.4 and 0.3, spread 0.4 in
    log-space), switch times uniform in [0.2, 0.8]·t_max, t_max = 20, normal noise (scVelo's
    default, 10 % of each gene's P99). Adds the ground truth ``layers['true_velocity']``
    (β u − γ s of the noise-free curves, (N, G)) and ``obs['clusters']``: N_CLUSTERS
    equal-count bins of the true time, the "cell types" of the permutation score.
    """
    rng = np.random.default_rng(seed)
    alpha = 5.0 * np.exp(rng.normal(0.0, 0.4, n_genes))
    beta = 0.4 * np.exp(rng.normal(0.0, 0.4, n_genes))
    gamma = 0.3 * np.exp(rng.normal(0.0, 0.4, n_genes))
    switches = rng.uniform(0.2, 0.8, n_genes)
    adata = scv.datasets.simulation(
        n_obs=n_cells,
        n_vars=n_genes,
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        switches=switches,
        t_max=20,
        noise_model="normal",
        random_seed=seed,
    )
    adata.var_names = [f"gene_{i}" for i in range(n_genes)]
    adata.obs_names = [f"cell_{i}" for i in range(n_cells)]
    var = adata.var
    _, _, velocity = ground_truth_velocity(
        adata.obs["true_t"].to_numpy(),
        var["true_t_"].to_numpy(),
        var["true_alpha"].to_numpy(),
        var["true_beta"].to_numpy(),
        var["true_gamma"].to_numpy(),
    )
    adata.layers["true_velocity"] = velocity.astype(np.float32)
    ranks = scipy.stats.rankdata(adata.obs["true_t"], method="ordinal") - 1
    bins = (ranks * N_CLUSTERS // n_cells).astype(int)
    adata.obs["clusters"] = [f"stage_{b}" for b in bins]
    adata.obs["clusters"] = adata.obs["clusters"].astype("category")
    return adata


def simulated_dataset(n_cells: int, n_genes: int, seed: int = 0) -> ad.AnnData:
    """:func:`simulate` followed by the one shared preprocessing both models are fitted on.

    velodash's ``preprocess(adata, PreprocessConfig(normalize=False, compute_umap=False))``:
    PCA, kNN (30), moments Ms/Mu, per-gene min-max scaling, steady-state r2 gene filter. The
    result keeps ``layers['true_velocity']``, ``obs['true_t'|'clusters']`` for the kept genes.
    """
    return preprocess(
        simulate(n_cells, n_genes, seed),
        PreprocessConfig(normalize=False, compute_umap=False, seed=seed),
    )


def _median_column_pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Median over genes of the Pearson correlation of columns x[:, g], y[:, g] (N, G).

    Genes where either column is constant (undefined correlation) are omitted.
    """
    xc = x - x.mean(axis=0)
    yc = y - y.mean(axis=0)
    norm = np.sqrt((xc**2).sum(axis=0) * (yc**2).sum(axis=0))
    defined = norm > 0
    r = (xc * yc).sum(axis=0)[defined] / norm[defined]
    return float(np.median(r)) if r.size else float("nan")


def ground_truth_metrics(
    fit_t: np.ndarray, velocity: np.ndarray, adata: ad.AnnData
) -> dict[str, float]:
    """Median per-gene Spearman(fit_t, true_t) and Pearson(velocity, true velocity).

    ``fit_t`` and ``velocity`` are (N, G) on ``adata``'s genes. Both statistics are invariant to
    the per-gene positive rescalings (min-max scaling, time rescaling to t_max) between a model's
    units and the simulation's.
    """
    true_t = np.broadcast_to(adata.obs["true_t"].to_numpy()[:, None], fit_t.shape)
    return {
        "median_spearman_time": _median_column_pearson(
            scipy.stats.rankdata(np.asarray(fit_t, dtype=np.float64), axis=0),
            scipy.stats.rankdata(true_t, axis=0),
        ),
        "median_pearson_velocity": _median_column_pearson(
            np.asarray(velocity, dtype=np.float64),
            np.asarray(adata.layers["true_velocity"], dtype=np.float64),
        ),
    }


def environment() -> dict[str, Any]:
    """Versions and machine facts recorded with every JSON."""
    import scvi

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "scvi_tools": scvi.__version__,
        "scvelo": scv.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_at_start": os.getloadavg(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to bench/out/<name>.json (creating the folder) and return the path."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=float))
    print(f"wrote {path}", flush=True)
    return path
