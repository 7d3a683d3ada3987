"""One batched posterior pass of a trained :class:`core.model.VeloVAE`, and its AnnData output.

For each batch of cells, S draws of z ~ q(z | s, u) and π ~ Dir(concentration(z)) are made at
once (tensors S×B×G), and every summary is taken from the same draws: velocity (spliced mode,
π-weighted: v = π_ind·v_ind + π_rep·v_rep, steady states contribute 0, as the reference's
``velo_statistic="mean"``), latent time (π_ind·t_ind + π_ind,steady·t_s + π_rep·(t_s + t_rep),
the reference's ``time_statistic="mean"``, which gives the repression steady state weight 0),
state probabilities, the fitted abundances Σ_k π_k μ_k and the log-likelihood. ``mode="mean"``
uses z = E[z] and π = E[π] instead (one deterministic draw).

Per-gene rescaling as the reference tutorial: scaling = t_max / max over cells of the gene's
latent time; velocity ÷ scaling, fit_t × scaling, rates ÷ scaling, t_s × scaling, so every gene's
latest cell sits at t = t_max and rate × time is unchanged (scVelo's ``fit_*`` convention with
``fit_scaling = 1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from core.model import STATE_NAMES, Components, Rates, VeloVAE

_ELEMENT_BUDGET = {"cpu": 1 << 22, "cuda": 1 << 24}  # S·B·G·4 elements per batch


@dataclass
class Posterior:
    """Posterior summaries; (N, G) arrays are float32, per-gene (G,) arrays are float64.

    ``velocity``/``velocity_var``: mean (clipped so Ms + v ≥ 0) and variance over draws, per-gene
    rescaled; ``fit_t``: latent time per cell and gene on the 0–t_max axis; ``fit_s``/``fit_u``:
    posterior predictive means; ``states`` (N, G, 4): mean π in :data:`core.model.STATE_NAMES`
    order; ``latent_z`` (N, L): q(z) mean; rates and ``t_switch`` rescaled (scVelo ``fit_*``);
    ``scaling`` (G,): the factor applied; ``fit_mse`` (G,): mean over cells of
    (ŝ − s)² + (û − u)²; ``likelihood`` (G,): mean over cells of log p(s) + log p(u);
    ``latent_time`` (N,): mean of ``fit_t`` over genes, min-max scaled to [0, 1].
    """

    velocity: np.ndarray
    velocity_var: np.ndarray
    fit_t: np.ndarray
    fit_s: np.ndarray
    fit_u: np.ndarray
    states: np.ndarray
    latent_z: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    gamma: np.ndarray
    t_switch: np.ndarray
    scaling: np.ndarray
    alpha_1: np.ndarray
    lambda_alpha: np.ndarray
    fit_mse: np.ndarray
    likelihood: np.ndarray
    latent_time: np.ndarray
    n_samples: int
    mode: str


class Draws(NamedTuple):
    """S posterior draws for a batch: π (S, B, G, 4), state components, rates, q mean (B, L)."""

    pi: torch.Tensor
    comp: Components
    rates: Rates
    z_mean: torch.Tensor


def batch_size_for(n_samples: int, n_genes: int, device: torch.device) -> int:
    """Cells per batch so that one S×B×G×4 tensor stays within the device's element budget."""
    budget = _ELEMENT_BUDGET.get(device.type, _ELEMENT_BUDGET["cuda"])
    return max(1, budget // (n_samples * n_genes * 4))


def draw(
    module: VeloVAE, spliced: torch.Tensor, unspliced: torch.Tensor, n_samples: int, mode: str
) -> Draws:
    """S draws of (z, π) for a batch (B, G) and the state components they imply."""
    if mode not in ("sample", "mean"):
        raise ValueError(f"mode must be 'sample' or 'mean', got {mode!r}.")
    mean, var = module.encode(spliced, unspliced)
    if mode == "mean":
        z = mean[None]
    else:
        z = mean + var.sqrt() * torch.randn((n_samples, *mean.shape), device=mean.device)
    dec = module.decode(z.reshape(-1, z.shape[-1]))
    shape = (z.shape[0], *spliced.shape)
    concentration = dec.concentration.view(*shape, -1)
    if mode == "mean":
        pi = concentration / concentration.sum(-1, keepdim=True)
    else:
        gammas = torch._standard_gamma(concentration)
        pi = gammas / gammas.sum(-1, keepdim=True)
    rates = module.rates()
    comp = module.components(dec.rho.view(shape), dec.tau.view(shape), rates)
    return Draws(pi, comp, rates, mean)


def raw_velocity(d: Draws) -> torch.Tensor:
    """Spliced velocity per draw (S, B, G): π_ind(βu − γs)_ind + π_rep(βu − γs)_rep."""
    r = d.rates
    v = r.beta[:, None] * d.comp.mean_u[..., ::2] - r.gamma[:, None] * d.comp.mean_s[..., ::2]
    return (d.pi[..., ::2] * v).sum(-1)


def fitted_abundance(d: Draws) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixture means Σ_k π_k μ_k of s and u per draw, each (S, B, G)."""
    return (d.pi * d.comp.mean_s).sum(-1), (d.pi * d.comp.mean_u).sum(-1)


def latent_time_raw(d: Draws) -> torch.Tensor:
    """Reference mean latent time per draw (S, B, G), model time units."""
    t_s = d.rates.t_switch
    pi = d.pi
    return (
        pi[..., 0] * d.comp.t_induction
        + pi[..., 1] * t_s
        + pi[..., 2] * (t_s + d.comp.t_repression)
    )


def _batches(n_cells: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n_cells)) for i in range(0, n_cells, size)]


@torch.no_grad()
def posterior_pass(
    module: VeloVAE,
    spliced: torch.Tensor,
    unspliced: torch.Tensor,
    n_samples: int = 25,
    mode: str = "sample",
) -> Posterior:
    """Every posterior summary from one batched pass over (N, G) device tensors Ms, Mu."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be ≥ 1, got {n_samples}.")
    n_draws = 1 if mode == "mean" else n_samples
    module.eval()
    n_cells, n_genes = spliced.shape
    keys = ("v_mean", "v_var", "t", "fit_s", "fit_u", "states", "z", "loglik")
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    for sl in _batches(n_cells, batch_size_for(n_draws, n_genes, spliced.device)):
        s, u = spliced[sl], unspliced[sl]
        d = draw(module, s, u, n_draws, mode)
        v = raw_velocity(d)
        clipped = torch.maximum(v, -s)
        fit_s, fit_u = fitted_abundance(d)
        parts["v_mean"].append(v.mean(0))
        parts["v_var"].append(clipped.var(0, correction=1 if n_draws > 1 else 0))
        parts["t"].append(latent_time_raw(d).mean(0))
        parts["fit_s"].append(fit_s.mean(0))
        parts["fit_u"].append(fit_u.mean(0))
        parts["states"].append(d.pi.mean(0))
        parts["z"].append(d.z_mean)
        parts["loglik"].append(module.log_likelihood(s, u, d.comp, d.pi).mean(0).sum(0))
    out = {k: torch.cat(v) if k != "loglik" else torch.stack(v).sum(0) for k, v in parts.items()}
    rates = module.rates()
    t_max = module.config.t_max
    scaling = t_max / out["t"].amax(0).clamp_min(torch.finfo(torch.float32).tiny)
    velocity = torch.maximum(out["v_mean"], -spliced) / scaling
    fit_t = out["t"] * scaling
    cell_time = fit_t.mean(1)
    span = (cell_time.max() - cell_time.min()).clamp_min(torch.finfo(torch.float32).tiny)
    mse = ((out["fit_s"] - spliced).square() + (out["fit_u"] - unspliced).square()).mean(0)

    def cells(x: torch.Tensor) -> np.ndarray:
        return x.float().cpu().numpy()

    def genes(x: torch.Tensor) -> np.ndarray:
        return x.double().cpu().numpy()

    return Posterior(
        velocity=cells(velocity),
        velocity_var=cells(out["v_var"] / scaling.square()),
        fit_t=cells(fit_t),
        fit_s=cells(out["fit_s"]),
        fit_u=cells(out["fit_u"]),
        states=cells(out["states"]),
        latent_z=cells(out["z"]),
        alpha=genes(rates.alpha / scaling),
        beta=genes(rates.beta / scaling),
        gamma=genes(rates.gamma / scaling),
        t_switch=genes(rates.t_switch * scaling),
        scaling=genes(scaling),
        alpha_1=genes(rates.alpha_1 / scaling),
        lambda_alpha=genes(rates.lambda_alpha / scaling),
        fit_mse=genes(mse),
        likelihood=genes(out["loglik"] / n_cells),
        latent_time=cells((cell_time - cell_time.min()) / span),
        n_samples=n_draws,
        mode=mode,
    )


