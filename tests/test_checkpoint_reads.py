"""Each command reads a given checkpoint file once.

``nas train --resume``, ``nas eval``, ``nas export --checkpoint`` and ``nas export --trial N --checkpoint`` run
in-process while two wrappers count, per file: calls of :meth:`Checkpoint.read`, and every open of a ``.pt``
file for reading (``torch.load`` of a path, hashing, copying, :meth:`Checkpoint.read` itself).
"""

from __future__ import annotations

import builtins
import hashlib
import io
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import optuna
import pytest
import torch

from nas.cli import main
from trials.checkpoint import Checkpoint

TINY = "repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_g1_r32_c10"
QUICK = ["--max-per-class", "12", "--batch-size", "16"]


@dataclass
class Reads:
    """How often each checkpoint file was read: through :meth:`Checkpoint.read`, and opened for reading."""

    read: Counter[Path] = field(default_factory=Counter)
    opened: Counter[Path] = field(default_factory=Counter)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Reads:
    counts = Reads()
    real_read = Checkpoint.read.__func__
    real_open = io.open

    def counting_read(cls: type[Checkpoint], path: str | os.PathLike[str]) -> Checkpoint:
        counts.read[Path(path).resolve()] += 1
        return real_read(cls, path)

    def counting_open(file: object, mode: str = "r", *args: object, **kwargs: object) -> IO[Any]:
        if isinstance(file, (str, os.PathLike)) and str(file).endswith(".pt") and mode.startswith("r"):
            counts.opened[Path(file).resolve()] += 1
        return real_open(file, mode, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Checkpoint, "read", classmethod(counting_read))
    monkeypatch.setattr(io, "open", counting_open)  # pathlib opens through io.open
    monkeypatch.setattr(builtins, "open", counting_open)  # torch.load(path), hashlib helpers, shutil
    return counts


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short training run: its folder holds last.pt and best.pt."""
    out = tmp_path_factory.mktemp("reads") / "run"
    before = torch.get_num_threads()
    try:
        assert main(["train", "--arch", TINY, "--out", str(out), "--epochs", "1", *QUICK, "--torch-threads", "1"]) == 0
    finally:
        torch.set_num_threads(before)
    return out


def _once(reads: Reads, path: Path) -> None:
    key = path.resolve()
    assert dict(reads.read) == {key: 1}, reads.read
    assert dict(reads.opened) == {key: 1}, reads.opened


def test_the_counters_see_every_kind_of_read(run_dir: Path, reads: Reads) -> None:
    path = run_dir / "best.pt"
    Checkpoint.read(path)
    torch.load(path, weights_only=True)
    with open(path, "rb") as handle:
        hashlib.sha256(handle.read())
    shutil.copyfile(path, run_dir.parent / "copy.bin")
    assert reads.read == Counter({path.resolve(): 1}) and reads.opened == Counter({path.resolve(): 4})


def test_train_resume_reads_last_pt_once(run_dir: Path, tmp_path: Path, reads: Reads, capsys) -> None:
    out = tmp_path / "resumed"
    shutil.copytree(run_dir, out)
    reads.read.clear()  # the copy above opened the files
    reads.opened.clear()
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--torch-threads", "1"]) == 0
    assert "resuming" in capsys.readouterr().err
    _once(reads, out / "last.pt")


def test_eval_reads_the_checkpoint_once(run_dir: Path, reads: Reads, capsys) -> None:
    assert main(["eval", "--checkpoint", str(run_dir / "best.pt"), "--split", "all", "-f", "json"]) == 0
    assert '"balanced_acc"' in capsys.readouterr().out
    _once(reads, run_dir / "best.pt")


def test_export_checkpoint_reads_it_once(run_dir: Path, tmp_path: Path, reads: Reads, capsys) -> None:
    out = tmp_path / "export"
    argv = ["export", "--checkpoint", str(run_dir / "last.pt"), "--out", str(out), "--calibration-images", "16"]
    assert main([*argv, "-f", "json"]) == 0
    assert '"test_fp32_top1"' in capsys.readouterr().out
    _once(reads, run_dir / "last.pt")
    card = (out / "model_card.json").read_text()
    assert hashlib.sha256((run_dir / "last.pt").read_bytes()).hexdigest() in card  # the hash of the one read


def test_export_trial_with_checkpoint_reads_it_once(run_dir: Path, tmp_path: Path, reads: Reads, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="reads", storage=url, directions=["maximize", "minimize"])
    study.add_trial(optuna.trial.create_trial(values=[0.5, 1e6], user_attrs={"spec": TINY}))
    argv = ["export", "--trial", "0", "--storage", url, "--checkpoint", str(run_dir / "best.pt"),
            "--out", str(tmp_path / "trial"), "--calibration-images", "16", "-f", "json"]
    assert main(argv) == 0
    assert '"trial": 0' in capsys.readouterr().out
    _once(reads, run_dir / "best.pt")
