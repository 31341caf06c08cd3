"""Training data: ImageFolder trees or the embedded long-tailed digits, as a :class:`DataBundle`.

Layouts (``path`` is a folder):

- ``PATH/train/<class>/*`` + ``PATH/val/<class>/*`` (``valid``, ``validation`` or ``test`` also name the
  validation folder): used as given; ``val_ratio`` is ignored. Classes are the train folder's.
- ``PATH/<class>/*`` (or ``PATH/train/<class>/*`` alone): split per class as the seed did —
  ``floor(val_ratio · n)`` random images to validation; a class too small for one (``n < 1/val_ratio``)
  goes into BOTH splits, which the report lists.
- ``path=None``: scikit-learn's 8×8 digits (no download), 174 images per class, split with ``val_ratio``
  (0.1 → 17 val images per class), the training split made long-tailed with ``exp:10`` (157 → 15 images).

Class labels follow sorted folder names (ImageFolder order). ``long_tail`` applies to the training split
only, after the split, so validation keeps every class's share (the usual long-tail protocol: a balanced
source gives a balanced validation set); profile rank ``i`` goes to the ``i``-th largest class, ties in
name order, so a balanced source gets the profile in name order (:func:`trials.longtail.rank_targets`).
``max_per_class`` caps each class (each split in the two-folder layout) before anything else.
Unreadable, empty and non-image files are skipped, counted and warned about (:class:`DataWarning`); a
missing folder, no classes or a class without a readable image is a :class:`~trials.errors.DataError`.

Images are decoded once into uint8 squares (see :mod:`trials.transforms`) when they fit in
:data:`MEMORY_LIMIT_BYTES` = 2 GiB (N · 3 · S² bytes, S = round(R · 256/224): CIFAR-10-LT's 22,406
train + test images at 32 px take 88 MiB, Caltech-101's 8,677 at 112 px 407 MiB, at 224 px 1.6 GiB);
bigger sets are read from disk on every access instead (``in_memory=False`` forces that).
"""

from __future__ import annotations

import importlib.util
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from search_space.spec import MIN_RESOLUTION
from trials.errors import DataError
from trials.folders import LAYOUT_FOLDERS, scan_images, workers
from trials.longtail import cap_per_class, parse_long_tail, rank_targets, split_per_class, subsample_per_class
from trials.transforms import (
    DIGITS_AUGMENT,
    FOLDER_AUGMENT,
    EvalTransform,
    ImagePathDataset,
    TensorImageDataset,
    TrainAugment,
    TrainTransform,
    Transform,
    load_square,
    store_size,
)

LAYOUT_DIGITS = "embedded digits"
DIGITS_SOURCE = "embedded:sklearn-digits"
DIGITS_PER_CLASS = 174  # the smallest digit class: the long tail starts from a balanced set
DIGITS_LONG_TAIL = "exp:10"
MEMORY_LIMIT_BYTES = 2 * 1024**3
SKIP_SAMPLE = 10


class DataWarning(UserWarning):
    """Some files were skipped (unreadable, empty, not an image); the report has the details."""


# -- the bundle -----------------------------------------------------------------------------------