@torch.no_grad()
def velocity_samples(
    module: VeloVAE,
    spliced: torch.Tensor,
    unspliced: torch.Tensor,
    n_samples: int,
    scaling: torch.Tensor,
) -> torch.Tensor:
    """(S, N, G) posterior velocity draws on the device, clipped (s + v ≥ 0), ÷ scaling (G,)."""
    module.eval()
    n_cells, n_genes = spliced.shape
    out = torch.empty((n_samples, n_cells, n_genes), device=spliced.device)
    for sl in _batches(n_cells, batch_size_for(n_samples, n_genes, spliced.device)):
        d = draw(module, spliced[sl], unspliced[sl], n_samples, "sample")
        out[:, sl] = torch.maximum(raw_velocity(d), -spliced[sl]) / scaling
    return out


@torch.no_grad()
def expression_fit(
    module: VeloVAE, spliced: torch.Tensor, unspliced: torch.Tensor, n_samples: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior predictive means (fit_s, fit_u), each (N, G), averaged over S draws."""
    module.eval()
    n_cells, n_genes = spliced.shape
    fits_s, fits_u = [], []
    for sl in _batches(n_cells, batch_size_for(n_samples, n_genes, spliced.device)):
        fit_s, fit_u = fitted_abundance(
            draw(module, spliced[sl], unspliced[sl], n_samples, "sample")
        )
        fits_s.append(fit_s.mean(0))
        fits_u.append(fit_u.mean(0))
    return torch.cat(fits_s).cpu().numpy(), torch.cat(fits_u).cpu().numpy()


def add_posterior_to_adata(adata, posterior: Posterior) -> None:
    """Write the DESIGN.md results slots of ``posterior`` into ``adata`` (in place).

    layers: velocity, velocity_var, fit_t, fit_s, fit_u, state_<name> (4); var: fit_alpha,
    fit_beta, fit_gamma, fit_t_, fit_scaling (= 1), fit_alpha_1, fit_lambda_alpha,
    fit_velovi_scaling (the per-gene factor applied), fit_mse, fit_likelihood, velocity_genes
    (an existing column AND a finite likelihood AND a velocity that varies over cells);
    obs: latent_time; obsm: X_velovi; uns: velocity_params (mode 'velovi', so scVelo does not
    square-root-transform the velocities).
    """
    n_obs, n_vars = posterior.velocity.shape
    if adata.shape != (n_obs, n_vars):
        raise ValueError(
            f"posterior is for {n_obs} cells × {n_vars} genes but adata is {adata.shape}; "
            "pass the AnnData the model was fitted on."
        )
    for key in ("velocity", "velocity_var", "fit_t", "fit_s", "fit_u"):
        adata.layers[key] = getattr(posterior, key)
    for k, name in enumerate(STATE_NAMES):
        adata.layers[f"state_{name}"] = np.ascontiguousarray(posterior.states[..., k])
    adata.var["fit_alpha"] = posterior.alpha
    adata.var["fit_beta"] = posterior.beta
    adata.var["fit_gamma"] = posterior.gamma
    adata.var["fit_t_"] = posterior.t_switch
    adata.var["fit_scaling"] = 1.0
    adata.var["fit_alpha_1"] = posterior.alpha_1
    adata.var["fit_lambda_alpha"] = posterior.lambda_alpha
    adata.var["fit_velovi_scaling"] = posterior.scaling
    adata.var["fit_mse"] = posterior.fit_mse
    adata.var["fit_likelihood"] = posterior.likelihood
    selected = (
        adata.var["velocity_genes"].to_numpy(dtype=bool)
        if "velocity_genes" in adata.var
        else np.ones(n_vars, dtype=bool)
    )
    varies = np.nanstd(posterior.velocity, axis=0) > 0
    adata.var["velocity_genes"] = selected & np.isfinite(posterior.likelihood) & varies
    adata.obs["latent_time"] = posterior.latent_time
    adata.obsm["X_velovi"] = posterior.latent_z
    adata.uns["velocity_params"] = {
        "mode": "velovi",
        "n_samples": posterior.n_samples,
        "posterior": posterior.mode,
        "fit_offset": False,
    }
