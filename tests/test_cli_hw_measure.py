"""``nas hw measure``: a real tiny run, resume by skipping, spec selection and sampling, one-line errors."""

from __future__ import annotations

import csv
import io
import json

import pytest

from nas.cli import main
from nas.measure import MEASURE_SPACE, parse_precisions, parse_resolutions, sample_specs
from nas.space import SearchSpace
from predictors import TABLE_COLUMNS
from search_space import ArchSpec
from trials.errors import MeasureError

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
    assert main(["hw", "measure", "--ort-threads", "two"]) == 2


def test_sampling_is_reproducible_distinct_and_in_space():
    a, b = sample_specs(30, seed=3), sample_specs(30, seed=3)
    assert a == b and len(set(a)) == 30 and a != sample_specs(30, seed=4)
    for spec in a:
        assert MEASURE_SPACE.why_outside(spec) is None
        assert (spec.resolution, spec.num_classes) == (112, 89)
    with pytest.raises(MeasureError, match="fewer than"):
        sample_specs(5, space=SearchSpace(depths=((1, 1),) * 4, widths=((1.0,),) * 4))


def test_flag_parsers():
    assert parse_precisions("INT8, fp32,int8") == ("int8", "fp32")
    assert parse_resolutions("32, 48,32") == (32, 48) and parse_resolutions(None) is None
    with pytest.raises(MeasureError, match="whole numbers"):
        parse_resolutions("32px")


def test_target_resolutions_and_old_spellings(tmp_path, capsys):
    out = tmp_path / "t.csv"
    spec = "repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25"
    (tmp_path / "s.txt").write_text(spec + "\n")
    args = ["hw", "measure", "--specs", str(tmp_path / "s.txt"), "--precision", "fp32", "--out", str(out),
            "--classes", "10", "--sessions", "1", "--runs", "2", "--warmup", "1", "-f", "json"]
    assert main([*args, "--resolution", "32,40", "--target", "box", "--ort-threads", "1"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["device"], ArchSpec.parse(r["arch"]).resolution) for r in rows] == [("box", 32), ("box", 40)]
    assert main([*args, "--resolution", "32", "--device", "box", "--threads", "1"]) == 0
    captured = capsys.readouterr()
    assert "--device is deprecated; use --target" in captured.err
    assert "--threads is deprecated; use --ort-threads" in captured.err
    assert "1 of 1 measurement(s) already in" in captured.err  # the old spelling reached the same target


def test_measure_suggest_builds_on_what_the_target_measured(tmp_path, capsys):
    out = tmp_path / "box.csv"
    argv = ["hw", "measure", "--suggest", "2", "--depths", "1", "--widths", "0.25/0.5", "--precision", "fp32",
            "--target", "box", "--out", str(out), *TINY, "-f", "json"]
    assert main(argv) == 0
    first = [ArchSpec.parse(r["arch"]) for r in json.loads(capsys.readouterr().out)]
    space = SearchSpace(depths=((1, 1),) * 4, widths=((0.25, 0.5),) * 4, resolutions=(32,))
    assert len(set(first)) == 2 and all(space.why_outside(s) is None and s.num_classes == 10 for s in first)
    assert main(argv) == 0
    second = [ArchSpec.parse(r["arch"]) for r in json.loads(capsys.readouterr().out)]
    assert len(set(second)) == 2 and not set(first) & set(second)  # the next ones, not the measured again
    with out.open(newline="") as handle:
        assert sorted(r["arch"] for r in csv.DictReader(handle)) == sorted(s.to_string() for s in first + second)
