"""Velocity in an embedding: scVelo's projection, velocity grid and matplotlib's streamlines.

``velocity_embedding`` projects a transition matrix (:mod:`core.graph`) into the embedding as
``scv.tl.velocity_embedding``; ``velocity_grid`` is scVelo's ``compute_velocity_on_grid`` with
the neighbour count capped (scVelo's N/50 is 20 000 per grid node at 1M cells);
``streamlines`` runs matplotlib's ``streamplot`` integrator off-screen and returns flat float32
polylines and arrowheads for plotly; ``quiver_autoscale`` is scVelo's arrow scale, which both
the projection and the arrow grid divide by. numpy/scipy/matplotlib only (no torch), so the web
process draws streams without loading the model's libraries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
from matplotlib.figure import Figure
from scipy.interpolate import RegularGridInterpolator
from scipy.stats import norm
from sklearn.neighbors import NearestNeighbors


def quiver_autoscale(X_emb: np.ndarray, V_emb: np.ndarray) -> float:
    """scVelo's ``quiver_autoscale``: matplotlib's automatic quiver scale for arrows V at X.

    Both (N, ≥2); only the first two columns are used. The factor depends on matplotlib's
    default figure size and dpi (rcParams), exactly as in scVelo; the figure is an off-screen
    ``Figure`` (no pyplot state). Uses ``Quiver._init``, the same private hook scVelo uses.
    """
    scale_factor = np.abs(X_emb).max()
    ax = Figure().subplots()
    quiver = ax.quiver(
        X_emb[:, 0] / scale_factor,
        X_emb[:, 1] / scale_factor,
        V_emb[:, 0],
        V_emb[:, 1],
        angles="xy",
        scale_units="xy",
        scale=None,
    )
    quiver._init()
    return float(quiver.scale / scale_factor)


def velocity_embedding(T: sp.spmatrix, X_emb: np.ndarray, autoscale: bool = True) -> np.ndarray:
    """Velocities projected into an embedding, (N, D), equal to ``scv.tl.velocity_embedding``.

    ν_i = Σ_j T_ij δ_ij − mean_j(T_ij) Σ_j δ_ij over the stored off-diagonal entries of T,
    with δ_ij = (x_j − x_i)/‖x_j − x_i‖ in ``X_emb`` (N, D) (0 for coinciding cells). Cells
    without any transition get NaN, as in scVelo. ``autoscale`` divides by 3 × matplotlib's
    quiver autoscale factor (see :func:`quiver_autoscale`), as scVelo does by default.
    """
    X_emb = np.asarray(X_emb, dtype=np.float64)
    T = sp.csr_matrix(T, dtype=np.float64)
    if T.shape != (X_emb.shape[0], X_emb.shape[0]):
        raise ValueError(
            f"T has shape {T.shape} but X_emb has {X_emb.shape[0]} cells; use the transition "
            "matrix of the same cells as the embedding."
        )
    T = sp.csr_matrix(T - sp.diags(T.diagonal()))
    T.eliminate_zeros()
    n_cells = X_emb.shape[0]
    rows = np.repeat(np.arange(n_cells), np.diff(T.indptr))
    delta = X_emb[T.indices] - X_emb[rows]
    norm = np.linalg.norm(delta, axis=1, keepdims=True)
    delta = np.divide(delta, norm, out=np.zeros_like(delta), where=norm > 0)
    count = np.bincount(rows, minlength=n_cells).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.bincount(rows, weights=T.data, minlength=n_cells) / count
    weighted = np.stack(
        [np.bincount(rows, weights=T.data * d, minlength=n_cells) for d in delta.T], axis=1
    )
    summed = np.stack([np.bincount(rows, weights=d, minlength=n_cells) for d in delta.T], axis=1)
    V_emb = weighted - mean_prob[:, None] * summed
    if autoscale:
        V_emb /= 3 * quiver_autoscale(X_emb, V_emb)
    return V_emb


@dataclass
class Grid:
    """Velocity on a regular grid: nodes ``x`` (nx,), ``y`` (ny,) in embedding units; ``u``,
    ``v`` (ny, nx) the velocity components (NaN where masked); ``mass`` (ny, nx) the summed
    Gaussian kernel weight of the cells around each node."""

    x: np.ndarray
    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    mass: np.ndarray


@dataclass
class Streamlines:
    """Streamlines as one NaN-separated polyline set, float32.

    ``x``, ``y`` (M,) vertices with NaN between streamlines (vertex order follows the flow);
    ``speed`` (M,) the interpolated grid speed |V| at each vertex (NaN at separators);
    ``arrow_x``, ``arrow_y`` (L,) one arrowhead anchor per streamline (where matplotlib puts its
    arrow, half-way along the line) and ``arrow_angle`` (L,) its direction in degrees for
    plotly's ``marker.angle`` (90 − atan2(dy, dx): 0 = up, clockwise; needs equal-aspect axes).
    """

    x: np.ndarray
    y: np.ndarray
    speed: np.ndarray
    arrow_x: np.ndarray
    arrow_y: np.ndarray
    arrow_angle: np.ndarray


def velocity_grid(
    X_emb: np.ndarray,
    V_emb: np.ndarray,
    density: float = 1.0,
    smooth: float = 0.5,
    n_neighbors: int | None = None,
    min_mass: float = 1.0,
    cutoff_perc: float = 5.0,
    max_neighbors: int = 1000,
    mode: Literal["stream", "arrows"] = "stream",
) -> Grid:
    """scVelo's ``compute_velocity_on_grid`` for cells at X_emb (N, 2) with velocities V_emb.

    The grid has int(50·density) nodes per axis over the data range padded by 1 %; each node
    averages V_emb over its ``n_neighbors`` nearest cells (default N/50 as scVelo, but at most
    ``max_neighbors``) with a Gaussian of width smooth × the mean grid step, divided by
    max(1, mass). Cells with non-finite coordinates or velocity are ignored. Masking:

    - ``mode="stream"`` (scVelo's ``adjust_for_stream``): NaN where |V| < min(10^(min_mass−6),
      0.9·max|V|) or where the neighbours' mean |V_emb| (summed over both axes) is below its
      ``cutoff_perc`` percentile.
    - ``mode="arrows"`` (scVelo's quiver grid): NaN where mass ≤ min_mass · P99(mass)/100, and
      the kept arrows are divided by 3 × the quiver autoscale factor, as scVelo.
    """
    X_emb = np.asarray(X_emb, dtype=np.float64)
    V_emb = np.asarray(V_emb, dtype=np.float64)
    if X_emb.ndim != 2 or X_emb.shape[1] != 2 or V_emb.shape != X_emb.shape:
        raise ValueError(
            f"X_emb and V_emb must both be (cells, 2); got {X_emb.shape} and {V_emb.shape}. "
            "Pass a 2-D embedding such as obsm['X_umap'] and obsm['velocity_umap']."
        )
    if mode not in ("stream", "arrows"):
        raise ValueError(f"mode must be 'stream' or 'arrows', got {mode!r}.")
    finite = np.isfinite(X_emb.sum(1) + V_emb.sum(1))
    X_emb, V_emb = X_emb[finite], V_emb[finite]
    if len(X_emb) == 0:
        raise ValueError("no cell has finite embedding coordinates and velocity.")
    axes = [_axis(X_emb[:, dim], int(50 * density)) for dim in range(2)]
    nodes = np.stack([mesh.ravel() for mesh in np.meshgrid(*axes)], axis=1)
    if n_neighbors is None:
        n_neighbors = min(int(len(X_emb) / 50), max_neighbors)
    n_neighbors = int(np.clip(n_neighbors, 1, len(X_emb)))
    dists, neighs = NearestNeighbors(n_neighbors=n_neighbors).fit(X_emb).kneighbors(nodes)
    sigma = np.mean([ax[1] - ax[0] for ax in axes]) * smooth
    weight = norm.pdf(x=dists, scale=sigma)
    mass = weight.sum(axis=1)
    V_grid = np.einsum("nk,nkd->nd", weight, V_emb[neighs]) / np.maximum(1, mass)[:, None]
    if mode == "stream":
        speed = np.linalg.norm(V_grid, axis=1)
        masked = speed < min(10 ** (min_mass - 6), 0.9 * speed.max())
        length = np.abs(V_emb[neighs]).mean(axis=1).sum(axis=1)
        masked |= length < np.percentile(length, cutoff_perc)
    else:
        masked = mass <= min_mass * np.percentile(mass, 99) / 100
        V_grid /= 3 * quiver_autoscale(nodes[~masked], V_grid[~masked])
    V_grid[masked] = np.nan
    shape = (len(axes[1]), len(axes[0]))
    u, v = (V_grid[:, dim].reshape(shape) for dim in range(2))
    return Grid(axes[0], axes[1], u, v, mass.reshape(shape))


def streamlines(
    grid: Grid,
    density: float = 2.0,
    max_length: float = 4.0,
    integration_direction: Literal["forward", "backward", "both"] = "both",
) -> Streamlines:
    """Streamlines through a :class:`Grid` with matplotlib's ``streamplot`` (off-screen).

    ``density`` sets the line spacing (matplotlib splits the domain into 30·density cells per
    axis), ``max_length`` the maximum line length in those units — scVelo's stream defaults.
    Masked (NaN) nodes stop lines. Returns empty arrays when no line fits.
    """
    ax = Figure().subplots()
    lines = ax.streamplot(
        grid.x,
        grid.y,
        np.ma.masked_invalid(grid.u),
        np.ma.masked_invalid(grid.v),
        density=density,
        maxlength=max_length,
        integration_direction=integration_direction,
        linewidth=1.0,
    ).lines.get_segments()
    if not lines:
        empty = np.empty(0, dtype=np.float32)
        return Streamlines(empty, empty, empty, empty, empty, empty)
    points = np.concatenate(lines)
    line = np.repeat(np.arange(len(lines)), [len(segment) for segment in lines])
    # 'both' integration repeats the seed point where the two halves meet
    repeated = (line[1:] == line[:-1]) & (points[1:] == points[:-1]).all(axis=1)
    keep = np.concatenate([[True], ~repeated])
    points, line = points[keep], line[keep]
    starts = np.searchsorted(line, np.arange(len(lines)))
    separators = starts[1:]
    xy = np.insert(points, separators, np.nan, axis=0)
    speed = np.insert(_interpolate_speed(grid, points), separators, np.nan)
    head, step = _arrow_heads(points, line, starts)
    angle = 90.0 - np.degrees(np.arctan2(step[:, 1], step[:, 0]))
    return Streamlines(
        *(np.asarray(a, dtype=np.float32) for a in (xy[:, 0], xy[:, 1], speed)),
        *(np.asarray(a, dtype=np.float32) for a in (head[:, 0], head[:, 1], angle)),
    )


def _axis(values: np.ndarray, n_nodes: int) -> np.ndarray:
    """scVelo's grid axis: linspace over the range padded by 1 % on each side."""
    lo, hi = values.min(), values.max()
    lo = lo - 0.01 * abs(hi - lo)
    hi = hi + 0.01 * abs(hi - lo)
    return np.linspace(lo, hi, n_nodes)


def _interpolate_speed(grid: Grid, points: np.ndarray) -> np.ndarray:
    """Bilinear |V| at ``points`` (M, 2), averaging over the unmasked corner nodes only."""
    speed = np.hypot(grid.u, grid.v)
    valid = np.isfinite(speed)
    # the integrator can end a hair outside the grid: clamp onto its edge
    yx = np.c_[
        np.clip(points[:, 1], grid.y[0], grid.y[-1]), np.clip(points[:, 0], grid.x[0], grid.x[-1])
    ]

    def interp(values: np.ndarray) -> np.ndarray:
        f = RegularGridInterpolator((grid.y, grid.x), values)
        return f(yx)

    weight = interp(valid.astype(np.float64))
    total = interp(np.where(valid, speed, 0.0))
    return np.divide(total, weight, out=np.full_like(total, np.nan), where=weight > 0)


def _arrow_heads(
    points: np.ndarray, line: np.ndarray, starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per line, where matplotlib puts its arrowhead and the step the arrow follows.

    matplotlib's rule: with s the cumulative segment lengths of a line and k =
    ``searchsorted(s, s[-1] / 2)``, the arrow runs from vertex k to the middle of the segment
    k → k+1. ``points`` (M, 2) of all lines, ``line`` (M,) their line ids (sorted), ``starts``
    (L,) each line's first vertex. Returns the heads (L, 2) and the steps k → k+1 (L, 2); on a
    curved line the chord direction is the tangent at the chord's middle, hence that anchor.
    """
    seg_line = line[1:]
    same = line[:-1] == seg_line
    seg_len = np.where(same, np.hypot(*np.diff(points, axis=0).T), 0.0)
    cum = np.cumsum(seg_len)
    # cumulative length within each line: subtract what came before the line's first segment
    before = np.concatenate([[0.0], cum])[starts]
    within = cum - before[seg_line]
    total = np.bincount(seg_line, weights=seg_len, minlength=len(starts))
    below_half = same & (within < total[seg_line] / 2)
    anchor = starts + np.bincount(seg_line[below_half], minlength=len(starts))
    step = points[anchor + 1] - points[anchor]
    return points[anchor] + step / 2, step
