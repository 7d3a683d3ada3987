"""SplicedVAE: scVI with a splicing-ratio head (torch module and user model).

scVI's parts as scvi-tools builds them: an encoder log(1 + x) → hidden → q(z) = N(m, v); a
negative-binomial decoder z → softmax(·) · library with one inverse dispersion θ per gene; the
library size either the cell's observed total (scVI's ``use_observed_lib_size=True``, the
default) or a latent log-normal ℓ with the data's log-library mean and variance as its prior
(``latent_library``). The splicing head, the paper's addition, is a 2-layer MLP z → hidden → G
with a sigmoid: the spliced share r = s / (s + u) of every gene of a cell.

Loss per cell = −log p_NB(x | z) + kl_weight · KL(q(z) ‖ N(0, I)) [+ KL of ℓ] + λ · L_splice,
with L_splice one of :data:`SPLICE_LOSSES` (:func:`splice_loss`), each summed over the cell's
genes like the ELBO's terms. Training reuses :func:`core.train.train` (its minibatch loop,
optimiser, KL warm-up and seeded split); the model's forward takes (total counts, spliced
counts) where veloVI's takes (Ms, Mu).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from core.blocks import blocks
from core.model import LossTerms, _hidden_stack, kl_normal_standard
from core.options import SPLICE_LOSSES
from core.train import EpochReport, History, TrainConfig, train

#: Floor and ceiling of a predicted ratio inside log terms (the sigmoid can round to 0 or 1).
_RATIO_EPS = 1e-6
#: Cells per chunk when predicting (bounds the (cells, genes) temporaries).
_PREDICT_CELLS = 4096


@dataclass(frozen=True)
class SplicingConfig:
    """Architecture, loss and schedule (defaults: the paper's pancreas setting, scVI's optimiser).

    ``train_size`` is the share of reference cells trained on; the rest are held out and every
    validation metric is measured on them. ``splice_weight`` is λ.
    """

    n_latent: int = 50
    n_hidden: int = 128
    n_layers: int = 1
    head_hidden: int = 128
    dropout: float = 0.1
    latent_library: bool = False
    loss: str = SPLICE_LOSSES[0]
    splice_weight: float = 1.0
    max_epochs: int = 150
    lr: float = 1e-3
    weight_decay: float = 1e-6
    batch_size: int = 128
    train_size: float = 0.7
    n_epochs_kl_warmup: int = 400
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in SPLICE_LOSSES:
            raise ValueError(f"loss must be one of {', '.join(SPLICE_LOSSES)}; got {self.loss!r}.")
        if min(self.n_latent, self.n_hidden, self.n_layers, self.head_hidden) < 1:
            raise ValueError("n_latent, n_hidden, n_layers and head_hidden must be positive.")
        if self.splice_weight < 0:
            raise ValueError(f"splice_weight must be ≥ 0, got {self.splice_weight}.")

    def train_config(self) -> TrainConfig:
        """The :class:`core.train.TrainConfig` that trains this model: a fixed number of epochs
        (no early stopping, no velocity convergence rule), Adam as scVI, the seeded split."""
        return TrainConfig(
            max_epochs=self.max_epochs,
            lr=self.lr,
            weight_decay=self.weight_decay,
            eps=0.01,
            batch_size=self.batch_size,
            train_size=self.train_size,
            early_stopping=False,
            n_epochs_kl_warmup=self.n_epochs_kl_warmup,
            gradient_clip=10.0,
            seed=self.seed,
            convergence=None,
        )


def nb_log_prob(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """log NB(x; mean μ, inverse dispersion θ) elementwise (scvi-tools' ``log_nb_positive``)."""
    log_theta_mu = torch.log(theta + mu + 1e-8)
    return (
        theta * (torch.log(theta + 1e-8) - log_theta_mu)
        + x * (torch.log(mu + 1e-8) - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1.0)
    )


def kl_normal(
    mean: torch.Tensor, var: torch.Tensor, prior_mean: torch.Tensor, prior_var: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean, var) ‖ N(prior_mean, prior_var)) summed over the last axis."""
    ratio = var / prior_var
    return 0.5 * (ratio + (mean - prior_mean).square() / prior_var - 1.0 - ratio.log()).sum(-1)


def splice_loss(kind: str, ratio: torch.Tensor, spliced: torch.Tensor, total: torch.Tensor):
    """L_splice per cell (B,), summed over genes, for predicted ratios ``ratio`` (B, G).

    Entries with no counts (total 0) carry no information and count for nothing.
    ``"mse"``: Σ_g (r̂ − s/t)²; ``"weighted_mse"``: Σ_g t·(r̂ − s/t)² (each entry weighted
    by its total count); ``"binomial"``: −Σ_g [s log r̂ + u log(1 − r̂)], the binomial
    log-likelihood of s spliced out of t without its constant log C(t, s).
    """
    observed = total > 0
    target = torch.where(observed, spliced / total.clamp_min(1.0), torch.zeros_like(total))
    if kind == "mse":
        return torch.where(observed, (ratio - target).square(), 0.0).sum(-1)
    if kind == "weighted_mse":
        return (total * (ratio - target).square()).sum(-1)
    if kind == "binomial":
        r = ratio.clamp(_RATIO_EPS, 1.0 - _RATIO_EPS)
        return -(spliced * r.log() + (total - spliced) * torch.log1p(-r)).sum(-1)
    raise ValueError(f"splice loss must be one of {', '.join(SPLICE_LOSSES)}; got {kind!r}.")


class SplicedVAEModule(nn.Module):
    """Encoder, NB decoder and splicing head over G genes (see the module docstring).

    ``library_prior`` = (mean, variance) of the log library size of the training cells, the
    prior of the latent library (scVI computes it per batch; there is one batch here).
    """

    def __init__(
        self, n_genes: int, config: SplicingConfig, library_prior: tuple[float, float]
    ) -> None:
        super().__init__()
        c = config
        self.config = config
        self.n_genes = n_genes
        self.encoder = _hidden_stack(n_genes, c.n_hidden, c.n_layers, c.dropout)
        self.z_mean = nn.Linear(c.n_hidden, c.n_latent)
        self.z_var = nn.Linear(c.n_hidden, c.n_latent)
        if c.latent_library:
            self.l_encoder = _hidden_stack(n_genes, c.n_hidden, 1, c.dropout)
            self.l_mean = nn.Linear(c.n_hidden, 1)
            self.l_var = nn.Linear(c.n_hidden, 1)
        self.decoder = _hidden_stack(c.n_latent, c.n_hidden, c.n_layers, 0.0)
        self.scale_head = nn.Linear(c.n_hidden, n_genes)
        self.log_theta = nn.Parameter(torch.randn(n_genes))
        self.splice_head = nn.Sequential(
            nn.Linear(c.n_latent, c.head_hidden), nn.ReLU(), nn.Linear(c.head_hidden, n_genes)
        )
        self.register_buffer("library_prior", torch.tensor(library_prior, dtype=torch.float32))

    @torch.no_grad()
    def start_at(self, ratio: np.ndarray) -> None:
        """Start the head at per-gene ratios (G,): its output bias becomes their logits, so an
        untrained head predicts each gene's mean share and training learns the cells' departures
        from it (from a bias of 0 every gene would start at 0.5)."""
        r = torch.as_tensor(np.clip(ratio, 0.01, 0.99), dtype=torch.float32)
        self.splice_head[-1].bias.copy_(torch.log(r) - torch.log1p(-r))

    def encode(self, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | x): mean and variance (B, L) from counts (B, G) (log(1 + x) in, as scVI)."""
        hidden = self.encoder(torch.log1p(counts))
        return self.z_mean(hidden), torch.exp(self.z_var(hidden)) + 1e-4

    def library(self, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log library to decode with (B, 1), its KL to the prior (B,)): the observed log total
        count, or a draw of the latent library with its KL (``latent_library``)."""
        observed = torch.log(counts.sum(-1, keepdim=True).clamp_min(1.0))
        if not self.config.latent_library:
            return observed, torch.zeros(counts.shape[0], device=counts.device)
        hidden = self.l_encoder(torch.log1p(counts))
        mean, var = self.l_mean(hidden), torch.exp(self.l_var(hidden)) + 1e-4
        prior_mean, prior_var = self.library_prior[0], self.library_prior[1]
        draw = mean + var.sqrt() * torch.randn_like(mean) if self.training else mean
        return draw, kl_normal(mean, var, prior_mean, prior_var)

    def ratio(self, z: torch.Tensor) -> torch.Tensor:
        """Predicted spliced share s / (s + u) of every gene, (B, G) in (0, 1)."""
        return torch.sigmoid(self.splice_head(z))

    def forward(
        self,
        counts: torch.Tensor,
        spliced: torch.Tensor,
        kl_weight: float | torch.Tensor = 1.0,
        pi_estimator: str = "",
    ) -> LossTerms:
        """One stochastic pass over total counts and spliced counts (B, G); ``pi_estimator``
        is accepted for :func:`core.train.train` and unused (there are no state weights).

        Returns LossTerms(loss, −log p_NB, KL_z + KL_ℓ, 0): the ELBO's parts per cell (B,) and
        loss = mean_B(−log p + kl_weight·KL + λ·L_splice).
        """
        mean, var = self.encode(counts)
        z = mean + var.sqrt() * torch.randn_like(mean)
        log_library, kl_library = self.library(counts)
        rate = torch.exp(log_library) * torch.softmax(self.scale_head(self.decoder(z)), dim=-1)
        reconstruction = -nb_log_prob(counts, rate, torch.exp(self.log_theta)).sum(-1)
        kl = kl_normal_standard(mean, var) + kl_library
        splice = splice_loss(self.config.loss, self.ratio(z), spliced, counts)
        loss = (reconstruction + kl_weight * kl + self.config.splice_weight * splice).mean()
        return LossTerms(loss, reconstruction, kl, torch.zeros_like(kl))


class SplicedVAE:
    """SplicedVAE on raw counts: ``counts`` (N, G) totals s + u, ``spliced`` (N, G) s ≤ totals.

    ``seed`` fixes initialisation, split, minibatches and dropout (inside ``fork_rng``: the
    global RNG is left as it was). After :meth:`train`, :attr:`train_cells` and
    :attr:`held_out_cells` are the reference cells trained on and held out.
    """

    def __init__(
        self,
        counts: np.ndarray,
        spliced: np.ndarray,
        config: SplicingConfig = SplicingConfig(),
        device: str | torch.device = "cpu",
    ) -> None:
        from core.train import _split

        self.counts = np.asarray(counts, dtype=np.float32)
        self.spliced = np.asarray(spliced, dtype=np.float32)
        if self.counts.ndim != 2 or self.counts.shape != self.spliced.shape:
            raise ValueError(
                f"counts {self.counts.shape} and spliced {self.spliced.shape} must be equal (N, G)."
            )
        self.config = config
        self.device = torch.device(device)
        self.train_cells, self.held_out_cells = _split(
            self.counts.shape[0], config.train_size, config.seed
        )
        log_library = np.log(np.maximum(self.counts[self.train_cells].sum(1), 1.0))
        prior = (float(log_library.mean()), float(max(log_library.var(), 1e-4)))
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            self.module = SplicedVAEModule(self.counts.shape[1], config, prior)
        train = self.train_cells
        share = self.spliced[train].sum(0) / np.maximum(self.counts[train].sum(0), 1.0)
        self.module.start_at(np.where(self.counts[train].sum(0) > 0, share, 0.5))
        self.module.to(self.device)
        self.history: History | None = None

    def train(
        self,
        progress: Callable[[EpochReport], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> History:
        """Fit on the training cells (ELBO history: train and held-out cells per epoch)."""
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.config.seed + 1)
            self.history = train(
                self.module,
                self.counts,
                self.spliced,
                self.config.train_config(),
                self.device,
                progress,
                should_stop,
            )
        return self.history

    @torch.no_grad()
    def predict_ratio(self, counts: np.ndarray) -> np.ndarray:
        """Predicted spliced share (N, G) float32 of cells with total counts ``counts`` over the
        model's genes, from the posterior mean of z (eval mode: no dropout)."""
        self.module.eval()
        counts = np.asarray(counts, dtype=np.float32)
        if counts.ndim != 2 or counts.shape[1] != self.module.n_genes:
            raise ValueError(
                f"the model was trained on {self.module.n_genes} genes; got {counts.shape}."
            )
        out = np.empty(counts.shape, dtype=np.float32)
        for cells in blocks(counts.shape[0], _PREDICT_CELLS):
            x = torch.from_numpy(counts[cells]).to(self.device)
            out[cells] = self.module.ratio(self.module.encode(x)[0]).cpu().numpy()
        return out

    @torch.no_grad()
    def latent(self, counts: np.ndarray) -> np.ndarray:
        """Posterior mean of z (N, L) for cells with total counts ``counts``."""
        self.module.eval()
        x = torch.as_tensor(np.asarray(counts, dtype=np.float32), device=self.device)
        return torch.cat([self.module.encode(c)[0] for c in x.split(_PREDICT_CELLS)]).cpu().numpy()
