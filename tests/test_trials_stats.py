"""trials.stats: pandas-describe semantics, per-class counts, resolutions, channel modes, PNG plots."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trials.errors import DataError
from trials.longtail import SEED_COUNTS_FILE
from trials.stats import dataset_stats, describe, save_class_histogram, save_resolution_scatter

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_ok(path: Path) -> bool:
    with Image.open(path) as img:
        img.verify()
    return path.read_bytes()[:8] == PNG_SIGNATURE


def test_describe_matches_numpy_on_a_known_list() -> None:
    values = [3, 1, 4, 1, 5, 9, 2, 6]
    d = describe(values)
    x = np.array(values, dtype=float)
    assert d["count"] == 8 and d["mean"] == pytest.approx(x.mean())
    assert d["std"] == pytest.approx(np.sqrt(((x - x.mean()) ** 2).sum() / 7))  # ddof=1
    assert (d["min"], d["max"]) == (1, 9)
    # linear interpolation on the sorted values 1 1 2 3 4 5 6 9: 25 % at position 1.75, 75 % at 5.25
    assert d["25%"] == pytest.approx(1 + 0.75 * (2 - 1))
    assert d["50%"] == pytest.approx(3.5)
    assert d["75%"] == pytest.approx(5 + 0.25 * (6 - 5))
    assert math.isnan(describe([7])["std"])
    with pytest.raises(DataError):
        describe([])


def test_describe_reproduces_the_seeds_statistics_table() -> None:
    with SEED_COUNTS_FILE.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    # all 50,003 distinct images: class 81 (8 images) sits in both splits and counts once
    totals = [int(r["train_images"]) + (0 if r["class"] == "81" else int(r["val_images"])) for r in rows]
    d = describe(totals)
    assert sum(totals) == 50003
    assert d["count"] == 89 and d["mean"] == pytest.approx(561.831461, abs=1e-6)
    assert d["std"] == pytest.approx(809.292792, abs=1e-6)
    assert (d["min"], d["25%"], d["50%"], d["75%"], d["max"]) == (8, 135, 271, 502, 5121)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stats")
    spec = {"cat": [(64, 48, "RGB")] * 5 + [(300, 200, "RGB")], "dog": [(32, 32, "L"), (250, 120, "RGBA")],
            "eel": [(64, 48, "P")]}
    for name, images in spec.items():
        (root / name).mkdir()
        for i, (w, h, mode) in enumerate(images):
            Image.new(mode, (w, h)).save(root / name / f"{i}.png")
    (root / "dog" / "broken.jpg").write_bytes(b"")
    return root


def test_dataset_stats_counts_sizes_and_modes(folder: Path) -> None:
    s = dataset_stats(folder)
    assert s.classes == ["cat", "dog", "eel"] and s.counts == [6, 2, 1] and s.images == 9
    assert s.unreadable == 1 and "empty file" in s.unreadable_sample[0]
    assert s.modes == {"RGB": 6, "L": 1, "RGBA": 1, "P": 1}
    assert s.distinct_resolutions == 4
    assert s.share_small == pytest.approx(7 / 9)  # 300×200 and 250×120 are not under 200×200
    assert s.imbalance_factor == 6
    assert s.count_summary == describe([6, 2, 1])
    assert [r["class"] for r in s.class_rows()] == ["cat", "dog", "eel"]
    summary = s.summary()
    assert summary["images"] == 9 and summary["count_max"] == 6


def test_dataset_stats_on_train_val_folders(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("val", 1)):
        for c in ("p", "q"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 40)).save(tmp_path / split / c / f"{i}.jpg")
    s = dataset_stats(tmp_path)
    assert s.layout == "train/val folders" and s.counts == [4, 4]
    assert s.split_counts == {"train": [3, 3], "val": [1, 1]}
    assert s.class_rows()[0] == {"class": "p", "count": 4, "train": 3, "val": 1}


def test_plots_are_valid_pngs(folder: Path, tmp_path: Path) -> None:
    s = dataset_stats(folder)
    hist = save_class_histogram(s, tmp_path / "h.png")
    scatter = save_resolution_scatter(s, tmp_path / "sub" / "r.png")
    assert _png_ok(hist) and _png_ok(scatter)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["h.png", "r.png", "sub"]  # no temp files left


def test_a_folder_without_images_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "empty_class" / "x.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="no readable image"):
        dataset_stats(tmp_path)


# -- the training split and the recipe's warnings -----------------------------------------------------

def _tree(root: Path, counts: dict[str, int], size: tuple[int, int] = (40, 40)) -> Path:
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", size, (i % 256, 0, 0)).save(root / name / f"{i}.png")
    return root


def test_the_imbalance_is_the_training_splits(tmp_path: Path) -> None:
    _tree(tmp_path / "train", {"p": 30, "q": 3})
    _tree(tmp_path / "val", {"p": 10, "q": 10})
    s = dataset_stats(tmp_path)
    assert s.counts == [40, 13]  # all images, as the seed's table counted them
    train = [30 - math.floor(0.1 * 30), 3]  # the selection split is carved from train; q is too small for one
    assert s.train_counts == train and s.imbalance_factor == pytest.approx(train[0] / train[1])  # not 40 / 13
    assert s.summary()["imbalance_factor"] == s.imbalance_factor and s.summary()["train_images"] == sum(train)
    assert any("too small for a selection image" in w and "q" in w for w in s.warnings)


def test_training_counts_agree_with_load_data(tmp_path: Path) -> None:
    from trials.data import load_data
    from trials.recipe import Recipe

    root = _tree(tmp_path, {"a": 31, "b": 17, "c": 9, "d": 4})
    for recipe in (Recipe(), Recipe(long_tail="exp:5")):
        for ratios in ({}, {"selection_ratio": 0.25, "test_ratio": 0.15}):
            assert dataset_stats(root, recipe, **ratios).train_counts == load_data(
                root, 32, recipe=recipe, **ratios).train_counts


def test_stats_of_the_embedded_digits() -> None:
    from trials.data import load_data

    s = dataset_stats(None)
    assert s.layout == "embedded digits" and s.images == 1797 and s.modes == {"L": 1797}
    assert s.distinct_resolutions == 1 and s.summary()["median_width"] == 8
    digits = load_data(None, 32)
    assert s.train_counts == digits.train_counts  # the long-tailed training split, not the 1,797 images
    assert s.imbalance_factor == pytest.approx(max(digits.train_counts) / min(digits.train_counts))
    assert s.warnings == []  # the digits' recipe has no flip and a gentle crop


def test_warnings_name_what_the_recipe_would_do_badly(tmp_path: Path) -> None:
    from trials.recipe import Recipe
    from trials.stats import mirrored_pairs

    assert mirrored_pairs(["keep left", "keep right", "TurnLeft", "turn_right", "leftovers", "go"]) == [
        ("keep left", "keep right"), ("TurnLeft", "turn_right")]
    assert mirrored_pairs(["leftovers", "rightmost", "north", "south"]) == []
    signs = _tree(tmp_path / "signs", {"keep_left": 12, "keep_right": 12, "stop": 12}, size=(30, 28))
    warned = dataset_stats(signs, Recipe(crop_scale=(0.25, 1.0))).warnings
    assert len(warned) == 2
    assert "median short side 28 px" in warned[0] and "25%" in warned[0]
    assert "keep_left / keep_right" in warned[1] and "turn the flip off" in warned[1]
    assert dataset_stats(signs, Recipe(hflip=0.0)).warnings == []  # flip off, default crop 0.6–1
    flipped_digits = dataset_stats(None, Recipe.for_data(None).replace(hflip=0.5)).warnings
    assert len(flipped_digits) == 1 and "look like characters" in flipped_digits[0]


def test_stats_outputs_work_without_a_path(tmp_path: Path) -> None:
    from nas.reports import stats_outputs

    stats, files = stats_outputs(None, tmp_path / "out")
    assert stats.root == "embedded:sklearn-digits" and set(files) == {
        "class_histogram", "resolutions", "stats", "class_counts"}
    body = json.loads(files["stats"].read_text())
    assert body["train_counts"] == stats.train_counts and body["warnings"] == [] and body["recipe"]["hflip"] == 0
