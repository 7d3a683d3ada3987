"""Closed-form kinetics against a numerical ODE solve (scipy) and the ODE right-hand side."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from core.kinetics import (
    exp_convolution3,
    induction,
    induction_time_dependent,
    repression,
    trajectory,
    transcription_rate,
)

TIMES = np.array([0.0, 0.05, 0.7, 3.0, 9.5, 20.0])


def _ode(alpha_of_t, beta, gamma, t_eval, y0=(0.0, 0.0), max_step=np.inf):
    """Reference solution of du/dt = α(t) − βu, ds/dt = βu − γs (DOP853, rtol 1e-12;
    `max_step` small enough not to step over a switch in α)."""
    sol = solve_ivp(
        lambda t, y: [alpha_of_t(t) - beta * y[0], beta * y[0] - gamma * y[1]],
        (0.0, float(t_eval[-1])),
        list(y0),
        t_eval=t_eval,
        method="DOP853",
        rtol=1e-12,
        atol=1e-14,
        max_step=max_step,
    )
    return sol.y[0], sol.y[1]


def _t64(x):
    return torch.tensor(x, dtype=torch.float64)


def _np64(x):
    return np.asarray(x, dtype=np.float64)


def _values(x) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


#: The constant-rate forms run on torch tensors (the model) and numpy arrays (the dashboard).
BACKENDS = pytest.mark.parametrize("array", [_t64, _np64], ids=["torch", "numpy"])


RATE_CASES = [
    (2.0, 1.3, 0.4),  # generic
    (1.0, 0.7, 0.7),  # γ = β exactly
    (1.0, 0.7, 0.7 + 1e-7),  # γ = β + 1e-7
    (1.0, 0.7, 0.7 - 1e-7),  # γ = β − 1e-7
    (0.5, 0.05, 4.0),  # γ ≫ β
    (3.0, 12.0, 0.02),  # β ≫ γ (large −(γ−β)t: no overflow allowed)
]


@BACKENDS
@pytest.mark.parametrize(("alpha", "beta", "gamma"), RATE_CASES)
def test_induction_matches_ode(alpha, beta, gamma, array):
    u, s = induction(array(alpha), array(beta), array(gamma), array(TIMES))
    u_ref, s_ref = _ode(lambda t: alpha, beta, gamma, TIMES)
    np.testing.assert_allclose(_values(u), u_ref, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(_values(s), s_ref, rtol=1e-8, atol=1e-12)


@BACKENDS
@pytest.mark.parametrize(("alpha", "beta", "gamma"), RATE_CASES)
def test_repression_matches_ode(alpha, beta, gamma, array):
    u0, s0 = 0.8 * alpha / beta, 0.6 * alpha / gamma
    u, s = repression(array(u0), array(s0), array(beta), array(gamma), array(TIMES))
    u_ref, s_ref = _ode(lambda t: 0.0, beta, gamma, TIMES, y0=(u0, s0))
    np.testing.assert_allclose(_values(u), u_ref, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(_values(s), s_ref, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize(
    ("alpha", "alpha_1", "lam", "beta", "gamma"),
    [
        (0.2, 2.0, 0.5, 1.3, 0.4),  # increasing rate, generic
        (3.0, 0.5, 0.9, 0.9, 0.9),  # decreasing rate, β = γ = λ exactly
        (1.0, 2.0, 0.6 + 1e-7, 0.6, 0.6 - 1e-7),  # all three within 1e-7
        (1.0, 1.5, 0.3, 0.3, 2.0),  # β = λ
        (1.0, 1.5, 2.0, 0.3, 2.0),  # γ = λ
    ],
)
def test_time_dependent_induction_matches_ode(alpha, alpha_1, lam, beta, gamma):
    u, s = induction_time_dependent(
        _t64(alpha), _t64(alpha_1), _t64(lam), _t64(beta), _t64(gamma), _t64(TIMES)
    )
    rate = lambda t: alpha_1 - (alpha_1 - alpha) * np.exp(-lam * t)  # noqa: E731
    u_ref, s_ref = _ode(rate, beta, gamma, TIMES)
    np.testing.assert_allclose(u.numpy(), u_ref, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(s.numpy(), s_ref, rtol=1e-8, atol=1e-12)


def _matrix_route(a, b, c, t):
    """The oracle: K₃(a, b, c, t) = exp(−tD)[0, 2] for D = bidiag(a, b, c; superdiagonal 1)
    (Opitz's formula for the second divided difference; exact for any tie of the rates)."""
    a, b, c, t = torch.broadcast_tensors(a, b, c, t)
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    rows = [torch.stack(r, dim=-1) for r in ([a, one, zero], [zero, b, one], [zero, zero, c])]
    return torch.linalg.matrix_exp(-t[..., None, None] * torch.stack(rows, dim=-2))[..., 0, 2]


def _rate_grid() -> tuple[torch.Tensor, ...]:
    """(λ, β, γ, t) over generic rates and every near-tie: gaps 0, 1e-7 … 1e-1 between any
    two or all three rates, rates 0 (the α₁ term) to 50 (the clamp), t up to 20."""
    base = torch.tensor([0.0, 0.01, 0.3, 1.0, 4.0, 50.0], dtype=torch.float64)
    gaps = torch.tensor([0.0, 1e-7, 1e-5, 1e-3, 0.03, 0.1, 0.5], dtype=torch.float64)
    times = torch.tensor([0.0, 1e-3, 0.05, 0.7, 3.0, 9.5, 20.0], dtype=torch.float64)
    r, g1, g2, tt = torch.meshgrid(base, gaps, gaps, times, indexing="ij")
    generic = torch.rand(4, 2000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lam = torch.cat([r.flatten(), generic[0] * 5])
    beta = torch.cat([(r + g1).flatten(), generic[1] * 5])
    gamma = torch.cat([(r + g1 + g2).flatten(), generic[2] * 5])
    t = torch.cat([tt.flatten(), generic[3] * 20])
    return lam, beta, gamma, t


def test_three_rate_convolution_matches_the_matrix_route_for_every_tie():
    lam, beta, gamma, t = _rate_grid()
    oracle = _matrix_route(lam, beta, gamma, t)
    for args in ((lam, beta, gamma), (gamma, lam, beta), (beta, gamma, lam)):  # symmetric
        torch.testing.assert_close(exp_convolution3(*args, t), oracle, rtol=1e-9, atol=1e-15)
    # numpy (the dashboard's α(t) curves) gives the same numbers
    np.testing.assert_allclose(
        exp_convolution3(lam.numpy(), beta.numpy(), gamma.numpy(), t.numpy()),
        oracle.numpy(),
        rtol=1e-9,
        atol=1e-15,
    )


def test_three_rate_convolution_in_float32_and_its_gradient():
    """Training runs in float32: the values stay within float32 rounding of the float64 truth,
    and the gradients are finite at exact ties and agree with the matrix route's (whose own
    backward is only good to ~1e-6 near ties, measured against finite differences)."""
    lam, beta, gamma, t = _rate_grid()
    truth = _matrix_route(lam, beta, gamma, t)
    ours32 = exp_convolution3(lam.float(), beta.float(), gamma.float(), t.float()).double()
    torch.testing.assert_close(ours32, truth, rtol=2e-5, atol=1e-7)
    leaves = [x.clone().requires_grad_(True) for x in (lam, beta, gamma)]
    exp_convolution3(*leaves, t).sum().backward()
    oracle_leaves = [x.clone().requires_grad_(True) for x in (lam, beta, gamma)]
    _matrix_route(*oracle_leaves, t).sum().backward()
    for ours, oracle in zip(leaves, oracle_leaves, strict=True):
        assert torch.isfinite(ours.grad).all()
        torch.testing.assert_close(ours.grad, oracle.grad, rtol=3e-6, atol=1e-10)


@BACKENDS
def test_time_dependent_induction_on_both_backends(array):
    args = (0.2, 2.0, 0.5, 1.3, 0.4)
    u, s = induction_time_dependent(*(array(x) for x in args), array(TIMES))
    u_ref, s_ref = _ode(lambda t: 2.0 - 1.8 * np.exp(-0.5 * t), 1.3, 0.4, TIMES)
    np.testing.assert_allclose(_values(u), u_ref, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(_values(s), s_ref, rtol=1e-8, atol=1e-12)


def test_time_dependent_reduces_to_constant_rate():
    args = [torch.rand(50, dtype=torch.float64) + 0.1 for _ in range(3)]
    t = torch.rand(50, dtype=torch.float64) * 20
    alpha, beta, gamma = args
    u, s = induction_time_dependent(alpha, alpha, torch.full_like(alpha, 0.4), beta, gamma, t)
    u_c, s_c = induction(alpha, beta, gamma, t)
    torch.testing.assert_close(u, u_c)
    torch.testing.assert_close(s, s_c)


def test_velocity_identity_is_ode_rhs():
    """v = βu − γs equals ds/dt; checked by central differences of the closed form."""
    alpha, beta, gamma = _t64(1.7), _t64(0.9), _t64(0.35)
    t = _t64(np.linspace(0.5, 15.0, 30))
    h = 1e-5
    u, s = induction(alpha, beta, gamma, t)
    _, s_plus = induction(alpha, beta, gamma, t + h)
    _, s_minus = induction(alpha, beta, gamma, t - h)
    np.testing.assert_allclose(
        (beta * u - gamma * s).numpy(), ((s_plus - s_minus) / (2 * h)).numpy(), rtol=1e-7
    )
    u_r, s_r = repression(_t64(2.0), _t64(3.0), beta, gamma, t)
    _, s_rp = repression(_t64(2.0), _t64(3.0), beta, gamma, t + h)
    _, s_rm = repression(_t64(2.0), _t64(3.0), beta, gamma, t - h)
    np.testing.assert_allclose(
        (beta * u_r - gamma * s_r).numpy(), ((s_rp - s_rm) / (2 * h)).numpy(), rtol=1e-7
    )


def test_float32_stable_near_gamma_equals_beta():
    """float32 with |γ − β| ≤ 1e-6 (where the reference's +1e-6 breaks) stays at float64 values."""
    beta = torch.full((7,), 0.8)
    gamma = beta + torch.tensor([-1e-6, -5e-7, -1e-7, 0.0, 1e-7, 5e-7, 1e-6])
    t = torch.full((7,), 6.0)
    alpha = torch.ones(7)
    u, s = induction(alpha, beta, gamma, t)
    u64, s64 = induction(alpha.double(), beta.double(), gamma.double(), t.double())
    assert torch.isfinite(s).all()
    np.testing.assert_allclose(s.numpy(), s64.numpy(), rtol=1e-5)
    np.testing.assert_allclose(u.numpy(), u64.numpy(), rtol=1e-5)
    _, s_rep = repression(u, s, beta, gamma, t)
    _, s_rep64 = repression(u64, s64, beta.double(), gamma.double(), t.double())
    np.testing.assert_allclose(s_rep.numpy(), s_rep64.numpy(), rtol=1e-5)


def test_gradients_finite_at_gamma_equals_beta():
    beta = torch.tensor([0.5, 0.5], requires_grad=True)
    gamma = torch.tensor([0.5, 0.5 + 1e-7], requires_grad=True)
    _, s = induction(torch.ones(2), beta, gamma, torch.tensor([3.0, 3.0]))
    s.sum().backward()
    assert torch.isfinite(beta.grad).all() and torch.isfinite(gamma.grad).all()
    # d s / d γ at γ = β is the derivative of the exact limit, not 0 or NaN.
    assert beta.grad[0] != 0 and gamma.grad[0] != 0


def test_trajectory_switches_and_matches_ode():
    t, u, s = trajectory(1.5, 0.8, 0.3, t_switch=8.0, t_max=20.0, n_points=101)
    assert t.shape == u.shape == s.shape == (101,)
    assert t[0] == 0.0 and t[-1] == 20.0 and 8.0 in t
    assert np.all(np.diff(t) > 0)
    u_ref, s_ref = _ode(lambda x: 1.5 if x < 8.0 else 0.0, 0.8, 0.3, t, max_step=0.05)
    np.testing.assert_allclose(u, u_ref, atol=1e-6)
    np.testing.assert_allclose(s, s_ref, atol=1e-6)


@pytest.mark.parametrize(
    ("alpha", "alpha_1", "lam"), [(0.3, 2.0, 0.4), (2.5, 0.4, 1.1), (1.0, 1.0, 0.7)]
)
def test_time_dependent_trajectory_and_rate_match_ode(alpha, alpha_1, lam):
    """The dashboard's curve of an α(t) fit: induction with α(t) = α₁ − (α₁ − α)e^{−λt} up to
    the switch, then repression (α = 0); `transcription_rate` is that α(t)."""
    beta, gamma, t_switch = 0.8, 0.3, 7.0
    t, u, s = trajectory(alpha, beta, gamma, t_switch, 20.0, 151, alpha_1=alpha_1, lambda_alpha=lam)
    induced = lambda x: alpha_1 - (alpha_1 - alpha) * np.exp(-lam * x)  # noqa: E731
    rate = transcription_rate(alpha, alpha_1, lam, t_switch, t)
    np.testing.assert_allclose(rate[t < t_switch], induced(t)[t < t_switch])
    assert np.all(rate[t >= t_switch] == 0.0)
    u_ref, s_ref = _ode(
        lambda x: induced(x) if x < t_switch else 0.0, beta, gamma, t, max_step=0.05
    )
    np.testing.assert_allclose(u, u_ref, atol=1e-6)
    np.testing.assert_allclose(s, s_ref, atol=1e-6)
    # λ = 0 is the constant-rate curve
    constant = trajectory(alpha, beta, gamma, t_switch, 20.0, 151)
    np.testing.assert_array_equal(
        trajectory(alpha, beta, gamma, t_switch, 20.0, 151, alpha_1, 0.0)[2], constant[2]
    )
