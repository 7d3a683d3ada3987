"""Closed-form solutions of the splicing ODE  du/dt = α(t) − βu,  ds/dt = βu − γs.

All functions broadcast over their tensor arguments and are safe in float32. The classic
formulas divide by (γ − β) (and (β − λ), (γ − λ) for a time-dependent transcription rate),
which the reference veloVI guards with a ``+1e-6`` that is wrong in float32 near γ = β. Here
every such quotient is written as a convolution of exponentials,

    K(a, b, t) = ∫₀ᵗ e^{−a(t−τ)} e^{−bτ} dτ = (e^{−at} − e^{−bt}) / (b − a),

evaluated as ``t · e^{−min(a,b)t} · expm1(−|a−b|t) / (−|a−b|t)``: no cancellation, no overflow,
and the exact limit ``t·e^{−at}`` at a = b. The three-rate convolution needed by the
time-dependent rate is a second divided difference of the exponential, written the same way
(one division by the widest gap, a Taylor series when all three rates are close); the tests
keep the matrix-exponential route (Opitz's formula) as its oracle.

Every form takes torch tensors (the model, on any device) or numpy arrays (the
dashboard's fitted curves, so a web process never imports torch): each call works in the
namespace of its arguments (`_xp`).
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    Array = torch.Tensor | np.ndarray

_SERIES_CUTOFF = 1e-3


def _xp(*arrays: Array) -> ModuleType:
    """torch when any argument is a torch tensor (torch is then already imported), else numpy."""
    torch = sys.modules.get("torch")
    if torch is not None and any(isinstance(a, torch.Tensor) for a in arrays):
        return torch
    return np


def _phi1(x: Array) -> Array:
    """expm1(x)/x, with its Taylor series near 0 (value 1 and derivative 1/2 at x = 0)."""
    xp = _xp(x)
    small = xp.abs(x) < _SERIES_CUTOFF
    safe = xp.where(small, xp.ones_like(x), x)
    series = 1.0 + x * (0.5 + x * (1.0 / 6.0 + x / 24.0))
    return xp.where(small, series, xp.expm1(safe) / safe)


def exp_convolution(a: Array, b: Array, t: Array) -> Array:
    """K(a, b, t) = (e^{−at} − e^{−bt})/(b − a) ≥ 0 for rates a, b ≥ 0, exact at a = b."""
    xp = _xp(a, b, t)
    low = xp.minimum(a, b)
    gap = xp.abs(a - b)
    return t * xp.exp(-low * t) * _phi1(-gap * t)


_SERIES3_CUTOFF = 0.1


def exp_convolution3(a: Array, b: Array, c: Array, t: Array) -> Array:
    """∫∫ of three exponentials e^{−a·}, e^{−b·}, e^{−c·} convolved up to t, exact for ties.

    It is t² times the second divided difference of exp at (−at, −bt, −ct), symmetric in the
    rates. With them sorted lo ≤ mid ≤ hi it equals t²·e^{−lo·t}·E(d₁, d₂), where
    d₁ = −(mid−lo)t, d₂ = −(hi−lo)t and E = exp[0, d₁, d₂] = (φ₁(d₁) − e^{d₁}φ₁(d₂ − d₁))/(−d₂):
    one division, by the widest gap. When that gap is small ((hi−lo)t < 0.1) it is the
    Taylor series around the mean rate m, t²·e^{−mt}·Σₖ hₖ(x)/(k+2)! with x = −(rates − m)t
    and hₖ the complete homogeneous polynomials, to k = 5: relative error < 1e-10, no
    cancellation, and smooth and symmetric, so gradients are exact at ties. Works on torch
    tensors or numpy arrays (`_xp`).
    """
    xp = _xp(a, b, c, t)
    lo = xp.minimum(xp.minimum(a, b), c)
    hi = xp.maximum(xp.maximum(a, b), c)
    mid = xp.maximum(xp.minimum(a, b), xp.minimum(xp.maximum(a, b), c))
    small = (hi - lo) * t < _SERIES3_CUTOFF
    d1 = xp.where(small, xp.zeros_like(lo), -(mid - lo) * t)
    d2 = xp.where(small, -xp.ones_like(lo), -(hi - lo) * t)
    direct = xp.exp(-lo * t) * (_phi1(d1) - xp.exp(d1) * _phi1(d2 - d1)) / -d2
    mean = (a + b + c) / 3.0
    x, y, z = (xp.where(small, -(rate - mean) * t, xp.zeros_like(lo)) for rate in (a, b, c))
    h_yz = h_xyz = xp.ones_like(x)
    series, factorial = 0.5 * xp.ones_like(x), 2.0
    for k in range(1, 6):
        h_yz = z**k + y * h_yz
        h_xyz = h_yz + x * h_xyz
        factorial *= k + 2
        series = series + h_xyz / factorial
    return t * t * xp.where(small, xp.exp(-mean * t) * series, direct)


def _decays(beta: Array, gamma: Array, t: Array) -> tuple[Array, Array, Array]:
    """(e^{−βt} − 1, e^{−γt} − 1, K(β, γ, t)) from two expm1 evaluations (and one for K).

    K = t·e^{−min(β,γ)t}·φ₁(−|γ−β|t) reuses whichever of the two decays is the slower one, so
    induction and repression cost three transcendental evaluations per element instead of
    the five of separate :func:`exp_convolution` calls.
    """
    xp = _xp(beta, gamma, t)
    decay_b = xp.expm1(-beta * t)
    decay_g = xp.expm1(-gamma * t)
    slower = xp.where(beta <= gamma, decay_b, decay_g) + 1.0
    return decay_b, decay_g, t * slower * _phi1(-xp.abs(gamma - beta) * t)


def induction(alpha: Array, beta: Array, gamma: Array, t: Array) -> tuple[Array, Array]:
    """(u(t), s(t)) of the induction phase from (0, 0) with constant transcription rate α.

    u = α(1 − e^{−βt})/β and s = α[(1 − e^{−γt})/γ − K(β, γ, t)], for rates β, γ > 0.
    """
    decay_b, decay_g, k = _decays(beta, gamma, t)
    return alpha * (-decay_b / beta), alpha * (-decay_g / gamma - k)


def repression(u0: Array, s0: Array, beta: Array, gamma: Array, t: Array) -> tuple[Array, Array]:
    """(u(t), s(t)) of the repression phase (α = 0) from (u0, s0), t counted from the switch."""
    decay_b, decay_g, k = _decays(beta, gamma, t)
    return u0 * (decay_b + 1.0), s0 * (decay_g + 1.0) + beta * u0 * k


def induction_time_dependent(
    alpha: Array,
    alpha_1: Array,
    lambda_alpha: Array,
    beta: Array,
    gamma: Array,
    t: Array,
) -> tuple[Array, Array]:
    """Induction from (0, 0) with α(t) = α₁ − (α₁ − α)e^{−λt} (veloVI paper, Fig. 5).

    u = α₁K(0, β) − (α₁ − α)K(λ, β) and s = β[α₁K₃(0, β, γ) − (α₁ − α)K₃(λ, β, γ)], with K
    and K₃ the two- and three-rate exponential convolutions up to t (exact for any tie of
    λ, β, γ). Torch tensors or numpy arrays.
    """
    zero = 0.0 * beta
    drop = alpha_1 - alpha
    unspliced = alpha_1 * exp_convolution(zero, beta, t) - drop * exp_convolution(
        lambda_alpha, beta, t
    )
    spliced = beta * (
        alpha_1 * exp_convolution3(zero, beta, gamma, t)
        - drop * exp_convolution3(lambda_alpha, beta, gamma, t)
    )
    return unspliced, spliced


def transcription_rate(
    alpha: float, alpha_1: float, lambda_alpha: float, t_switch: float, t: np.ndarray
) -> np.ndarray:
    """α(t) of the fit on the time axis ``t`` (numpy, float64): α₁ − (α₁ − α)e^{−λt} during
    induction (the constant α when λ = 0), 0 from the switch on (repression)."""
    t = np.asarray(t, dtype=np.float64)
    rate = alpha_1 - (alpha_1 - alpha) * np.exp(-lambda_alpha * t)
    return np.where(t < t_switch, rate, 0.0)


def trajectory(
    alpha: float,
    beta: float,
    gamma: float,
    t_switch: float,
    t_max: float = 20.0,
    n_points: int = 200,
    alpha_1: float | None = None,
    lambda_alpha: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fitted phase-portrait curve of one gene in scVelo's ``fit_*`` convention.

    Induction from (0, 0) up to ``t_switch`` then repression up to ``t_max``; returns three
    float64 arrays (t, u, s) of length ``n_points`` (the switch time is always one of the points).
    With ``lambda_alpha`` > 0 induction follows the time-dependent rate α(t) = α₁ − (α₁ − α)
    e^{−λt} (``alpha_1`` None means α₁ = α). Computed in numpy: no torch import.
    """
    if n_points < 3:
        raise ValueError(f"n_points must be at least 3, got {n_points}.")
    t_switch = float(np.clip(t_switch, 0.0, t_max))
    n_ind = max(2, round(n_points * t_switch / t_max)) if t_max > 0 else 2
    n_ind = min(n_ind, n_points - 1)
    t_ind = np.linspace(0.0, t_switch, n_ind)
    t_rep = np.linspace(t_switch, t_max, n_points - n_ind + 1)[1:]
    a, b, g = (np.float64(x) for x in (alpha, beta, gamma))
    if lambda_alpha > 0:
        a1, lam = np.float64(a if alpha_1 is None else alpha_1), np.float64(lambda_alpha)
        u_ind, s_ind = induction_time_dependent(a, a1, lam, b, g, t_ind)
        u0, s0 = induction_time_dependent(a, a1, lam, b, g, np.float64(t_switch))
    else:
        u_ind, s_ind = induction(a, b, g, t_ind)
        u0, s0 = induction(a, b, g, np.float64(t_switch))
    u_rep, s_rep = repression(u0, s0, b, g, t_rep - t_switch)
    return (
        np.concatenate([t_ind, t_rep]),
        np.concatenate([u_ind, u_rep]),
        np.concatenate([s_ind, s_rep]),
    )
