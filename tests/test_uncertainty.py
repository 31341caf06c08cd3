"""Bootstrap intervals of accuracy and ties on a front, against closed forms and exact enumeration."""

from __future__ import annotations

import itertools
import statistics

import numpy as np
import pytest
from scipy.stats import binom

from nas.uncertainty import (
    Interval,
    UncertaintyError,
    accuracy_estimate,
    bootstrap_replicates,
    interval,
    tied,
    ties,
)
from trials.evaluate import result_from_predictions

B = 20_000  # resamples for the distribution checks: the DKW bound puts the ECDF within 0.015 w.p. > 0.999


def _sup_cdf_gap(samples: np.ndarray, support: np.ndarray, probs: np.ndarray) -> float:
    """max |ECDF(x) − CDF(x)| over the exact distribution's support points (equal values merged)."""
    support, where = np.unique(np.round(support, 12), return_inverse=True)
    cdf = np.cumsum(np.bincount(where, weights=probs))
    ecdf = np.searchsorted(np.sort(samples), support + 1e-12, side="right") / len(samples)
    return float(np.max(np.abs(ecdf - cdf)))


def test_one_class_one_seed_is_the_binomial():
    n, k = 170, 153  # 0.9 of the digits' 170 selection images
    correct = np.r_[np.ones(k), np.zeros(n - k)]
    est = accuracy_estimate(np.zeros(n, dtype=int), correct, resamples=4000)
    assert est.top1 == pytest.approx(0.9) and est.balanced_acc == pytest.approx(0.9)
    low, high = binom.ppf([0.05, 0.95], n, k / n) / n  # the closed form
    assert abs(est.top1_interval.low - low) <= 1 / n and abs(est.top1_interval.high - high) <= 1 / n
    assert est.balanced_interval == est.top1_interval  # one class: the same statistic
    assert est.top1_seeds == (pytest.approx(0.9),) and "acc_sd" not in est.attrs()


def test_stratified_resampling_matches_exact_enumeration():
    sizes, right = (4, 6, 9), (3, 2, 9)
    labels = np.repeat(np.arange(3), sizes)
    correct = np.concatenate([np.r_[np.ones(r), np.zeros(s - r)] for s, r in zip(sizes, right)])
    top1, bal = bootstrap_replicates(labels, correct, resamples=B, seed=3)
    # Exact: within class c the resampled correct count is Binomial(n_c, r_c / n_c), independently per class.
    values_t, values_b, probs = [], [], []
    for counts in itertools.product(*(range(s + 1) for s in sizes)):
        p = np.prod([binom.pmf(x, s, r / s) for x, s, r in zip(counts, sizes, right)])
        values_t.append(sum(counts) / sum(sizes))
        values_b.append(np.mean([x / s for x, s in zip(counts, sizes)]))
        probs.append(p)
    assert sum(probs) == pytest.approx(1.0)
    assert _sup_cdf_gap(top1, np.array(values_t), np.array(probs)) < 0.015
    assert _sup_cdf_gap(bal, np.array(values_b), np.array(probs)) < 0.015


def test_two_seeds_resample_seeds_and_images_as_exact_enumeration_says():
    rows = np.array([[1, 1, 0, 1, 0], [1, 0, 0, 1, 1]], dtype=float)
    top1, _ = bootstrap_replicates(np.zeros(5, dtype=int), rows, resamples=B, seed=1)
    # Exact: the two seeds drawn with replacement (weights (1,0), (½,½), (0,1) w.p. ¼, ½, ¼), then 5 images
    # drawn with replacement from the per-image mean correctness: every one of the 5^5 draws is equally likely.
    dist: dict[float, float] = {}
    for w, pw in (((1.0, 0.0), 0.25), ((0.5, 0.5), 0.5), ((0.0, 1.0), 0.25)):
        scores = np.asarray(w) @ rows
        for draw in itertools.product(range(5), repeat=5):
            value = round(float(scores[list(draw)].mean()), 12)
            dist[value] = dist.get(value, 0.0) + pw / 5**5
    support, probs = np.array(list(dist)), np.array(list(dist.values()))
    assert _sup_cdf_gap(top1, support, probs) < 0.015


