"""Where images come from: image folders (two layouts, class discovery, a header-only scan, decoding) and
the embedded digits, each read into a :class:`Source` that :func:`trials.data.load_data` splits.

``PATH/train/<class>/*`` + ``PATH/val/<class>/*`` (``valid``, ``validation`` or ``test`` also name the
second folder, whose images are the test split) is the "train/val folders" layout; ``PATH/<class>/*``
(or ``PATH/train/`` alone) is "split per class". Classes are the sorted subfolder names (torchvision's
ImageFolder order); hidden folders and files, and files without an image extension (torchvision's
``IMG_EXTENSIONS``), are ignored and counted. A file that is empty, not an image, or has a damaged
header is skipped with its reason.
"""

from __future__ import annotations

import importlib.util
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from trials import pixel_cache
from trials.errors import DataError
from trials.progress import task
from trials.transforms import load_square

LAYOUT_FOLDERS = "train/val folders"
LAYOUT_SPLIT = "split per class"
LAYOUT_DIGITS = "embedded digits"
VAL_DIR_NAMES = ("val", "valid", "validation", "test")


def workers() -> int:
    """Threads for file work: PIL releases the GIL while reading and decoding."""
    return min(8, 2 * (os.cpu_count() or 1))


@dataclass
class ImageInfo:
    """One readable image file: header facts only (nothing decoded)."""

    path: str
    label: int
    split: str  # "train", "val" or "all" (split per class)
    width: int
    height: int
    mode: str


@dataclass
class FolderScan:
    """What a folder holds: classes, readable images, skipped files ``(path, reason)``, ignored files."""

    root: Path
    layout: str
    classes: list[str]
    images: list[ImageInfo]
    skipped: list[tuple[str, str]]
    ignored: int
    val_dir: str | None = None


def list_classes(folder: Path) -> list[str]:
    """Sorted names of the class subfolders of ``folder`` (hidden folders ignored)."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def find_layout(path: str | os.PathLike[str]) -> tuple[str, Path, Path | None]:
    """``(layout, train_dir, val_dir)`` of a data folder (see the module doc), or DataError."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"data folder {root} does not exist", "pass a folder of class subfolders of images")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder", "pass a folder of class subfolders (ImageFolder layout)")
    train = root / "train"
    if train.is_dir():
        val = next((root / n for n in VAL_DIR_NAMES if (root / n).is_dir()), None)
        return (LAYOUT_FOLDERS if val else LAYOUT_SPLIT), train, val
    return LAYOUT_SPLIT, root, None


