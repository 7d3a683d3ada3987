"""The fast inference sampler: Gamma and Dirichlet laws checked against scipy (KS tests)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats as st
import torch

from core import gamma
from core.posterior import _induction_repression_weights

N_DRAWS = 100_000


@pytest.mark.parametrize("shape", [0.01, 0.3, 0.999, 1.0, 2.5, 30.0, 1000.0])
def test_log_gamma_draws_follow_the_log_gamma_law(shape):
    torch.manual_seed(0)
    draws = gamma.log_standard_gamma(torch.full((N_DRAWS,), shape)).double().numpy()
    # scipy's loggamma(c) is the law of log X for X ~ Gamma(c, 1)
    assert st.kstest(draws, st.loggamma(shape).cdf).pvalue > 1e-3
    assert np.isfinite(draws).all()


def test_mixed_shapes_in_one_tensor_and_tiny_shapes_never_underflow():
    torch.manual_seed(1)
    shapes = torch.tensor([1e-8, 0.05, 3.0, 400.0]).repeat(50_000)
    draws = gamma.log_standard_gamma(shapes.view(-1, 4)).view(-1, 4).double().numpy()
    assert np.isfinite(draws).all()
    for k, shape in enumerate((0.05, 3.0, 400.0), start=1):
        assert st.kstest(draws[:, k], st.loggamma(shape).cdf).pvalue > 1e-3
    # Gamma(1e-8) is astronomically small, yet its log is finite and far below float32's range
    assert draws[:, 0].max() < -1e3


def test_draws_are_reproducible_with_the_torch_seed():
    shapes = torch.rand(3, 4, 50) * 3
    torch.manual_seed(7)
    first = gamma.log_standard_gamma(shapes)
    torch.manual_seed(7)
    torch.testing.assert_close(gamma.log_standard_gamma(shapes), first, rtol=0, atol=0)


def test_dirichlet_marginals_are_beta():
    torch.manual_seed(2)
    conc = torch.tensor([0.2, 1.5, 0.7, 4.0])
    draws = gamma.dirichlet(conc.expand(N_DRAWS, 4), dim=-1).double().numpy()
    np.testing.assert_allclose(draws.sum(1), 1.0, rtol=1e-5)
    total = float(conc.sum())
    for k, c in enumerate(conc.tolist()):
        assert st.kstest(draws[:, k], st.beta(c, total - c).cdf).pvalue > 1e-3


def test_three_gamma_induction_repression_weights_have_the_dirichlet_joint_law():
    """(π_ind, π_rep) from Dir(c_ind, c_rep, c_ind,steady + c_rep,steady) equal the first and
    third weights of Dir(c): both marginals are Beta, and so is their sum."""
    torch.manual_seed(3)
    conc = torch.tensor([0.6, 0.3, 2.0, 0.9])  # induction, ind. steady, repression, rep. steady
    weights = _induction_repression_weights(conc[:, None].expand(4, N_DRAWS)).double().numpy()
    total = float(conc.sum())
    assert st.kstest(weights[0], st.beta(0.6, total - 0.6).cdf).pvalue > 1e-3
    assert st.kstest(weights[1], st.beta(2.0, total - 2.0).cdf).pvalue > 1e-3
    assert st.kstest(weights.sum(0), st.beta(2.6, total - 2.6).cdf).pvalue > 1e-3


def test_no_nan_from_exact_zero_uniforms_or_zero_shapes():
    """10⁸ draws met a uniform of exactly 0 (log −inf, then −inf × 0 = NaN); shapes of exactly 0
    (an underflowed softplus) must give a proper draw too."""
    torch.manual_seed(4)
    shapes = torch.tensor([0.0, 0.0, 0.0, 2.0, 0.3]).repeat(200_000).view(-1, 5)
    draws = gamma.log_standard_gamma(shapes)
    assert not torch.isnan(draws).any()
    pi = gamma.dirichlet(shapes[:, :3], dim=-1)  # all three shapes 0: still on the simplex
    assert not torch.isnan(pi).any()
    torch.testing.assert_close(pi.sum(-1), torch.ones(len(pi)))
    # exact zeros of torch.rand are kept away from the logs, for every shape
    uniform_logs = gamma._log_uniform(torch.empty(10**7), None)
    assert torch.isfinite(uniform_logs).all() and uniform_logs.max() <= 0
