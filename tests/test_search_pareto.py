"""Front, hypervolume and picks: checked against brute force and Optuna's own hypervolume."""

from __future__ import annotations

import warnings

import numpy as np
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna._hypervolume import compute_hypervolume  # private, used only as an independent check

from nas.objectives import Limits, SearchError
from nas.pareto import hypervolume, knee_index, non_dominated, normalize, pareto_front, pick


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


def _study(rows, directions=("maximize", "minimize")):
    """An in-memory study of COMPLETE trials: rows = (values, attrs, constraints)."""
    study = optuna.create_study(directions=list(directions), storage=optuna.storages.InMemoryStorage())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["acc", "latency_T4"][: len(directions)])
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
