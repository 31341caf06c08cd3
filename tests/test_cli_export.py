"""``nas export``: an arch, a checkpoint, a study trial and a Pareto front; clear failures, no leftovers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import optuna
import pytest
from PIL import Image

from nas.cli import main
from nas.study import record_data, recorded_data
from search_space import ArchSpec
from trials.data import DataSettings
from trials.export import FP32_NAME, INT8_NAME
from trials.model_card import CARD_NAME, load_card, sha256_file
from trials.recipe import DIGITS_RECIPE

ARCH = "qarepvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_g1_r32_c10"
QUICK = ["--epochs", "1", "--max-steps", "4", "--batch-size", "16", "--calibration-images", "16"]


@pytest.fixture(autouse=True)
def _quick_latency(monkeypatch):
    """A short timing protocol: these tests check the plumbing, not the figures."""
    import nas.deploy
    from trials.export_stages import LatencyOptions

    real = nas.deploy.export_model

    def quick(*args, **kwargs):
        given = kwargs.get("latency") or LatencyOptions()
        kwargs["latency"] = dataclasses.replace(given, warmup=1, runs=3, sessions=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(nas.deploy, "export_model", quick)


def _run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("error:"), err
    return err[-1]


@pytest.fixture(scope="module")
def arch_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "arch"
    code = main(["export", "--arch", ARCH, "--out", str(out), *QUICK, "--seed", "3", "-f", "json"])
    return code, out


def test_export_arch_trains_and_writes_verified_files(arch_export, capsys):
    code, out = arch_export
    assert code == 0
    card = load_card(out)  # validates every documented field
    assert {p.name for p in out.iterdir()} == {CARD_NAME, FP32_NAME, INT8_NAME, "checkpoint.pt"}
    assert card.data["files"]["checkpoint"]["sha256"] == sha256_file(out / "checkpoint.pt")
    assert card.data["spec"] == ARCH and card.data["block"] == "qarepvgg"
    assert card.data["training"]["config"]["max_steps"] == 4 and card.data["source"]["kind"] == "arch"
    assert card.data["parity"]["passed"] and card.data["parity"]["max_abs_diff"] <= card.data["parity"]["tolerance"]
    assert {p["device"] for p in card.data["latency"]["predicted"]} >= {"T4"}
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    fp32, int8 = _run_onnx(out / FP32_NAME, x), _run_onnx(out / INT8_NAME, x)
    assert fp32.shape == int8.shape == (1, 10) and np.isfinite(int8).all()


def test_export_checkpoint_reproduces_the_same_model(arch_export, tmp_path, capsys):
    _, first = arch_export
    out = tmp_path / "again"
    assert main(["export", "--checkpoint", str(first / "checkpoint.pt"), "--out", str(out), "-f", "json"]) == 0
    row = json.loads(capsys.readouterr().out)["rows"][0]
    card = load_card(out)
    assert card.data["training"]["from"] == "checkpoint" and "checkpoint.pt" not in {p.name for p in out.iterdir()}
    # the recorded splits (a new run's split seed is its training seed, 3) are reused: the same test images
    assert card.data["data"]["settings"] == load_card(first).data["data"]["settings"] == DataSettings(seed=3).to_dict()
    assert card.data["data"]["recipe"] == DIGITS_RECIPE.to_dict()
    assert row["test_fp32_top1"] == load_card(first).data["accuracy"]["fp32"]["top1"]
    assert row["selection_fp32_bal"] == load_card(first).data["accuracy"]["selection"]["fp32"]["balanced_acc"]
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(_run_onnx(out / FP32_NAME, x), _run_onnx(first / FP32_NAME, x), atol=1e-5)


def test_corrupt_checkpoint_fails_in_one_line_and_leaves_nothing(arch_export, tmp_path, capsys):
    _, first = arch_export
    bad = tmp_path / "bad.pt"
    bad.write_bytes((first / "checkpoint.pt").read_bytes()[:5000])  # truncated
    out = tmp_path / "out"
    assert main(["export", "--checkpoint", str(bad), "--out", str(out)]) == 1
    assert "corrupt" in _one_line_error(capsys)
    assert not out.exists()


def test_unwritable_output_folder_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["export", "--arch", ARCH, "--out", str(blocker / "out"), *QUICK]) == 1
    assert "cannot write to output folder" in _one_line_error(capsys)


def test_failed_parity_exits_nonzero_and_removes_the_outputs(arch_export, tmp_path, capsys, monkeypatch):
    import trials.export as tx

    _, first = arch_export
    real = tx.onnx_export.export_onnx

    def wrong(deploy, path, resolution, opset=17):
        import torch

        with torch.no_grad():
            deploy.head.bias.add_(0.5)  # the file no longer computes what the model computes
        return real(deploy, path, resolution, opset=opset)

    monkeypatch.setattr(tx.onnx_export, "export_onnx", wrong)
    out = tmp_path / "out"
    assert main(["export", "--checkpoint", str(first / "checkpoint.pt"), "--out", str(out)]) == 1
    assert "parity check failed" in _one_line_error(capsys)
    assert not out.exists()


def _study(tmp_path: Path, specs: list[tuple[str, float, float]], record: bool = True) -> str:
    """A study of ``specs``; with ``record`` it records the digits (at most 40 per class), as nas search does."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="tiny", storage=url, directions=["maximize", "minimize"])
    for spec, acc, macs in specs:
        study.add_trial(optuna.trial.create_trial(
            values=[acc, macs], user_attrs={"spec": spec, "spec_hash": ArchSpec.parse(spec).hash, "acc": acc}))
    if record:
        settings = DataSettings(max_per_class=40)
        record_data(study, settings, DIGITS_RECIPE, settings.load(32, DIGITS_RECIPE))
    return url


