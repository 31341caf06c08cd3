"""trials.stats: pandas-describe semantics, per-class counts, resolutions, channel modes, PNG plots."""

from __future__ import annotations

import csv
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
