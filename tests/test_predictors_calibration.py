"""Calibrated intervals: split-conformal quantiles of honest leave-one-out scores, checked for coverage on the
host bench (measured latencies this package never fitted on)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from predictors import COVERAGE, fit_predictors, load_table
from predictors.calibration import (
    FALLBACK_SCORE,
    MIN_SCORES,
    conformal_quantile,
    conformity_scores,
    interval_scale,
)

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
#: The host benches, each checked on its own: 100 random specs of the measurement space at 112 px, and (when it
#: exists) specs of the default search space at 32–112 px; both fp32 and int8.
HOST_TABLES = [p for p in (RESULTS / "host_latency.csv", RESULTS / "host_latency_res.csv") if p.exists()]
TOLERANCE = 0.07  # the goal: within ±7 points of nominal


def test_conformal_quantile_is_the_finite_sample_rank():
    scores = np.arange(1.0, 20.0)[::-1]  # 19 scores, 19 … 1
    assert conformal_quantile(scores) == 18.0  # ⌈20·0.9⌉ = 18th smallest
    assert conformal_quantile(np.arange(9.0)) == 8.0  # ⌈10·0.9⌉ = 9th of 9: the largest
    assert conformal_quantile(np.arange(8.0)) is None  # 8 scores cannot give 90 %
    assert MIN_SCORES == 9
    assert conformal_quantile([0.5, 0.1], level=0.5) == 0.5  # ⌈3·0.5⌉ = 2nd smallest


def test_scores_divide_by_one_plus_the_domain_distance():
    assert conformity_scores([-0.2, 0.3], [0.0, 1.0]) == pytest.approx([0.2, 0.15])


def test_few_scores_pool_with_other_devices_then_fall_back_to_the_floor():
    own = [0.1, 0.2]
    assert interval_scale(list(np.linspace(0, 1, 9))) == (1.0, "own")
    pooled = list(np.linspace(0.0, 0.7, 8))
    q, basis = interval_scale(own, pooled)
    assert basis == "pooled" and q == conformal_quantile(own + pooled)
    assert interval_scale(own) == (max(FALLBACK_SCORE, 0.2), "floor")
    assert interval_scale([0.1, 0.9]) == (0.9, "floor")


def test_seed_devices_pool_their_scores():
    predictors = fit_predictors(load_table())
    assert {p.interval_basis for p in predictors.values()} == {"pooled"}  # 3–6 points each, 31 in all
    assert len({p.interval_scale for p in predictors.values()}) == 1


@pytest.mark.parametrize("path", HOST_TABLES, ids=lambda p: p.stem)
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_intervals_cover_the_nominal_share_of_unseen_host_measurements(path, precision):
    """Fit on 10 random host specs (plus the seed devices, as a user would), predict the held-out rest; over 40
    draws the share inside the nominal 90 % intervals must be within ±7 points of 90 %."""
    table = load_table([path])
    key = next(k for k in table.device_keys if k.lower() == f"host-cpu:{precision}")
    points = [r for r in table.rows_for(key) if r.ok]
    others = [r for r in table.rows if r.device.lower() != "host-cpu"]
    assert len(points) >= 100
    rng = np.random.default_rng(2024)
    shares, own = [], []
    for _ in range(40):
        order = rng.permutation(len(points))
        train, test = [points[i] for i in order[:10]], [points[i] for i in order[10:]]
        (predictor,) = fit_predictors(table.with_rows(others + train), ["host-cpu"]).values()
        own.append(predictor.interval_basis == "own")
        predictions = [predictor.predict(r.spec) for r in test]
        shares.append(np.mean([p.low <= r.latency_ms <= p.high for p, r in zip(predictions, test)]))
    assert all(own)  # 10 points: the device's own scores, not the seed's
    assert abs(float(np.mean(shares)) - COVERAGE) <= TOLERANCE, f"coverage {np.mean(shares):.3f}"
