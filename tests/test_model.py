"""VeloVAE: shapes, finite loss and gradients, KL terms against torch.distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import Dirichlet, Normal, kl_divergence

from core import dirichlet
from core.model import (
    ModelConfig,
    VeloVAE,
    kl_normal_standard,
    mixture_log_prob,
    softplus_inverse,
    switch_targets,
)

N_CELLS, N_GENES = 64, 12


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    s = rng.random((N_CELLS, N_GENES)).astype(np.float32)
    u = rng.random((N_CELLS, N_GENES)).astype(np.float32)
    return s, u


def _module(s, u, **config):
    torch.manual_seed(0)
    return VeloVAE(*switch_targets(s, u), ModelConfig(n_hidden=32, **config))


def test_switch_targets_match_reference_definition(data):
    s, u = data
    u_up, s_up = switch_targets(s, u)
    top = int(N_CELLS * 0.99)
    for g in range(N_GENES):
        rows = np.argsort(u[:, g], kind="stable")[top:]
        assert u_up[g] == pytest.approx(max(np.median(u[rows, g]), 1e-3))
        assert s_up[g] == pytest.approx(np.median(s[rows, g]))


def test_alpha_init_finite_when_unspliced_is_zero(data):
    s, u = data
    u[:, 0] = 0.0
    module = _module(s, u)
    assert torch.isfinite(module.alpha_unconstr).all()
    assert module.rates().alpha[0] > 0
    np.testing.assert_allclose(
        torch.nn.functional.softplus(torch.tensor(softplus_inverse(np.array([0.3, 25.0])))),
        [0.3, 25.0],
        rtol=1e-6,
    )


@pytest.mark.parametrize("time_dependent", [False, True])
@pytest.mark.parametrize("pi_estimator", ["expected", "sampled"])
def test_loss_finite_and_every_parameter_gets_gradient(data, time_dependent, pi_estimator):
    s, u = (torch.from_numpy(x) for x in data)
    module = _module(*data, time_dependent_rate=time_dependent)
    module.train()
    terms = module(s, u, kl_weight=0.3, pi_estimator=pi_estimator)
    assert terms.loss.ndim == 0 and torch.isfinite(terms.loss)
    for part in (terms.reconstruction, terms.kl_z, terms.kl_pi):
        assert part.shape == (N_CELLS,) and torch.isfinite(part).all()
    terms.loss.backward()
    for name, p in module.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_gene_with_gamma_equal_beta_gives_finite_loss(data):
    s, u = (torch.from_numpy(x) for x in data)
    module = _module(*data)
    with torch.no_grad():
        module.gamma_unconstr.copy_(module.beta_unconstr)
        module.gamma_unconstr[1] = module.beta_unconstr[1] + 1e-7
    terms = module(s, u)
    terms.loss.backward()
    assert torch.isfinite(terms.loss)
    assert torch.isfinite(module.gamma_unconstr.grad).all()


def test_shapes(data):
    s, u = (torch.from_numpy(x) for x in data)
    module = _module(*data).eval()
    mean, var = module.encode(s, u)
    assert mean.shape == var.shape == (N_CELLS, 10) and (var > 1e-4).all()
    dec = module.decode(mean)
    assert dec.rho.shape == dec.tau.shape == (N_CELLS, N_GENES)
    assert dec.concentration.shape == (N_CELLS, 4, N_GENES) and (dec.concentration > 0).all()
    comp = module.components(dec.rho, dec.tau, module.rates())
    assert comp.mean_u.shape == comp.mean_s.shape == (N_CELLS, 4, N_GENES)
    assert (comp.mean_u[:, 3] == 0).all()
    std_u, _ = module.likelihood_std()
    torch.testing.assert_close(std_u[3], 0.1 * std_u[0])


def test_kl_terms_match_torch_distributions():
    torch.manual_seed(3)
    mean, var = torch.randn(20, 10), torch.rand(20, 10) + 0.01
    expected = kl_divergence(Normal(mean, var.sqrt()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(kl_normal_standard(mean, var), expected)
    conc = torch.rand(20, 4, 7, dtype=torch.float64) * 3 + 0.05  # (cells, states, genes)
    per_gene = conc.transpose(1, 2)  # torch.distributions wants the states last
    expected = kl_divergence(Dirichlet(per_gene), Dirichlet(torch.full_like(per_gene, 0.25)))
    expected_log, kl = dirichlet.expected_log_and_kl(conc, 0.25)
    torch.testing.assert_close(kl, expected)
    # E[log π_k] = ψ(c_k) − ψ(Σc), checked against a Monte-Carlo average of log π
    draws = Dirichlet(per_gene[:2]).sample((200_000,)).log().mean(0).transpose(1, 2)
    torch.testing.assert_close(expected_log[:2], draws, atol=0.02, rtol=0.01)


def test_dirichlet_terms_backward_matches_finite_differences():
    torch.manual_seed(5)
    conc = (torch.rand(3, 4, 5, dtype=torch.float64) * 4 + 0.02).requires_grad_()
    assert torch.autograd.gradcheck(lambda c: dirichlet.expected_log_and_kl(c, 0.25), (conc,))
    # either output alone (the other's gradient is None)
    assert torch.autograd.gradcheck(lambda c: dirichlet.expected_log_and_kl(c, 0.25)[1], (conc,))
    assert torch.autograd.gradcheck(lambda c: dirichlet.expected_log_and_kl(c, 0.25)[0], (conc,))


def test_mixture_log_prob_matches_mixture_same_family():
    torch.manual_seed(4)
    x, means = torch.rand(30, 5), torch.rand(30, 4, 5)  # states before genes
    std = torch.rand(4, 5) + 0.1
    pi = torch.distributions.Dirichlet(torch.ones(30, 5, 4)).sample()
    dist = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=pi), Normal(means.transpose(1, 2), std.T)
    )
    log_pi = pi.log().transpose(1, 2)
    torch.testing.assert_close(mixture_log_prob(x, means, std, log_pi), dist.log_prob(x))


def test_expected_estimator_is_a_lower_bound_of_the_sampled_one():
    """log Σ_k exp(E[log π_k]) p_k ≤ E[log Σ_k π_k p_k] (Jensen), with a visible gap for
    diffuse weights and none for concentrated ones."""
    torch.manual_seed(6)
    x, means, std = torch.rand(8, 5), torch.rand(8, 4, 5), torch.rand(4, 5) + 0.1
    for scale, gap_min in ((0.3, 0.05), (1e4, 0.0)):
        conc = (torch.rand(8, 4, 5) + 0.2) * scale
        expected_log, _ = dirichlet.expected_log_and_kl(conc, 0.25)
        bound = mixture_log_prob(x, means, std, expected_log)
        draws = Dirichlet(conc.transpose(1, 2)).sample((20_000,)).transpose(-1, -2)
        log_draws = draws.clamp(1.2e-7, 1 - 1.2e-7).log()  # as Categorical(probs=π) clamps
        sampled = mixture_log_prob(x, means, std, log_draws).mean(0)
        gap = sampled - bound
        assert (gap > -1e-3).all()
        assert gap.mean() >= gap_min


def test_reparameterised_dirichlet_draws_and_gradients_match_torch():
    """``rsample_log`` (vectorised log-gamma draws + torch's implicit reparameterisation
    gradient) has torch.distributions.Dirichlet's law and its rsample's expected gradients:
    E[π] = c/Σc, Var[π_k] = m_k(1 − m_k)/(Σc + 1), and ∂E[f(π)]/∂c for f = Σ_k w_k π_k² equals
    the gradient of torch's rsample (Monte Carlo, 40,000 draws each; closed form as the check)."""
    conc = torch.tensor([[0.05, 0.3, 1.7, 6.0], [0.8, 0.8, 0.8, 0.8]]).T[None]  # (1, 4 states, 2)
    draws = 40_000
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0])[:, None]

    def ours(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        pi = dirichlet.rsample_log(c.expand(draws, -1, -1)).exp()
        return pi, (weights * pi.square()).sum(1).mean(0)

    def theirs(c: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(1)
        pi = Dirichlet(c.transpose(1, 2).expand(draws, -1, -1)).rsample().transpose(1, 2)
        return (weights * pi.square()).sum(1).mean(0)

    c1, c2 = conc.clone().requires_grad_(), conc.clone().requires_grad_()
    pi, f_ours = ours(c1)
    mean = conc[0] / conc[0].sum(0)
    torch.testing.assert_close(pi.mean(0), mean, atol=0.01, rtol=0.02)
    variance = mean * (1 - mean) / (conc[0].sum(0) + 1)
    torch.testing.assert_close(pi.var(0), variance, atol=2e-3, rtol=0.05)
    # E[π_k²] = m_k (c_k + 1)/(Σc + 1): the exact gradient of E[f] by autograd of that form
    c3 = conc.clone().requires_grad_()
    exact = (weights * (c3[0] / c3[0].sum(0)) * (c3[0] + 1) / (c3[0].sum(0) + 1)).sum(0)
    f_ours.sum().backward()
    theirs(c2).sum().backward()
    exact.sum().backward()
    torch.testing.assert_close(c1.grad, c3.grad, atol=0.03, rtol=0.1)
    torch.testing.assert_close(c2.grad, c3.grad, atol=0.03, rtol=0.1)
