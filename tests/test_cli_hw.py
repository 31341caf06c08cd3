"""``nas hw list|fit|predict|plot`` in-process: exit codes, output formats, one-line errors, old flag spellings."""

from __future__ import annotations

import csv
import io
import json

import pytest

from nas.cli import main
from nas.space import SearchSpace
from predictors import SEED_TABLE, DevicePredictor, fit_predictors, load_table
from search_space import ArchSpec, analyze

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
    code, out, err = run(capsys, "hw", "fit", "--target", "t4", "--target", "TDA4VM", "-f", "json",
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
    code, out, _ = run(capsys, "hw", "fit", "--target", "STPU", "-f", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 1 and rows[0]["device"] == "STPU" and float(rows[0]["loo_mape_pct"]) >= 0
    code, out, _ = run(capsys, "hw", "fit", "--target", "STPU")
    assert code == 0 and "STPU" in out and "loo_mape_pct" in out


def test_predict_m1_infeasible_m0_feasible_on_hexagon(capsys):
    code, out, _ = run(capsys, "hw", "predict", "M1", "--target", "Hexagon698", "-f", "json")
    assert code == 0
    (row,) = json.loads(out)
    assert row["feasible"] is False and row["verdict"] == "no"
    assert row["peak_memory_kib"] == pytest.approx(14501.25)
    code, out, _ = run(capsys, "hw", "predict", "M0", "--target", "hexagon698", "-f", "json")
    (row,) = json.loads(out)
    assert row["feasible"] is True and row["verdict"] == "yes" and row["low"] < row["ms"] < row["high"]
    code, out, _ = run(capsys, "hw", "predict", "M1", "--target", "Hexagon698")
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
    code, out, _ = run(capsys, "hw", "predict", "M1", "--load", str(tmp_path), "--target", "Hexagon698", "-f", "json")
    assert code == 0
    (loaded,) = json.loads(out)
    _, fitted, _ = run(capsys, "hw", "predict", "M1", "--target", "Hexagon698", "-f", "json")
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
        (["hw", "predict", "M0", "--target", "Jetson"], "unknown device 'Jetson'"),
        (["hw", "fit", "--target", "Jetson"], "unknown device 'Jetson'"),
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
        code, out, err = run(capsys, "hw", command, "--tables", str(path), "--no-seed")
        assert code == 1 and out == ""
        assert where in err.replace("\n", "") and err.startswith("error:")


def test_help_shows_examples(capsys):
    code, out, _ = run(capsys, "hw", "predict", "--help")
    assert code == 0 and "nas hw predict M1 --target Hexagon698" in out


def test_fit_headline_is_the_honest_loo_with_the_row_loo_beside(capsys):
    code, out, _ = run(capsys, "hw", "fit", "--target", "RV1126", "-f", "json")
    assert code == 0
    (row,) = json.loads(out)["rows"]
    # brute force, independently of predictors.evaluate_loo: drop the architecture from every device (honest),
    # or only RV1126's row of it (the older figure), refit on what is left, predict the held-out point
    table = load_table()
    honest, by_row = [], []
    for held in [r for r in table.rows_for("RV1126") if r.ok]:
        for errors, rest in ((honest, table.with_rows(r for r in table.rows if r.spec != held.spec)),
                             (by_row, table.without(held))):
            ms = fit_predictors(rest, ["RV1126"])["RV1126"].predict(held.spec).ms
            errors.append(abs(ms / held.latency_ms - 1) * 100)
    assert row["loo_mape_pct"] == pytest.approx(sum(honest) / len(honest), abs=0.006)
    assert row["row_loo_mape_pct"] == pytest.approx(sum(by_row) / len(by_row), abs=0.006)
    assert row["points"] == 4
    assert "honest" in json.loads(out)["note"] and "row_loo_mape_pct" in json.loads(out)["note"]


def test_predict_says_when_it_extrapolates(capsys):
    tiny = "repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_g1_r32_c10"
    code, out, _ = run(capsys, "hw", "predict", tiny, "--target", "Hexagon698", "-f", "json")
    assert code == 0
    (row,) = json.loads(out)
    # the seed table measured every device at 112 px only: 32 px lies outside, by a factor 112/32 at least
    assert row["extrapolated"] is True and "resolution 32 px below" in row["extrapolation"]
    code, out, _ = run(capsys, "hw", "predict", "M0", "--target", "Hexagon698", "-f", "json")
    (row,) = json.loads(out)
    assert row["extrapolated"] is False and row["extrapolation"] == ""  # M0 at 112 px was measured there
    code, out, _ = run(capsys, "hw", "predict", tiny, "--target", "Hexagon698")
    assert code == 0 and "extrapolated" in out and "True" in out


@pytest.mark.parametrize(("argv", "old", "new"), [
    (["hw", "fit", "--device", "STPU", "-f", "csv"], "--device", "--target"),
    (["hw", "predict", "M0", "--device", "T4", "-f", "csv"], "--device", "--target"),
    (["hw", "list", "--table", str(SEED_TABLE), "--no-seed", "-f", "csv"], "--table", "--tables"),
])
def test_old_flag_spellings_still_work_with_a_note(capsys, argv, old, new):
    code, out, err = run(capsys, *argv)
    assert code == 0 and out
    assert f"{old} is deprecated; use {new}" in err and err.count("\n") == 1
    code, new_out, new_err = run(capsys, *[new if a == old else a for a in argv])
    assert code == 0 and new_out == out and new_err == ""


def test_suggest_proposes_distinct_specs_of_the_space_and_skips_what_was_measured(capsys, tmp_path):
    space = SearchSpace(depths=((1, 2), (1, 2), (1, 2), (1, 1)), widths=((0.25, 0.5),) * 4, resolutions=(32, 48))
    measured = list(space.iter_specs(10))[::17]
    table = tmp_path / "box.csv"
    table.write_text("device,precision,arch,latency_ms,status\n" + "".join(
        f"box,fp32,{s.to_string()},{1 + analyze(s).macs / 1e6!r},ok\n" for s in measured))
    argv = ["hw", "suggest", "--target", "BOX", "-n", "4", "--depths", "1-2,1-2,1-2,1", "--widths", "0.25/0.5",
            "--resolution", "32,48", "--classes", "10", "--tables", str(table), "-f", "json"]
    code, out, err = run(capsys, *argv)
    assert code == 0 and err == ""
    rows = json.loads(out)
    specs = [ArchSpec.parse(r["spec"]) for r in rows]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4] and len(set(specs)) == 4
    assert all(space.why_outside(s) is None and s.num_classes == 10 for s in specs)
    assert not set(specs) & set(measured)  # what the target measured is not proposed again
    assert all(r["predicted_ms"] > 0 and r["macs"] == analyze(s).macs for r, s in zip(rows, specs))


def test_suggest_for_a_new_device_and_bad_counts(capsys):
    code, out, err = run(capsys, "hw", "suggest", "--target", "NewChip", "-n", "2", "-f", "json")
    assert code == 0 and "NewChip is not in the tables" in err
    rows = json.loads(out)
    assert len(rows) == 2 and "predicted_ms" not in rows[0]
    assert all(SearchSpace().why_outside(ArchSpec.parse(r["spec"])) is None for r in rows)
    code, out, err = run(capsys, "hw", "suggest", "--target", "T4", "-n", "0")
    assert code == 1 and out == "" and "at least 1" in err and err.count("\n") == 1
