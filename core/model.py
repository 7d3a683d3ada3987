"""The veloVI variational autoencoder (torch module), as in the reference ``VELOVAE``.

Encoder [s ‖ u] → q(z) = N(m, softplus(·) + 1e-4); decoder z → (ρ, τ) time fractions and a
per cell-gene Dirichlet concentration over the four states (induction, induction steady,
repression, repression steady); per-gene rates α, β, γ (and α₁, λ for the time-dependent
transcription rate), switch time t_s and likelihood variances. The likelihood of u and s is a
4-state normal mixture with shared weights π ~ Dir. The mixture log-likelihood is written
directly (logsumexp over states) rather than through ``torch.distributions``; the closed forms
come from :mod:`core.kinetics`, the Dirichlet terms from :mod:`core.dirichlet`.

Layout: per-state tensors are ``(…, 4, G)`` (states before genes, see
:data:`core.dirichlet.STATE_AXIS`). The 4·G outputs of the state head are read as 4 planes of G
genes; which output unit feeds which (state, gene) is a relabelling of i.i.d.-initialised units,
so the model is the reference's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core import dirichlet, kinetics
from core.derived_layers import STATE_NAMES
from core.dirichlet import STATE_AXIS
from core.options import PI_ESTIMATORS

N_STATES = len(STATE_NAMES)
RATE_MAX = 50.0
#: Floor of the Dirichlet concentrations: a softplus that underflows to 0 would make ψ, lgamma
#: and the Dirichlet draws infinite or NaN (it only cuts outputs whose softplus is already < 1e-12).
CONCENTRATION_MIN = 1e-12
#: Floor of the constrained rates (the reference's is 0): keeps the closed forms' 1/β, 1/γ finite
#: should a softplus underflow; no fitted rate comes near it.
RATE_MIN = 1e-8
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_ALPHA_FLOOR = 1e-3  # u_up floor: softplus⁻¹(0) = −inf would kill the gene (reference pitfall)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and prior hyper-parameters (defaults are the reference veloVI's)."""

    n_hidden: int = 256
    n_latent: int = 10
    n_layers: int = 1
    dropout: float = 0.1
    t_max: float = 20.0
    penalty_scale: float = 0.2
    dirichlet_concentration: float = 0.25
    time_dependent_rate: bool = False

    def __post_init__(self) -> None:
        if self.n_hidden < 1 or self.n_latent < 1 or self.n_layers < 1:
            raise ValueError("n_hidden, n_latent and n_layers must all be positive integers.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.t_max <= 0 or self.dirichlet_concentration <= 0:
            raise ValueError("t_max and dirichlet_concentration must be positive.")


class Rates(NamedTuple):
    """Constrained per-gene parameters, each a (G,) tensor (model time units, t ∈ [0, t_max])."""

    alpha: torch.Tensor
    beta: torch.Tensor
    gamma: torch.Tensor
    alpha_1: torch.Tensor
    lambda_alpha: torch.Tensor
    t_switch: torch.Tensor


class Decoded(NamedTuple):
    """Decoder outputs for a batch of z: ρ, τ (…, G) in (0, 1); concentration (…, 4, G) > 0."""

    rho: torch.Tensor
    tau: torch.Tensor
    concentration: torch.Tensor


class Components(NamedTuple):
    """Means of u and s in the four states, state times (…, G) and the switch point (G,).

    The induction and repression means vary per cell, (…, G); the induction steady state
    (α₁/β, α₁/γ) is per gene, (G,); the repression steady state is (0, 0).
    """

    u_induction: torch.Tensor
    s_induction: torch.Tensor
    u_repression: torch.Tensor
    s_repression: torch.Tensor
    u_steady: torch.Tensor
    s_steady: torch.Tensor
    t_induction: torch.Tensor
    t_repression: torch.Tensor
    u0: torch.Tensor
    s0: torch.Tensor

    @property
    def mean_u(self) -> torch.Tensor:
        """Per-state means of u, (…, 4, G) in :data:`STATE_NAMES` order."""
        return self._stack(self.u_induction, self.u_steady, self.u_repression)

    @property
    def mean_s(self) -> torch.Tensor:
        """Per-state means of s, (…, 4, G) in :data:`STATE_NAMES` order."""
        return self._stack(self.s_induction, self.s_steady, self.s_repression)

    @staticmethod
    def _stack(induction, steady, repression) -> torch.Tensor:
        return torch.stack(
            (induction, steady.expand_as(induction), repression, torch.zeros_like(induction)),
            dim=STATE_AXIS,
        )

    def mixture_mean(self, pi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Σ_k π_k μ_k of s and u, each (…, G), for weights π (…, 4, G)."""
        pi_ind, pi_steady, pi_rep = pi[..., 0, :], pi[..., 1, :], pi[..., 2, :]
        s = pi_ind * self.s_induction + pi_steady * self.s_steady + pi_rep * self.s_repression
        u = pi_ind * self.u_induction + pi_steady * self.u_steady + pi_rep * self.u_repression
        return s, u


class LossTerms(NamedTuple):
    """Training objective (scalar) and its per-cell parts (B,): −log p, KL_z, KL_π."""

    loss: torch.Tensor
    reconstruction: torch.Tensor
    kl_z: torch.Tensor
    kl_pi: torch.Tensor


def switch_targets(spliced: np.ndarray, unspliced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median (u, s) of each gene's cells at or above its 99th unspliced percentile, (G,) each.

    As the reference: cells are ranked by Mu per gene and the top ``N − int(0.99 N)`` kept. u is
    floored at 1e-3 so that softplus⁻¹(u) (the α initialisation) stays finite.
    """
    n_cells = unspliced.shape[0]
    top = np.argsort(unspliced, axis=0, kind="stable")[int(n_cells * 0.99) :]
    u_up = np.median(np.take_along_axis(unspliced, top, axis=0), axis=0)
    s_up = np.median(np.take_along_axis(spliced, top, axis=0), axis=0)
    return np.maximum(u_up, _ALPHA_FLOOR).astype(np.float32), s_up.astype(np.float32)


def softplus_inverse(x: np.ndarray) -> np.ndarray:
    """Inverse of softplus for x > 0 (identity above 20, as the reference)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 20, x, np.log(np.expm1(np.minimum(x, 20))))


def _hidden_stack(n_in: int, n_hidden: int, n_layers: int, dropout: float) -> nn.Sequential:
    """scvi-tools FCLayers: (Linear → BatchNorm1d → LayerNorm(no affine) → ReLU → Dropout)×n."""
    layers: list[nn.Module] = []
    for i in range(n_layers):
        layers += [
            nn.Linear(n_in if i == 0 else n_hidden, n_hidden),
            nn.BatchNorm1d(n_hidden, momentum=0.01, eps=1e-3),
            nn.LayerNorm(n_hidden, elementwise_affine=False),
            nn.ReLU(),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def kl_normal_standard(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, var) ‖ N(0, 1)) summed over the last axis."""
    return 0.5 * (var + mean.square() - 1.0 - var.log()).sum(-1)


def mixture_log_prob(
    x: torch.Tensor, means: torch.Tensor, std: torch.Tensor, log_pi: torch.Tensor
) -> torch.Tensor:
    """log Σ_k π_k N(x; μ_k, σ_k²) for x (…, G), means/log_pi (…, K, G), std (K, G)."""
    z = (x.unsqueeze(STATE_AXIS) - means) / std
    return torch.logsumexp(log_pi - 0.5 * z.square() - std.log() - _LOG_SQRT_2PI, dim=STATE_AXIS)


class VeloVAE(nn.Module):
    """veloVI module: encoder, time/state decoders, kinetic parameters and the loss.

    ``u_switch``/``s_switch`` (G,) are the end-penalty targets (see :func:`switch_targets`);
    α is initialised at softplus⁻¹(u_switch). ``seed`` seeds the switch-time initialisation
    7 + 0.5·N(0, 1) (the network weights follow torch's global RNG, seed it for reproducibility).
    """

    def __init__(
        self,
        u_switch: np.ndarray,
        s_switch: np.ndarray,
        config: ModelConfig = ModelConfig(),
        seed: int = 0,
    ) -> None:
        super().__init__()
        n_genes = int(np.asarray(u_switch).shape[0])
        self.config = config
        self.n_genes = n_genes
        c = config
        self.encoder = _hidden_stack(2 * n_genes, c.n_hidden, c.n_layers, c.dropout)
        self.z_mean = nn.Linear(c.n_hidden, c.n_latent)
        self.z_var = nn.Linear(c.n_hidden, c.n_latent)
        self.time_trunk = _hidden_stack(c.n_latent, c.n_hidden, c.n_layers, 0.0)
        self.time_head = nn.Linear(c.n_hidden, 2 * n_genes)  # ρ and τ heads fused
        self.state_trunk = _hidden_stack(c.n_latent, c.n_hidden, c.n_layers, 0.0)
        self.state_head = nn.Linear(c.n_hidden, N_STATES * n_genes)

        def per_gene(value: np.ndarray | float) -> nn.Parameter:
            data = np.broadcast_to(np.asarray(value, dtype=np.float32), (n_genes,)).copy()
            return nn.Parameter(torch.from_numpy(data))

        switch = np.random.default_rng(seed).standard_normal(n_genes)
        self.switch_time_unconstr = per_gene(7.0 + 0.5 * switch)
        self.gamma_unconstr = per_gene(-1.0)
        self.beta_unconstr = per_gene(0.5)
        self.alpha_unconstr = per_gene(softplus_inverse(u_switch))
        if c.time_dependent_rate:
            self.alpha_1_unconstr = per_gene(0.0)
            self.lambda_alpha_unconstr = per_gene(0.0)
        # Likelihood variances of u (row 0) and s (row 1); the reference's 3 dead columns dropped.
        self.var_unconstr = nn.Parameter(torch.full((2, n_genes), -1.0))
        self.register_buffer("u_switch", torch.as_tensor(u_switch, dtype=torch.float32))
        self.register_buffer("s_switch", torch.as_tensor(s_switch, dtype=torch.float32))
        # std multiplier per state: c_k = 1, 1, 1, 0.1 (repression steady state)
        self.register_buffer("state_std_scale", torch.tensor([[1.0], [1.0], [1.0], [0.1]]))

    def rates(self) -> Rates:
        """Constrained rates clamp(softplus, 1e-8, 50) and switch time clamp(softplus, 0, t_max).

        Without a time-dependent rate, α₁ = α and λ = 0 (α(t) ≡ α).
        """

        def rate(p: torch.Tensor) -> torch.Tensor:
            return F.softplus(p).clamp(RATE_MIN, RATE_MAX)

        alpha = rate(self.alpha_unconstr)
        if self.config.time_dependent_rate:
            alpha_1, lambda_alpha = rate(self.alpha_1_unconstr), rate(self.lambda_alpha_unconstr)
        else:
            alpha_1, lambda_alpha = alpha, torch.zeros_like(alpha)
        t_switch = F.softplus(self.switch_time_unconstr).clamp(0.0, self.config.t_max)
        return Rates(
            alpha,
            rate(self.beta_unconstr),
            rate(self.gamma_unconstr),
            alpha_1,
            lambda_alpha,
            t_switch,
        )

    def likelihood_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-state std of u and s, each (4, G): sqrt(softplus(·)) × (1, 1, 1, 0.1)."""
        std = F.softplus(self.var_unconstr).sqrt()
        return std[0] * self.state_std_scale, std[1] * self.state_std_scale

    def encode(
        self, spliced: torch.Tensor, unspliced: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | s, u): mean and variance, each (B, L), from (B, G) inputs."""
        hidden = self.encoder(torch.cat((spliced, unspliced), dim=-1))
        return self.z_mean(hidden), F.softplus(self.z_var(hidden)) + 1e-4

    def decode(self, z: torch.Tensor) -> Decoded:
        """ρ, τ (B, G) and the Dirichlet concentration (B, 4, G) from z (B, L)."""
        rho, tau = torch.sigmoid(self.time_head(self.time_trunk(z))).chunk(2, dim=-1)
        concentration = F.softplus(self.state_head(self.state_trunk(z))).clamp_min(
            CONCENTRATION_MIN
        )
        return Decoded(rho, tau, concentration.view(*z.shape[:-1], N_STATES, self.n_genes))

    def _induction(self, r: Rates, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.time_dependent_rate:
            return kinetics.induction_time_dependent(
                r.alpha, r.alpha_1, r.lambda_alpha, r.beta, r.gamma, t
            )
        return kinetics.induction(r.alpha, r.beta, r.gamma, t)

    def components(self, rho: torch.Tensor, tau: torch.Tensor, r: Rates) -> Components:
        """State means for time fractions ρ, τ (…, G).

        Induction time t_ind = ρ·t_s; repression time t_rep = τ·(t_max − t_s) after the switch.
        """
        u0, s0 = self._induction(r, r.t_switch)
        t_ind = rho * r.t_switch
        t_rep = tau * (self.config.t_max - r.t_switch)
        u_ind, s_ind = self._induction(r, t_ind)
        u_rep, s_rep = kinetics.repression(u0, s0, r.beta, r.gamma, t_rep)
        steady_u, steady_s = r.alpha_1 / r.beta, r.alpha_1 / r.gamma
        return Components(u_ind, s_ind, u_rep, s_rep, steady_u, steady_s, t_ind, t_rep, u0, s0)

    def log_likelihood(
        self,
        spliced: torch.Tensor,
        unspliced: torch.Tensor,
        comp: Components,
        log_pi: torch.Tensor,
    ) -> torch.Tensor:
        """log p(s) + log p(u) per cell and gene (…, G) under the mixture with log-weights
        ``log_pi`` (…, 4, G) (e.g. :func:`core.dirichlet.rsample_log`)."""
        std_u, std_s = self.likelihood_std()
        return mixture_log_prob(spliced, comp.mean_s, std_s, log_pi) + mixture_log_prob(
            unspliced, comp.mean_u, std_u, log_pi
        )

    def forward(
        self,
        spliced: torch.Tensor,
        unspliced: torch.Tensor,
        kl_weight: float | torch.Tensor = 1.0,
        pi_estimator: str = PI_ESTIMATORS[0],
    ) -> LossTerms:
        """One stochastic pass over a batch (B, G): sample z, return the loss terms.

        loss = mean_B(−log p + kl_weight·KL_z + KL_π) + λ(1 − kl_weight)·end_penalty.
        ``pi_estimator`` chooses how the state weights π ~ Dir(c) enter log p:

        - ``"sampled"`` (the reference, the default): one reparameterised draw of π per cell
          and gene (:func:`core.dirichlet.rsample_log`);
        - ``"expected"``: log π replaced by E_q[log π] = ψ(c) − ψ(Σc). Since logsumexp is
          convex, log Σ_k exp(E[log π_k]) p_k ≤ E[log Σ_k π_k p_k] (Jensen), so the loss is
          still an upper bound of −log p(x) (a lower bound on the ELBO), with no sampling
          noise and no gamma draws. But the Jensen gap grows with the spread of Dir(c), so this
          loss pushes every concentration up: the posterior's state weights come out too
          certain, and the uncertainty analyses unlike the reference's (bench/RESULTS.md,
          "Uncertainty").
        """
        mean, var = self.encode(spliced, unspliced)
        z = mean + var.sqrt() * torch.randn_like(mean)
        dec = self.decode(z)
        expected_log_pi, kl_pi = dirichlet.expected_log_and_kl(
            dec.concentration, self.config.dirichlet_concentration
        )
        if pi_estimator == "expected":
            log_pi = expected_log_pi
        elif pi_estimator == "sampled":
            log_pi = dirichlet.rsample_log(dec.concentration)
        else:
            raise ValueError(
                f"pi_estimator must be one of {', '.join(PI_ESTIMATORS)}; got {pi_estimator!r}."
            )
        r = self.rates()
        comp = self.components(dec.rho, dec.tau, r)
        reconstruction = -self.log_likelihood(spliced, unspliced, comp, log_pi).sum(-1)
        kl_z = kl_normal_standard(mean, var)
        kl_pi = kl_pi.sum(-1)
        end_penalty = (comp.u0 - self.u_switch).square().sum() + (
            comp.s0 - self.s_switch
        ).square().sum()
        loss = (reconstruction + kl_weight * kl_z + kl_pi).mean() + (
            self.config.penalty_scale * (1.0 - kl_weight) * end_penalty
        )
        return LossTerms(loss, reconstruction, kl_z, kl_pi)
