"""trials.pixel_cache through trials.data.load_data: a second load of the same folder reads the decoded pixels
from the cache (identical arrays, no decoding), a changed file is decoded again, a damaged entry is ignored."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trials import folders, pixel_cache
from trials.data import load_data
from trials.transforms import load_square, store_size

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(pixel_cache.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "pixels"


@pytest.fixture
def decodes(monkeypatch) -> list[int]:
    """Numbers of files each real decoding pass decoded (the cache's misses)."""
    calls: list[int] = []
    real = folders._decode_files

    def counting(files, size):
        calls.append(len(files))
        return real(files, size)

    monkeypatch.setattr(folders, "_decode_files", counting)
    return calls


def _tree(root: Path, per_class: int = 6, truncated: bool = False) -> Path:
    rng = np.random.default_rng(1)
    for name in ("a", "b", "c"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    if truncated:  # passes the header check, fails to decode
        data = (root / "a" / "0.png").read_bytes()
        (root / "a" / "0.png").write_bytes(data[: len(data) // 2])
    return root


def _all_pixels(bundle) -> torch.Tensor:
    return torch.cat([d.store[d.index] for d in (bundle.train_eval, bundle.selection, bundle.test)])


def test_the_second_load_reads_identical_pixels_from_the_cache(tmp_path, cache, decodes):
    root = _tree(tmp_path / "imgs")
    first = load_data(root, 32)
    assert decodes == [18] and len(list(cache.glob("*.npy"))) == 1 and len(list(cache.glob("*.headers.json"))) == 1
    second = load_data(root, 32)
    assert decodes == [18]  # no decoding the second time
    assert torch.equal(_all_pixels(first), _all_pixels(second))
    # the cached pixels are what decoding the file gives, row for row (an independent decode per file)
    path = sorted(root.glob("b/*.png"))[3]
    expected = torch.from_numpy(np.array(load_square(path, store_size(32)))).permute(2, 0, 1)
    stored = second.train_eval.store
    assert any(torch.equal(stored[r], expected) for r in range(len(stored)))


def test_another_resolution_is_another_entry(tmp_path, cache, decodes):
    root = _tree(tmp_path / "imgs")
    load_data(root, 32)
    load_data(root, 48)
    assert decodes == [18, 18] and len(list(cache.glob("*.npy"))) == 2


def test_a_touched_or_replaced_file_is_decoded_again(tmp_path, cache, decodes):
    root = _tree(tmp_path / "imgs")
    load_data(root, 32)
    target = root / "c" / "2.png"
    stamp = os.stat(target).st_mtime_ns
    os.utime(target, ns=(stamp + 10**9, stamp + 10**9))  # touched: same bytes, new mtime
    load_data(root, 32)
    assert decodes == [18, 18]
    Image.fromarray(np.full((24, 24, 3), 7, dtype=np.uint8)).save(target)  # replaced by a flat gray image
    time.sleep(0.01)
    bundle = load_data(root, 32)
    assert decodes == [18, 18, 18]
    stored = _all_pixels(bundle)
    assert bool(((stored == 7).flatten(1).all(1)).any())  # the new content is what the bundle holds
    (root / "c" / "new.png").write_bytes(target.read_bytes())  # an added file changes the key too
    load_data(root, 32)
    assert decodes == [18, 18, 18, 19]


def test_a_damaged_entry_is_decoded_again_and_failures_are_remembered(tmp_path, cache, decodes):
    root = _tree(tmp_path / "imgs", truncated=True)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        first = load_data(root, 32)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        second = load_data(root, 32)  # from the cache: the failed file is still reported
    assert decodes == [18] and second.report.skipped_sample == first.report.skipped_sample
    assert "0.png: cannot decode" in second.report.skipped_sample[0]
    npy = next(cache.glob("*.npy"))
    npy.write_bytes(npy.read_bytes()[:100])  # a damaged entry
    with pytest.warns(UserWarning):
        third = load_data(root, 32)
    assert decodes == [18, 18] and torch.equal(_all_pixels(third), _all_pixels(first))


def test_headers_come_from_the_cache_until_a_file_changes(tmp_path, cache, monkeypatch):
    root = _tree(tmp_path / "imgs")
    probes: list[str] = []
    real = folders._probe
    monkeypatch.setattr(folders, "_probe", lambda path: probes.append(path) or real(path))
    first = folders.scan_images(root)
    assert len(probes) == 18
    again = folders.scan_images(root)
    assert len(probes) == 18 and again.images == first.images
    Image.fromarray(np.zeros((50, 60, 3), dtype=np.uint8)).save(root / "a" / "1.png")  # new size, new mtime
    os.utime(root / "a" / "1.png", ns=(1, 1))
    changed = folders.scan_images(root)
    assert len(probes) == 36
    assert next(im for im in changed.images if im.path.endswith("a/1.png")).width == 60


def test_off_disables_the_cache(tmp_path, monkeypatch, decodes):
    monkeypatch.setenv(pixel_cache.CACHE_ENV, "off")
    root = _tree(tmp_path / "imgs")
    load_data(root, 32)
    load_data(root, 32)
    assert decodes == [18, 18] and pixel_cache.cache_root() is None


def test_default_location_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv(pixel_cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pixel_cache.cache_root() == tmp_path / "xdg" / "nas" / "pixels"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert pixel_cache.cache_root() == Path.home() / ".cache" / "nas" / "pixels"