def test_export_trial_and_missing_trial(tmp_path, capsys):
    small = "repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_g1_r32_c10"
    url = _study(tmp_path, [(small, 0.5, 1e6)])
    out = tmp_path / "t0"
    assert main(["export", "--trial", "0", "--storage", url, "--out", str(out), *QUICK]) == 0
    card = load_card(out)
    assert card.data["source"]["kind"] == "trial" and card.data["source"]["trial"] == 0
    assert card.data["spec"] == small and card.data["source"]["study"] == "tiny"
    assert card.data["data"]["settings"] == DataSettings(max_per_class=40).to_dict()  # the study's record
    capsys.readouterr()
    missing = tmp_path / "t9"
    assert main(["export", "--trial", "9", "--storage", url, "--out", str(missing), *QUICK]) == 1
    assert "has no trial 9" in _one_line_error(capsys)
    assert not missing.exists()


def test_export_trial_of_a_study_without_the_record_is_one_line(tmp_path, capsys):
    """Before studies recorded their data, this trained on the embedded digits whatever the search used."""
    url = _study(tmp_path, [("repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_g1_r32_c43", 0.5, 1e6)], record=False)
    out = tmp_path / "t0"
    assert main(["export", "--trial", "0", "--storage", url, "--out", str(out), *QUICK]) == 1
    assert "does not record the data and recipe" in _one_line_error(capsys)
    assert not out.exists()


def _image_folder(root: Path) -> Path:
    """Three classes of 30, 20 and 12 small noisy images, one colour each (learnable in a few steps)."""
    rng = np.random.default_rng(0)
    for c, (n, colour) in enumerate([(30, (200, 40, 40)), (20, (40, 200, 40)), (12, (40, 40, 200))]):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(n):
            pixels = (rng.integers(0, 60, (40, 40, 3)) + np.array(colour)).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return root


def test_export_trial_without_data_flags_reproduces_the_data_the_search_used(tmp_path, capsys):
    folder = _image_folder(tmp_path / "images")
    url = f"sqlite:///{tmp_path / 'search.db'}"
    search = ["search", "--data", str(folder), "--selection-ratio", "0.2", "--hflip", "0", "--trials", "2",
              "--storage", url, "--study", "s", "-o", "acc,macs", "--resolution", "32", "--depths", "1",
              "--widths", "0.25", "--blocks", "repvgg,qarepvgg", "--proxy-steps", "4"]
    assert main(search) == 0
    record = recorded_data(optuna.load_study(study_name="s", storage=url))
    assert record is not None and record.settings.path == str(folder) and record.classes == ("class0", "class1",
                                                                                             "class2")
    capsys.readouterr()
    out = tmp_path / "export"
    assert main(["export", "--trial", "0", "--storage", url, "--out", str(out), *QUICK]) == 0
    card = load_card(out).data
    # the folder, its split rule and the recipe the search recorded: 3 classes, not the embedded digits' 10
    assert card["data"]["settings"] == record.settings.to_dict() and card["classes"] == list(record.classes)
    assert card["data"]["recipe"] == record.recipe.to_dict() and card["data"]["recipe"]["hflip"] == 0
    report = card["data"]["report"]
    # 30/20/12 images: test floor(0.1 n) = 3/2/1, selection floor(0.2 n) = 6/4/2 (an independent count)
    assert (report["test_images"], report["selection_images"]) == (6, 12) == (card["accuracy"]["images"],
                                                                             card["accuracy"]["selection"]["images"])
    assert card["arch"]["num_classes"] == 3 and not any("class count" in n for n in card["notes"])
    # a changed folder is one line, and nothing is written
    (folder / "class1" / "0.png").unlink()
    changed = tmp_path / "changed"
    assert main(["export", "--trial", "0", "--storage", url, "--out", str(changed), *QUICK]) == 1
    assert "changed since the search" in _one_line_error(capsys)
    assert not changed.exists()
    # explicit data flags override the record (noted on the card): here the changed folder, knowingly
    assert main(["export", "--trial", "0", "--storage", url, "--out", str(changed), "--data", str(folder),
                 "--selection-ratio", "0.25", *QUICK]) == 0
    assert any("instead of the study's" in n for n in load_card(changed).data["notes"])


