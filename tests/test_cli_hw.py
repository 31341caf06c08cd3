"""``nas hw list|fit|predict|plot`` in-process: exit codes, output formats, one-line errors."""

from __future__ import annotations

import csv
import io
import json

import pytest

from nas.cli import main
from predictors import DevicePredictor

HEADER = "device,precision,arch,latency_ms,status\n"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_json(capsys):
    code, out, _ = run(capsys, "hw", "list", "-f", "json")
    assert code == 0
    rows = {r["device"]: r for r in json.loads(out)}
    assert len(rows) == 7
    assert rows["Hexagon698"]["failures"] == 1 and rows["Hexagon698"]["points"] == 4
    assert rows["Hexagon698"]["memory_limit_kib"] == pytest.approx((2344.5 * 14501.25) ** 0.5)
    assert rows["T4"]["memory_limit_kib"] is None


def test_fit_reports_loo_and_baseline_and_saves(capsys, tmp_path):
    code, out, err = run(capsys, "hw", "fit", "--device", "t4", "--device", "TDA4VM", "-f", "json",
                         "--save", str(tmp_path / "saved"))
    assert code == 0
    body = json.loads(out)
    assert [r["device"] for r in body["rows"]] == ["T4", "TDA4VM"]
    for row in body["rows"]:
        assert row["loo_mape_pct"] >= 0 and row["macs_mape_pct"] > 0 and -1 <= row["kendall_tau"] <= 1
    assert "leave-one-out" in body["note"]
    files = sorted(p.name for p in (tmp_path / "saved").iterdir())
    assert files == ["T4.json", "TDA4VM.json"]
    assert DevicePredictor.from_json((tmp_path / "saved" / "T4.json").read_text()).device == "T4"
    assert "wrote 2 predictor(s)" in err


def test_fit_csv_and_table_formats(capsys):
    code, out, _ = run(capsys, "hw", "fit", "--device", "STPU", "-f", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 1 and rows[0]["device"] == "STPU" and float(rows[0]["loo_mape_pct"]) >= 0
    code, out, _ = run(capsys, "hw", "fit", "--device", "STPU")
    assert code == 0 and "STPU" in out and "loo_mape_pct" in out


def test_predict_m1_infeasible_m0_feasible_on_hexagon(capsys):
    code, out, _ = run(capsys, "hw", "predict", "M1", "--device", "Hexagon698", "-f", "json")
    assert code == 0
    (row,) = json.loads(out)
    assert row["feasible"] is False and row["verdict"] == "no"
    assert row["peak_memory_kib"] == pytest.approx(14501.25)
    code, out, _ = run(capsys, "hw", "predict", "M0", "--device", "hexagon698", "-f", "json")
    (row,) = json.loads(out)
    assert row["feasible"] is True and row["verdict"] == "yes" and row["low"] < row["ms"] < row["high"]
    code, out, _ = run(capsys, "hw", "predict", "M1", "--device", "Hexagon698")
    assert code == 0 and "Hexagon698" in out and "failed" in out


def test_predict_every_device_and_spec_strings(capsys):
    code, out, _ = run(capsys, "hw", "predict", "repvgg_d1-2-4-1_w0.5-0.5-1-1_g1_r112_c89", "-f", "json")
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 7 and all(r["ms"] > 0 for r in rows)
    code, out, _ = run(capsys, "hw", "predict", "A0", "--resolution", "224", "--classes", "1000", "-f", "json")
    assert code == 0
    assert all(r["peak_memory_kib"] > 2261.25 for r in json.loads(out))


def test_predict_from_saved_predictors(capsys, tmp_path):
    assert run(capsys, "hw", "fit", "--save", str(tmp_path))[0] == 0
    code, out, _ = run(capsys, "hw", "predict", "M1", "--load", str(tmp_path), "--device", "Hexagon698", "-f", "json")
    assert code == 0
    (loaded,) = json.loads(out)
    _, fitted, _ = run(capsys, "hw", "predict", "M1", "--device", "Hexagon698", "-f", "json")
    assert loaded == json.loads(fitted)[0]


def test_plot_writes_png(capsys, tmp_path):
    target = tmp_path / "hw.png"
    code, _, err = run(capsys, "hw", "plot", "--out", str(target))
    assert code == 0 and str(target) in err
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["hw.png"]  # no temp file left behind


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["hw", "predict", "M0", "--device", "Jetson"], "unknown device 'Jetson'"),
        (["hw", "fit", "--device", "Jetson"], "unknown device 'Jetson'"),
        (["hw", "predict", "Q7"], "unknown preset 'Q7'"),
        (["hw", "list", "--no-seed"], "no hardware table given"),
        (["hw", "predict", "M0", "--load", "/nonexistent-dir"], "no predictor JSON files"),
        (["hw", "plot", "--out", "/nonexistent-dir/x.png"], "does not exist"),
    ],
)
def test_bad_inputs_give_one_line_and_exit_1(capsys, argv, pattern):
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == ""
    assert pattern in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (HEADER + "T4,int8,A0,abc,ok\n", "bad.csv:2:"),
        ("device,precision,arch\nT4,int8,A0\n", "bad.csv:1:"),
        (HEADER + "T4,int8,A0,0.5,ok\nT4,int8,A0,0.6,ok\n", "bad.csv:3:"),
    ],
)
def test_malformed_table_exits_1_naming_file_line(capsys, tmp_path, text, where):
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    for command in ("list", "fit"):
        code, out, err = run(capsys, "hw", command, "--table", str(path), "--no-seed")
        assert code == 1 and out == ""
        assert where in err.replace("\n", "") and err.startswith("error:")


def test_help_shows_examples(capsys):
    code, out, _ = run(capsys, "hw", "predict", "--help")
    assert code == 0 and "nas hw predict M1 --device Hexagon698" in out
