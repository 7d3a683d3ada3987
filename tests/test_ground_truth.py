"""Direction error and uncertainty calibration (core.ground_truth) against constructions whose
answer is known, and scipy/sklearn as the oracle for the statistics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from core.ground_truth import direction_error, uncertainty_calibration


def _field(rng: np.random.Generator, n_cells: int = 400, n_genes: int = 30) -> np.ndarray:
    speed = np.linspace(0.1, 2.0, n_cells)[:, None]
    return speed * rng.normal(size=(n_cells, n_genes))


def test_direction_error_is_zero_for_the_truth_in_any_units_and_two_for_its_reverse():
    rng = np.random.default_rng(0)
    truth = _field(rng)
    scales = rng.uniform(0.1, 50.0, truth.shape[1])  # per-gene units (scaling, time axis)
    error, defined = direction_error(truth * scales, truth)
    np.testing.assert_allclose(error[defined], 0.0, atol=1e-12)
    reverse, _ = direction_error(-truth * scales, truth)
    np.testing.assert_allclose(reverse[defined], 2.0, atol=1e-12)
    # the slowest quarter by (standardised) true speed is left out
    speed = np.linalg.norm(truth / truth.std(0), axis=1)
    np.testing.assert_array_equal(defined, speed > np.quantile(speed, 0.25))


def test_direction_error_is_the_centred_cosine_of_standardised_genes():
    rng = np.random.default_rng(1)
    truth, estimate = _field(rng), _field(rng)
    estimate[:, 3] = 0.0  # a constant gene is left out
    error, _ = direction_error(estimate, truth)
    keep = np.arange(truth.shape[1]) != 3
    a = estimate[:, keep] / estimate[:, keep].std(0)
    b = truth[:, keep] / truth[:, keep].std(0)
    expected = [1 - np.corrcoef(x, y)[0, 1] for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(error, expected, rtol=1e-10)
    # a component shared by every (standardised) gene, all genes up, does not count
    shared, _ = direction_error(estimate + 100 * estimate.std(0), truth + 100 * truth.std(0))
    np.testing.assert_allclose(shared, error, atol=1e-9)


def test_calibration_statistics_match_scipy_and_sklearn():
    rng = np.random.default_rng(2)
    error = rng.random(500)
    defined = np.ones(500, dtype=bool)
    defined[:50] = False
    noisy = error + 0.3 * rng.random(500)
    noisy[7] = np.nan  # a cell without uncertainty is left out
    result = uncertainty_calibration(noisy, error, defined)
    keep = defined & np.isfinite(noisy)
    worst = error[keep] >= np.quantile(error[keep], 0.9)
    assert result["spearman"] == pytest.approx(spearmanr(noisy[keep], error[keep])[0])
    assert result["auroc"] == pytest.approx(roc_auc_score(worst, noisy[keep]))
    assert result["n_cells"] == keep.sum()
    perfect = uncertainty_calibration(error, error, defined)
    assert perfect["spearman"] == pytest.approx(1.0) and perfect["auroc"] == pytest.approx(1.0)
    away = uncertainty_calibration(-error, error, defined)
    assert away["spearman"] == pytest.approx(-1.0) and away["auroc"] == pytest.approx(0.0)
