"""``nas train`` in-process: outputs, files, resume, and one clear line for every bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from nas.cli import main
from nas.cli import train as cli_train
from nas.runs import HISTORY_COLUMNS
from trials.checkpoint import Checkpoint
from trials.losses import LOSSES

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
    data = Checkpoint.read(out / "last.pt").data
    assert data.path is None and data.max_per_class == 12 and data.seed == 0 and data.resolution == 32
    assert saved["data"] == data.to_dict()  # metrics.json records what the checkpoint records


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
    assert cli_train.LOSSES == LOSSES


def test_help_shows_examples_and_torchrun(capsys) -> None:
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert "torchrun --nproc_per_node" in text and "--resume" in text
