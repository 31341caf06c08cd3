"""Image folders: the two layouts, class discovery and a header-only scan of every image (no decoding).

``PATH/train/<class>/*`` + ``PATH/val/<class>/*`` (``valid``, ``validation`` or ``test`` also name the
validation folder) is the "train/val folders" layout; ``PATH/<class>/*`` (or ``PATH/train/`` alone) is
"split per class". Classes are the sorted subfolder names (torchvision's ImageFolder order); hidden
folders and files, and files without an image extension (torchvision's ``IMG_EXTENSIONS``), are ignored
and counted. A file that is empty, not an image, or has a damaged header is skipped with its reason.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from trials.errors import DataError

LAYOUT_FOLDERS = "train/val folders"
LAYOUT_SPLIT = "split per class"
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
    with ThreadPoolExecutor(workers()) as pool:
        probes = list(pool.map(_probe, [p for p, _ in files], chunksize=64))
    images, skipped = [], []
    for (p, label), split, probe in zip(files, splits, probes):
        if isinstance(probe, str):
            skipped.append((p, probe))
        else:
            images.append(ImageInfo(p, label, split, *probe))
    root = Path(path).expanduser()
    return FolderScan(root, layout, classes, images, skipped, ignored, val_dir.name if val_dir else None)
