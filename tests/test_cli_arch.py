"""``nas arch list|show|table`` in-process: exit codes, stdout data, one-line errors on stderr."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import fields

import pytest

from nas.cli import main
from search_space import PRESETS, SEED_ROWS, ArchSpec, SpecError, analyze, get_preset
from search_space.cost import LayerCost

# name: (deploy params, true MACs, peak memory KiB, peak layer, legacy FLOPs) of the seed's table at 112 px, 89 classes
SEED = {
    "A0": (7_142_393, 348_451_072, 2261.25, "stage4.0", 202_337_216),
    "N0": (9_784_281, 573_465_088, 1192.5, "stage4.0", 268_466_432),
    "N1": (621_369, 36_866_176, 245.4375, "stage0", 67_116_608),
    "N2": (2_459_161, 144_732_416, 490.875, "stage0", 134_233_216),
    "N3": (877_113, 40_439_296, 328.5, "stage4.0", 67_539_776),
    "N4": (2_777_113, 149_473_792, 616.5, "stage4.0", 134_515_328),
    "M0": (4_767_961, 206_594_560, 2344.5, "stage4.1", 252_955_904),
    "M1": (17_739_577, 356_782_336, 14501.25, "stage4.1", 191_220_416),
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_table_defaults_are_the_seed_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "arch", "table", "-f", "json")
    assert code == 0 and err == ""
    body = json.loads(out)
    assert [r["name"] for r in body["rows"]] == list(SEED_ROWS)
    for row in body["rows"]:
        expected = SEED[row["name"]]
        got = (row["params"], row["macs"], row["peak_memory_kib"], row["peak_layer"], row["legacy_flops"])
        assert got == expected
    assert "thop" in body["note"]


def test_table_for_people_shows_the_seed_figures(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "arch", "table")
    assert code == 0
    assert "model analysis at 112 px, 89 classes" in out
    for params, macs, kib, layer, legacy in SEED.values():
        line = next(x for x in out.splitlines() if f"{params:,}" in x)
        assert f"{macs:,}" in line and f"{legacy:,}" in line and layer in line
        assert f"{kib:,.4f}".rstrip("0").rstrip(".") in line


def test_table_csv_has_a_header_and_one_row_per_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "arch", "table", "A0", "B0", "--resolution", "224", "--classes", "1000", "-f", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert out.splitlines()[0].startswith("name,depths,widths,macs,legacy_flops,params,peak_memory_kib")
    assert [r["name"] for r in rows] == ["A0", "B0"]
    assert int(rows[0]["params"]) == analyze(get_preset("A0").spec()).params == 8_309_384


def test_table_spec_strings_keep_their_own_input(capsys: pytest.CaptureFixture[str]) -> None:
    spec = "repvgg_d1-1-1-1_w1-1-1-1_g1_r224_c1000"
    code, out, _ = run(capsys, "arch", "table", "N1", spec, "-f", "json")
    assert code == 0
    n1, own = json.loads(out)["rows"]
    assert (n1["resolution"], n1["num_classes"]) == (112, 89)
    assert (own["resolution"], own["num_classes"]) == (224, 1000)
    assert own["macs"] == analyze(ArchSpec.parse(spec)).macs
    code, out, _ = run(capsys, "arch", "table", spec, "--resolution", "64", "-f", "json")
    assert json.loads(out)["rows"][0]["resolution"] == 64


def test_show_json_has_layer_rows_and_totals(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "arch", "show", "A0", "-f", "json")
    assert code == 0 and err == ""
    body = json.loads(out)
    report = analyze(get_preset("A0").spec())
    assert len(body["rows"]) == 1 + sum(get_preset("A0").depths) + 1  # stage 0, the blocks, the head
    assert body["rows"][0]["name"] == "stage0" and body["rows"][-1]["name"] == "head"
    assert set(body["rows"][0]) == {f.name for f in fields(LayerCost)}
    assert sum(r["macs"] for r in body["rows"]) == body["macs"] == report.macs
    assert body["params"] == report.params and body["spec"] == report.spec.to_string()
    assert body["memory_strategy"] == "int8"


def test_show_seed_setting_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "arch", "show", "n3", "--resolution", "112", "--classes", "89", "-f", "json")
    assert code == 0
    body = json.loads(out)
    assert (body["params"], body["peak_memory_kib"], body["peak_layer"]) == SEED["N3"][0:1] + SEED["N3"][2:4]
    code, out, _ = run(capsys, "arch", "show", "A0", "--block", "qarepvgg", "--memory", "fp16", "-f", "json")
    body = json.loads(out)
    assert body["spec"].startswith("qarepvgg_") and body["memory_strategy"] == "fp16"


def test_show_csv_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "arch", "show", "M0", "-f", "csv")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == ",".join(f.name for f in fields(LayerCost))
    assert len(lines) == 1 + 9 + 1  # header, 9 convs, head
    code, out, _ = run(capsys, "arch", "show", "M0")
    assert code == 0 and "repvgg_d2-2-2-2_w1-1-1-1_g1_r224_c1000" in out
    assert "peak_layer: stage0" in out  # at 224 px the stem's output dominates


def test_list_has_every_preset(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "arch", "list", "-f", "json")
    assert code == 0
    rows = json.loads(out)
    assert [r["name"] for r in rows] == list(PRESETS)
    assert "0.1" in next(r for r in rows if r["name"] == "N3")["note"]
    code, out, _ = run(capsys, "arch", "list")
    assert code == 0 and all(name in out for name in PRESETS)


@pytest.mark.parametrize(
    "argv",
    [
        ["arch", "show", "repvgg_d0-1-1-1_w1-1-1-1"],  # invalid depth
        ["arch", "show", "repvgg_d1-1-1-1_w1-1-1-1_g3"],  # invalid groups
        ["arch", "show", "not_a_spec"],  # unparseable
        ["arch", "show", "Z9"],  # unknown preset
        ["arch", "show", "A0", "--resolution", "16"],  # out of range
        ["arch", "table", "A0", "Z9"],
        ["arch", "table", "--classes", "1"],
    ],
)
def test_bad_input_is_one_line_on_stderr(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:")


@pytest.mark.parametrize(
    "argv",
    [
        ["arch"],
        ["arch", "show"],
        ["arch", "show", "A0", "--resolution", "big"],
        ["arch", "show", "A0", "--memory", "int4"],
        ["arch", "table", "-f", "yaml"],
        ["arch", "show", "A0", "--no-such-flag"],
        ["arch", "frobnicate"],
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and "usage:" in err


def test_help_shows_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for sub in ("show", "table"):
        code, out, _ = run(capsys, "arch", sub, "--help")
        assert code == 0 and "examples:" in out and f"nas arch {sub}" in out


def test_debug_shows_the_exception(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SpecError):
        main(["--debug", "arch", "show", "Z9"])
    monkeypatch.setenv("NAS_DEBUG", "1")
    with pytest.raises(SpecError):
        main(["arch", "show", "Z9"])
