"""trials.data / trials.longtail / trials.transforms: layouts, split rules, skipped files, long tails, pixels."""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from trials.data import DataSettings, DataWarning, load_data
from trials.errors import DataError
from trials.longtail import exp_counts, parse_long_tail, seed_counts, seed_profile
from trials.recipe import DIGITS_RECIPE, Recipe
from trials.transforms import store_size

RNG = np.random.default_rng(0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _image(path: Path, size: tuple[int, int] = (40, 30), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = RNG.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(pixels)
    if mode == "L":
        img = img.convert("L")
    elif mode == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    elif mode == "RGBA":
        img = img.convert("RGBA")
    img.save(path)


def make_tree(root: Path, sizes: dict[str, int], bad: bool = True) -> Path:
    """``sizes[class]`` readable images per class; with ``bad``, class ``a`` also holds a zero-byte, a corrupt
    and a truncated file plus two ignored files, and class ``b`` a grayscale, a palette and an RGBA image."""
    for name, n in sizes.items():
        for i in range(n):
            special = {0: "L", 1: "P", 2: "RGBA"}.get(i, "RGB") if (bad and name == "b") else "RGB"
            ext = "png" if special != "RGB" else "jpg"
            _image(root / name / f"{i:03d}.{ext}", (40 + i % 3 * 8, 30 + i % 2 * 10), special)
    if bad:
        (root / "a" / "zero.jpg").write_bytes(b"")
        (root / "a" / "corrupt.png").write_bytes(RNG.integers(0, 256, 300, dtype=np.uint8).tobytes())
        _image(root / "a" / "truncated.jpg", (64, 64))
        data = (root / "a" / "truncated.jpg").read_bytes()
        (root / "a" / "truncated.jpg").write_bytes(data[: len(data) // 3])
        (root / "a" / "notes.txt").write_text("not an image")
        (root / "a" / ".hidden.jpg").write_bytes(b"junk")
    return root


SIZES = {"a": 25, "b": 12, "c": 1, "d": 9, "e": 10}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree"), SIZES)


@pytest.fixture(scope="module")
def bundle(tree: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return load_data(tree, 32, selection_ratio=0.1, seed=0)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("clean"), SIZES, bad=False)


def test_three_splits_follow_the_floor_rule_and_handle_tiny_classes(clean: Path) -> None:
    b = load_data(clean, 32, selection_ratio=0.1, test_ratio=0.2, seed=0)
    assert b.classes == sorted(SIZES) and b.report.layout == "split per class"
    for i, name in enumerate(b.classes):
        n = SIZES[name]
        k_test, k_sel = math.floor(0.2 * n), math.floor(0.1 * n)
        counts = (b.train_counts[i], b.selection_counts[i], b.test_counts[i])
        if k_sel == 0:  # too small for a selection image: selected on its training images
            assert counts == (n - k_test, n - k_test, k_test)
        else:
            assert counts == (n - k_test - k_sel, k_sel, k_test)
    assert b.report.classes_in_both == ["c", "d"] and b.report.classes_without_test == ["c"]
    assert (b.report.selection_ratio, b.report.test_ratio, b.report.split_seed) == (0.1, 0.2, 0)
    assert (b.report.train_images, b.report.selection_images, b.report.test_images) == (
        len(b.train), len(b.selection), len(b.test))
    assert np.bincount(b.train_labels.numpy(), minlength=5).tolist() == b.train_counts
    assert np.bincount(b.test_labels.numpy(), minlength=5).tolist() == b.test_counts
    assert not hasattr(b, "val") and not hasattr(b.report, "val_ratio")  # one name per split
    body = b.report.to_dict()
    assert body["selection_ratio"] == 0.1 and body["selection_images"] == len(b.selection) and "val_images" not in body
    text = "\n".join(b.report.lines())
    assert "carved per class: test 0.2, selection 0.1; split seed 0" in text


def _rows(dataset) -> set[int]:
    """Store rows of an in-memory dataset: one row per image of the data set, shared by its splits."""
    return set(dataset.index.tolist())


def _pixels(dataset) -> torch.Tensor:
    return torch.stack([dataset[i][0] for i in range(len(dataset))]) if len(dataset) else torch.zeros(0)


@pytest.mark.parametrize("path", [None, "clean"])
def test_the_test_split_is_disjoint_and_never_moves_with_the_selection_ratio_or_recipe(path, request) -> None:
    from trials.recipe import Recipe

    root = request.getfixturevalue("clean") if path else None
    base = load_data(root, 32, selection_ratio=0.1, seed=4)
    test = _pixels(base.test)
    assert not _rows(base.test) & (_rows(base.train) | _rows(base.selection))  # held out from both
    for other in (load_data(root, 32, selection_ratio=0.3, seed=4),
                  load_data(root, 32, selection_ratio=0.2, seed=4, recipe=Recipe(hflip=0, long_tail="exp:5"))):
        assert other.test_counts == base.test_counts and torch.equal(_pixels(other.test), test)
        assert not _rows(other.test) & (_rows(other.train) | _rows(other.selection))
        assert other.selection_counts != base.selection_counts
    assert not torch.equal(_pixels(load_data(root, 32, seed=5).test), test)  # … but follows the seed


def test_bad_files_are_skipped_counted_and_warned(tree: Path) -> None:
    with pytest.warns(DataWarning, match="skipped 3"):
        b = load_data(tree, 32)
    assert b.report.skipped == 3
    reasons = " ".join(b.report.skipped_sample)
    assert "zero.jpg: empty file" in reasons and "corrupt.png: not an image" in reasons
    assert "truncated.jpg: cannot decode" in reasons
    assert b.report.ignored_files == 2
    assert {"L", "P", "RGBA", "RGB"} <= set(b.report.channel_modes)


def test_items_are_normalized_rgb_tensors_and_eval_is_deterministic(bundle) -> None:
    x, y = bundle.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    v1, v2 = bundle.selection[1][0], bundle.selection[1][0]
    assert torch.equal(v1, v2) and torch.equal(bundle.train_eval[0][0], bundle.train_eval[0][0])
    t1, t2 = bundle.train[0][0], bundle.train[0][0]
    assert not torch.equal(t1, t2)  # random crops
    xb, yb = next(iter(DataLoader(bundle.train, batch_size=8, shuffle=True)))
    assert xb.shape == (8, 3, 32, 32) and yb.dtype == torch.int64
    # normalized: a uint8 0..255 input maps into [(0-mean)/std, (1-mean)/std]
    assert xb.min() >= -2.2 and xb.max() <= 2.7
    gray = bundle.classes.index("b")
    assert gray in bundle.train_labels.tolist()
    with pytest.raises(IndexError):
        bundle.selection[len(bundle.selection)]


def test_split_is_deterministic_with_the_seed(tree: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        first, again, other = (load_data(tree, 32, seed=s) for s in (0, 0, 1))
    for split in ("selection", "test"):
        assert torch.equal(_pixels(getattr(first, split)), _pixels(getattr(again, split)))
        assert not torch.equal(_pixels(getattr(first, split)), _pixels(getattr(other, split)))


def test_lazy_reading_gives_the_same_pixels_as_memory(tree: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        mem = load_data(tree, 32, max_per_class=5)
        disk = load_data(tree, 32, max_per_class=5, in_memory=False)
    assert not disk.report.in_memory and mem.report.in_memory
    assert (disk.selection_counts, disk.test_counts) == (mem.selection_counts, mem.test_counts)
    assert torch.equal(_pixels(mem.selection), _pixels(disk.selection))
    assert torch.equal(_pixels(mem.test), _pixels(disk.test))
    assert mem.train_counts == [5, 5, 1, 5, 5]  # 5 per class (c has 1): too few for a test or selection image


def test_train_val_folders_give_the_test_split_and_selection_is_carved_from_train(tmp_path: Path) -> None:
    make_tree(tmp_path / "train", {"x": 6, "y": 4, "z": 3}, bad=False)
    make_tree(tmp_path / "test", {"x": 2, "y": 1}, bad=False)
    b = load_data(tmp_path, 32, selection_ratio=0.5, test_ratio=0.3)
    assert b.report.layout == "train/val folders" and b.report.test_ratio is None
    assert b.report.test_folder == "test" and "test = the test/ folder" in b.report.split_line()
    sel = [math.floor(0.5 * n) for n in (6, 4, 3)]  # carved from the training folder; test_ratio unused
    assert b.selection_counts == sel and b.train_counts == [n - k for n, k in zip((6, 4, 3), sel)]
    assert b.test_counts == [2, 1, 0] and b.report.classes_without_test == ["z"]
    assert load_data(tmp_path, 32, selection_ratio=0.2).test_counts == b.test_counts
    make_tree(tmp_path / "test", {"w": 1}, bad=False)
    with pytest.raises(DataError, match="classes that"):
        load_data(tmp_path, 32)


def test_data_settings_reload_the_same_splits_and_read_earlier_records(clean: Path) -> None:
    from trials.recipe import Recipe

    recipe = Recipe(long_tail="exp:2", randaugment=True)
    b = load_data(clean, 32, selection_ratio=0.2, test_ratio=0.15, seed=1, max_per_class=30, recipe=recipe)
    assert b.settings == DataSettings(str(clean), 0.2, 0.15, 1, 30)  # the loader's own arguments
    again = b.settings.load(32, recipe)
    assert (again.train_counts, again.selection_counts, again.test_counts) == (
        b.train_counts, b.selection_counts, b.test_counts)
    assert torch.equal(_pixels(again.test), _pixels(b.test)) and again.recipe == recipe
    assert DataSettings.from_dict(json.loads(json.dumps(b.settings.to_dict()))) == b.settings
    # earlier records: val_ratio is the selection ratio; long_tail and augment belong to the recipe now
    old = {"path": "/x", "val_ratio": 0.25, "long_tail": "exp:10", "augment": True, "seed": 4}
    assert DataSettings.from_dict(old) == DataSettings(path="/x", selection_ratio=0.25, seed=4)
    with pytest.raises(DataError, match="unknown data setting"):
        DataSettings.from_dict({"path": None, "speed": 1})
    with pytest.raises(DataError, match="malformed"):
        DataSettings.from_dict({"seed": "many"})
    assert DataSettings().replace(seed=3, path=None) == DataSettings(seed=3)  # None: not given
    assert "selection 0.2, test 0.15, split seed 1, at most 30 per class" in b.settings.describe()


def test_exp_long_tail_counts_follow_the_formula(tmp_path: Path) -> None:
    make_tree(tmp_path, {f"k{i}": 40 for i in range(5)}, bad=False)
    b = load_data(tmp_path, 32, selection_ratio=0.1, recipe=Recipe(long_tail="exp:10"), seed=3)
    n_max = 40 - 4 - 4  # 4 test and 4 selection images per class
    assert b.train_counts == [math.floor(n_max * 10 ** (-i / 4)) for i in range(5)]
    assert b.selection_counts == b.test_counts == [4] * 5  # the long tail is applied to the training split only
    assert b.report.long_tail == "exp:10" and b.report.imbalance_factor == pytest.approx(32 / math.floor(32 / 10))


def test_long_tail_profiles() -> None:
    assert exp_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert exp_counts(7, 1, 10) == [7]
    profile = seed_profile()
    assert len(profile) == 89 and profile[0] == 4609 and profile[-1] == 8
    assert list(profile) == sorted(profile, reverse=True)
    assert seed_counts(1000, 5) == [math.floor(1000 * p / profile[0]) for p in profile[:5]]
    many = seed_counts(4609, 120)
    assert len(many) == 120 and many[0] == 4609 and many[-1] == 8
    assert (np.diff(many) <= 0).all()
    assert str(parse_long_tail("EXP:100")) == "exp:100" and parse_long_tail(None) is None
    for bad in ("exp:0.5", "exp:x", "pareto"):
        with pytest.raises(DataError):
            parse_long_tail(bad)


def test_seed_long_tail_on_a_folder(tmp_path: Path) -> None:
    make_tree(tmp_path, {f"k{i}": 20 for i in range(4)}, bad=False)
    b = load_data(tmp_path, 32, recipe=Recipe(long_tail="seed"))
    assert b.train_counts == seed_counts(20 - 2 - 2, 4)


def test_embedded_digits_load_fast_and_are_long_tailed() -> None:
    start = time.perf_counter()
    b = load_data(None, 32)
    assert time.perf_counter() - start < 2.0
    assert b.classes == [str(d) for d in range(10)] and b.report.layout == "embedded digits"
    assert b.selection_counts == b.test_counts == [17] * 10  # floor(0.1 · 174) each
    assert b.train_counts == exp_counts(174 - 34, 10, 10)
    assert b.recipe.hflip == 0 and b.report.recipe["long_tail"] == "exp:10"
    x, _ = b.selection[0]
    assert x.shape == (3, 32, 32)
    assert torch.allclose(x[0] * 0.229 + 0.485, x[1] * 0.224 + 0.456, atol=1e-5)  # gray → equal channels
    assert b.report.store_size == store_size(32) == 37
    flat = load_data(None, 48, recipe=DIGITS_RECIPE.replace(long_tail="none"), selection_ratio=0.2)
    assert flat.train_counts == [174 - 34 - 17] * 10 and flat.selection_counts == [34] * 10
    assert flat.train[0][0].shape == (3, 48, 48)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "not a folder"),
        (lambda p: p, "no class subfolders"),
        (lambda p: (make_tree(p, {"a": 2}, bad=False), (p / "empty").mkdir(), p)[-1], "no readable image"),
    ],
)
def test_bad_folders_raise_data_error(tmp_path: Path, make, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_data(make(tmp_path), 32)


def test_bad_arguments_raise_data_error(tree: Path) -> None:
    with pytest.raises(DataError, match="minimum of 32"):
        load_data(None, 16)
    with pytest.raises(DataError, match="selection ratio"):
        load_data(None, 32, selection_ratio=1.0)
    with pytest.raises(DataError, match="no training images"):
        load_data(None, 32, selection_ratio=0.5, test_ratio=0.5)
    with pytest.raises(DataError, match="max_per_class"):
        load_data(None, 32, max_per_class=0)


def test_train_crop_geometry_and_flip() -> None:
    from trials.transforms import EvalTransform, TrainAugment, TrainTransform, normalize

    x = torch.randint(0, 256, (6, 3, 37, 37), dtype=torch.uint8)
    whole = normalize(torch.nn.functional.interpolate(x.float(), size=(32, 32), mode="bilinear", align_corners=False))
    out = TrainTransform(32, TrainAugment(scale=(1, 1), ratio=(1, 1), hflip=0.5))(x)
    for i in range(6):  # the whole image, mirrored or not
        assert torch.allclose(out[i], whole[i], atol=1e-4) or torch.allclose(out[i], whole[i].flip(-1), atol=1e-4)
    boxes = TrainTransform(32, TrainAugment(scale=(0.25, 0.5), ratio=(3 / 4, 4 / 3), hflip=0.5)).boxes(2000)
    area = boxes[:, 2] * boxes[:, 3]
    assert (area >= 0.25 - 1e-6).all() and (area <= 0.5 + 1e-6).all()
    assert (boxes[:, :2] - boxes[:, 2:] / 2 >= -1e-6).all() and (boxes[:, :2] + boxes[:, 2:] / 2 <= 1 + 1e-6).all()
    center = EvalTransform(32)(x)
    assert torch.equal(center, normalize(x[..., 2:34, 2:34].float()))
    assert x.dtype == torch.uint8 and center.shape == (6, 3, 32, 32)


def test_embedded_digits_train_well_above_chance_in_seconds() -> None:
    from search_space.model import build_model
    from search_space.spec import ArchSpec

    torch.manual_seed(0)
    data = load_data(None, 32)
    model = build_model(ArchSpec((1, 1, 1, 1), (0.25, 0.25, 0.25, 0.25), resolution=32, num_classes=10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    start = time.perf_counter()
    for _ in range(4):
        for x, y in DataLoader(data.train, batch_size=64, shuffle=True):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert time.perf_counter() - start < 30  # ~2 s on one free core; generous for a busy shared machine
    model.eval()
    with torch.no_grad():
        x, y = next(iter(DataLoader(data.selection, batch_size=len(data.selection))))
        top1 = (model(x).argmax(1) == y).float().mean().item()
    assert top1 > 0.4  # chance is 0.1


@pytest.mark.slow
def test_real_cifar10_lt_follows_its_protocol(tmp_path: Path) -> None:
    import tarfile

    archive = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-lt.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} is absent")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    b = load_data(tmp_path / "cifar10-lt", 32)
    assert b.report.layout == "train/val folders" and b.report.skipped == 0
    assert b.test_counts == [1000] * 10
    sel = [math.floor(0.1 * n) for n in exp_counts(5000, 10, 100)]  # carved from the training folder
    assert b.selection_counts == sel and b.train_counts == [n - k for n, k in zip(exp_counts(5000, 10, 100), sel)]
    assert b.report.in_memory and b.report.memory_bytes == 22406 * 3 * 37 * 37


def test_profiles_follow_existing_class_sizes(tmp_path: Path) -> None:
    from trials.longtail import rank_targets

    assert rank_targets([9, 5, 2], [3, 3, 3]) == [9, 5, 2]  # balanced: name order
    assert rank_targets([9, 5, 2], [1, 8, 4]) == [2, 9, 5]
    make_tree(tmp_path, {"a": 11, "b": 31, "c": 21}, bad=False)
    b = load_data(tmp_path, 32, recipe=Recipe(long_tail="exp:4"))  # train sizes 11-1-1, 31-3-3, 21-2-2 → ranks b, c, a
    assert b.train_counts == [6, 25, 12] and not b.report.profile_shortfall  # 25 · 4^(−i/2) = 25, 12.5, 6.25
