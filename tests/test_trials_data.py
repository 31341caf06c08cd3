"""trials.data / trials.longtail / trials.transforms: layouts, split rules, skipped files, long tails, pixels."""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from trials.data import DataWarning, load_data
from trials.errors import DataError
from trials.longtail import exp_counts, parse_long_tail, seed_counts, seed_profile
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
        return load_data(tree, 32, val_ratio=0.1, seed=0)


def test_split_follows_the_floor_rule_and_puts_tiny_classes_in_both(bundle) -> None:
    readable = {"a": 25, "b": 12, "c": 1, "d": 9, "e": 10}  # the truncated file of a is dropped after decoding
    assert bundle.classes == sorted(SIZES)
    for i, name in enumerate(bundle.classes):
        n = readable[name]
        k = math.floor(0.1 * n)
        if k == 0:
            assert (bundle.train_counts[i], bundle.val_counts[i]) == (n, n)
        else:
            assert (bundle.train_counts[i], bundle.val_counts[i]) == (n - k, k)
    assert bundle.report.classes_in_both == ["c", "d"]
    assert bundle.report.layout == "split per class"
    assert len(bundle.train) == sum(bundle.train_counts) and len(bundle.val) == sum(bundle.val_counts)
    assert np.bincount(bundle.train_labels.numpy(), minlength=5).tolist() == bundle.train_counts


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
    v1, v2 = bundle.val[1][0], bundle.val[1][0]
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
        bundle.val[len(bundle.val)]


def test_split_is_deterministic_with_the_seed(tree: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        first, again, other = (load_data(tree, 32, seed=s) for s in (0, 0, 1))
    val = lambda b: torch.stack([b.val[i][0] for i in range(len(b.val))])  # noqa: E731
    assert torch.equal(val(first), val(again))
    assert not torch.equal(val(first), val(other))


def test_lazy_reading_gives_the_same_pixels_as_memory(tree: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        mem = load_data(tree, 32, max_per_class=5)
        disk = load_data(tree, 32, max_per_class=5, in_memory=False)
    assert not disk.report.in_memory and mem.report.in_memory
    assert disk.val_counts == mem.val_counts
    for i in range(len(mem.val)):
        assert torch.equal(mem.val[i][0], disk.val[i][0])
    assert mem.train_counts == [5, 5, 1, 5, 5]


def test_train_val_folders_are_used_as_given(tmp_path: Path) -> None:
    make_tree(tmp_path / "train", {"x": 6, "y": 4, "z": 3}, bad=False)
    make_tree(tmp_path / "test", {"x": 2, "y": 1}, bad=False)
    b = load_data(tmp_path, 32, val_ratio=0.5)
    assert b.report.layout == "train/val folders" and b.report.val_ratio is None
    assert (b.train_counts, b.val_counts) == ([6, 4, 3], [2, 1, 0])
    assert b.report.classes_without_val == ["z"]
    make_tree(tmp_path / "test", {"w": 1}, bad=False)
    with pytest.raises(DataError, match="classes that"):
        load_data(tmp_path, 32)


def test_exp_long_tail_counts_follow_the_formula(tmp_path: Path) -> None:
    make_tree(tmp_path, {f"k{i}": 40 for i in range(5)}, bad=False)
    b = load_data(tmp_path, 32, val_ratio=0.1, long_tail="exp:10", seed=3)
    n_max = 40 - 4
    assert b.train_counts == [math.floor(n_max * 10 ** (-i / 4)) for i in range(5)]
    assert b.val_counts == [4] * 5  # the long tail is applied to the training split only
    assert b.report.long_tail == "exp:10" and b.report.imbalance_factor == pytest.approx(36 / 3)


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
    b = load_data(tmp_path, 32, long_tail="seed")
    assert b.train_counts == seed_counts(18, 4)


def test_embedded_digits_load_fast_and_are_long_tailed() -> None:
    start = time.perf_counter()
    b = load_data(None, 32)
    assert time.perf_counter() - start < 2.0
    assert b.classes == [str(d) for d in range(10)] and b.report.layout == "embedded digits"
    assert b.val_counts == [17] * 10
    assert b.train_counts == exp_counts(157, 10, 10)
    x, _ = b.val[0]
    assert x.shape == (3, 32, 32)
    assert torch.allclose(x[0] * 0.229 + 0.485, x[1] * 0.224 + 0.456, atol=1e-5)  # gray → equal channels
    assert b.report.store_size == store_size(32) == 37
    flat = load_data(None, 48, long_tail="none", val_ratio=0.2)
    assert flat.train_counts == [174 - 34] * 10 and flat.val_counts == [34] * 10
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
    with pytest.raises(DataError, match="val_ratio"):
        load_data(None, 32, val_ratio=1.0)
    with pytest.raises(DataError, match="max_per_class"):
        load_data(None, 32, max_per_class=0)


def test_train_crop_geometry_and_flip() -> None:
    from trials.transforms import EvalTransform, TrainAugment, TrainTransform, normalize

    x = torch.randint(0, 256, (6, 3, 37, 37), dtype=torch.uint8)
    whole = normalize(torch.nn.functional.interpolate(x.float(), size=(32, 32), mode="bilinear", align_corners=False))
    out = TrainTransform(32, TrainAugment(scale=(1, 1), ratio=(1, 1), hflip=True))(x)
    for i in range(6):  # the whole image, mirrored or not
        assert torch.allclose(out[i], whole[i], atol=1e-4) or torch.allclose(out[i], whole[i].flip(-1), atol=1e-4)
    boxes = TrainTransform(32, TrainAugment(scale=(0.25, 0.5))).boxes(2000)
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
        x, y = next(iter(DataLoader(data.val, batch_size=len(data.val))))
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
    assert b.train_counts == exp_counts(5000, 10, 100) and b.val_counts == [1000] * 10
    assert b.report.in_memory and b.report.memory_bytes == 22406 * 3 * 37 * 37


def test_profiles_follow_existing_class_sizes(tmp_path: Path) -> None:
    from trials.longtail import rank_targets

    assert rank_targets([9, 5, 2], [3, 3, 3]) == [9, 5, 2]  # balanced: name order
    assert rank_targets([9, 5, 2], [1, 8, 4]) == [2, 9, 5]
    make_tree(tmp_path, {"a": 11, "b": 31, "c": 21}, bad=False)
    b = load_data(tmp_path, 32, long_tail="exp:4")  # train sizes 10, 28, 19 → ranks b, c, a
    assert b.train_counts == [7, 28, 14] and not b.report.profile_shortfall
