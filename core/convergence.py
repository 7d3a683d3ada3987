"""When has a veloVI fit converged? The drift of what the dashboard shows, between checks.

The reference stops on the validation ELBO (patience 45), which rarely fires before its
400-epoch KL warm-up ends: the ELBO keeps improving as the likelihood variances shrink and
the KL weight grows, long after the velocities and latent times have settled (measured in
bench/RESULTS.md, "Convergence"). This rule watches what the user sees instead. Every check
(about ``check_steps`` gradient steps apart, at least one epoch) evaluates the deterministic
posterior (z = E[z], π = E[π]) of a fixed set of monitored cells and compares it with the
check ``window`` checks earlier: the velocity, the latent time (the fit's ``time_statistic``)
and the spread of the velocity over the state weights, log Var_π[v | z] (what the intrinsic
and extrinsic uncertainty are made of: the Dirichlet spread that the training estimator
shapes, bench/RESULTS.md "Uncertainty"). Each drift is 1 − the median over genes of the
Pearson correlation across cells; the spread's counts relative to its own, looser
``spread_tolerance`` (× tolerance / spread_tolerance). The fit has converged, after at least
``min_steps`` steps, when the largest of the three drifts

- stays below ``tolerance`` (the field moves by less than that between checks) for
  ``calm_checks`` consecutive checks, or
- is below ``plateau_tolerance`` and has not reached a new low (by a factor ``improvement``)
  for ``patience`` checks: the drift no longer falls, only stochastic-gradient noise is left
  (what happens without weight averaging, whose jitter floor can sit above ``tolerance``).

Sizing checks in steps rather than epochs makes the rule behave alike for 700 and for 50,000
cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from core.model import VeloVAE
from core.options import TIME_STATISTICS


@dataclass(frozen=True)
class ConvergenceRule:
    """Settings of the velocity-drift stopping rule (see the module docstring)."""

    check_steps: int = 50
    window: int = 2
    tolerance: float = 1e-3
    #: The spread drift's own tolerance: log Var_π[v | z] jitters about 5× more than the
    #: velocity between checks once settled (a floor of ~1e-3 on the 3,000-cell simulation).
    spread_tolerance: float = 5e-3
    calm_checks: int = 2
    plateau_tolerance: float = 0.02
    improvement: float = 0.9
    patience: int = 4
    min_steps: int = 200

    def __post_init__(self) -> None:
        counts = (self.check_steps, self.window, self.calm_checks, self.patience)
        if min(counts) < 1 or self.min_steps < 0:
            raise ValueError(
                "convergence checks need check_steps, window, calm_checks and patience ≥ 1 and "
                f"min_steps ≥ 0; got {self}."
            )
        if (
            not 0 < self.tolerance <= self.plateau_tolerance < 1
            or not 0 < self.improvement <= 1
            or self.spread_tolerance <= 0
        ):
            raise ValueError(
                "convergence needs 0 < tolerance ≤ plateau_tolerance < 1, spread_tolerance > 0 "
                f"and improvement in (0, 1]; got {self}."
            )

    def every(self, steps_per_epoch: int) -> int:
        """Epochs between two checks: about ``check_steps`` steps, at least one epoch."""
        return max(1, round(self.check_steps / max(1, steps_per_epoch)))


def median_gene_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Median over genes of the Pearson correlation of a[:, g] and b[:, g] (cells × genes);
    genes constant in either are left out (1.0 when none is left)."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    norm = torch.sqrt((a * a).sum(0) * (b * b).sum(0))
    defined = norm > 0
    if not defined.any():
        return 1.0
    return float(torch.quantile((a * b).sum(0)[defined] / norm[defined], 0.5))


@torch.no_grad()
def deterministic_fit(
    module: VeloVAE,
    spliced: torch.Tensor,
    unspliced: torch.Tensor,
    time_statistic: str = TIME_STATISTICS[0],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Velocity, latent time and log Var_π[v | z] (cells × genes, model units) at z = E[z].

    The velocity and time use π = E[π | z]; the spread is the exact variance of
    v = π_ind v_ind + π_rep v_rep over π ~ Dir(c(z)), (p_ind v_ind² + p_rep v_rep² − v̄²)/(Σc + 1).
    """
    from core.posterior import draw, latent_time_raw, state_velocities, state_weights

    was_training = module.training
    module.eval()
    d = draw(module, spliced, unspliced, 1, "mean")
    pi = state_weights(d, "mean")
    v_ind, v_rep = state_velocities(d)
    p_ind, p_rep = pi[..., 0, :], pi[..., 2, :]
    velocity = p_ind * v_ind + p_rep * v_rep
    second = p_ind * v_ind.square() + p_rep * v_rep.square()
    variance = (second - velocity.square()).clamp_min(0) / (d.concentration.sum(-2) + 1.0)
    spread = variance.add(torch.finfo(variance.dtype).tiny).log()
    time = latent_time_raw(d, pi, time_statistic)
    module.train(was_training)
    return velocity[0], time[0], spread[0]


@dataclass
class ConvergenceMonitor:
    """Tracks the drift of the deterministic fit of the monitored cells (M, G) over epochs."""

    rule: ConvergenceRule
    spliced: torch.Tensor
    unspliced: torch.Tensor
    steps_per_epoch: int = 1
    time_statistic: str = TIME_STATISTICS[0]
    #: (epoch, velocity drift, latent-time drift, spread drift) of each check
    drift: list[tuple[int, float, float, float]] = field(default_factory=list)
    _snapshots: list[tuple[torch.Tensor, ...]] = field(default_factory=list)
    _lowest: float = float("inf")
    _checks_since_low: int = 0
    _calm: int = 0

    def update(self, module: VeloVAE, epoch: int) -> bool:
        """Record the fit after ``epoch`` (1-based); True once the fit has converged."""
        if epoch % self.rule.every(self.steps_per_epoch):
            return False
        fit = deterministic_fit(module, self.spliced, self.unspliced, self.time_statistic)
        self._snapshots.append(fit)
        if len(self._snapshots) <= self.rule.window:
            return False
        earlier, now = self._snapshots.pop(0), self._snapshots[-1]
        drifts = [1.0 - median_gene_correlation(a, b) for a, b in zip(now, earlier, strict=True)]
        return self.record(epoch, *drifts)

    def record(
        self, epoch: int, velocity_drift: float, time_drift: float, spread_drift: float = 0.0
    ) -> bool:
        """Apply the rule to one check's drifts (what :meth:`update` measured); True once the
        fit has converged. The spread drift counts relative to its own tolerance."""
        self.drift.append((epoch, velocity_drift, time_drift, spread_drift))
        relative_spread = spread_drift * self.rule.tolerance / self.rule.spread_tolerance
        drift = max(velocity_drift, time_drift, relative_spread)
        self._calm = self._calm + 1 if drift < self.rule.tolerance else 0
        if drift < self.rule.improvement * self._lowest:
            self._lowest, self._checks_since_low = drift, 0
        else:
            self._checks_since_low += 1
        settled = self._calm >= self.rule.calm_checks
        plateau = (
            drift < self.rule.plateau_tolerance and self._checks_since_low >= self.rule.patience
        )
        return (settled or plateau) and epoch * self.steps_per_epoch >= self.rule.min_steps
