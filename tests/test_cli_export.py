"""``nas export``: an arch, a checkpoint, a study trial and a Pareto front; clear failures, no leftovers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import optuna
import pytest

from nas.cli import main
from search_space import ArchSpec
from trials.export import FP32_NAME, INT8_NAME
from trials.model_card import CARD_NAME, load_card, sha256_file

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
    # the recorded split (seed 3) is reused, so the validation images and the accuracy are the same
    assert card.data["data"]["seed"] == 3 == load_card(first).data["data"]["seed"]
    assert row["fp32_top1"] == load_card(first).data["accuracy"]["fp32"]["top1"]
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


def _study(tmp_path: Path, specs: list[tuple[str, float, float]]) -> str:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="tiny", storage=url, directions=["maximize", "minimize"])
    for spec, acc, macs in specs:
        study.add_trial(optuna.trial.create_trial(
            values=[acc, macs], user_attrs={"spec": spec, "spec_hash": ArchSpec.parse(spec).hash, "acc": acc}))
    return url


def test_export_trial_and_missing_trial(tmp_path, capsys):
    small = "repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_g1_r32_c10"
    url = _study(tmp_path, [(small, 0.5, 1e6)])
    out = tmp_path / "t0"
    assert main(["export", "--trial", "0", "--storage", url, "--out", str(out), *QUICK]) == 0
    card = load_card(out)
    assert card.data["source"]["kind"] == "trial" and card.data["source"]["trial"] == 0
    assert card.data["spec"] == small and card.data["source"]["study"] == "tiny"
    capsys.readouterr()
    missing = tmp_path / "t9"
    assert main(["export", "--trial", "9", "--storage", url, "--out", str(missing), *QUICK]) == 1
    assert "has no trial 9" in _one_line_error(capsys)
    assert not missing.exists()


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