def _probe(path: str) -> tuple[int, int, str] | str:
    """Header facts ``(width, height, mode)`` of an image file, or why it cannot be used."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        with Image.open(path) as img:
            return img.size[0], img.size[1], img.mode
    except UnidentifiedImageError:
        return "not an image"
    except Exception as exc:  # PIL raises OSError, SyntaxError, struct.error, … on damaged headers
        return f"unreadable ({type(exc).__name__})"


def _class_files(folder: Path, classes: list[str]) -> tuple[list[tuple[str, int]], int]:
    files, ignored = [], 0
    for label, name in enumerate(classes):
        for dirpath, dirnames, filenames in sorted(os.walk(folder / name, followlinks=True)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                if f.startswith(".") or not has_file_allowed_extension(f, IMG_EXTENSIONS):
                    ignored += 1
                else:
                    files.append((os.path.join(dirpath, f), label))
    return files, ignored


def scan_images(path: str | os.PathLike[str]) -> FolderScan:
    """List the images of a data folder and read their headers (no decoding), in parallel threads."""
    layout, train_dir, val_dir = find_layout(path)
    classes = list_classes(train_dir)
    if not classes:
        raise DataError(f"{train_dir} has no class subfolders",
                        "expected PATH/<class>/<image> or PATH/train/<class>/… + PATH/val/<class>/…")
    files, ignored = _class_files(train_dir, classes)
    splits = ["all" if layout == LAYOUT_SPLIT else "train"] * len(files)
    if val_dir is not None:
        foreign = sorted(set(list_classes(val_dir)) - set(classes))
        if foreign:
            raise DataError(f"{val_dir} has classes that {train_dir} lacks: {', '.join(foreign[:5])}",
                            "train and val folders must use the same class names")
        val_files, val_ignored = _class_files(val_dir, [c for c in classes if (val_dir / c).is_dir()])
        remap = {i: classes.index(c) for i, c in enumerate(c for c in classes if (val_dir / c).is_dir())}
        files += [(p, remap[label]) for p, label in val_files]
        splits += ["val"] * len(val_files)
        ignored += val_ignored
    probes = _headers([p for p, _ in files])
    images, skipped = [], []
    for (p, label), split, probe in zip(files, splits, probes):
        if isinstance(probe, str):
            skipped.append((p, probe))
        else:
            images.append(ImageInfo(p, label, split, *probe))
    root = Path(path).expanduser()
    return FolderScan(root, layout, classes, images, skipped, ignored, val_dir.name if val_dir else None)


def _headers(paths: list[str]) -> list[pixel_cache.Header]:
    """:func:`_probe` of every file, in threads, or from the cache when an earlier command read these files."""
    key = pixel_cache.content_key(paths, "headers")
    cached = pixel_cache.load_headers(key, len(paths)) if key else None
    if cached is not None:
        return cached
    probes: list[pixel_cache.Header] = []
    with ThreadPoolExecutor(workers()) as pool, task(f"reading {len(paths):,} image headers", len(paths)) as advance:
        for probe in pool.map(_probe, paths, chunksize=64):
            probes.append(probe)
            advance(1)
    if key:
        pixel_cache.save_headers(key, probes)
    return probes


# -- sources: what load_data splits ------------------------------------------------------------------

@dataclass
class Source:
    """Every image of a data set before the split: labels, and pixels (``store``) or files (``paths``).

    ``pool_idx`` are the items the training, selection (and, when carved, test) splits come from;
    ``test_idx`` is the test folder's items in the train/val layout, else None (the test split is carved).
    """

    labels: np.ndarray
    classes: list[str]
    layout: str
    pool_idx: np.ndarray
    test_idx: np.ndarray | None = None
    test_folder: str | None = None
    store: torch.Tensor | None = None  # (N, 3, S, S) uint8, for data generated in memory (the digits)
    paths: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: int = 0
    modes: dict[str, int] = field(default_factory=dict)


def folder_source(path: str | os.PathLike[str]) -> Source:
    """Scan a data folder (headers only): labels, files, which items form the test folder, skipped files."""
    scan = scan_images(path)
    labels = np.array([im.label for im in scan.images], dtype=np.int64)
    test_mask = np.array([im.split == "val" for im in scan.images], dtype=bool)
    counts = np.bincount(labels[~test_mask], minlength=len(scan.classes))
    if not len(scan.images) or (counts == 0).any():
        c = int(np.flatnonzero(counts == 0)[0]) if len(scan.images) else 0
        where = Path(path) / ("train" if scan.layout == LAYOUT_FOLDERS else "") / scan.classes[c]
        raise DataError(f"class folder {where} has no readable image ({len(scan.skipped)} files skipped in all)",
                        "add images to it or remove the folder")
    folders = scan.layout == LAYOUT_FOLDERS
    return Source(
        labels=labels, classes=scan.classes, layout=scan.layout, pool_idx=np.flatnonzero(~test_mask),
        test_idx=np.flatnonzero(test_mask) if folders else None, test_folder=scan.val_dir if folders else None,
        paths=[im.path for im in scan.images], skipped=scan.skipped, ignored=scan.ignored,
        modes=dict(Counter(im.mode for im in scan.images)),
    )


def decode(paths: list[str], needed: np.ndarray, size: int) -> tuple[torch.Tensor, np.ndarray, list[tuple[str, str]]]:
    """Decode ``paths[needed]`` into one uint8 store; ``pos[i]`` is item i's row (−1: failed or unneeded).

    The pixels of the same files (same paths, sizes and modification times) at the same size come from
    the pixel cache when an earlier command decoded them (:mod:`trials.pixel_cache`).
    """
    files = [paths[i] for i in needed]
    key = pixel_cache.content_key(files, f"pixels {size}")
    cached = pixel_cache.load_pixels(key, len(files), size) if key else None
    if cached is not None:
        store, failed_rows = cached
    else:
        store, failed_rows = _decode_files(files, size)
        if key:
            pixel_cache.save_pixels(key, store, failed_rows)
    ok = np.ones(len(needed), dtype=bool)
    ok[[row for row, _ in failed_rows]] = False
    pos = np.full(len(paths), -1, dtype=np.int64)
    pos[needed[ok]] = np.flatnonzero(ok)  # failed rows stay in the store, unreferenced
    failed = sorted((files[row], reason) for row, reason in failed_rows)
    return torch.from_numpy(store).permute(0, 3, 1, 2), pos, failed


def _decode_files(files: list[str], size: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """``(store, failed)``: the uint8 squares ``(N, S, S, 3)`` (PIL's layout, no copy) of ``files``, decoded
    in threads, and ``(row, reason)`` of those that could not be decoded."""
    store = np.empty((len(files), size, size, 3), dtype=np.uint8)
    failed: list[tuple[int, str]] = []

    def work(k: int) -> None:
        try:
            store[k] = load_square(files[k], size)
        except Exception as exc:  # a truncated or damaged file that passed the header check
            failed.append((k, f"cannot decode ({type(exc).__name__})"))

    with ThreadPoolExecutor(workers()) as pool, task(f"decoding {len(files):,} images", len(files)) as advance:
        for _ in pool.map(work, range(len(files)), chunksize=32):
            advance(1)
    return store, sorted(failed)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: images ``(1797, 8, 8)`` in 0..16 and labels.

    Read straight from the CSV that scikit-learn ships (what ``load_digits`` parses), because importing
    ``sklearn.datasets`` costs 2–3 s; ``load_digits`` is the fallback if the file moves.
    """
    spec = importlib.util.find_spec("sklearn")
    csv_path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if csv_path is not None and csv_path.is_file():
        table = np.loadtxt(csv_path, delimiter=",", dtype=np.float64)
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits  # ships inside scikit-learn: nothing is downloaded

    digits = load_digits()
    return digits.images, digits.target.astype(np.int64)


def digits_source(size: int) -> Source:
    """The 1,797 8×8 digits as a uint8 RGB store of ``size × size`` squares (bilinear upsampling)."""
    images, labels = digits_arrays()
    x = torch.from_numpy(images).float().mul(255 / 16)[:, None]  # (N, 1, 8, 8), 0..255
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    store = x.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return Source(labels=labels, classes=[str(d) for d in range(10)], layout=LAYOUT_DIGITS,
                  pool_idx=np.arange(len(labels)), store=store, modes={"L": len(store)})
