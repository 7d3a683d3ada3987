"""Posterior summaries and velocity draws of a trained :class:`core.model.VeloVAE`.

Every quantity veloVI reports is an expectation over z ~ q(z | s, u) and the state weights
π ~ Dir(c(z)). Three estimators (``mode``):

- ``"rao-blackwell"`` (default): S draws of z; the expectation over π given z is taken
  exactly. Velocity, latent time, fitted abundances and state probabilities are linear in π,
  so E[·| z] just uses E[π | z] = c/Σc, and the velocity variance adds the exact Dirichlet
  variance Var[π_ind v_ind + π_rep v_rep | z] = (p_ind v_ind² + p_rep v_rep² − E[v | z]²)/(Σc + 1)
  (law of total variance). Same expectations as the reference, less Monte-Carlo noise, and
  no gamma draws (the reference's dominant CPU cost).
- ``"sample"`` (the reference's estimator): S joint draws of (z, π), averaged.
- ``"mean"``: one deterministic evaluation at z = E[z], π = E[π].

Summaries follow the reference's ``velo_statistic="mean"``/``time_statistic="mean"``: velocity
v = π_ind·(βu − γs)_ind + π_rep·(βu − γs)_rep (steady states contribute 0), latent time
π_ind·t_ind + π_ind,steady·t_s + π_rep·(t_s + t_rep) (the repression steady state has weight 0),
fitted abundances Σ_k π_k μ_k. Per-gene rescaling as the reference tutorial: scaling = t_max /
max over cells of the gene's latent time; velocity ÷ scaling, fit_t × scaling, rates ÷ scaling,
t_s × scaling (scVelo's ``fit_*`` convention with ``fit_scaling = 1``).

:func:`velocity_sample_chunks` draws S joint (z, π) velocity samples for the uncertainty
analyses, cell chunk by cell chunk, so memory stays bounded; π comes from the fast
:mod:`core.gamma` sampler (only the three gamma variables Gamma(c_ind), Gamma(c_rep),
Gamma(c_ind,steady + c_rep,steady) that fix (π_ind, π_rep) are drawn).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import numpy as np
import torch

from core import gamma
from core.blocks import blocks
from core.derived_layers import STATE_ASSIGNMENT
from core.dirichlet import STATE_AXIS
from core.memory import keep_thread_heaps
from core.model import STATE_NAMES, Components, Rates, VeloVAE
from core.options import POSTERIOR_MODES as MODES
from core.options import TIME_STATISTICS
from core.row_spill import RowSpill

T = TypeVar("T")

#: results layers a posterior pass with a spill writes to disk rather than keeping.
SPILLED_LAYERS = ("velocity_var", "fit_t", "fit_s", "fit_u", STATE_ASSIGNMENT)

#: Elements (draws × cells × states × genes) of the largest per-batch tensor.
_ELEMENT_BUDGET = {"cpu": 1 << 22, "cuda": 1 << 26}


@dataclass
class Posterior:
    """Posterior summaries; (N, G) arrays are float32, per-gene (G,) arrays are float64.

    ``velocity``/``velocity_var``: posterior mean (clipped so Ms + v ≥ 0, as the reference) and
    variance, per-gene rescaled; ``fit_t``: latent time per cell and gene on the 0–t_max axis
    (``time_statistic`` of :func:`latent_time_raw`, averaged over the draws);
    ``fit_s``/``fit_u``: posterior predictive means; ``states`` (4, N, G): mean π in
    :data:`core.model.STATE_NAMES` order; ``latent_z`` (N, L): q(z) mean; rates and
    ``t_switch`` rescaled (scVelo ``fit_*``); ``scaling`` (G,): the factor applied;
    ``fit_mse`` (G,): mean over cells of (ŝ − s)² + (û − u)²; ``likelihood`` (G,): mean over
    cells of log p(s) + log p(u) at one posterior draw (as the reference's
    ``get_gene_likelihood``), with the posterior-mean state weights given z (``"sample"``: the
    sampled ones); ``latent_time`` (N,): mean of ``fit_t`` over genes, min-max scaled to [0, 1].
    """

    velocity: np.ndarray
    velocity_var: np.ndarray | None
    fit_t: np.ndarray | None
    fit_s: np.ndarray | None
    fit_u: np.ndarray | None
    states: np.ndarray | None
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
    time_statistic: str


class Draws(NamedTuple):
    """S decoded draws of z for a batch of B cells.

    ``concentration`` (S, B, 4, G); ``comp``: state means (S, B, 4, G) and times (S, B, G);
    ``rates``: per-gene (G,); ``z_mean`` (B, L): the q(z) mean.
    """

    concentration: torch.Tensor
    comp: Components
    rates: Rates
    z_mean: torch.Tensor


def check_mode(mode: str) -> None:
    """Raise ValueError unless ``mode`` is one of :data:`MODES`."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}.")


