"""The Dirichlet state weights π of veloVI: E[log π], KL to the prior, and draws.

Layout: the K = 4 states are the second-to-last axis, ``(…, K, G)`` (state planes of genes), so
sums and logsumexps over states run over contiguous gene vectors (3× faster than a trailing
size-4 axis on the CPU).

:func:`expected_log_and_kl` returns E_q[log π] and KL(Dir(c) ‖ Dir(a·1)) from one set of
special-function evaluations, with a hand-written backward that reuses them: autograd of the
textbook formulas evaluates digamma twice and trigamma twice per element, and those scalar
kernels dominated a training step. :func:`rsample` is the reparameterised draw the reference
trains with; :func:`sample` is the inference draw (no gradient), see :mod:`core.gamma`.
"""

from __future__ import annotations

import math

import torch

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


def rsample(concentration: torch.Tensor) -> torch.Tensor:
    """Reparameterised draw π ~ Dir(c) (…, K, G) via normalised standard gammas (torch's
    implicit-reparameterisation gradient), as the reference trains."""
    gammas = torch._standard_gamma(concentration)
    return gammas / gammas.sum(STATE_AXIS, keepdim=True)


def mean(concentration: torch.Tensor) -> torch.Tensor:
    """E[π] = c / Σc (…, K, G)."""
    return concentration / concentration.sum(STATE_AXIS, keepdim=True)


def log_weights(pi: torch.Tensor) -> torch.Tensor:
    """log π with π clamped to [eps, 1 − eps] first, as ``Categorical(probs=π)`` does."""
    eps = torch.finfo(pi.dtype).eps
    return pi.clamp(eps, 1.0 - eps).log()
