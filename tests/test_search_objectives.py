"""Objectives, limits and constraint values of the search."""

from __future__ import annotations

import pytest

from nas.objectives import (
    UNTRAINED_ACCURACY,
    Limits,
    Objective,
    SearchError,
    SpecMetrics,
    constraint_values,
    infeasibility,
    objective_values,
    parse_number,
    parse_objectives,
    spec_metrics,
)
from search_space import analyze, get_preset


def test_parse_objectives_directions_and_names():
    objs = parse_objectives("acc, latency, latency:RV1126,memory,macs,params,bacc", default_target="T4")
    assert [o.name for o in objs] == ["acc", "latency_T4", "latency_RV1126", "memory_kib", "macs", "params", "bacc"]
    assert [o.direction for o in objs] == ["maximize"] + ["minimize"] * 5 + ["maximize"]
    assert [o.needs_accuracy for o in objs] == [True] + [False] * 5 + [True]


@pytest.mark.parametrize("text, words", [
    ("acc,speed", "unknown objective"),
    ("", "no objective"),
    ("acc,acc", "twice"),
    ("macs:T4", "takes no hardware target"),
    ("latency", "needs a hardware target"),
])
def test_bad_objectives(text, words):
    with pytest.raises(SearchError, match=words):
        parse_objectives(text, default_target=None)


def test_limits_parse_and_reject_bad_syntax():
    lim = Limits.parse(["T4=0.6", "RV1126=5"], "2048", "5M", "300M", "80%")
    assert lim.max_latency == (("T4", 0.6), ("RV1126", 5.0))
    assert (lim.max_memory_kib, lim.max_params, lim.max_macs, lim.min_acc) == (2048, 5e6, 3e8, 0.8)
    assert parse_number("1.5k", "x") == 1500
    for bad in (["T4"], ["T4="], ["=0.6"], ["T4=fast"], ["T4=-1"], ["T4=1", "t4=2"]):
        with pytest.raises(SearchError):
            Limits.parse(bad)
    with pytest.raises(SearchError):
        Limits.parse(max_memory="lots")
    with pytest.raises(SearchError):
        Limits.parse(min_acc="1.5")


def test_constraints_are_relative_excess_and_feasibility():
    spec = get_preset("A0").spec(112, 89)
    report = analyze(spec)
    m = SpecMetrics({"memory_kib": report.peak_memory_kib, "macs": report.macs, "params": report.params,
                     "latency_T4": 0.9}, feasible_on={"T4": True, "Hexagon698": False},
                    reasons={"Hexagon698": "too big"})
    lim = Limits((("T4", 0.6),), max_memory_kib=2048)
    cons = constraint_values(m, lim, ["T4", "Hexagon698"])
    assert cons["latency_T4<=0.6"] == pytest.approx(0.9 / 0.6 - 1)
    assert cons["memory_kib<=2048"] == pytest.approx(report.peak_memory_kib / 2048 - 1) and cons["memory_kib<=2048"] > 0
    assert cons["feasible:T4"] == 0 and cons["feasible:Hexagon698"] == 1
    reason = infeasibility(m, lim, ["T4", "Hexagon698"])
    assert "latency_T4 0.9 > 0.6" in reason and "memory_kib" in reason and "Hexagon698: too big" in reason
    assert infeasibility(m, Limits(), ["T4"]) is None
    assert all(v <= 0 for v in constraint_values(m, Limits(), ["T4"]).values())


def test_objective_values_untrained_accuracy_is_worst():
    m = SpecMetrics({"macs": 5.0, "latency_T4": 0.3})
    objs = [Objective("acc"), Objective("latency", "T4"), Objective("macs")]
    assert objective_values(objs, m, None) == [UNTRAINED_ACCURACY, 0.3, 5.0]
    assert objective_values(objs, m, {"top1": 0.7, "balanced_acc": 0.6}) == [0.7, 0.3, 5.0]


def test_spec_metrics_use_every_predictor():
    class Fake:
        def predict(self, spec):
            from types import SimpleNamespace
            return SimpleNamespace(ms=1.0, low=0.5, high=2.0, feasible=spec.depths[0] == 1, reason=None,
                                   extrapolated=False, extrapolation="")

    spec = get_preset("M0").spec(32, 10)
    m = spec_metrics(spec, {"X": Fake()})
    assert m.attrs["spec"] == spec.to_string() and m.attrs["spec_hash"] == spec.hash
    assert m.attrs["latency_X_low"] <= m.attrs["latency_X"] <= m.attrs["latency_X_high"]
    assert m.feasible_on == {"X": False} and m.reasons["X"]
