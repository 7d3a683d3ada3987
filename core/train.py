"""Training loop for :class:`core.model.VeloVAE`: data resident on the device, no DataLoader.

Matches scvi-tools' ``TrainingPlan``/``Trainer`` as veloVI uses them: AdamW (lr 1e-2, weight
decay 1e-2, eps 1e-2), minibatches of 256 from a shuffled 90/10 train/validation split, KL
warm-up kl_weight = min(1, epoch/400), gradient-norm clipping at 10, validation ELBO every epoch
and early stopping on it (patience 45, min_delta 0).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from core.convergence import ConvergenceMonitor, ConvergenceRule
from core.model import VeloVAE
from core.options import PI_ESTIMATORS, TIME_STATISTICS


class TrainingCancelled(RuntimeError):
    """Raised when ``should_stop()`` returns True between epochs."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule settings.

    Defaults are the reference veloVI's (``pi_estimator="sampled"`` included) except three,
    each selectable back: ``convergence`` (None: only the reference's ELBO rule),
    ``weight_average`` (None: keep the last weights) and the restored best weights of the
    ELBO rule (see :func:`train`).
    """

    max_epochs: int = 500
    lr: float = 1e-2
    weight_decay: float = 1e-2
    eps: float = 1e-2
    batch_size: int = 256
    train_size: float = 0.9
    early_stopping: bool = True
    patience: int = 45
    min_delta: float = 0.0
    n_epochs_kl_warmup: int = 400
    gradient_clip: float = 10.0
    seed: int = 0
    pi_estimator: str = PI_ESTIMATORS[0]
    convergence: ConvergenceRule | None = field(default_factory=ConvergenceRule)
    #: Per-step decay of an exponential moving average of the weights (Polyak averaging), used
    #: for the convergence checks and kept as the fitted model; None keeps the raw weights.
    weight_average: float | None = 0.99
    #: The latent time the convergence rule watches: the one the posterior will report.
    time_statistic: str = TIME_STATISTICS[0]

    def __post_init__(self) -> None:
        if self.pi_estimator not in PI_ESTIMATORS:
            choices = ", ".join(PI_ESTIMATORS)
            raise ValueError(f"pi_estimator must be one of {choices}; got {self.pi_estimator!r}.")
        if self.max_epochs < 1 or self.batch_size < 2 or self.patience < 1:
            raise ValueError("max_epochs ≥ 1, batch_size ≥ 2 and patience ≥ 1 are required.")
        if not 0.0 < self.train_size <= 1.0:
            raise ValueError(f"train_size must be in (0, 1], got {self.train_size}.")
        if self.weight_average is not None and not 0.0 < self.weight_average < 1.0:
            raise ValueError(
                f"weight_average must be in (0, 1) or None, got {self.weight_average}."
            )


@dataclass(frozen=True)
class EpochReport:
    """Progress of one finished epoch (ELBOs are per-cell means; validation may be NaN)."""

    epoch: int
    max_epochs: int
    elbo_train: float
    elbo_validation: float
    kl_weight: float
    seconds: float


@dataclass
class History:
    """Per-epoch ELBO (mean over cells of −log p + KL_z + KL_π, no penalty), as veloVI logs it.

    ``stop_reason``: "converged" (velocity-drift rule), "no improvement" (ELBO patience),
    "max epochs"; ``drift``: (epoch, velocity drift, latent-time drift, spread drift) of each
    convergence check (:mod:`core.convergence`).
    """

    elbo_train: list[float] = field(default_factory=list)
    elbo_validation: list[float] = field(default_factory=list)
    stopped_epoch: int = 0
    best_epoch: int = 0
    stop_reason: str = "max epochs"
    drift: list[tuple[int, float, float, float]] = field(default_factory=list)


def _split(n_cells: int, train_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train/validation cell indices (⌈train_size·N⌉ train, as scvi-tools)."""
    order = np.random.default_rng(seed).permutation(n_cells)
    n_train = math.ceil(round(train_size * n_cells, 6))
    return np.sort(order[:n_train]), np.sort(order[n_train:])


def kl_weight(epoch: int, n_epochs_kl_warmup: int) -> float:
    """KL warm-up weight min(1, epoch / n_epochs_kl_warmup) for a 0-based epoch."""
    return min(1.0, epoch / n_epochs_kl_warmup) if n_epochs_kl_warmup > 0 else 1.0


_VALIDATION_CHUNK = 4096
#: At most this many (validation) cells are watched by the convergence rule.
_MONITORED_CELLS = 2000


@torch.no_grad()
def _validation_elbo(module: VeloVAE, s: torch.Tensor, u: torch.Tensor, pi_estimator: str) -> float:
    """Validation ELBO in one no-grad pass (eval mode: BatchNorm running stats, no dropout)."""
    if s.shape[0] == 0:
        return float("nan")
    module.eval()
    total = torch.zeros((), device=s.device)
    for s_chunk, u_chunk in zip(
        s.split(_VALIDATION_CHUNK), u.split(_VALIDATION_CHUNK), strict=True
    ):
        terms = module(s_chunk, u_chunk, pi_estimator=pi_estimator)
        total += (terms.reconstruction + terms.kl_z + terms.kl_pi).sum()
    module.train()
    return float(total) / s.shape[0]


def _warm_ema(decay: float) -> Callable:
    """``multi_avg_fn`` of an exponential moving average whose decay warms up as
    min(decay, (1 + n)/(10 + n)) after n updates: a fixed 0.99 would leave a short fit
    (a few dozen steps) mostly at its first weights."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged) -> None:
        if not averaged[0].is_floating_point():  # integer buffers (BatchNorm's batch count)
            torch._foreach_copy_(averaged, current)
            return
        n = float(n_averaged)
        torch._foreach_lerp_(averaged, current, 1.0 - min(decay, (1.0 + n) / (10.0 + n)))

    return update


def train(
    module: VeloVAE,
    spliced: np.ndarray | torch.Tensor,
    unspliced: np.ndarray | torch.Tensor,
    config: TrainConfig = TrainConfig(),
    device: torch.device | str = "cpu",
    progress: Callable[[EpochReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> History:
    """Fit ``module`` in place on (N, G) min-max scaled moments; returns the ELBO history.

    The data are copied to ``device`` once; each epoch draws a permutation of the training cells
    from a seeded ``torch.Generator`` and gathers minibatches on the device (a last batch of a
    single cell is skipped, BatchNorm needs two). When the ELBO rule stops training (early
    stopping), the weights of the epoch with the best validation ELBO are restored: the
    reference keeps the last weights; restoring the best is strictly better and costs one
    state-dict copy per improvement. With a ``config.convergence`` rule
    (:mod:`core.convergence`) training also stops once the velocity field of the validation
    cells has stopped drifting. Otherwise the fit keeps the exponential moving average of the
    weights (``config.weight_average``, which the convergence checks watch: averaging removes
    most of the stochastic-gradient jitter) or, without it, the last weights.
    ``progress(EpochReport)`` is called after every epoch; ``should_stop()`` is polled before
    every epoch and raises :class:`TrainingCancelled` when it returns True.
    The module is left in eval mode.
    """
    device = torch.device(device)
    s_all = torch.as_tensor(np.asarray(spliced, dtype=np.float32), device=device)
    u_all = torch.as_tensor(np.asarray(unspliced, dtype=np.float32), device=device)
    if s_all.shape != u_all.shape or s_all.ndim != 2:
        raise ValueError(
            f"spliced {tuple(s_all.shape)} and unspliced {tuple(u_all.shape)} must be equal (N, G)."
        )
    train_idx, val_idx = _split(s_all.shape[0], config.train_size, config.seed)
    train_idx_t = torch.as_tensor(train_idx, device=device)
    s_train, u_train = s_all[train_idx_t], u_all[train_idx_t]
    val_idx_t = torch.as_tensor(val_idx, device=device)
    s_val, u_val = s_all[val_idx_t], u_all[val_idx_t]
    n_train = s_train.shape[0]
    if n_train < 2:
        raise ValueError(f"need at least 2 training cells, got {n_train}; use more cells.")

    module.to(device).train()
    optimizer = torch.optim.AdamW(
        module.parameters(),
        lr=config.lr,
        weight_decay=config.weight_decay,
        eps=config.eps,
        fused=True,  # one kernel for all parameters instead of a loop of small ops
    )
    generator = torch.Generator(device=device).manual_seed(config.seed)
    params = [p for p in module.parameters() if p.requires_grad]
    history = History()
    best_val, best_state, epochs_without_improvement = math.inf, None, 0
    averaged = None
    if config.weight_average is not None:
        averaged = AveragedModel(
            module, multi_avg_fn=_warm_ema(config.weight_average), use_buffers=True
        )
    monitor = None
    if config.convergence is not None:
        watched = (s_val, u_val) if len(val_idx) else (s_train, u_train)
        monitor = ConvergenceMonitor(
            config.convergence,
            *(x[:_MONITORED_CELLS] for x in watched),
            steps_per_epoch=math.ceil(n_train / config.batch_size),
            time_statistic=config.time_statistic,
        )

    for epoch in range(config.max_epochs):
        if should_stop is not None and should_stop():
            raise TrainingCancelled(f"training cancelled before epoch {epoch + 1}")
        started = time.perf_counter()
        weight = kl_weight(epoch, config.n_epochs_kl_warmup)
        order = torch.randperm(n_train, device=device, generator=generator)
        elbo_sum = torch.zeros((), device=device)
        n_seen = 0
        for batch in order.split(config.batch_size):
            if batch.numel() < 2:
                continue
            terms = module(
                s_train[batch], u_train[batch], kl_weight=weight, pi_estimator=config.pi_estimator
            )
            optimizer.zero_grad(set_to_none=True)
            terms.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.gradient_clip, foreach=True)
            optimizer.step()
            if averaged is not None:
                averaged.update_parameters(module)
            elbo_sum += (terms.reconstruction + terms.kl_z + terms.kl_pi).detach().sum()
            n_seen += batch.numel()
        elbo_train = float(elbo_sum) / n_seen
        elbo_val = _validation_elbo(module, s_val, u_val, config.pi_estimator)
        history.elbo_train.append(elbo_train)
        history.elbo_validation.append(elbo_val)
        history.stopped_epoch = epoch + 1
        if progress is not None:
            progress(
                EpochReport(
                    epoch + 1,
                    config.max_epochs,
                    elbo_train,
                    elbo_val,
                    weight,
                    time.perf_counter() - started,
                )
            )
        monitored = elbo_val if not math.isnan(elbo_val) else elbo_train
        if monitored < best_val - config.min_delta:
            best_val, epochs_without_improvement = monitored, 0
            history.best_epoch = epoch + 1
            if config.early_stopping:
                best_state = copy.deepcopy(module.state_dict())
        else:
            epochs_without_improvement += 1
            if config.early_stopping and epochs_without_improvement >= config.patience:
                history.stop_reason = "no improvement"
                break
        watched_module = averaged.module if averaged is not None else module
        if monitor is not None and monitor.update(watched_module, epoch + 1):
            history.stop_reason = "converged"
            break

    if monitor is not None:
        history.drift = monitor.drift
    if history.stop_reason == "no improvement" and best_state is not None:
        module.load_state_dict(best_state)
    elif averaged is not None:
        module.load_state_dict(averaged.module.state_dict())
    module.eval()
    return history
