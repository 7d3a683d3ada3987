"""Intrinsic and extrinsic velocity uncertainty (veloVI paper, Methods; reference notes §4).

Both measures summarise, per cell, how S vectors scatter around their mean direction:
intrinsic uses S posterior velocity samples, extrinsic the S future states T_s·Ms predicted by
the velocity-induced transition matrix of each sample. The per-cell Python/joblib loop of the
reference is replaced by batched torch ops on the samples' device, processed in cell chunks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

from core import graph

STATISTICS = (
    "cosine_variance",
    "cosine_difference",
    "cosine_mean",
    "angle_variance",
    "angle_difference",
)
"""Columns of :func:`directional_statistics`, in order."""

_MAX_CHUNK_ELEMENTS = 2**25  # samples × cells × genes per chunk (256 MiB in float64)


def _centred_unit(x: torch.Tensor) -> torch.Tensor:
    """Centre each vector over its last axis (genes) by its own mean and scale to unit norm."""
    centred = x - x.mean(dim=-1, keepdim=True)
    return centred / torch.linalg.vector_norm(centred, dim=-1, keepdim=True)


def _chunk_statistics(chunk: torch.Tensor) -> torch.Tensor:
    """The five statistics (n, 5) of a chunk of samples (S, n, G), computed in float64.

    Centred cosine of every sample to the per-cell sample mean, clipped to [-1, 1]; variances
    use ddof = 0 (``np.var``'s default, as the reference); percentiles interpolate linearly
    (``np.percentile``'s default).
    """
    x = chunk.to(torch.float64)
    mean_unit = _centred_unit(x.mean(dim=0))  # (n, G), sums to 0 over genes
    # <x_s - mean_g(x_s), m̂> = <x_s, m̂> as m̂ is centred, and
    # ‖x_s - mean_g(x_s)‖² = ‖x_s‖² - (Σ_g x_s)²/G: two batched reductions, no (S, n, G) temporary
    dots = torch.einsum("sng,ng->ns", x, mean_unit)
    square_sum = torch.einsum("sng,sng->ns", x, x)
    centred_sq = square_sum - x.sum(dim=-1).T ** 2 / x.shape[-1]
    has_direction = centred_sq > 1e-12 * square_sum  # else constant over genes up to rounding
    cos = torch.where(has_direction, dots / centred_sq.clamp_min(0).sqrt(), torch.nan)
    cos = cos.clamp(-1.0, 1.0)  # (n, S)
    angle = torch.arccos(cos)
    q = torch.tensor([0.05, 0.95], dtype=torch.float64, device=cos.device)
    cos_q = torch.quantile(cos, q, dim=1)
    angle_q = torch.quantile(angle, q, dim=1)
    return torch.stack(
        [
            cos.var(dim=1, correction=0),
            cos_q[1] - cos_q[0],
            cos.mean(dim=1),
            angle.var(dim=1, correction=0),
            angle_q[1] - angle_q[0],
        ],
        dim=1,
    )


def _statistics_by_chunk(
    n_cells: int, elements_per_cell: int, chunk_of: Callable[[slice], torch.Tensor]
) -> pd.DataFrame:
    """Run :func:`_chunk_statistics` over cell chunks; ``chunk_of(cells)`` returns (S, n, G)."""
    step = max(1, _MAX_CHUNK_ELEMENTS // max(1, elements_per_cell))
    rows = [
        _chunk_statistics(chunk_of(slice(start, min(start + step, n_cells)))).cpu()
        for start in range(0, n_cells, step)
    ]
    values = torch.cat(rows).numpy() if rows else np.empty((0, len(STATISTICS)))
    return pd.DataFrame(values, columns=list(STATISTICS))


def _as_samples(samples: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """Return ``samples`` as a floating torch tensor (S, N, G), checking its shape."""
    tensor = torch.as_tensor(samples)
    if tensor.ndim != 3:
        raise ValueError(
            f"{name} must have shape (n_samples, n_cells, n_genes), got {tuple(tensor.shape)}; "
            "draw several posterior samples (e.g. model.velocity_samples(n_samples=100))."
        )
    if tensor.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples to measure spread, got 1.")
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.float64)
    return tensor


def directional_statistics(samples: torch.Tensor | np.ndarray) -> pd.DataFrame:
    """Per-cell directional spread of S sample vectors (S, N, G) around their mean.

    For cell n with samples x_1..x_S (G-vectors) and mean m, c_s is the centred cosine of x_s
    to m (each vector centred by its own mean over genes, i.e. a Pearson correlation), clipped
    to [-1, 1], and θ_s = arccos c_s (radians). Returns a DataFrame with N rows and columns
    ``cosine_variance`` = var(c) (ddof = 0, like the reference's ``np.var``; the paper's formula
    uses ddof = 1, a factor S/(S-1) apart), ``cosine_difference`` = P95(c) - P5(c),
    ``cosine_mean`` = mean(c), ``angle_variance`` = var(θ), ``angle_difference`` = P95(θ) - P5(θ).
    A cell whose mean (or a sample) is constant over genes has no direction: its row is NaN.
    Computed on the samples' device in cell chunks (float64), so memory stays bounded.
    """
    tensor = _as_samples(samples, "samples")
    n_samples, n_cells, n_genes = tensor.shape
    return _statistics_by_chunk(n_cells, n_samples * n_genes, lambda cells: tensor[:, cells])


def intrinsic_uncertainty(velocity_samples: torch.Tensor | np.ndarray) -> pd.DataFrame:
    """Intrinsic uncertainty: :func:`directional_statistics` of posterior velocity samples.

    ``velocity_samples`` (S, N, G), e.g. ``VeloVI.velocity_samples(100)`` (the paper uses
    S = 100). ``cosine_variance`` is the paper's intrinsic uncertainty.
    """
    return directional_statistics(_as_samples(velocity_samples, "velocity_samples"))


def extrinsic_uncertainty(
    velocity_samples: torch.Tensor | np.ndarray,
    Ms: np.ndarray,
    candidates: sp.csr_matrix,
    scale: float = 10.0,
) -> pd.DataFrame:
    """Extrinsic uncertainty: :func:`directional_statistics` of S predicted future states.

    For each velocity sample v_s (S, N, G) a velocity graph is built on the fixed candidate
    pattern ``candidates`` (N×N, from ``graph.candidate_neighbors``, computed once), turned into
    a transition matrix T_s (``scale``, self-transitions and negative cosines, as the
    reference's ``get_transition_matrix(..., self_transitions=True, use_negative_cosines=True)``)
    and the future state T_s·Ms (N, G) is formed. As in the reference this uses T_s·Ms itself,
    not the displacement T_s·Ms - Ms. ``Ms`` (N, G) is the (min-max scaled) spliced moments the
    model was fitted on. The paper uses S = 25. Returns the same columns as
    :func:`directional_statistics`.
    """
    tensor = _as_samples(velocity_samples, "velocity_samples")
    n_samples, n_cells, n_genes = tensor.shape
    Ms = np.asarray(Ms)
    if Ms.shape != (n_cells, n_genes):
        raise ValueError(
            f"Ms has shape {Ms.shape} but the velocity samples are (cells, genes) = "
            f"{(n_cells, n_genes)}; pass the layer the model was fitted on, adata.layers['Ms']."
        )
    if candidates.shape != (n_cells, n_cells):
        raise ValueError(
            f"candidates has shape {candidates.shape}, expected {(n_cells, n_cells)}; build it "
            "with core.graph.candidate_neighbors on the same cells."
        )
    transitions = [
        graph.transition_matrix(
            vgraph, scale=scale, self_transitions=True, use_negative_cosines=True
        ).tocsr()
        for vgraph in graph.velocity_graph_samples(tensor, Ms, candidates)
    ]

    def future_states(cells: slice) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(T[cells] @ Ms) for T in transitions]))

    return _statistics_by_chunk(n_cells, n_samples * n_genes, future_states)


def add_uncertainty_to_adata(
    adata: AnnData,
    intrinsic: pd.DataFrame | None = None,
    extrinsic: pd.DataFrame | None = None,
) -> None:
    """Write uncertainty statistics to ``adata.obs`` (in place).

    ``obs['intrinsic_uncertainty']`` / ``obs['extrinsic_uncertainty']`` hold the raw
    ``cosine_variance`` (the paper's measure; its figures show log10 of it, which is left to the
    plotting code); the other statistics go to ``obs['intrinsic_<stat>']`` /
    ``obs['extrinsic_<stat>']``. Either frame may be omitted (e.g. when that analysis was skipped).
    """
    for prefix, frame in (("intrinsic", intrinsic), ("extrinsic", extrinsic)):
        if frame is None:
            continue
        missing = [col for col in STATISTICS if col not in frame.columns]
        if len(frame) != adata.n_obs or missing:
            raise ValueError(
                f"{prefix} statistics must have {adata.n_obs} rows and columns {STATISTICS}; got "
                f"{len(frame)} rows, missing {missing}. Pass the output of {prefix}_uncertainty."
            )
        adata.obs[f"{prefix}_uncertainty"] = frame["cosine_variance"].to_numpy()
        for col in STATISTICS[1:]:
            adata.obs[f"{prefix}_{col}"] = frame[col].to_numpy()
