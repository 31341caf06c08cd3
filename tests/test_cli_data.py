"""``nas data stats|split`` and ``nas eval`` in-process: exit codes, stdout data, files, one-line errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from nas.cli import main
from search_space.model import build_model
from search_space.spec import ArchSpec
from trials.checkpoint import Checkpoint
from trials.config import TrainConfig
from trials.data import DataSettings
from trials.recipe import DIGITS_RECIPE

TINY = ArchSpec((1, 1, 1, 1), (0.25, 0.25, 0.25, 0.25), resolution=32, num_classes=10)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli_data")
    for name, n in (("ant", 12), ("bee", 3)):
        (root / name).mkdir()
        for i in range(n):
            Image.new("RGB", (48 + i, 40)).save(root / name / f"{i}.jpg")
    (root / "bee" / "bad.jpg").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained model that records the embedded digits at their defaults."""
    torch.manual_seed(0)
    model = build_model(TINY)
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    return Checkpoint(TINY, TrainConfig(seed=0, recipe=DIGITS_RECIPE), [str(d) for d in range(10)],
                      model.state_dict(), data=DataSettings()).write(path)


def test_stats_table_json_csv_and_files(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "stats", str(folder), "--out-dir", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert "75%" in out and "distinct resolutions: 12" in out and "1 unreadable" in err
    # bee (3 images) is too small for a selection or test image: the library's warning, on stderr
    assert "warning:" in err and "bee" in err and "warning" not in out
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["class_counts.csv", "class_histogram.png", "resolutions.png", "stats.json"]
    assert (tmp_path / "out" / "class_histogram.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["data", "stats", str(folder), "-f", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["images"] == 15 and body["count_stats"]["max"] == 12 and body["rows"][0]["class"] == "ant"
    assert main(["data", "stats", str(folder), "-f", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows == [{"class": "ant", "count": "12"}, {"class": "bee", "count": "3"}]


def test_stats_of_the_embedded_digits_need_no_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "stats", "-f", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["images"] == 1797 and len(body["rows"]) == 10  # scikit-learn's digits: 1797 images
    # the training split's imbalance (exp:10 on 174 − 17 − 17 = 140 per class: 140 → 14), not the whole set's
    assert body["imbalance_factor"] == pytest.approx(10.0)


def test_split_shows_the_rules(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "split", str(folder), "--selection-ratio", "0.25", "-f", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    # ant (12 images): floor(0.1·12) = 1 test image is carved first, then floor(0.25·12) = 3 selection images,
    # 12 − 1 − 3 = 8 train; bee (3): floor(0.3) = 0 test, floor(0.75) = 0 selection → in both splits
    assert [(r["name"], r["train"], r["selection"], r["test"], r["in_both"]) for r in body["rows"]] == [
        ("ant", 8, 3, 1, False), ("bee", 3, 3, 0, True)]
    assert (body["report"]["test_images"], body["report"]["selection_images"]) == (1, 6)
    assert body["report"]["skipped"] == 1
    assert main(["data", "split"]) == 0
    assert "exp:10" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "stats", "/nonexistent/data"],
        ["data", "split", "--resolution", "16"],
        ["data", "split", "--long-tail", "zipf"],
    ],
)
def test_bad_input_is_one_error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1


def test_eval_all_splits_with_files(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "eval"
    argv = ["eval", "--checkpoint", str(checkpoint), "--split", "all", "--out-dir", str(out_dir), "-f", "json"]
    assert main(argv) == 0
    body = json.loads(capsys.readouterr().out)
    assert [r["split"] for r in body["rows"]] == ["train", "selection", "test"]
    # the digits: 17 selection and 17 test images per class (floor(0.1 · 174)), the rest trains
    assert body["test"]["images"] == body["selection"]["images"] == 170
    assert body["train"]["images"] == body["data"]["train_images"] == 568
    assert 0 <= body["test"]["top1"] <= 1 and len(body["test"]["per_class"]) == 10
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "confusion_selection.png", "confusion_test.png", "confusion_train.png", "eval.json",
        "per_class_selection.csv", "per_class_test.csv", "per_class_train.csv"]
    assert main(["eval", "--checkpoint", str(checkpoint)]) == 0  # the default: the held-out test split only
    out = capsys.readouterr().out
    assert "test: 170 images, held out" in out and "balanced accuracy" in out and "selection:" not in out


def test_eval_refuses_other_data_and_missing_checkpoints(
    checkpoint: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(folder)]) == 1
    assert "10 classes" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path / "none.pt")]) == 1
    assert "does not exist" in capsys.readouterr().err
    unknown = Checkpoint(TINY, TrainConfig(), [str(d) for d in range(10)], build_model(TINY).state_dict())
    assert main(["eval", "--checkpoint", str(unknown.write(tmp_path / "unknown.pt"))]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "does not record the data" in err and len(err.splitlines()) == 1


def test_eval_reloads_the_data_the_checkpoint_records(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import warnings

    from trials.data import DataWarning, load_data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        report = load_data(folder, 32, selection_ratio=0.25, seed=3).report.to_dict()
    spec = TINY.replace(num_classes=2)
    path = tmp_path / "best.pt"
    # format version 1: the data entry is the report only (its split seed, not the config's), a flat config
    config = {k: v for k, v in TrainConfig(seed=7).to_dict().items() if k != "recipe"}
    torch.save({"format": "repvgg-hwnas-checkpoint", "version": 1, "spec": spec.to_dict(), "config": config,
                "classes": ["ant", "bee"], "model": build_model(spec).state_dict(), "data": report}, path)
    assert Checkpoint.read(path).data == DataSettings(path=str(folder), selection_ratio=0.25, seed=3)
    assert main(["eval", "--checkpoint", str(path), "--split", "all", "-f", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["data"]["source"] == str(folder)
    assert (body["selection"]["images"], body["test"]["images"]) == (3 + 3, 1)  # see test_split_shows_the_rules