@dataclass
class DataReport:
    """How a data set was read: layout, split rule, skipped files, long tail, memory (for people and JSON)."""

    source: str
    layout: str
    resolution: int
    classes: int
    train_images: int
    val_images: int
    val_ratio: float | None = None
    long_tail: str | None = None
    imbalance_factor: float = 1.0
    classes_in_both: list[str] = field(default_factory=list)
    classes_without_val: list[str] = field(default_factory=list)
    profile_shortfall: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    skipped_sample: list[str] = field(default_factory=list)
    ignored_files: int = 0
    channel_modes: dict[str, int] = field(default_factory=dict)
    in_memory: bool = True
    store_size: int = 0
    memory_bytes: int = 0
    augment: dict[str, object] = field(default_factory=dict)
    load_s: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-able dict."""
        return asdict(self)

    def lines(self) -> list[str]:
        """A short human summary, one fact per line."""
        split = f", val_ratio {self.val_ratio:g}" if self.val_ratio is not None else ""
        out = [f"data: {self.source} ({self.layout}{split}), {self.classes} classes, "
               f"{self.train_images} train / {self.val_images} val images, "
               f"train imbalance factor {self.imbalance_factor:.1f}"]
        if self.long_tail:
            out.append(f"long tail {self.long_tail} applied to the training split")
        if self.profile_shortfall:
            out.append(f"{len(self.profile_shortfall)} classes hold fewer images than the profile asks "
                       f"({sum(self.profile_shortfall.values())} missing)")
        if self.classes_in_both:
            out.append(f"in BOTH splits (too small for a val image): {', '.join(self.classes_in_both)}")
        if self.classes_without_val:
            out.append(f"no val images: {', '.join(self.classes_without_val[:10])}")
        if self.skipped:
            out.append(f"skipped {self.skipped} unreadable files, e.g. {'; '.join(self.skipped_sample[:3])}")
        where = "in memory" if self.in_memory else "read from disk on every access"
        out.append(f"pixels: {where}, uint8 {self.store_size}×{self.store_size} "
                   f"({self.memory_bytes / 2**20:.1f} MiB), {self.resolution} px after crop")
        return out


@dataclass
class DataBundle:
    """Train and val datasets of ``(float (3, R, R), int)`` items, with per-class counts and a report.

    ``train_eval`` holds the training images with the evaluation transform (center crop, no
    augmentation), for measuring training-set accuracy as the seed did.
    """

    train: Dataset
    val: Dataset
    classes: list[str]
    train_counts: list[int]
    val_counts: list[int]
    report: DataReport
    train_eval: Dataset | None = None

    def __post_init__(self) -> None:
        if self.train_eval is None:
            self.train_eval = self.train

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def resolution(self) -> int:
        """Side of every image in px."""
        return self.report.resolution

    @property
    def train_labels(self) -> torch.Tensor:
        """int64 label of every training item, in dataset order (build a class-balanced sampler from it)."""
        return _labels(self.train)

    @property
    def val_labels(self) -> torch.Tensor:
        """int64 label of every validation item, in dataset order."""
        return _labels(self.val)


def _labels(dataset: Dataset) -> torch.Tensor:
    labels = getattr(dataset, "labels", None)
    if labels is None:
        labels = getattr(dataset, "targets", None)
    if labels is None:
        labels = [int(dataset[i][1]) for i in range(len(dataset))]  # type: ignore[arg-type]
    return torch.as_tensor(labels, dtype=torch.int64)


def load_data(
    path: str | os.PathLike[str] | None,
    resolution: int,
    *,
    val_ratio: float = 0.1,
    long_tail: str | None = None,
    augment: bool | TrainAugment = False,
    seed: int = 0,
    max_per_class: int | None = None,
    in_memory: bool | None = None,
) -> DataBundle:
    """Read a data folder (or the embedded digits for ``path=None``) into train/val datasets.

    ``long_tail``: ``"exp:IF"``, ``"seed"`` or ``"none"`` (digits default to ``exp:10``, folders to
    none); ``augment=True`` adds RandAugment to the training crop + flip (a :class:`TrainAugment` sets
    everything); ``in_memory=None`` decodes once into memory when the pixels fit in
    :data:`MEMORY_LIMIT_BYTES`. Deterministic for a given ``seed`` (augmentation uses torch's RNG).
    """
    start = time.perf_counter()
    if resolution < MIN_RESOLUTION:
        raise DataError(f"resolution {resolution} px is below the minimum of {MIN_RESOLUTION} px",
                        f"use at least {MIN_RESOLUTION} (five stride-2 stages)")
    if not 0 < val_ratio < 1:
        raise DataError(f"val_ratio {val_ratio} is outside (0, 1)", "use e.g. 0.1 (the seed's) or 0.2")
    if max_per_class is not None and max_per_class < 1:
        raise DataError(f"max_per_class {max_per_class} must be at least 1", "omit it to use every image")
    profile = parse_long_tail(DIGITS_LONG_TAIL if path is None and long_tail is None else long_tail)
    size = store_size(resolution)
    src = _digits(size) if path is None else _folder(path)
    labels, classes, layout = src["labels"], src["classes"], src["layout"]
    if layout == LAYOUT_FOLDERS:
        train_idx, val_idx, both = src["train_idx"], src["val_idx"], []
        if max_per_class is not None:
            train_idx = cap_per_class(train_idx, labels, max_per_class, seed)
            val_idx = cap_per_class(val_idx, labels, max_per_class, seed) if len(val_idx) else val_idx
    else:
        pool = np.arange(len(labels))
        if path is None:
            pool = cap_per_class(pool, labels, DIGITS_PER_CLASS, seed)
        if max_per_class is not None:
            pool = cap_per_class(pool, labels, max_per_class, seed)
        train_pos, val_pos, both = split_per_class(labels[pool], len(classes), val_ratio, seed)
        train_idx, val_idx = pool[train_pos], pool[val_pos]
    shortfall: dict[int, int] = {}
    sizes = np.bincount(labels[train_idx], minlength=len(classes))
    targets = profile.targets(int(sizes.max()), len(classes)) if profile else None
    if targets is not None:
        train_idx, shortfall = subsample_per_class(train_idx, labels, rank_targets(targets, sizes), seed)

    train_aug = augment if isinstance(augment, TrainAugment) else (
        DIGITS_AUGMENT if path is None else FOLDER_AUGMENT)
    if augment is True:
        train_aug = TrainAugment(train_aug.scale, train_aug.ratio, train_aug.hflip, randaugment=True)
    needed = np.union1d(train_idx, val_idx)
    memory = path is None or (len(needed) * 3 * size * size <= MEMORY_LIMIT_BYTES if in_memory is None
                              else in_memory)
    skipped: list[tuple[str, str]] = list(src.get("skipped", []))
    if path is None:
        pixels: torch.Tensor | list[str] = src["store"]
        pos = np.arange(len(labels))
    elif memory:
        pixels, pos, failed = _decode(src["paths"], needed, size)
        skipped += failed
        ok = pos >= 0
        train_idx, val_idx = train_idx[ok[train_idx]], val_idx[ok[val_idx]]
    else:
        pixels, pos = src["paths"], np.arange(len(labels))

    train_counts = np.bincount(labels[train_idx], minlength=len(classes)).tolist()
    val_counts = np.bincount(labels[val_idx], minlength=len(classes)).tolist()
    empty = [classes[c] for c, n in enumerate(train_counts) if n == 0]
    if empty:
        raise DataError(f"class {empty[0]!r} has no readable training image"
                        + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""),
                        "add images to it or remove its folder")
    if skipped:
        warnings.warn(DataWarning(f"skipped {len(skipped)} unreadable image files under {path} "
                                  f"(first: {skipped[0][0]}: {skipped[0][1]})"), stacklevel=2)
    evaluate = EvalTransform(resolution)
    train = _dataset(pixels, pos[train_idx], labels[train_idx], size, TrainTransform(resolution, train_aug))
    report = DataReport(
        source=DIGITS_SOURCE if path is None else str(Path(path).expanduser()),
        layout=layout, resolution=resolution, classes=len(classes),
        train_images=len(train_idx), val_images=len(val_idx),
        val_ratio=None if layout == LAYOUT_FOLDERS else val_ratio,
        long_tail=str(profile) if profile and profile.kind != "none" else None,
        imbalance_factor=max(train_counts) / min(train_counts),
        classes_in_both=[classes[c] for c in both],
        classes_without_val=[classes[c] for c, n in enumerate(val_counts) if n == 0],
        profile_shortfall={classes[c]: n for c, n in shortfall.items()},
        skipped=len(skipped), skipped_sample=[f"{p}: {why}" for p, why in skipped[:SKIP_SAMPLE]],
        ignored_files=int(src.get("ignored", 0)), channel_modes=dict(src.get("modes", {})),
        in_memory=bool(memory), store_size=size,
        memory_bytes=int(pixels.numel()) if isinstance(pixels, torch.Tensor) else 0,
        augment=train_aug.to_dict(), load_s=round(time.perf_counter() - start, 3),
    )
    val = _dataset(pixels, pos[val_idx], labels[val_idx], size, evaluate)
    return DataBundle(train, val, list(classes), train_counts, val_counts, report,
                      train_eval=train.with_transform(evaluate))


def _dataset(
    pixels: torch.Tensor | list[str], rows: np.ndarray, labels: np.ndarray, size: int, transform: Transform
) -> TensorImageDataset | ImagePathDataset:
    """Items ``rows`` of an in-memory store (tensor) or of a list of files (lazy)."""
    y = torch.as_tensor(labels, dtype=torch.int64)
    if isinstance(pixels, torch.Tensor):
        return TensorImageDataset(pixels, torch.as_tensor(rows, dtype=torch.int64), y, transform)
    return ImagePathDataset([pixels[i] for i in rows], y, size, transform)


def _folder(path: str | os.PathLike[str]) -> dict[str, object]:
    """Scan a folder: labels, paths, split membership, skipped files, channel modes."""
    scan = scan_images(path)
    labels = np.array([im.label for im in scan.images], dtype=np.int64)
    split = np.array([im.split for im in scan.images])
    train_mask = split != "val"
    counts = np.bincount(labels[train_mask], minlength=len(scan.classes))
    if not len(scan.images) or (counts == 0).any():
        c = int(np.flatnonzero(counts == 0)[0]) if len(scan.images) else 0
        where = Path(path) / ("train" if scan.layout == LAYOUT_FOLDERS else "") / scan.classes[c]
        raise DataError(f"class folder {where} has no readable image ({len(scan.skipped)} files skipped in all)",
                        "add images to it or remove the folder")
    modes: dict[str, int] = {}
    for im in scan.images:
        modes[im.mode] = modes.get(im.mode, 0) + 1
    out: dict[str, object] = {
        "labels": labels, "classes": scan.classes, "layout": scan.layout, "paths": [im.path for im in scan.images],
        "skipped": scan.skipped, "ignored": scan.ignored, "modes": modes,
    }
    if scan.layout == LAYOUT_FOLDERS:
        out["train_idx"], out["val_idx"] = np.flatnonzero(train_mask), np.flatnonzero(~train_mask)
    return out


def _decode(paths: list[str], needed: np.ndarray, size: int) -> tuple[torch.Tensor, np.ndarray, list[tuple[str, str]]]:
    """Decode ``paths[needed]`` into one uint8 store; ``pos[i]`` is item i's row (−1: failed or unneeded)."""
    store = np.empty((len(needed), size, size, 3), dtype=np.uint8)  # (N, S, S, 3): PIL's layout, no copy
    failed: list[tuple[str, str]] = []
    ok = np.ones(len(needed), dtype=bool)

    def work(k: int) -> None:
        try:
            store[k] = load_square(paths[needed[k]], size)
        except Exception as exc:  # a truncated or damaged file that passed the header check
            ok[k] = False
            failed.append((paths[needed[k]], f"cannot decode ({type(exc).__name__})"))

    with ThreadPoolExecutor(workers()) as pool:
        list(pool.map(work, range(len(needed)), chunksize=32))
    pos = np.full(len(paths), -1, dtype=np.int64)
    pos[needed[ok]] = np.flatnonzero(ok)  # failed rows stay in the store, unreferenced
    return torch.from_numpy(store).permute(0, 3, 1, 2), pos, sorted(failed)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
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


def _digits(size: int) -> dict[str, object]:
    """The 1,797 8×8 digits as a uint8 RGB store of ``size × size`` squares (bilinear upsampling)."""
    images, labels = _digits_arrays()
    x = torch.from_numpy(images).float().mul(255 / 16)[:, None]  # (N, 1, 8, 8), 0..255
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    store = x.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return {"labels": labels, "classes": [str(d) for d in range(10)],
            "layout": LAYOUT_DIGITS, "store": store, "modes": {"L": len(store)}}