def batch_size_for(n_samples: int, n_genes: int, device: torch.device) -> int:
    """Cells per batch so that one S×B×4×G tensor stays within the device's element budget."""
    budget = _ELEMENT_BUDGET.get(device.type, _ELEMENT_BUDGET["cuda"])
    return max(1, budget // (n_samples * n_genes * 4))


def draw(
    module: VeloVAE,
    spliced: torch.Tensor,
    unspliced: torch.Tensor,
    n_samples: int,
    mode: str,
    generator: torch.Generator | None = None,
) -> Draws:
    """S draws of z ~ q(z | s, u) (``mode="mean"``: the single draw z = E[z]) for a batch
    (B, G), decoded into concentrations and state means."""
    check_mode(mode)
    mean, var = module.encode(spliced, unspliced)
    if mode == "mean":
        z = mean[None]
    else:
        noise = torch.randn(
            (n_samples, *mean.shape), generator=generator, device=mean.device, dtype=mean.dtype
        )
        z = mean + var.sqrt() * noise
    dec = module.decode(z.reshape(-1, z.shape[-1]))
    n_draws, n_cells, n_genes = z.shape[0], *spliced.shape
    rates = module.rates()
    comp = module.components(
        dec.rho.view(n_draws, n_cells, n_genes), dec.tau.view(n_draws, n_cells, n_genes), rates
    )
    return Draws(dec.concentration.view(n_draws, n_cells, -1, n_genes), comp, rates, mean)


def state_weights(d: Draws, mode: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """π per draw (S, B, 4, G): E[π | z] = c/Σc, or a Dirichlet draw for ``mode="sample"``."""
    if mode == "sample":
        return gamma.dirichlet(d.concentration, dim=STATE_AXIS, generator=generator)
    total = d.concentration.sum(STATE_AXIS, keepdim=True)
    return d.concentration / total.clamp_min(torch.finfo(total.dtype).tiny)


def state_velocities(d: Draws) -> tuple[torch.Tensor, torch.Tensor]:
    """Spliced velocity βu − γs of the induction and of the repression state, each (S, B, G)."""
    r, c = d.rates, d.comp
    return (
        r.beta * c.u_induction - r.gamma * c.s_induction,
        r.beta * c.u_repression - r.gamma * c.s_repression,
    )


def latent_time_raw(
    d: Draws, pi: torch.Tensor, statistic: str = TIME_STATISTICS[0]
) -> torch.Tensor:
    """The reference's latent time per draw (S, B, G), model time units, for weights π (S, B,
    4, G): ``"max"`` the time of the state of largest weight, ``"mean"`` the π-weighted mean;
    the state times are t_ind, t_s, t_s + t_rep and 0 (repression steady, as the reference)."""
    t_s = d.rates.t_switch
    if statistic == "mean":
        return (
            pi[..., 0, :] * d.comp.t_induction
            + pi[..., 1, :] * t_s
            + pi[..., 2, :] * (t_s + d.comp.t_repression)
        )
    if statistic != "max":
        raise ValueError(
            f"statistic must be one of {', '.join(TIME_STATISTICS)}; got {statistic!r}."
        )
    t_ind = d.comp.t_induction
    times = torch.stack(
        (t_ind, t_s.expand_as(t_ind), t_s + d.comp.t_repression, torch.zeros_like(t_ind)),
        dim=STATE_AXIS,
    )
    return times.gather(STATE_AXIS, pi.argmax(STATE_AXIS, keepdim=True)).squeeze(STATE_AXIS)


def _cell_outputs(
    n_cells: int, n_genes: int, n_latent: int, device: torch.device, spilled: bool
) -> dict[str, torch.Tensor]:
    """Preallocated per-cell summaries of a posterior pass, each batch writing its rows: (N, G)
    ``v_mean``, ``v_var``, ``t``, ``fit_s``, ``fit_u``; ``states`` (4, N, G); ``z`` (N, L);
    without ``fit_s``, ``fit_u`` and ``states`` when they are ``spilled`` to disk.

    Writing in place (rather than keeping every batch's result and concatenating) keeps the
    pass's memory at one copy of the outputs plus the batches in flight."""
    shapes = {key: (n_cells, n_genes) for key in ("v_mean", "v_var", "t")}
    shapes["z"] = (n_cells, n_latent)
    if not spilled:
        shapes.update(fit_s=(n_cells, n_genes), fit_u=(n_cells, n_genes))
        shapes["states"] = (len(STATE_NAMES), n_cells, n_genes)
    return {key: torch.empty(shape, device=device) for key, shape in shapes.items()}


@torch.no_grad()
def posterior_pass(
    module: VeloVAE,
    spliced: torch.Tensor,
    unspliced: torch.Tensor,
    n_samples: int = 25,
    mode: str = "rao-blackwell",
    generator: torch.Generator | None = None,
    time_statistic: str = TIME_STATISTICS[0],
    scaling: torch.Tensor | None = None,
    spill: RowSpill | None = None,
) -> Posterior:
    """Every posterior summary from one batched pass over (N, G) device tensors Ms, Mu.

    ``time_statistic``: the latent time of :func:`latent_time_raw`. ``scaling`` (G,): the
    per-gene factor to apply (e.g. the training cells' ``Posterior.scaling``, so that new cells
    are in the units of the fit); None: t_max / the latest latent time of each gene over these
    cells (the reference tutorial's rescaling). Batches draw from their
    own generators derived from ``generator`` and, on the CPU, run in threads as in
    :func:`velocity_sample_chunks` (same seed → same summaries). With ``spill`` the (N, G)
    summaries other than the velocity go to disk under their layer names
    (:data:`SPILLED_LAYERS`) as they are made, and are None in the result: the pass then holds
    three (N, G) arrays at most instead of eleven."""
    check_mode(mode)
    if time_statistic not in TIME_STATISTICS:
        choices = ", ".join(TIME_STATISTICS)
        raise ValueError(f"time_statistic must be one of {choices}; got {time_statistic!r}.")
    if n_samples < 1:
        raise ValueError(f"n_samples must be ≥ 1, got {n_samples}.")
    n_draws = 1 if mode == "mean" else n_samples
    module.eval()
    n_cells, n_genes = spliced.shape
    batches = blocks(n_cells, batch_size_for(n_draws, n_genes, spliced.device))

    out = _cell_outputs(n_cells, n_genes, module.config.n_latent, spliced.device, spill is not None)

    def summarise(index: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Write batch ``index``'s rows of ``out``; return its per-gene sums (G,) of the
        log-likelihood and of the squared error (ŝ − s)² + (û − u)², and (when spilling) its
        rows of the spilled layers."""
        sl, rng = batches[index], _chunk_generator(generator, index)
        with torch.no_grad():
            s, u = spliced[sl], unspliced[sl]
            d = draw(module, s, u, n_draws, mode, rng)
            pi = state_weights(d, mode, rng)
            v_ind, v_rep = state_velocities(d)
            pi_ind, pi_rep = pi[..., 0, :], pi[..., 2, :]
            v = pi_ind * v_ind + pi_rep * v_rep  # E[v | z] (S, B, G)
            v_var = v.var(0, correction=1 if n_draws > 1 else 0)
            if mode == "rao-blackwell":
                second = pi_ind * v_ind.square() + pi_rep * v_rep.square()
                total = d.concentration.sum(STATE_AXIS)
                v_var += ((second - v.square()) / (total + 1.0)).mean(0)
            fit_s, fit_u = (x.mean(0) for x in d.comp.mixture_mean(pi))
            states = pi.mean(0).transpose(0, 1)  # (4, B, G)
            out["v_mean"][sl] = v.mean(0)
            out["v_var"][sl] = v_var
            out["t"][sl] = latent_time_raw(d, pi, time_statistic).mean(0)
            out["z"][sl] = d.z_mean
            if spill is None:
                out["fit_s"][sl], out["fit_u"][sl] = fit_s, fit_u
                out["states"][:, sl] = states
                rows = {}
            else:
                rows = {"fit_s": fit_s, "fit_u": fit_u, STATE_ASSIGNMENT: states.argmax(0)}
            # per-gene fit quality from the first draw, as the reference's get_gene_likelihood
            first = Components._make(x[0] if x.dim() == 3 else x for x in d.comp)
            log_pi = pi[0].clamp_min(torch.finfo(pi.dtype).tiny).log()
            loglik = module.log_likelihood(s, u, first, log_pi).sum(0)
            return loglik, ((fit_s - s).square() + (fit_u - u).square()).sum(0), rows

    workers = _workers(spliced.device, None, generator)
    loglik = squared_error = torch.zeros(n_genes, device=spliced.device)
    for index, (batch_loglik, batch_squared_error, rows) in enumerate(
        _in_order(summarise, len(batches), workers)
    ):
        loglik = loglik + batch_loglik
        squared_error = squared_error + batch_squared_error
        for name, values in rows.items():
            values = values.to(torch.int8 if name == STATE_ASSIGNMENT else torch.float32)
            spill.append(name, batches[index], values.cpu().numpy())
    rates = module.rates()
    tiny = torch.finfo(torch.float32).tiny
    if scaling is None:
        scaling = module.config.t_max / out["t"].amax(0).clamp_min(tiny)
    # in place from here on: no second (N, G) copy of any summary
    velocity = out["v_mean"]
    for sl in batches:
        torch.maximum(velocity[sl], -spliced[sl], out=velocity[sl])
    velocity.div_(scaling)
    out["v_var"].div_(scaling.square())
    fit_t = out["t"].mul_(scaling)
    cell_time = fit_t.mean(1)
    span = (cell_time.max() - cell_time.min()).clamp_min(tiny)

    def cells(x: torch.Tensor) -> np.ndarray:
        return x.float().cpu().numpy()

    def genes(x: torch.Tensor) -> np.ndarray:
        return x.double().cpu().numpy()

    def kept(name: str, x: torch.Tensor) -> np.ndarray | None:
        """``x`` as an array, or None once written to the spill whole (not kept in the result)."""
        if spill is None:
            return cells(x)
        spill.append(name, slice(0, n_cells), cells(x))
        return None

    return Posterior(
        velocity=cells(velocity),
        velocity_var=kept("velocity_var", out.pop("v_var")),
        fit_t=kept("fit_t", out.pop("t")),
        fit_s=None if spill else cells(out["fit_s"]),
        fit_u=None if spill else cells(out["fit_u"]),
        states=None if spill else cells(out["states"]),
        latent_z=cells(out["z"]),
        alpha=genes(rates.alpha / scaling),
        beta=genes(rates.beta / scaling),
        gamma=genes(rates.gamma / scaling),
        t_switch=genes(rates.t_switch * scaling),
        scaling=genes(scaling),
        alpha_1=genes(rates.alpha_1 / scaling),
        lambda_alpha=genes(rates.lambda_alpha / scaling),
        fit_mse=genes(squared_error / n_cells),
        likelihood=genes(loglik / n_cells),
        latent_time=cells((cell_time - cell_time.min()) / span),
        n_samples=n_draws,
        mode=mode,
        time_statistic=time_statistic,
    )


def _induction_repression_weights(
    concentration: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(π_ind, π_rep) draws (…, 2, G) from Dir(c): softmax of the log-gammas of c_ind, c_rep and
    c_ind,steady + c_rep,steady (the exact joint law of the two weights, with 3 draws not 4)."""
    merged = torch.stack(
        (
            concentration[..., 0, :],
            concentration[..., 2, :],
            concentration[..., 1, :] + concentration[..., 3, :],
        ),
        dim=STATE_AXIS,
    )
    logs = gamma.log_standard_gamma(merged, generator)
    # normalised in logs by a softmax (3× faster than a logsumexp and an exp of two planes)
    return torch.softmax(logs, dim=STATE_AXIS)[..., :2, :]


def _chunk_generator(generator: torch.Generator | None, index: int) -> torch.Generator | None:
    """The generator of cell chunk ``index``: seeded from ``generator``'s seed and the index, so
    a chunk's draws do not depend on which thread draws it or in what order."""
    if generator is None:
        return None
    seed = (generator.initial_seed() * 1_000_003 + index) % 2**63
    return torch.Generator(device=generator.device).manual_seed(seed)


def _in_order(work: Callable[[int], T], n_items: int, workers: int) -> Iterator[T]:
    """``work(0)``, ``work(1)``, … in order, with up to ``workers`` computed at once in threads.

    torch releases the GIL in its kernels, so the chunks' serial CPU RNG and many small kernels
    overlap; meanwhile each kernel runs on one thread (``workers`` × 1 threads beat ``workers``
    × ``workers`` on a loaded machine). torch's thread count is restored when the iteration ends.
    The threads' heaps are kept between chunks (:func:`core.memory.keep_thread_heaps`).
    """
    if workers <= 1:
        yield from (work(i) for i in range(n_items))
        return
    keep_thread_heaps()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            pending: deque[Future[T]] = deque()
            for i in range(n_items):
                pending.append(pool.submit(work, i))
                if len(pending) == workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
    finally:
        torch.set_num_threads(threads)


def _workers(device: torch.device, workers: int | None, generator: torch.Generator | None) -> int:
    """Chunks drawn at once: 1 without a generator (the global RNG would make the draws depend
    on thread timing), else ``workers``, else torch's thread count on the CPU and 1 on a GPU."""
    if generator is None:
        return 1
    if workers is not None:
        return workers
    return torch.get_num_threads() if device.type == "cpu" else 1


@torch.no_grad()
def velocity_sample_chunks(
    module: VeloVAE,
    spliced: torch.Tensor,
    unspliced: torch.Tensor,
    n_samples: int,
    cells_per_chunk: int | None = None,
    generator: torch.Generator | None = None,
    workers: int | None = None,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (cells, samples (S, n, G)) chunk by chunk: joint (z, π) velocity draws on the
    device, clipped like the reference (s + v ≥ 0), in model units (not ÷ the per-gene scaling
    of ``Posterior.velocity``), as the reference's ``get_velocity`` draws that its uncertainty
    analyses use: the scaling weighs genes differently and so would change every cosine.

    Each chunk draws from its own generator derived from ``generator`` (same seed → same
    samples, whatever ``workers``). On the CPU ``workers`` chunks (default: torch's thread
    count) are drawn at once in threads, so memory holds at most that many chunks of S × n × G
    draws; ``cells_per_chunk`` defaults to the device's element budget.
    """
    module.eval()
    n_cells, n_genes = spliced.shape
    size = cells_per_chunk or batch_size_for(n_samples, n_genes, spliced.device)
    workers = _workers(spliced.device, workers, generator)
    batches = blocks(n_cells, size)

    def chunk(index: int) -> tuple[slice, torch.Tensor]:
        sl, rng = batches[index], _chunk_generator(generator, index)
        with torch.no_grad():
            d = draw(module, spliced[sl], unspliced[sl], n_samples, "sample", rng)
            pi = _induction_repression_weights(d.concentration, rng)
            v_ind, v_rep = state_velocities(d)
            v = pi[..., 0, :] * v_ind + pi[..., 1, :] * v_rep
            return sl, torch.maximum(v, -spliced[sl])

    yield from _in_order(chunk, len(batches), workers)


def velocity_samples(
    module: VeloVAE,
    spliced: torch.Tensor,
    unspliced: torch.Tensor,
    n_samples: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """All (S, N, G) velocity draws of :func:`velocity_sample_chunks` in one tensor."""
    n_cells, n_genes = spliced.shape
    out = torch.empty((n_samples, n_cells, n_genes), device=spliced.device)
    chunks = velocity_sample_chunks(module, spliced, unspliced, n_samples, generator=generator)
    for sl, chunk in chunks:
        out[:, sl] = chunk
    return out


@torch.no_grad()
def expression_fit(
    module: VeloVAE,
    spliced: torch.Tensor,
    unspliced: torch.Tensor,
    n_samples: int = 10,
    mode: str = "rao-blackwell",
    generator: torch.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior predictive means (fit_s, fit_u), each (N, G), averaged over S draws."""
    module.eval()
    n_cells, n_genes = spliced.shape
    n_draws = 1 if mode == "mean" else n_samples
    fits_s, fits_u = [], []
    for sl in blocks(n_cells, batch_size_for(n_draws, n_genes, spliced.device)):
        d = draw(module, spliced[sl], unspliced[sl], n_draws, mode, generator)
        fit_s, fit_u = d.comp.mixture_mean(state_weights(d, mode, generator))
        fits_s.append(fit_s.mean(0))
        fits_u.append(fit_u.mean(0))
    return torch.cat(fits_s).cpu().numpy(), torch.cat(fits_u).cpu().numpy()


def state_assignment(states: np.ndarray) -> np.ndarray:
    """(N, G) int8: the most probable state of each cell and gene, from the state probabilities
    (4, N, G) (codes in :data:`core.model.STATE_NAMES` order; the first on a tie)."""
    return states.argmax(axis=0).astype(np.int8)


def _varies_over_cells(values: np.ndarray, block: int = 64) -> np.ndarray:
    """(G,) bool: ``np.nanstd(values, axis=0) > 0`` for (N, G) ``values``, a few genes at a time
    (the whole-array call makes several (N, G) temporaries)."""
    varies = np.zeros(values.shape[1], dtype=bool)
    for genes in blocks(values.shape[1], block):
        varies[genes] = np.nanstd(values[:, genes], axis=0) > 0
    return varies


def add_posterior_to_adata(adata, posterior: Posterior) -> None:
    """Write the DESIGN.md results slots of ``posterior`` into ``adata`` (in place).

    layers: velocity, velocity_var, fit_t, fit_s, fit_u, state_assignment (int8: the argmax of
    the mean state probabilities ``posterior.states``, codes in :data:`core.model.STATE_NAMES`
    order; the probabilities themselves stay in the Posterior); var: fit_alpha,
    fit_beta, fit_gamma, fit_t_, fit_scaling (= 1), fit_alpha_1, fit_lambda_alpha,
    fit_velovi_scaling (the per-gene factor applied), fit_mse, fit_likelihood, velocity_genes
    (an existing column AND a finite likelihood AND a velocity that varies over cells);
    obs: latent_time; obsm: X_velovi; uns: velocity_params (mode 'velovi', so scVelo does not
    square-root-transform the velocities). Layers the pass spilled to disk (None) are left out:
    the base landing writes them from the spill (:meth:`core.staged_results.StageWriter.land`).
    """
    n_obs, n_vars = posterior.velocity.shape
    if adata.shape != (n_obs, n_vars):
        raise ValueError(
            f"posterior is for {n_obs} cells × {n_vars} genes but adata is {adata.shape}; "
            "pass the AnnData the model was fitted on."
        )
    layers = {key: getattr(posterior, key) for key in ("velocity", "velocity_var", "fit_t")}
    layers.update(fit_s=posterior.fit_s, fit_u=posterior.fit_u)
    if posterior.states is not None:
        layers[STATE_ASSIGNMENT] = state_assignment(posterior.states)
    for key, values in layers.items():
        if values is not None:  # else spilled to disk by the pass
            adata.layers[key] = values
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
    varies = _varies_over_cells(posterior.velocity)
    adata.var["velocity_genes"] = selected & np.isfinite(posterior.likelihood) & varies
    adata.obs["latent_time"] = posterior.latent_time
    adata.obsm["X_velovi"] = posterior.latent_z
    adata.uns["velocity_params"] = {
        "mode": "velovi",
        "n_samples": posterior.n_samples,
        "posterior": posterior.mode,
        "time_statistic": posterior.time_statistic,
        "fit_offset": False,
    }
