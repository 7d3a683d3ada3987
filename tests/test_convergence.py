"""The velocity-drift stopping rule (core.convergence)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.convergence import (
    ConvergenceMonitor,
    ConvergenceRule,
    deterministic_fit,
    median_gene_correlation,
)
from core.model import ModelConfig, VeloVAE, switch_targets
from core.train import TrainConfig, train


def test_median_gene_correlation_matches_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 7))
    b = a + rng.normal(size=(50, 7)) * np.linspace(0.1, 3, 7)
    b[:, 3] = 1.0  # constant gene: left out
    expected = np.median([np.corrcoef(a[:, g], b[:, g])[0, 1] for g in range(7) if g != 3])
    assert median_gene_correlation(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(
        expected
    )


@pytest.fixture
def small_module():
    rng = np.random.default_rng(1)
    s, u = (rng.random((40, 6)).astype(np.float32) for _ in range(2))
    torch.manual_seed(0)
    module = VeloVAE(*switch_targets(s, u), ModelConfig(n_hidden=16, n_latent=3))
    return module, torch.from_numpy(s), torch.from_numpy(u)


def test_a_fit_that_does_not_move_converges_after_patience(small_module):
    module, s, u = small_module
    rule = ConvergenceRule(check_steps=2, window=2, calm_checks=2, min_steps=0)
    monitor = ConvergenceMonitor(rule, s, u, steps_per_epoch=1)
    converged = [monitor.update(module, epoch) for epoch in range(1, 13)]
    # checks every 2 epochs; drift (0) from epoch 6 on (vs epoch 2); two calm checks → epoch 8
    assert converged.index(True) + 1 == 8
    assert [d[0] for d in monitor.drift] == [6, 8, 10, 12]
    assert all(d[1] == pytest.approx(0, abs=1e-6) for d in monitor.drift)


def test_rule_settles_or_plateaus_on_given_drift_sequences():
    def first_stop(drifts, **rule):
        monitor = ConvergenceMonitor(ConvergenceRule(min_steps=0, **rule), None, None)
        stops = [monitor.record(e, d, d / 2) for e, d in enumerate(drifts, start=1)]
        return stops.index(True) + 1 if True in stops else None

    falling = [0.3, 0.1, 0.03, 0.012, 0.006, 0.004, 0.003, 0.002]
    assert first_stop(falling, tolerance=5e-3) == 7  # below 5e-3 at checks 6 and 7
    assert first_stop(falling, tolerance=5e-3, calm_checks=3) == 8
    assert first_stop(falling) is None  # the default 1e-3 is stricter; still a new low each time
    # stuck between the tolerances: stops once no new 10 % low came for `patience` checks
    jitter = [0.2, 0.05, 0.012, 0.011, 0.013, 0.0115, 0.012, 0.0125]
    assert first_stop(jitter, patience=4) == 7
    assert first_stop([0.3, 0.05, 0.04, 0.045, 0.041, 0.043, 0.042], patience=2) is None


def test_a_settled_field_waits_for_its_spread():
    """Velocity and time settled (drift 0) but the state-weight spread still moving: the fit
    goes on until the spread drift stays below its own tolerance (5× the field's)."""
    rule = ConvergenceRule(min_steps=0, calm_checks=2)
    monitor = ConvergenceMonitor(rule, None, None)
    spreads = [0.2, 0.05, 0.02, 0.008, 0.006, 0.004, 0.003]
    stops = [monitor.record(e, 0.0, 0.0, d) for e, d in enumerate(spreads, start=1)]
    assert stops.index(True) + 1 == 7  # below 5e-3 at checks 6 and 7
    assert monitor.drift[-1] == (7, 0.0, 0.0, 0.003)


def test_spread_is_the_variance_of_the_velocity_over_the_state_weights(small_module):
    """The third watched quantity, log Var_π[v | z] at z = E[z], equals the log variance of
    π_ind v_ind + π_rep v_rep over Dirichlet draws of π (torch.distributions as the oracle)."""
    from core.dirichlet import STATE_AXIS
    from core.posterior import draw, state_velocities

    module, s, u = small_module
    velocity, _, spread = deterministic_fit(module, s, u)
    module.eval()  # as deterministic_fit evaluates it
    with torch.no_grad():
        d = draw(module, s, u, 1, "mean")
        per_state = torch.stack(state_velocities(d), dim=STATE_AXIS)[0]  # (B, 2, G)
        conc = d.concentration[0].transpose(1, 2).double()  # (B, G, 4)
        pi = torch.distributions.Dirichlet(conc).sample((100_000,)).transpose(-1, -2).float()
        v = (pi[:, :, ::2] * per_state).sum(STATE_AXIS)
    # within 6 Monte-Carlo standard errors (sd / √100,000) everywhere
    assert ((velocity - v.mean(0)) / v.std(0)).abs().max() < 0.02
    torch.testing.assert_close(spread, v.var(0).log(), atol=0.05, rtol=0)


def test_a_fit_that_keeps_moving_never_converges(small_module):
    module, s, u = small_module
    rule = ConvergenceRule(check_steps=1, window=1, patience=1, min_steps=0)
    monitor = ConvergenceMonitor(rule, s, u)
    for epoch in range(1, 20):
        with torch.no_grad():
            for p in module.parameters():
                p.add_(0.5 * torch.randn_like(p))
        assert not monitor.update(module, epoch)
    assert min(d[1] for d in monitor.drift) > ConvergenceRule().tolerance


def test_min_steps_checks_sized_in_steps_and_bad_rules(small_module):
    module, s, u = small_module
    rule = ConvergenceRule(check_steps=1, window=1, calm_checks=1, min_steps=6)
    monitor = ConvergenceMonitor(rule, s, u)
    assert [monitor.update(module, e) for e in range(1, 8)] == [False] * 5 + [True, True]
    # about check_steps steps between checks, at least one epoch
    assert [ConvergenceRule(check_steps=50).every(n) for n in (1, 11, 176)] == [50, 5, 1]
    with pytest.raises(ValueError, match="patience"):
        ConvergenceRule(window=0)
    with pytest.raises(ValueError, match="tolerance"):
        ConvergenceRule(tolerance=0.05, plateau_tolerance=0.02)


def test_training_stops_once_converged_and_keeps_those_weights(small_module):
    module, s, u = small_module
    rule = ConvergenceRule(
        check_steps=2, window=1, tolerance=0.05, plateau_tolerance=0.05, calm_checks=2, min_steps=4
    )
    history = train(module, s.numpy(), u.numpy(), TrainConfig(max_epochs=300, convergence=rule))
    assert history.stop_reason == "converged"
    assert history.stopped_epoch < 300 and len(history.elbo_train) == history.stopped_epoch
    assert history.drift and history.drift[-1][0] == history.stopped_epoch
    assert max(history.drift[-1][1:]) < 0.05
    off = train(module, s.numpy(), u.numpy(), TrainConfig(max_epochs=6, convergence=None))
    assert off.stop_reason == "max epochs" and off.drift == []
