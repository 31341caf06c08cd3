"""``nas train`` in-process: outputs, files, resume, and one clear line for every bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from nas.cli import main
from nas.cli import options as cli_options
from nas.runs import HISTORY_COLUMNS
from trials.checkpoint import Checkpoint
from trials.data import DataSettings
from trials.losses import LOSSES
from trials.recipe import DIGITS_RECIPE

TINY = "repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_r32"
QUICK = ["--max-per-class", "12", "--batch-size", "16", "--torch-threads", "1"]


@pytest.fixture(autouse=True)
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--arch", TINY, "--out", str(out), "--epochs", "1", *QUICK]) == 0
    return out


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_train_writes_checkpoints_metrics_and_json(tmp_path, capsys) -> None:
    out = tmp_path / "n1"
    code = main(["train", "--arch", "N1", "--resolution", "32", "--out", str(out), "--epochs", "2",
                 "--max-steps", "3", *QUICK, "-f", "json"])
    captured = capsys.readouterr()
    assert code == 0
    body = json.loads(captured.out)
    assert [r["epoch"] for r in body["rows"]] == [1, 2] and body["steps"] == 3
    assert body["spec"].endswith("_r32_c10") and body["config"]["max_steps"] == 3
    assert "defaults to 1000 classes; using the data's 10" in captured.err
    assert {p.name for p in out.iterdir()} == {"last.pt", "best.pt", "metrics.json"}
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["balanced_acc"] == body["balanced_acc"] and len(saved["history"]) == 2
    ckpt = Checkpoint.read(out / "last.pt")
    assert ckpt.data == DataSettings(max_per_class=12) and ckpt.config.recipe == DIGITS_RECIPE
    assert saved["data"] == ckpt.data.to_dict()  # metrics.json records what the checkpoint records


def test_recipe_and_split_flags_reach_the_checkpoint_and_old_spellings_still_work(tmp_path, capsys) -> None:
    out = tmp_path / "flags"
    argv = ["train", "--arch", TINY, "--out", str(out), "--epochs", "1", "--max-steps", "1", *QUICK,
            "--hflip", "0.3", "--crop-scale", "0.5,1", "--loss", "balanced_softmax", "--long-tail", "exp:3",
            "--val-ratio", "0.2", "--sampler", "class_balanced", "--test-ratio", "0.25", "--seed", "4"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "--val-ratio is deprecated; use --selection-ratio" in err and "--sampler is deprecated" in err
    ckpt = Checkpoint.read(out / "last.pt")
    assert ckpt.config.recipe == DIGITS_RECIPE.replace(hflip=0.3, crop_scale=(0.5, 1.0), loss="balanced_softmax",
                                                       long_tail="exp:3", data_sampler="class_balanced")
    # a new run's split seed is its training seed
    assert ckpt.data == DataSettings(selection_ratio=0.2, test_ratio=0.25, seed=4, max_per_class=12)
    assert ckpt.data_report["test_images"] == 10 * 3  # floor(0.25 · 12) per digit
    assert main(["train", "--arch", TINY, "--out", str(tmp_path / "bad"), "--crop-scale", "0.5"]) == 2


def test_csv_carries_the_history(run_dir, tmp_path, capsys) -> None:
    out = tmp_path / "csv"
    assert main(["train", "--arch", TINY, "--out", str(out), "--epochs", "1", "--max-steps", "2", *QUICK,
                 "-f", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split(",") == HISTORY_COLUMNS and len(lines) == 2


def test_resume_takes_unset_options_from_the_checkpoint_and_extends_epochs(run_dir, tmp_path, capsys) -> None:
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(run_dir, out)
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--torch-threads", "1", "-f", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert [r["epoch"] for r in body["rows"]] == [1, 2] and body["config"]["batch_size"] == 16
    assert Checkpoint.read(out / "last.pt").epoch == 2


def test_mismatched_resume_is_one_line_and_leaves_the_checkpoint(run_dir, capsys) -> None:
    before = (run_dir / "last.pt").read_bytes()
    assert main(["train", "--out", str(run_dir), "--resume", "--lr", "0.3"]) == 1
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "lr: 0.05 → 0.3" in errors[0]
    assert (run_dir / "last.pt").read_bytes() == before
    assert main(["train", "--arch", TINY, "--out", str(run_dir)]) == 1
    assert "already holds a checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--data", "{missing}"], "does not exist"),
        (["--data", "{empty}"], "no class subfolders"),
        (["--loss", "focal"], "unknown loss 'focal'"),
        (["--resolution", "16"], "resolution 16 px is out of range"),
        (["--epochs", "0"], "epochs must be positive"),
        (["--arch", "repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_r32_c89"], "spec has 89 classes but the data has 10"),
        (["--device", "cuda:0" if not torch.cuda.is_available() else "tpu"], "device"),
    ],
)
def test_bad_inputs_fail_with_one_clear_line_and_no_files(tmp_path, capsys, extra, expected) -> None:
    (tmp_path / "empty").mkdir()
    extra = [e.format(missing=tmp_path / "missing", empty=tmp_path / "empty") for e in extra]
    args = ["train", "--arch", TINY, "--out", str(tmp_path / "out"), "--epochs", "1", *QUICK, *extra]
    assert main(args) == 1
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and expected in errors[0]
    assert not list(tmp_path.glob("out/*.pt"))  # nothing half-written (usually no folder at all)


def test_resume_without_a_checkpoint_and_train_without_arch(tmp_path, capsys) -> None:
    assert main(["train", "--out", str(tmp_path), "--resume"]) == 1
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "new")]) == 1
    assert "no architecture given" in capsys.readouterr().err


def test_the_cli_knows_every_loss() -> None:
    assert cli_options.LOSSES == LOSSES


def _study_with_record(tmp_path: Path, record: bool = True) -> str:
    """A study with one trial of the tiny spec; with ``record`` it records the digits at selection 0.2 (seed 5)
    and a recipe with a flip, as ``nas search`` does."""
    import optuna

    from nas.study import record_data

    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="rec", storage=url, directions=["maximize"])
    study.add_trial(optuna.trial.create_trial(values=[0.5], user_attrs={"spec": TINY + "_c10"}))
    if record:
        settings, recipe = DataSettings(selection_ratio=0.2, seed=5, max_per_class=12), DIGITS_RECIPE.replace(hflip=0.5)
        record_data(study, settings, recipe, settings.load(32, recipe))
    return url


def test_train_trial_uses_the_data_and_recipe_the_study_recorded(tmp_path, capsys) -> None:
    url = _study_with_record(tmp_path)
    out = tmp_path / "t0"
    assert main(["train", "--trial", "0", "--storage", url, "--out", str(out), "--epochs", "1", "--max-steps", "2",
                 "--batch-size", "16", "--torch-threads", "1", "-f", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    ckpt = Checkpoint.read(out / "last.pt")
    assert ckpt.data == DataSettings(selection_ratio=0.2, seed=5, max_per_class=12) and ckpt.config.seed == 0
    assert ckpt.config.recipe == DIGITS_RECIPE.replace(hflip=0.5)
    assert ckpt.spec.to_string() == body["spec"] == "repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_g1_r32_c10"
    assert ckpt.data_report["selection_images"] == 10 * 2  # floor(0.2 · 12) per digit
    # a flag given overrides the record, with a note
    out2 = tmp_path / "t0b"
    assert main(["train", "--trial", "0", "--storage", url, "--out", str(out2), "--epochs", "1", "--max-steps", "1",
                 "--batch-size", "16", "--hflip", "0", "--torch-threads", "1"]) == 0
    assert "instead of the study's" in capsys.readouterr().err
    assert Checkpoint.read(out2 / "last.pt").config.recipe == DIGITS_RECIPE


def test_train_trial_of_a_study_without_the_record_is_one_line(tmp_path, capsys) -> None:
    url = _study_with_record(tmp_path, record=False)
    assert main(["train", "--trial", "0", "--storage", url, "--out", str(tmp_path / "t")]) == 1
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "does not record the data and recipe" in errors[0]
    assert not (tmp_path / "t").exists()
    assert main(["train", "--trial", "3", "--storage", url, "--out", str(tmp_path / "t")]) == 1
    assert "has no trial 3" in capsys.readouterr().err
    assert main(["train", "--trial", "0", "--resume", "--out", str(tmp_path)]) == 2


def test_help_shows_examples_and_torchrun(capsys) -> None:
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert "torchrun --nproc_per_node" in text and "--resume" in text
