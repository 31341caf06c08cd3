"""The timing protocol: sessions, robust label, load detection and re-dos, protocol checks.

Timing specs into a table (export, measure, write) is ``nas.measure``'s: tests/test_measure_table.py.
"""

from __future__ import annotations

import pytest

from search_space import ArchSpec
from trials.errors import MeasureError
from trials.latency import ProbeReading, check_protocol, judge_load, measure_onnx, parse_notes, read_probe
from trials.onnx_export import export_onnx, timing_model

SPEC = ArchSpec((1, 1, 1, 1), (0.25, 0.25, 0.25, 0.25), resolution=32, num_classes=10)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return export_onnx(timing_model(SPEC), tmp_path_factory.mktemp("lat") / "m.onnx", 32)


def fake_probe(loaded_calls: int, runnable: int = 1):
    """A probe whose first ``loaded_calls`` readings show a descheduled process (CPU time 10 % of wall)."""
    state = {"n": 0, "wall": 0.0, "cpu": 0.0}

    def probe() -> ProbeReading:
        state["n"] += 1
        state["wall"] += 1.0
        state["cpu"] += 0.1 if state["n"] <= loaded_calls else 1.0
        return ProbeReading(state["wall"], state["cpu"], 0.5, runnable)

    return probe


def test_label_is_fastest_session_median(model_path):
    m = measure_onnx(model_path, threads=1, warmup=1, runs=5, sessions=3)
    assert len(m.session_medians_ms) == 3 == len(m.load)
    assert m.label_ms == min(m.session_medians_ms) > 0
    assert m.spread == pytest.approx(max(m.session_medians_ms) / min(m.session_medians_ms))
    assert m.spread >= 1.0
    notes = parse_notes(m.notes())
    assert notes["threads"] == "1" and notes["sessions"] == "3" and notes["ort"] == m.ort_version
    assert "," not in m.notes() and m.cpu


def test_cpu_clock_labels_with_thread_cpu_time(model_path):
    m = measure_onnx(model_path, warmup=1, runs=5, sessions=2, clock="cpu")
    assert m.clock == "cpu" and m.label_ms == m.cpu_label_ms == min(m.session_medians_ms) > 0
    assert parse_notes(m.notes())["clock"] == "cpu"
    with pytest.raises(MeasureError, match="threads=1"):
        measure_onnx(model_path, threads=2, clock="cpu")
    with pytest.raises(MeasureError, match="unknown clock"):
        measure_onnx(model_path, clock="tsc")


def test_loaded_session_is_redone(model_path):
    runs = 4
    # the first session's readings (1 before + runs after) are loaded; its re-do is clean
    m = measure_onnx(model_path, runs=runs, warmup=0, sessions=2, probe=fake_probe(runs + 1))
    assert m.redone == 1 and m.loaded_sessions == 0
    assert all(not s.loaded for s in m.load)


def test_retries_are_bounded_and_reported(model_path):
    m = measure_onnx(model_path, runs=2, warmup=0, sessions=3, retries=2, probe=fake_probe(10**6))
    assert m.redone == 2 and m.loaded_sessions == 3  # retries of session 1 failed: 2 and 3 are not re-done
    assert all(s.loaded and "descheduled" in s.reason for s in m.load)
    m = measure_onnx(model_path, runs=2, warmup=0, sessions=1, retries=0, probe=fake_probe(10**6))
    assert m.redone == 0 and m.loaded_sessions == 1


def test_judge_load_flags_deschedule_and_competition():
    first = ProbeReading(0.0, 0.0, 0.1, 1)
    clean = judge_load(first, [ProbeReading(1.0, 0.98, 0.1, 1)], threads=1, cpus=2)
    assert not clean.loaded and clean.reason == "" and clean.cpu_ratio == pytest.approx(0.98)
    slow = judge_load(first, [ProbeReading(1.0, 0.5, 0.1, 1)], threads=1, cpus=2)
    assert slow.loaded and "descheduled" in slow.reason
    busy = judge_load(first, [ProbeReading(1.0, 1.0, 3.0, 3)] * 2, threads=1, cpus=2)
    assert busy.loaded and "runnable" in busy.reason and busy.others_runnable == 2 and busy.loadavg_1m == 3.0
    # two threads on two cores: CPU time counts per thread, no spare core for anybody else
    assert judge_load(first, [ProbeReading(1.0, 1.9, 0.1, 1)], threads=2, cpus=2).loaded is False
    assert judge_load(first, [ProbeReading(1.0, 1.9, 0.1, 2)], threads=2, cpus=2).loaded is True


def test_read_probe_is_sane():
    a, b = read_probe(), read_probe()
    assert b.wall_s >= a.wall_s and b.cpu_s >= a.cpu_s and a.runnable >= 1 and a.loadavg_1m >= 0


def test_bad_counts_and_missing_model(model_path, tmp_path):
    with pytest.raises(MeasureError, match="runs"):
        measure_onnx(model_path, runs=0)
    with pytest.raises(MeasureError, match="threads"):
        measure_onnx(model_path, threads=True)
    with pytest.raises(MeasureError, match="not found"):
        measure_onnx(tmp_path / "none.onnx")


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"runs": 0}, "runs must be an integer ≥ 1"),
    ({"warmup": -1}, "warmup must be an integer ≥ 0"),
    ({"sessions": 2.0}, "sessions must be an integer"),
    ({"clock": "tsc"}, "unknown clock"),
    ({"clock": "cpu", "threads": 2}, "needs threads=1"),
])
def test_check_protocol_refuses_bad_settings(kwargs, needle):
    with pytest.raises(MeasureError, match=needle):
        check_protocol(**kwargs)
    check_protocol("cpu", threads=1, warmup=0, retries=0, runs=1, sessions=1)  # the smallest valid protocol


def test_parse_notes_reads_what_notes_writes():
    assert parse_notes("threads=1;sessions=5;cpu=AMD EPYC x2;bad;x=a=b") == {
        "threads": "1", "sessions": "5", "cpu": "AMD EPYC x2", "x": "a=b"}
    assert parse_notes("") == {}