def test_export_pareto_exports_each_front_trial_in_its_own_folder(tmp_path, capsys):
    a = "repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_g1_r32_c10"
    b = "qarepvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_g1_r32_c10"
    dominated = "repvgg_d1-1-1-1_w0.25-0.5-0.25-0.25_g1_r32_c10"
    url = _study(tmp_path, [(a, 0.4, 1e6), (b, 0.6, 2e6), (dominated, 0.3, 3e6)])
    out = tmp_path / "front"
    assert main(["export", "--pareto", "--storage", url, "--out", str(out), *QUICK, "-f", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert sorted(r["trial"] for r in rows) == [0, 1] and not any(r["error"] for r in rows)
    for r in rows:
        folder = out / ArchSpec.parse(r["spec"]).hash
        assert load_card(folder).data["source"]["trial"] == r["trial"]
    summary = json.loads((out / "summary.json").read_text())
    assert [r["trial"] for r in summary["rows"]] == [r["trial"] for r in rows]


def test_usage_errors_exit_2(capsys):
    assert main(["export", "--out", "x"]) == 2
    assert main(["export", "--pareto", "--checkpoint", "c.pt", "--out", "x"]) == 2
    assert main(["export", "--arch", ARCH, "--trial", "1", "--out", "x"]) == 2


def test_int8_over_budget_exits_3_with_the_verdict_and_still_writes_the_export(arch_export, tmp_path, capsys,
                                                                                monkeypatch):
    """Every attempt judged 5 points down (the ladder itself is tested on real models in test_int8_budget)."""
    import trials.int8_stage

    monkeypatch.setattr(trials.int8_stage.Int8Judge, "__call__", lambda self, path: (5.0, 0.9))
    _, first = arch_export
    ckpt = str(first / "checkpoint.pt")
    out = tmp_path / "over"
    capsys.readouterr()
    assert main(["export", "--checkpoint", ckpt, "--out", str(out), "--calibration-images", "8"]) == 3
    err = capsys.readouterr().err
    card = load_card(out)  # written anyway, for inspection
    q = card.data["quantization"]
    assert q["within_budget"] is False and len(q["attempts"]) == 5 and q["verdict"] in " ".join(err.split())
    assert q["verdict"].startswith("int8 OVER budget") and "5.00 points" in q["verdict"]
    assert {p.name for p in out.iterdir()} == {CARD_NAME, FP32_NAME, INT8_NAME}
    allowed = tmp_path / "allowed"
    assert main(["export", "--checkpoint", ckpt, "--out", str(allowed), "--calibration-images", "8",
                 "--int8-budget", "5", "--int8-metric", "bacc", "-f", "json"]) == 0  # 5 ≤ 5: within
    q = load_card(allowed).data["quantization"]
    assert (q["within_budget"], q["budget"]["metric"], len(q["attempts"])) == (True, "bacc", 1)
    assert main(["export", "--checkpoint", ckpt, "--out", str(tmp_path / "a2"), "--calibration-images", "8",
                 "--int8-budget", "1", "--allow-int8-drop", "-f", "json"]) == 0
    assert main(["export", "--checkpoint", ckpt, "--out", str(tmp_path / "x"), "--int8-budget", "-1"]) == 2


def test_pareto_export_over_int8_budget_exits_3_and_marks_the_rows(tmp_path, capsys, monkeypatch):
    import trials.int8_stage

    monkeypatch.setattr(trials.int8_stage.Int8Judge, "__call__", lambda self, path: (2.0, 0.95))
    a = "repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_g1_r32_c10"
    url = _study(tmp_path, [(a, 0.4, 1e6)])
    out = tmp_path / "front"
    assert main(["export", "--pareto", "--storage", url, "--out", str(out), *QUICK, "-f", "json"]) == 3
    printed = json.loads(capsys.readouterr().out)
    assert printed["int8_over_budget"] == 1 and [r["int8_within_budget"] for r in printed["rows"]] == [False]
    assert main(["export", "--pareto", "--storage", url, "--out", str(tmp_path / "f2"), *QUICK,
                 "--int8-budget", "2", "-f", "json"]) == 0
