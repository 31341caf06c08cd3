"""Latency predictors: recovering a known law, JSON round trip, determinism, held-out honesty, intervals, speed."""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest

from predictors import (
    FAMILIES,
    REFERENCE,
    SEED_TABLE,
    DevicePredictor,
    PredictorError,
    evaluate_loo,
    fit_predictors,
    load_table,
    spec_features,
    summarize_loo,
)
from search_space import ArchSpec, analyze, resolve_arch

HEADER = "device,precision,arch,latency_ms,status\n"


def random_specs(n, seed=0):
    rng = np.random.default_rng(seed)
    specs = []
    while len(specs) < n:
        depths = tuple(int(d) for d in rng.integers(1, 5, size=4))
        widths = tuple(float(w) for w in rng.choice([0.25, 0.5, 0.75, 1.0, 1.5, 2.5], size=4))
        spec = ArchSpec(depths, widths, "repvgg", 1, int(rng.choice([64, 96, 112])), 10)
        if spec not in specs:
            specs.append(spec)
    return specs


def law(spec, a=2e-7, b=0.05, c=0.3):
    report = analyze(spec)
    return a * report.weight_bytes + b * report.conv_count + c


def synthetic_table(tmp_path, specs, device="sim", name="sim.csv", fn=law):
    lines = [f"{device},int8,{s.to_string()},{fn(s)!r},ok" for s in specs]
    path = tmp_path / name
    path.write_text(HEADER + "\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def seed():
    return load_table()


@pytest.fixture(scope="module")
def seed_predictors(seed):
    return fit_predictors(seed)


@pytest.mark.parametrize("with_seed", [False, True])
def test_known_linear_law_is_recovered(tmp_path, with_seed):
    specs = random_specs(16)
    table = load_table([synthetic_table(tmp_path, specs[:10])], include_seed=with_seed)
    predictor = fit_predictors(table, ["sim"])["sim"]
    coef = predictor.coefficients()
    assert predictor.lam == 0.0  # exact data: the prior can only hurt, and inner LOO sees that
    assert coef["weight_bytes"] == pytest.approx(2e-7, rel=1e-6)
    assert coef["conv_count"] == pytest.approx(0.05, rel=1e-6)
    assert coef["constant"] == pytest.approx(0.3, rel=1e-6)
    assert abs(coef["macs"]) * REFERENCE["macs"] < 1e-9 and abs(coef["activation_bytes"]) < 1e-12
    for spec in specs[10:]:  # unseen specs
        assert predictor.predict_ms(spec) == pytest.approx(law(spec), rel=1e-6)


def test_fit_keys_and_fitted_values_close_on_the_seed(seed_predictors, seed):
    assert list(seed_predictors) == seed.device_keys
    for key, predictor in seed_predictors.items():
        assert predictor.family.name == "shrink"
        for row in (r for r in seed.rows_for(key) if r.ok):
            assert predictor.predict(row.spec).ms == pytest.approx(row.latency_ms, rel=0.6)


def test_json_round_trip_gives_identical_predictions(seed_predictors):
    specs = [resolve_arch(n, 112, 89) for n in ("A0", "N3", "M1")] + random_specs(3, seed=1)
    for predictor in seed_predictors.values():
        text = predictor.to_json()
        json.loads(text)  # plain JSON, not a pickle
        loaded = DevicePredictor.from_json(text)
        assert loaded.to_json() == text
        assert loaded.memory_limit_kib == predictor.memory_limit_kib
        for spec in specs:
            assert loaded.predict(spec) == predictor.predict(spec)


@pytest.mark.parametrize("bad", ["{", "[]", '{"format": "other"}', "missing"])
def test_bad_predictor_json_raises(seed_predictors, bad):
    if bad == "missing":
        data = json.loads(seed_predictors["T4"].to_json())
        del data["beta"]
        bad = json.dumps(data)
    with pytest.raises(PredictorError):
        DevicePredictor.from_json(bad)


def test_fitting_is_deterministic(seed):
    first = {k: p.to_json() for k, p in fit_predictors(seed).items()}
    second = {k: p.to_json() for k, p in fit_predictors(seed).items()}
    assert first == second


def test_predictions_scale_with_the_latencies(tmp_path):
    specs = random_specs(8, seed=2)
    base = fit_predictors(load_table([synthetic_table(tmp_path, specs)], include_seed=False))["sim"]
    scaled_path = synthetic_table(tmp_path, specs, name="x3.csv", fn=lambda s: 3 * law(s))
    scaled = fit_predictors(load_table([scaled_path], include_seed=False))["sim"]
    for spec in random_specs(4, seed=3):
        assert scaled.predict_ms(spec) == pytest.approx(3 * base.predict_ms(spec), rel=1e-9)


def test_loo_never_uses_the_held_out_point(tmp_path, seed):
    original = evaluate_loo(seed, "TDA4VM")
    text = SEED_TABLE.read_text(encoding="utf-8")
    perturbed = text.replace("TDA4VM,int8,M1,5.205919,ok", "TDA4VM,int8,M1,50.0,ok")
    assert perturbed != text
    path = tmp_path / "perturbed.csv"
    path.write_text(perturbed, encoding="utf-8")
    changed = evaluate_loo(load_table([path], include_seed=False), "TDA4VM")
    by_arch = {r["arch"]: r for r in changed}
    m1 = next(r for r in original if r["arch"] == "M1")
    assert by_arch["M1"]["predicted_ms"] == m1["predicted_ms"]
    assert (by_arch["M1"]["low"], by_arch["M1"]["high"]) == (m1["low"], m1["high"])
    assert by_arch["M1"]["baseline_ms"] == m1["baseline_ms"]
    # …while the perturbation does reach the other folds (the test would pass vacuously otherwise)
    assert any(by_arch[r["arch"]]["predicted_ms"] != r["predicted_ms"] for r in original if r["arch"] != "M1")


def test_loo_summary_matches_its_rows(seed):
    rows = evaluate_loo(seed, "ATLAS300")
    summary = summarize_loo(rows)
    errors = [abs(r["predicted_ms"] / r["measured_ms"] - 1) * 100 for r in rows]
    assert summary["points"] == 5
    assert summary["loo_mape_pct"] == pytest.approx(np.mean(errors))
    assert summary["max_error_pct"] == pytest.approx(max(errors))
    assert -1 <= summary["kendall_tau"] <= 1
    assert 0 <= summary["coverage"] <= 1
    with pytest.raises(PredictorError, match="at least 2"):
        evaluate_loo(seed.with_rows(r for r in seed.rows if r.device != "STPU" or r.arch == "M0"), "STPU")


def test_intervals_widen_away_from_measured_archs(seed_predictors):
    predictor = seed_predictors["TDA4VM"]
    measured = resolve_arch("M0", 112, 89)
    ratios = []
    for width in (1.0, 1.5, 2.0, 3.0):
        p = predictor.predict(measured.replace(widths=(width, width, width, width)))
        assert p.low < p.ms < p.high
        ratios.append(p.high / p.low)
    assert all(b > a for a, b in itertools.pairwise(ratios))
    deep = predictor.predict(resolve_arch("B3", 224, 1000))
    assert deep.high / deep.low > 1.5 * ratios[0]


def test_memory_feasibility_on_hexagon(seed_predictors):
    hexagon = seed_predictors["Hexagon698"]
    assert hexagon.memory.largest_ok_kib == pytest.approx(2344.5)
    assert hexagon.memory.smallest_failure_kib == pytest.approx(14501.25)
    assert hexagon.memory_limit_kib == pytest.approx((2344.5 * 14501.25) ** 0.5)
    m1 = hexagon.predict(resolve_arch("M1", 112, 89))
    m0 = hexagon.predict(resolve_arch("M0", 112, 89))
    assert (m1.feasible, m1.uncertain) == (False, False) and "14,501 KiB" in m1.reason
    assert (m0.feasible, m0.uncertain, m0.reason) == (True, False, None)
    between = resolve_arch("M1", 112, 89).replace(widths=(0.75, 0.75, 0.75, 1.5))
    assert 2344.5 < spec_features(between).peak_memory_kib < 14501.25
    verdict = hexagon.predict(between)
    assert verdict.uncertain and "uncertain" in verdict.reason
    assert verdict.feasible == (spec_features(between).peak_memory_kib <= hexagon.memory_limit_kib)
    bigger = resolve_arch("M1", 224, 89)  # never measured, peak far above the failure
    assert not hexagon.predict(bigger).feasible
    assert seed_predictors["T4"].memory_limit_kib is None
    assert seed_predictors["T4"].predict(bigger).feasible


def test_memory_limit_without_the_failed_row_is_inferred_from_memory(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(HEADER + "dsp,uint8,M0,2.0,ok\ndsp,uint8,N2,1.9,ok\ndsp,uint8,A0,,failure\n", encoding="utf-8")
    dsp = fit_predictors(load_table([path], include_seed=False))["dsp"]
    # A0 (2261 KiB) failed but M0 (2344.5 KiB) ran: peak memory does not explain it
    assert dsp.memory_limit_kib is None
    assert not dsp.predict(resolve_arch("A0", 112, 89)).feasible
    other = dsp.predict(resolve_arch("N0", 112, 89))
    assert other.feasible and other.uncertain


def test_every_family_fits_and_predicts(seed):
    spec = resolve_arch("N4", 112, 89)
    for name in FAMILIES:
        predictor = fit_predictors(seed, ["adreno650"], family=name)["Adreno650"]
        assert predictor.predict(spec).ms > 0
        assert DevicePredictor.from_json(predictor.to_json()).predict(spec) == predictor.predict(spec)


def test_unknown_device_and_device_without_latency(tmp_path, seed):
    with pytest.raises(PredictorError, match="unknown device"):
        fit_predictors(seed, ["nope"])
    path = tmp_path / "f.csv"
    path.write_text(HEADER + "dead,int8,M1,,failure\n", encoding="utf-8")
    table = load_table([path])
    assert "dead" not in fit_predictors(table)
    with pytest.raises(PredictorError, match="no measured latency"):
        fit_predictors(table, ["dead"])


def test_predict_is_fast(seed_predictors):
    predictor = seed_predictors["T4"]
    specs = random_specs(50, seed=4)
    for spec in specs:
        predictor.predict(spec)  # cost model cached, as in a search asking several devices
    best = np.inf
    for _ in range(5):
        start = time.perf_counter()
        for spec in specs:
            predictor.predict(spec)
        best = min(best, (time.perf_counter() - start) / len(specs))
    assert best < 2e-4  # ≪ 1 ms per call even on a loaded machine
