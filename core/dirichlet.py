"""The Dirichlet state weights π of veloVI: E[log π], KL to the prior, and draws.

Layout: the K = 4 states are the second-to-last axis, ``(…, K, G)`` (state planes of genes), so
sums and logsumexps over states run over contiguous gene vectors (3× faster than a trailing
size-4 axis on the CPU).

:func:`expected_log_and_kl` returns E_q[log π] and KL(Dir(c) ‖ Dir(a·1)) from one set of
special-function evaluations, with a hand-written backward that reuses them: autograd of the
textbook formulas evaluates digamma twice and trigamma twice per element, and those scalar
kernels dominated a training step. :func:`rsample_log` is the reparameterised draw the
reference trains with (log π, from :mod:`core.gamma`'s vectorised sampler).
"""

from __future__ import annotations

import math

import torch

from core import gamma

STATE_AXIS = -2


class _ExpectedLogAndKL(torch.autograd.Function):
    """(E[log π] (…, K, G), KL (…, G)) of Dir(c) against the symmetric Dir(prior·1)."""

    @staticmethod
    def forward(ctx, concentration: torch.Tensor, prior: float):
        k = concentration.shape[STATE_AXIS]
        total = concentration.sum(STATE_AXIS)
        expected_log = torch.digamma(concentration) - torch.digamma(total).unsqueeze(STATE_AXIS)
        kl = (
            torch.lgamma(total)
            - torch.lgamma(concentration).sum(STATE_AXIS)
            + (k * math.lgamma(prior) - math.lgamma(k * prior))
            + ((concentration - prior) * expected_log).sum(STATE_AXIS)
        )
        ctx.save_for_backward(concentration, total)
        ctx.prior = prior
        return expected_log, kl

    @staticmethod
    def backward(ctx, grad_expected_log: torch.Tensor | None, grad_kl: torch.Tensor | None):
        # With ψ' the trigamma function and C = Σ_k c_k:
        #   ∂E[log π_k]/∂c_j = ψ'(c_k) δ_kj − ψ'(C)
        #   ∂KL/∂c_j         = (c_j − a) ψ'(c_j) − (C − K a) ψ'(C)
        concentration, total = ctx.saved_tensors
        k = concentration.shape[STATE_AXIS]
        prior = ctx.prior
        per_state = torch.zeros_like(concentration)
        shared = torch.zeros_like(total)
        if grad_expected_log is not None:
            per_state = per_state + grad_expected_log
            shared = shared + grad_expected_log.sum(STATE_AXIS)
        if grad_kl is not None:
            per_state = per_state + grad_kl.unsqueeze(STATE_AXIS) * (concentration - prior)
            shared = shared + grad_kl * (total - k * prior)
        grad = torch.polygamma(1, concentration) * per_state - (
            torch.polygamma(1, total) * shared
        ).unsqueeze(STATE_AXIS)
        return grad, None


def expected_log_and_kl(
    concentration: torch.Tensor, prior: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """E_q[log π_k] = ψ(c_k) − ψ(Σc) (…, K, G) and KL(Dir(c) ‖ Dir(prior·1)) (…, G).

    ``concentration`` (…, K, G) > 0, states on :data:`STATE_AXIS`; differentiable in it.
    """
    return _ExpectedLogAndKL.apply(concentration, prior)


class _LogGamma(torch.autograd.Function):
    """log of one Gamma(c, 1) draw per element, drawn by :func:`core.gamma.log_standard_gamma`
    (vectorised, about 2× faster than ``torch._standard_gamma`` on a CPU), with the implicit
    reparameterisation gradient dx/dc = −(∂F(x; c)/∂c) / f(x; c) that ``torch._standard_gamma``
    back-propagates (``torch._standard_gamma_grad``), so d log x/dc = (dx/dc)/x. A draw that
    underflows in x (a concentration near 0: 0 or a subnormal) gets no gradient; its weight π_k
    is 0 (below the eps floor) either way."""

    @staticmethod
    def forward(ctx, concentration: torch.Tensor, generator: torch.Generator | None):
        log_x = gamma.log_standard_gamma(concentration.detach(), generator)
        ctx.save_for_backward(log_x, concentration)
        return log_x

    @staticmethod
    def backward(ctx, grad_log_x: torch.Tensor):
        log_x, concentration = ctx.saved_tensors
        x = log_x.exp()
        d_log_x = torch._standard_gamma_grad(concentration, x) / x
        return grad_log_x * d_log_x.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0), None


def rsample_log(
    concentration: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """log π of one reparameterised draw π ~ Dir(c) (…, K, G): the log-softmax of K
    log-gamma draws (:class:`_LogGamma`), the reference's estimator (it trains with
    ``Dirichlet(c).rsample()``). Clamped to [log eps, log(1 − eps)] as ``Categorical(probs=π)``
    clamps π before its log, so the mixture sees the reference's weights."""
    log_pi = torch.log_softmax(_LogGamma.apply(concentration, generator), dim=STATE_AXIS)
    eps = torch.finfo(log_pi.dtype).eps
    return log_pi.clamp(math.log(eps), math.log1p(-eps))
