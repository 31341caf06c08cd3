"""``nas.measure``: timing specs into a hardware table (skip, re-measure, resume, one setting per target),
the measurement space as a ``SearchSpace`` (same draws as before), and the candidates suggestions pick from."""

from __future__ import annotations

import csv
import random
from dataclasses import replace

import pytest

from nas.measure import (
    MEASURE_SPACE,
    SpecChoice,
    measure_specs,
    plan_measurement,
    sample_specs,
    space_candidates,
    space_corners,
)
from nas.space import SearchSpace
from predictors import TABLE_COLUMNS, TableError, load_table
from search_space import SEED_ROWS, ArchSpec, analyze, resolve_arch
from trials.errors import MeasureError
from trials.latency import TimingProtocol, parse_notes

SPEC = ArchSpec((1, 1, 1, 1), (0.25, 0.25, 0.25, 0.25), resolution=32, num_classes=10)
SPEC2 = SPEC.replace(depths=(1, 2, 1, 1))
PROTOCOL = TimingProtocol(warmup=1, runs=3, sessions=1)
FAST = {"protocol": PROTOCOL}


def _read(path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def test_measure_specs_writes_readable_rows_and_skips_on_rerun(tmp_path):
    table = tmp_path / "host.csv"
    table.write_text("device,precision,arch,latency_ms,status\nT4,int8,A0,0.68,ok\n")
    seen = []
    rows = measure_specs([SPEC, SPEC2], table, on_progress=lambda d, t, label: seen.append((d, t)), **FAST)
    assert [r["precision"] for r in rows] == ["fp32", "int8", "fp32", "int8"]
    assert seen == [(i, 4) for i in range(1, 5)]
    header, written = _read(table)
    assert tuple(header) == TABLE_COLUMNS and "classes" in header
    assert written[0]["device"] == "T4" and written[0]["arch"] == "A0"  # foreign rows are kept
    for row in written[1:]:
        assert row["device"] == "host-cpu" and row["status"] == "ok" and row["batch"] == "1"
        assert ArchSpec.parse(row["arch"]) in (SPEC, SPEC2) and (row["resolution"], row["classes"]) == ("32", "10")
        notes = parse_notes(row["notes"])
        assert notes["threads"] == "1" and float(notes["spread"]) >= 1 and "ort" in notes
    # what was written is what the predictors read
    loaded = load_table([table], include_seed=False).rows_for("host-cpu:fp32")
    assert [(r.spec, r.latency_ms) for r in loaded] == [
        (ArchSpec.parse(r["arch"]), float(r["latency_ms"])) for r in written[1:] if r["precision"] == "fp32"]
    before = table.read_text()
    assert measure_specs([SPEC, SPEC2], table, **FAST) == []
    assert table.read_text() == before
    # re-measuring replaces instead of duplicating (predictors refuse conflicting duplicates)
    assert len(measure_specs([SPEC], table, precisions=("fp32",), skip_existing=False, **FAST)) == 1
    _, after = _read(table)
    assert len(after) == 5 and sum(r["arch"] == SPEC.to_string() and r["precision"] == "fp32" for r in after) == 1
    # one target name, one thread count and clock
    with pytest.raises(MeasureError, match="threads=1"):
        measure_specs([SPEC], table, precisions=("fp32",), protocol=replace(PROTOCOL, threads=2))
    assert len(measure_specs([SPEC], table, precisions=("fp32",), target="host-cpu-2t",
                            protocol=replace(PROTOCOL, threads=2))) == 1
    with pytest.raises(MeasureError, match="clock=wall"):
        measure_specs([SPEC], table, precisions=("fp32",), protocol=replace(PROTOCOL, clock="cpu"))


def test_an_interrupted_run_keeps_its_rows_and_resumes(tmp_path):
    table = tmp_path / "t.csv"

    def stop_after_first(done, total, label):
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        measure_specs([SPEC, SPEC2], table, precisions=("fp32",), on_progress=stop_after_first, **FAST)
    _, rows = _read(table)
    assert [r["arch"] for r in rows] == [SPEC.to_string()]
    assert [r["arch"] for r in measure_specs([SPEC, SPEC2], table, precisions=("fp32",), **FAST)] == [
        SPEC2.to_string()]
    assert [n.name for n in tmp_path.iterdir()] == ["t.csv"]  # no temp file left behind


def test_a_preset_row_counts_as_its_spec(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("device,precision,arch,latency_ms,status,resolution,classes\nhost-cpu,fp32,N1,0.9,ok,32,10\n")
    before = table.read_text()
    assert measure_specs([resolve_arch("N1", 32, 10)], table, precisions=("fp32",), **FAST) == []
    assert table.read_text() == before


def test_bad_input_is_refused_before_anything_is_written(tmp_path):
    table = tmp_path / "t.csv"
    with pytest.raises(MeasureError, match="precision"):
        plan_measurement([SPEC], table, precisions=("fp16",), **FAST)
    with pytest.raises(MeasureError, match="no architectures"):
        plan_measurement([], table, **FAST)
    with pytest.raises(MeasureError, match="sessions"):
        plan_measurement([SPEC], table, protocol=replace(PROTOCOL, sessions=0))
    with pytest.raises(TableError, match="does not exist"):
        plan_measurement([SPEC], tmp_path / "no" / "t.csv", **FAST)
    assert list(tmp_path.iterdir()) == []
    table.write_text("a,b\n1,2\n")
    with pytest.raises(TableError, match="missing column"):
        plan_measurement([SPEC], table, **FAST)
    bad = "device,precision,arch,latency_ms,status\nX,fp32,A0,1.0,ok\nX,fp32,A0,2.0,ok\n"
    table.write_text(bad)
    with pytest.raises(TableError, match="conflicting duplicate"):
        plan_measurement([SPEC], table, **FAST)
    assert table.read_text() == bad


def test_unwritable_table_is_refused(tmp_path, monkeypatch):
    # the tests may run as root, who can write read-only folders: make the folder unwritable to the check
    monkeypatch.setattr("predictors.tables.os.access", lambda path, mode: False)
    with pytest.raises(TableError, match="not writable"):
        plan_measurement([SPEC], tmp_path / "t.csv", **FAST)
    assert list(tmp_path.iterdir()) == []


# -- the measurement space ---------------------------------------------------------------------------------

def old_sample_specs(n, seed, resolution, num_classes):
    """The sampling of ``nas hw measure --sample`` before the measurement space became a SearchSpace."""
    rng, seen, specs = random.Random(seed), set(), []
    while len(specs) < n:
        depths = tuple(rng.randint(lo, hi) for lo, hi in ((1, 4), (1, 6), (1, 16), (1, 2)))
        widths = tuple(rng.choice((0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5)) for _ in range(4))
        spec = ArchSpec(depths, widths, resolution=resolution, num_classes=num_classes)
        if spec not in seen:
            seen.add(spec)
            specs.append(spec)
    return specs


@pytest.mark.parametrize(("n", "seed", "resolution", "classes"), [(30, 0, 112, 89), (100, 3, 64, 10), (5, 17, 32, 2)])
def test_sampling_draws_the_same_specs_as_before(n, seed, resolution, classes):
    assert sample_specs(n, seed, resolution, classes) == old_sample_specs(n, seed, resolution, classes)
    if resolution == 112 and classes == 89:  # `nas hw measure --sample N --seed S` with its defaults
        assert SpecChoice(sample=n, seed=seed).specs() == old_sample_specs(n, seed, 112, 89)


def test_search_space_sample_skips_single_choices_and_covers_the_space():
    space = SearchSpace(depths=((2, 2), (1, 3), (1, 1), (1, 2)),
                        widths=((0.5,), (0.25, 0.5), (1.0,), (0.5, 1.0)),
                        blocks=("repvgg", "qarepvgg"), groups=(1,), resolutions=(32, 48))
    for seed in range(5):
        rng, twin = random.Random(seed), random.Random(seed)
        d2, d4 = twin.randint(1, 3), twin.randint(1, 2)
        w2, w4 = twin.choice((0.25, 0.5)), twin.choice((0.5, 1.0))
        block, resolution = twin.choice(("repvgg", "qarepvgg")), twin.choice((32, 48))
        assert space.sample(rng, 10) == ArchSpec((2, d2, 1, d4), (0.5, w2, 1.0, w4), block, 1, resolution, 10)
        assert rng.random() == twin.random()  # both consumed the same randomness
    rng = random.Random(0)
    draws = [space.sample(rng, 10) for _ in range(3000)]
    assert set(draws) == set(space.iter_specs(10)) and space.size == 96


def test_measure_space_and_choice_defaults(tmp_path):
    assert MEASURE_SPACE.depths == ((1, 4), (1, 6), (1, 16), (1, 2)) and MEASURE_SPACE.resolutions == (112,)
    assert all(ws == (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5) for ws in MEASURE_SPACE.widths)
    assert SpecChoice().specs() == [resolve_arch(name, 112, 89) for name in SEED_ROWS]
    specs = SpecChoice("A0,a0", sample=3, seed=1, resolutions=(64,), num_classes=5).specs()
    assert len(specs) == 4 and all((s.resolution, s.num_classes) == (64, 5) for s in specs)
    assert [s.resolution for s in SpecChoice("N1", resolutions=(32, 64)).specs()] == [32, 64]
    (tmp_path / "f.txt").write_text("repvgg_d1-1-1-1_w1-1-1-1_g1_r96_c7\nN2\nrepvgg_d1-1-1-1_w0.5-0.5-0.5-0.5\n")
    kept, preset, open_ended = SpecChoice(specs_file=tmp_path / "f.txt", resolutions=(64,)).specs()
    assert (kept.resolution, kept.num_classes) == (96, 7)  # a spec string keeps what it states …
    assert (preset.resolution, preset.num_classes) == (64, 89)
    assert (open_ended.resolution, open_ended.num_classes) == (64, 89)  # … and takes the rest like a preset
    with pytest.raises(MeasureError, match="fewer than"):
        sample_specs(5, space=SearchSpace(depths=((1, 1),) * 4, widths=((1.0,),) * 4))


def test_candidates_enumerate_a_small_space_and_keep_the_corners_of_a_large_one():
    small = SearchSpace()
    assert space_candidates(small, 10) == list(small.iter_specs(10))
    large = SearchSpace(depths=((1, 4), (1, 6), (1, 16), (1, 2)), widths=((0.25, 0.5, 1.0, 2.0),) * 4,
                        resolutions=(32, 64, 112))
    candidates = space_candidates(large, 10, limit=300, seed=1)
    assert len(candidates) == len(set(candidates)) == 300 and large.size > 300
    assert all(large.why_outside(s) is None for s in candidates)
    corners = space_corners(large, 10)
    assert set(corners) <= set(candidates) and len(corners) == 6
    macs = [analyze(s).macs for s in candidates]  # MACs grow with depth, width and resolution: the corners
    assert min(macs) == analyze(ArchSpec((1, 1, 1, 1), (0.25,) * 4, resolution=32, num_classes=10)).macs
    assert max(macs) == analyze(ArchSpec((4, 6, 16, 2), (2.0,) * 4, resolution=112, num_classes=10)).macs
    assert space_candidates(large, 10, limit=300, seed=1) == candidates  # reproducible
