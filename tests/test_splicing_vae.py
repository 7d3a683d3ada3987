"""SplicedVAE's pieces against oracles: the NB log-likelihood and the KL terms against
torch.distributions (and scvi-tools where installed), the head's shape and range, each splicing
loss against its formula written out by hand, and the training split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import Binomial, NegativeBinomial, Normal, kl_divergence

from core.model import kl_normal_standard
from core.splicing import split_counts
from core.splicing_vae import (
    SplicedVAE,
    SplicedVAEModule,
    SplicingConfig,
    kl_normal,
    nb_log_prob,
    splice_loss,
)

torch.manual_seed(0)
X = torch.poisson(torch.rand(6, 9) * 8)
MU = torch.rand(6, 9) * 10 + 0.1
THETA = torch.rand(9) * 5 + 0.2


def test_nb_log_prob_equals_torch_negative_binomial():
    """NB with mean μ and inverse dispersion θ is torch's NB(total_count=θ, logits=log μ/θ)."""
    oracle = NegativeBinomial(total_count=THETA, logits=MU.log() - THETA.log()).log_prob(X)
    assert torch.allclose(nb_log_prob(X, MU, THETA), oracle, atol=1e-4)


def test_nb_log_prob_equals_scvi_tools():
    distributions = pytest.importorskip("scvi.distributions")
    oracle = distributions.NegativeBinomial(mu=MU, theta=THETA).log_prob(X)
    assert torch.allclose(nb_log_prob(X, MU, THETA), oracle, atol=1e-4)


def test_kl_terms_equal_torch_distributions():
    mean, var = torch.randn(5, 4), torch.rand(5, 4) + 0.05
    prior_mean, prior_var = torch.tensor(2.0), torch.tensor(0.7)
    q = Normal(mean, var.sqrt())
    oracle = kl_divergence(q, Normal(prior_mean, prior_var.sqrt())).sum(-1)
    assert torch.allclose(kl_normal(mean, var, prior_mean, prior_var), oracle, atol=1e-5)
    standard = kl_divergence(q, Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(kl_normal_standard(mean, var), standard, atol=1e-5)


SPLICED = torch.tensor([[3.0, 0.0, 1.0, 0.0], [0.0, 2.0, 5.0, 1.0]])
TOTAL = torch.tensor([[4.0, 0.0, 1.0, 2.0], [1.0, 2.0, 8.0, 1.0]])
RATIO = torch.tensor([[0.7, 0.4, 0.9, 0.2], [0.1, 0.8, 0.6, 0.5]])


def _by_hand(kind: str) -> list[float]:
    out = []
    for r, s, t in zip(RATIO.tolist(), SPLICED.tolist(), TOTAL.tolist(), strict=True):
        cell = 0.0
        for rg, sg, tg in zip(r, s, t, strict=True):
            if tg == 0:
                continue
            if kind == "mse":
                cell += (rg - sg / tg) ** 2
            elif kind == "weighted_mse":
                cell += tg * (rg - sg / tg) ** 2
            else:
                cell -= sg * np.log(rg) + (tg - sg) * np.log(1 - rg)
        out.append(cell)
    return out


@pytest.mark.parametrize("kind", ["mse", "weighted_mse", "binomial"])
def test_each_splice_loss_is_its_formula(kind):
    got = splice_loss(kind, RATIO, SPLICED, TOTAL)
    assert got.shape == (2,)
    assert np.allclose(got.numpy(), _by_hand(kind), atol=1e-5)


def test_the_binomial_loss_is_the_binomial_likelihood_up_to_its_constant():
    oracle = Binomial(total_count=TOTAL, probs=RATIO).log_prob(SPLICED).sum(-1)
    constant = Binomial(total_count=TOTAL, probs=torch.full_like(RATIO, 0.5)).log_prob(SPLICED)
    constant = (constant - TOTAL * np.log(0.5)).sum(-1)  # log C(t, s)
    assert torch.allclose(-splice_loss("binomial", RATIO, SPLICED, TOTAL), oracle - constant)


def test_an_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="splice loss must be one of weighted_mse, mse, binomial"):
        splice_loss("l1", RATIO, SPLICED, TOTAL)
    with pytest.raises(ValueError, match="loss must be one of"):
        SplicingConfig(loss="l1")


@pytest.mark.parametrize("latent_library", [False, True])
def test_the_head_gives_one_ratio_per_gene_in_zero_one(latent_library):
    config = SplicingConfig(n_latent=7, n_hidden=16, head_hidden=8, latent_library=latent_library)
    module = SplicedVAEModule(4, config, (1.0, 0.5))
    z = torch.randn(3, 7) * 50
    ratio = module.ratio(z)
    assert ratio.shape == (3, 4) and bool(((ratio >= 0) & (ratio <= 1)).all())
    module.start_at(np.array([0.2, 0.5, 0.9, 0.0]))
    torch.nn.init.zeros_(module.splice_head[-1].weight)
    expected = torch.tensor([0.2, 0.5, 0.9, 0.01])  # an all-unspliced gene starts at 1 %
    assert torch.allclose(module.ratio(z), expected.expand(3, 4), atol=1e-6)
    terms = module(TOTAL, SPLICED)
    assert terms.reconstruction.shape == terms.kl_z.shape == (2,)
    assert torch.isfinite(terms.loss)


def test_training_keeps_the_split_and_learns_a_ratio_that_differs_between_cell_states():
    """Two cell states with different expression; gene 0 is 90 % spliced in one, 20 % in the
    other: the trained head tells them apart (its start, each gene's mean share, does not)."""
    rng = np.random.default_rng(0)
    state = np.arange(80) % 2
    rates = np.where(state[:, None] == 0, [8.0] * 6 + [1.0] * 6, [1.0] * 6 + [8.0] * 6)
    totals = rng.poisson(rates).astype(np.float32)
    share = np.full((80, 12), 0.6)
    share[:, 0] = np.where(state == 0, 0.9, 0.2)
    spliced = rng.binomial(totals.astype(int), share).astype(np.float32)
    model = SplicedVAE(totals, spliced, SplicingConfig(max_epochs=80, batch_size=16))
    assert len(model.train_cells) == 56 and len(model.held_out_cells) == 24
    assert set(model.train_cells).isdisjoint(model.held_out_cells)
    before = model.predict_ratio(totals)[:, 0]
    assert abs(before[state == 0].mean() - before[state == 1].mean()) < 0.05
    history = model.train()
    assert len(history.elbo_train) == len(history.elbo_validation) == 80
    held = model.held_out_cells
    ratio = model.predict_ratio(totals[held])
    assert ratio.shape == (24, 12) and ratio.dtype == np.float32
    gene0 = ratio[:, 0]
    assert gene0[state[held] == 0].mean() - gene0[state[held] == 1].mean() > 0.3


def test_split_counts_keeps_the_total_and_the_sparsity():
    import scipy.sparse as sp

    total = sp.csr_matrix(np.array([[2.0, 0.0, 4.0], [0.0, 1.0, 0.0]], dtype=np.float32))
    ratio = np.array([[0.5, 0.3, 0.25], [0.9, 0.2, 0.1]], dtype=np.float32)
    spliced, unspliced = split_counts(total, ratio)
    assert np.allclose((spliced + unspliced).toarray(), total.toarray())
    assert np.allclose(spliced.toarray(), [[1.0, 0.0, 1.0], [0.0, 0.2, 0.0]])
    assert spliced.nnz == total.nnz