def test_identical_seeds_give_the_one_seed_interval_and_zero_spread():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 60)
    correct = rng.random(60) < 0.7
    one = bootstrap_replicates(labels, correct, seed=5)
    three = bootstrap_replicates(labels, np.vstack([correct] * 3), seed=5)
    assert np.array_equal(one[0], three[0]) and np.array_equal(one[1], three[1])
    attrs = accuracy_estimate(labels, np.vstack([correct] * 3), seed=5).attrs()
    assert attrs["acc_sd"] == pytest.approx(0, abs=1e-12) and attrs["bacc_sd"] == pytest.approx(0, abs=1e-12)
    assert len(attrs["acc_seeds"]) == 3


def test_point_values_are_the_seed_means_of_the_evaluators_figures():
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(5), [3, 8, 2, 12, 5])
    predictions = [np.where(rng.random(len(labels)) < 0.6, labels, (labels + 1) % 5) for _ in range(3)]
    per_seed = [result_from_predictions(labels, p, list("abcde")) for p in predictions]  # independent code
    est = accuracy_estimate(labels, np.vstack([p == labels for p in predictions]), seed=0)
    assert est.top1_seeds == pytest.approx([r.top1 for r in per_seed])
    assert est.balanced_seeds == pytest.approx([r.balanced_acc for r in per_seed])
    assert est.top1 == pytest.approx(statistics.mean(r.top1 for r in per_seed))
    assert est.attrs()["bacc_sd"] == pytest.approx(statistics.stdev(r.balanced_acc for r in per_seed))
    assert est.top1_interval.low < est.top1 < est.top1_interval.high
    again = accuracy_estimate(labels, np.vstack([p == labels for p in predictions]), seed=0)
    assert again == est  # seeded


def test_bad_shapes_are_one_error():
    with pytest.raises(UncertaintyError, match="does not fit"):
        accuracy_estimate([0, 1, 1], [[1, 0]])
    with pytest.raises(UncertaintyError):
        accuracy_estimate([], [])


def _row(number, acc, acc_lo, acc_hi, lat, lat_lo, lat_hi, memory=100.0):
    return {"number": number, "acc": acc, "acc_low": acc_lo, "acc_high": acc_hi, "latency_T4": lat,
            "latency_T4_low": lat_lo, "latency_T4_high": lat_hi, "memory_kib": memory}


def test_ties_on_a_hand_made_front():
    front = [
        _row(1, 0.95, 0.92, 0.97, 0.30, 0.25, 0.35),
        _row(2, 0.93, 0.90, 0.96, 0.20, 0.15, 0.26),  # overlaps 1 on both axes (0.25 ≤ 0.26)
        _row(3, 0.91, 0.88, 0.94, 0.10, 0.08, 0.14),  # overlaps 2 in accuracy only: latency 0.14 < 0.15
        _row(4, 0.80, 0.75, 0.85, 0.09, 0.05, 0.12),  # overlaps 3 in latency only
    ]
    names = ["acc", "latency_T4"]
    assert ties(front, names) == [[2], [1], [], []]
    assert tied(front[0], front[1], names) and not tied(front[1], front[2], names)
    # An objective without an interval is exact: equal memory ties, different memory does not.
    assert tied(front[0], front[1], [*names, "memory_kib"])
    front[1]["memory_kib"] = 101.0
    assert not tied(front[0], front[1], [*names, "memory_kib"])
    # Touching end points overlap (closed intervals); a row without an accuracy interval is a point.
    assert Interval(0.1, 0.2).overlaps(Interval(0.2, 0.3)) and not Interval(0.1, 0.2).overlaps(Interval(0.21, 0.3))
    bare = {"number": 5, "acc": 0.93, "latency_T4": 0.2}
    assert interval(bare, "acc") == Interval(0.93, 0.93) and tied(bare, front[1], names)
    assert not tied({**bare, "acc": 0.965}, front[1], names)
