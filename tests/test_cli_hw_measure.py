"""``nas hw measure``: a real tiny run, resume by skipping, spec selection and sampling, one-line errors."""

from __future__ import annotations

import csv
import io
import json

import pytest

from nas.cli import main
from nas.measure import MEASURE_SPACE, collect_specs, parse_precisions, sample_specs
from search_space import SEED_ROWS, ArchSpec
from trials.errors import MeasureError
from trials.latency import TABLE_COLUMNS

TINY = ["--resolution", "32", "--classes", "10", "--sessions", "1", "--runs", "2", "--warmup", "1"]


def test_measure_writes_table_and_prints_rows_then_skips(tmp_path, capsys):
    out = tmp_path / "host.csv"
    assert main(["hw", "measure", "--presets", "N1", "--out", str(out), *TINY, "-f", "csv"]) == 0
    printed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["precision"] for r in printed] == ["fp32", "int8"]
    assert all(float(r["latency_ms"]) > 0 and ArchSpec.parse(r["arch"]).depths == (2, 4, 14, 1) for r in printed)
    with out.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == TABLE_COLUMNS
        rows = list(reader)
    assert [(r["precision"], r["arch"]) for r in rows] == [(r["precision"], r["arch"]) for r in printed]

    assert main(["hw", "measure", "--presets", "N1", "--out", str(out), *TINY, "-f", "json"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "2 of 2" in captured.err and "skipped" in captured.err


def test_measure_json_fp32_only(tmp_path, capsys):
    out = tmp_path / "t.csv"
    args = ["hw", "measure", "--specs", str(tmp_path / "s.txt"), "--precision", "fp32", "--out", str(out)]
    (tmp_path / "s.txt").write_text("# tiny\nrepvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_g1_r32_c10  # a comment\n\n")
    assert main([*args, *TINY, "-f", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["precision"] == "fp32" and rows[0]["threads"] == 1
    assert rows[0]["macs"] > 0 and rows[0]["spread"] >= 1


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--presets", "Z9"], "unknown preset"),
        (["--presets", "N1", "--precision", "fp16"], "unknown precision"),
        (["--presets", "N1", "--specs", "/nonexistent/specs.txt"], "cannot read spec file"),
        (["--presets", "N1", "--runs", "0"], "runs"),
        (["--sample", "0"], "at least 1"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, needle):
    out = tmp_path / "t.csv"
    assert main(["hw", "measure", "--out", str(out), *TINY, *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("where", ["missing/t.csv", "."])
def test_unwritable_out_is_refused_before_measuring(tmp_path, capsys, where):
    assert main(["hw", "measure", "--presets", "N1", "--out", str(tmp_path / where), *TINY]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and ("does not exist" in err or "folder" in err)
    assert list(tmp_path.iterdir()) == []


def test_usage_error_exits_2(capsys):
    assert main(["hw", "measure", "--threads", "two"]) == 2


def test_sampling_is_reproducible_distinct_and_in_space():
    a, b = sample_specs(30, seed=3), sample_specs(30, seed=3)
    assert a == b and len(set(a)) == 30 and a != sample_specs(30, seed=4)
    for spec in a:
        assert all(lo <= d <= hi for d, (lo, hi) in zip(spec.depths, MEASURE_SPACE.depths))
        assert set(spec.widths) <= set(MEASURE_SPACE.widths)
        assert (spec.resolution, spec.num_classes) == (112, 89)
    with pytest.raises(MeasureError, match="fewer than"):
        sample_specs(5, space=type(MEASURE_SPACE)(depths=((1, 1),) * 4, widths=(1.0,)))


def test_collect_specs_defaults_and_overrides(tmp_path):
    assert [s.depths for s in collect_specs()] == [s.depths for s in collect_specs(",".join(SEED_ROWS))]
    assert len(collect_specs()) == len(SEED_ROWS)
    specs = collect_specs("A0,a0", sample=3, seed=1, resolution=64, num_classes=5)
    assert len(specs) == 4 and all((s.resolution, s.num_classes) == (64, 5) for s in specs)
    (tmp_path / "f.txt").write_text("repvgg_d1-1-1-1_w1-1-1-1_g1_r96_c7\nN2\n")
    kept, preset = collect_specs(specs_file=tmp_path / "f.txt", resolution=64)
    assert (kept.resolution, kept.num_classes) == (96, 7) and preset.resolution == 64
    assert parse_precisions("INT8, fp32,int8") == ("int8", "fp32")
