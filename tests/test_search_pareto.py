"""Front, hypervolume and picks: checked against brute force and Optuna's own hypervolume."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna._hypervolume import compute_hypervolume  # private, used only as an independent check

from nas.objectives import Limits, SearchError
from nas.pareto import hypervolume, knee_index, non_dominated, normalize, pareto_front, pick, within_noise
from nas.pareto_plot import plot_front


def _dominates(a, b):
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


points = st.lists(st.tuples(*[st.integers(0, 6)] * 3), min_size=1, max_size=25)


@settings(max_examples=80, deadline=None)
@given(points)
def test_non_dominated_matches_brute_force(pts):
    mask = non_dominated(np.array(pts, dtype=float))
    for i, p in enumerate(pts):
        assert mask[i] == (not any(_dominates(q, p) for q in pts))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(1, 30), st.integers(0, 10_000))
def test_hypervolume_matches_optuna(k, n, seed):
    pts = np.random.default_rng(seed).random((n, k))
    ref = np.full(k, 1.1)
    expected = compute_hypervolume(pts[non_dominated(pts)], ref, assume_pareto=True)
    assert hypervolume(pts, ref) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_hypervolume_by_hand():
    assert hypervolume(np.array([[0.0, 0.0]]), [1, 1]) == 1
    assert hypervolume(np.array([[0.0, 0.5], [0.5, 0.0]]), [1, 1]) == pytest.approx(0.75)
    assert hypervolume(np.array([[2.0, 0.0]]), [1, 1]) == 0  # outside the reference box
    assert hypervolume(np.array([[0.5, 0.5, 0.5]]), [1, 1, 1]) == pytest.approx(0.125)
    assert normalize(np.array([[2.0, 10.0]]), [(0, 4), (10, 10)]).tolist() == [[0.5, 0.0]]


def test_knee_is_the_bulge_and_falls_back_to_utopia():
    front = np.array([[0.0, 1.0], [0.1, 0.3], [0.5, 0.1], [1.0, 0.0]])
    assert knee_index(front) == 1
    assert knee_index(front[::-1]) == 2
    concave = np.array([[0.0, 1.0], [0.9, 0.9], [1.0, 0.0]])  # no point on the utopia side of the line
    assert knee_index(concave) in (0, 2)
    assert knee_index(np.array([[0.2, 0.2, 0.2], [0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])) == 0


def _study(rows, directions=("maximize", "minimize"), names=("acc", "latency_T4")):
    """An in-memory study of COMPLETE trials: rows = (values, attrs, constraints)."""
    study = optuna.create_study(directions=list(directions), storage=optuna.storages.InMemoryStorage())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(names)[: len(directions)])
    for values, attrs, cons in rows:
        dist = optuna.distributions.IntDistribution(0, 10_000)
        study.add_trial(optuna.trial.create_trial(values=list(values), params={"i": len(study.trials)},
                                                  distributions={"i": dist}, user_attrs=attrs, constraints=cons))
    return study


def test_front_respects_constraints_duplicates_and_limits():
    rows = [
        ((0.9, 1.0), {"spec_hash": "a", "latency_T4": 1.0, "acc": 0.9, "memory_kib": 100}, {"c": 0.0}),
        ((0.8, 0.5), {"spec_hash": "b", "latency_T4": 0.5, "acc": 0.8, "memory_kib": 900}, {"c": -1.0}),
        ((0.95, 0.2), {"spec_hash": "c", "latency_T4": 0.2, "acc": 0.95, "memory_kib": 50}, {"c": 0.5}),  # infeasible
        ((0.7, 0.6), {"spec_hash": "d", "latency_T4": 0.6, "acc": 0.7, "memory_kib": 10}, {"c": 0.0}),  # dominated
        ((0.9, 1.0), {"spec_hash": "a", "latency_T4": 1.0, "acc": 0.9, "duplicate_of": 0}, {"c": 0.0}),
    ]
    study = _study(rows)
    front = pareto_front(study)
    assert [r["number"] for r in front.rows] == [0, 1]  # best first in the first objective
    assert [r["number"] for r in front.dominated] == [3]
    assert {r["number"] for r in front.excluded} == {2, 4}
    assert 0 < front.hypervolume <= 1.1 ** 2
    assert [r["number"] for r in pareto_front(study, Limits.parse(["t4=0.7"])).rows] == [1]
    assert [r["number"] for r in pareto_front(study, Limits.parse(max_memory="200")).rows] == [0, 3]
    assert [r["number"] for r in pareto_front(study, Limits.parse(min_acc="0.85")).rows] == [0]
    assert pick(front, "best-acc-under", Limits.parse(["T4=0.55"]))["number"] == 1
    # Best accuracy under a memory limit: trial 3 is dominated in (acc, latency) but the only one under 50 KiB.
    assert pick(front, "best-acc-under", Limits.parse(max_memory="50"))["number"] == 3
    assert pick(front, "knee")["number"] in (0, 1)
    with pytest.raises(SearchError, match="no predicted latency for hardware target 'RV1126'"):
        pareto_front(study, Limits.parse(["RV1126=1"]))
    with pytest.raises(SearchError, match="needs a limit"):
        pick(front, "best-acc-under", None)
    with pytest.raises(SearchError, match="no feasible trial"):
        pick(front, "best-acc-under", Limits.parse(["T4=0.01"]))


def test_empty_front():
    study = _study([((0.9, 1.0), {}, {"c": 1.0})])
    front = pareto_front(study)
    assert front.rows == [] and front.hypervolume == 0
    with pytest.raises(SearchError, match="no feasible complete trial"):
        pick(front, "knee")


def _noisy(number_acc_lat):
    """Front trials with accuracy ±0.02 and latency ±20 % intervals."""
    return [((a, lat), {"spec_hash": str(i), "acc": a, "acc_low": a - 0.02, "acc_high": a + 0.02, "latency_T4": lat,
                        "latency_T4_low": lat * 0.8, "latency_T4_high": lat * 1.2}, {"c": 0.0})
            for i, (a, lat) in enumerate(number_acc_lat)]


def test_front_members_within_noise_are_marked_and_named_by_the_pick(tmp_path):
    # acc 0.95/0.94 overlap (0.93 ≤ 0.96) and latency 1.0/0.9 overlap (0.8 ≤ 1.08): tied. 0.80 is clear of both.
    study = _study(_noisy([(0.95, 1.0), (0.94, 0.9), (0.80, 0.3)]))
    front = pareto_front(study)
    assert front.interval_names == ["acc", "latency_T4"]
    assert {r["number"]: r["tied_with"] for r in front.rows} == {0: [1], 1: [0], 2: []}
    assert within_noise(front, front.rows[2]) == [] and within_noise(front, front.rows[0]) == [1]
    assert within_noise(front, pick(front, "best-acc-under", Limits.parse(["T4=1.5"]))) == [1]
    png, html = plot_front(front, tmp_path / "f.png"), plot_front(front, tmp_path / "f.html")
    assert png.read_bytes()[:4] == b"\x89PNG"
    text = html.read_text()
    bars = [json.loads(m) for m in re.findall(r'"error_[xy]":(\{[^}]*\})', text)]  # traces (and the template)
    front_bars = {(tuple(np.round(b["arrayminus"], 6)), tuple(np.round(b["array"], 6))) for b in bars if "array" in b}
    assert ((2.0, 2.0, 2.0), (2.0, 2.0, 2.0)) in front_bars  # accuracy in %: value − low, high − value
    assert ((0.2, 0.18, 0.06), (0.2, 0.18, 0.06)) in front_bars  # latency ±20 %, front order
    assert "tied with another member" in text
    rows3 = [((a, lat, m), {**attrs, "memory_kib": m}, c)
             for ((a, lat), attrs, c), m in zip(_noisy([(0.95, 1.0), (0.8, 0.3)]), (10.0, 20.0))]
    three = _study(rows3, ("maximize", "minimize", "minimize"), ("acc", "latency_T4", "memory_kib"))
    assert plot_front(pareto_front(three), tmp_path / "f3.png").exists()  # a pairwise matrix with error bars
