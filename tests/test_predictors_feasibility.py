"""Feasibility under ambiguity: every memory hypothesis the table cannot rule out is kept; "certain" only where
all of them agree."""

from __future__ import annotations

import json

import pytest

from predictors import HYPOTHESES, DevicePredictor, MemoryBounds, fit_predictors, load_table, memory_bounds
from search_space import analyze, resolve_arch

HEADER = "device,precision,arch,latency_ms,status\n"


def memory_of(spec):
    """The four quantities recomputed from the cost model's layers (KiB, int8)."""
    r = analyze(spec)
    layers = r.layers
    inputs = [3 * spec.resolution**2] + [layer.activation_bytes for layer in layers[:-2]] + [layers[-1].cin]
    largest_io = max(layer.activation_bytes + i for layer, i in zip(layers, inputs))
    return {"peak_layer": r.peak_memory_kib, "weights": r.weight_bytes / 1024,
            "weights_and_activation": (r.weight_bytes + largest_io) / 1024,
            "activations": (r.activation_elements + 3 * spec.resolution**2) / 1024}


@pytest.fixture(scope="module")
def hexagon():
    return fit_predictors(load_table(), ["Hexagon698"])["Hexagon698"]


def test_hexagon_keeps_every_hypothesis_its_one_failure_cannot_rule_out(hexagon):
    ran = [memory_of(resolve_arch(a, 112, 89)) for a in ("A0", "N0", "N2", "M0")]
    failed = memory_of(resolve_arch("M1", 112, 89))
    expected = {q for q in HYPOTHESES if max(r[q] for r in ran) < failed[q]}
    assert {h.quantity for h in hexagon.memory.standing} == expected
    assert expected == {"peak_layer", "weights", "weights_and_activation"}  # N0 has more activations than M1
    for h in hexagon.memory.hypotheses:
        assert h.largest_ok_kib == pytest.approx(max(r[h.quantity] for r in ran))
        assert h.smallest_failure_kib == pytest.approx(failed[h.quantity])


def test_95_percent_of_m1_weights_with_a_small_peak_layer_is_uncertain(hexagon):
    """Peak layer memory says it fits; total weights cannot tell (95 % of the weights that failed)."""
    m1 = resolve_arch("M1", 112, 89)
    spec = m1.replace(depths=(2, 1, 12, 1), widths=(0.75, 0.75, 1.5, 1.0))
    mem, m1_mem, n0 = memory_of(spec), memory_of(m1), memory_of(resolve_arch("N0", 112, 89))
    assert 0.93 < mem["weights"] / m1_mem["weights"] < 0.97
    assert mem["weights"] > n0["weights"]  # more weights than anything that ran
    assert mem["peak_layer"] <= hexagon.memory.largest_ok_kib  # …but a peak layer smaller than one that ran
    verdict = hexagon.predict(spec)
    assert verdict.uncertain, "one failure cannot tell peak layer memory from total weights"
    assert "peak layer memory" in verdict.reason and "total weights" in verdict.reason
    assert verdict.feasible  # judged by the peak layer limit, as the reason says
    assert "feasible by the inferred peak layer memory limit" in verdict.reason


def test_certain_only_where_all_hypotheses_agree(hexagon):
    small = hexagon.predict(resolve_arch("N1", 112, 89))  # below everything that ran, on every quantity
    assert (small.feasible, small.uncertain, small.reason) == (True, False, None)
    huge = hexagon.predict(resolve_arch("M1", 224, 89))  # above M1 on every standing quantity
    assert (huge.feasible, huge.uncertain) == (False, False) and "every memory explanation" in huge.reason
    failed = hexagon.predict(resolve_arch("M1", 112, 89))
    assert (failed.feasible, failed.uncertain) == (False, False) and "failed on this device" in failed.reason


def test_a_failure_peak_memory_cannot_explain_rules_only_that_hypothesis_out(tmp_path):
    """A0 failed but M0 (larger peak layer) ran: peak layer memory is ruled out, total weights is not."""
    path = tmp_path / "m.csv"
    path.write_text(HEADER + "dsp,uint8,M0,2.0,ok\ndsp,uint8,N2,1.9,ok\ndsp,uint8,A0,,failure\n", encoding="utf-8")
    dsp = fit_predictors(load_table([path], include_seed=False))["dsp"]
    assert dsp.memory_limit_kib is None  # the peak-layer limit is gone
    assert "peak_layer" not in {h.quantity for h in dsp.memory.standing}
    assert not dsp.predict(resolve_arch("A0", 112, 89)).feasible
    n0 = dsp.predict(resolve_arch("N0", 112, 89))  # more of every standing quantity than A0
    assert (n0.feasible, n0.uncertain) == (False, False) and "total weights" in n0.reason
    n1 = dsp.predict(resolve_arch("N1", 112, 89))
    assert (n1.feasible, n1.uncertain) == (True, False)


def test_failures_no_memory_hypothesis_explains(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(HEADER + "dsp,uint8,N0,2.0,ok\ndsp,uint8,M1,1.9,ok\ndsp,uint8,N2,,failure\n", encoding="utf-8")
    dsp = fit_predictors(load_table([path], include_seed=False))["dsp"]
    assert not dsp.memory.standing and not dsp.memory.consistent
    other = dsp.predict(resolve_arch("A0", 112, 89))
    assert other.feasible and other.uncertain and "not explained by memory" in other.reason
    assert not dsp.predict(resolve_arch("N2", 112, 89)).feasible


def test_memory_bounds_round_trip_through_json(hexagon):
    data = json.loads(json.dumps(hexagon.memory.to_dict()))
    assert MemoryBounds.from_dict(data) == hexagon.memory
    assert data["largest_ok_kib"] == hexagon.memory.largest_ok_kib  # kept at the top level for readers
    assert DevicePredictor.from_json(hexagon.to_json()).memory == hexagon.memory
    no_failure = memory_bounds([resolve_arch("A0", 112, 89)], [])
    assert no_failure.limit_kib is None and all(h.stands for h in no_failure.hypotheses)
