"""Training data: ImageFolder trees or the embedded long-tailed digits, as a :class:`DataBundle` of three splits.

- **train**: what the model learns from (augmented by the recipe, long-tailed if the recipe says so);
- **selection**: what a search ranks architectures on and what training picks ``best.pt`` on;
- **test**: held out; only final reports (evaluation, the model card, export) read it.

Layouts (``path`` is a folder):

- ``PATH/train/<class>/*`` + ``PATH/val/<class>/*`` (``valid``, ``validation`` or ``test`` also name the
  second folder): that folder is the **test** split, as given; the selection split is carved from the
  training folder per class (``floor(selection_ratio · n)`` random images); ``test_ratio`` is unused.
- ``PATH/<class>/*`` (or ``PATH/train/<class>/*`` alone), and ``path=None`` (scikit-learn's 8×8 digits,
  174 images per class, nothing downloaded): both are carved per class, the test split first
  (``floor(test_ratio · n)``), then the selection split (``floor(selection_ratio · n)``, ``n`` the whole
  class) from the rest. Defaults 0.1 and 0.1: 80 / 10 / 10 %, the digits 140 / 17 / 17 per class.

The test split's draw depends only on the seed, the class and its images, never on ``selection_ratio``
or the recipe: changing the search's budget never moves a test image. A class too small for a selection
image keeps all its images for training and is also its own selection (listed in
``report.classes_in_both``); a class too small for a test image has none (``report.classes_without_test``)
— test images are never trained on.

:class:`DataSettings` (source + split rule) is the one description of which images are in which split:
``DataSettings(...).load(resolution, recipe)`` is :func:`load_data`, and every bundle carries its settings.

Class labels follow sorted folder names (ImageFolder order). The recipe's long tail applies to the
training split only, after the split, so selection and test keep every class's share; profile rank ``i``
goes to the ``i``-th largest class, ties in name order (:func:`trials.longtail.rank_targets`); the digits'
default recipe uses ``exp:10`` (140 → 14 images). ``max_per_class`` caps each class (each folder in the
two-folder layout) before anything else. Unreadable, empty and non-image files are skipped, counted and
warned about (:class:`DataWarning`); a missing folder, no classes or a class without a readable training
image is a :class:`~trials.errors.DataError`.

Images are decoded once into uint8 squares (see :mod:`trials.transforms`) when they fit in
:data:`MEMORY_LIMIT_BYTES` = 2 GiB (N · 3 · S² bytes, S = round(R · 256/224): CIFAR-10-LT's 22,406
train + test images at 32 px take 88 MiB, Caltech-101's 8,677 at 112 px 407 MiB, at 224 px 1.6 GiB);
bigger sets are read from disk on every access instead (``in_memory=False`` forces that).
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from search_space.spec import MIN_RESOLUTION
from trials.errors import DataError
from trials.folders import LAYOUT_DIGITS, Source, decode, digits_source, folder_source
from trials.longtail import Split, apply_long_tail, cap_per_class, long_tail_name, split_items
from trials.recipe import Recipe
from trials.transforms import (
    EvalTransform,
    ImagePathDataset,
    TensorImageDataset,
    TrainTransform,
    Transform,
    store_size,
    train_augment,
)

DIGITS_SOURCE = "embedded:sklearn-digits"
DIGITS_PER_CLASS = 174  # the smallest digit class: the long tail starts from a balanced set
DEFAULT_SELECTION_RATIO = 0.1
DEFAULT_TEST_RATIO = 0.1
MEMORY_LIMIT_BYTES = 2 * 1024**3
SKIP_SAMPLE = 10


class DataWarning(UserWarning):
    """Some files were skipped (unreadable, empty, not an image); the report has the details."""


# -- which images are in which split ------------------------------------------------------------------

#: Keys of earlier records (checkpoints of format version 1, reports) read by :meth:`DataSettings.from_dict`:
#: old name -> current name, or None for keys that belong to the recipe now (and are ignored here).
LEGACY_SETTING_KEYS: dict[str, str | None] = {"val_ratio": "selection_ratio", "long_tail": None, "augment": None}


@dataclass(frozen=True)
class DataSettings:
    """Which images are in which split: the data source and the split rule (see the module doc).

    ``path`` None is the embedded digits. Together with a resolution and a :class:`~trials.recipe.Recipe`
    (whose long tail thins the training split) these settings reproduce a :class:`DataBundle` exactly;
    checkpoints and studies record them so that evaluation and export reload the very same splits.
    """

    path: str | None = None
    selection_ratio: float = DEFAULT_SELECTION_RATIO
    test_ratio: float = DEFAULT_TEST_RATIO
    seed: int = 0
    max_per_class: int | None = None

    def load(self, resolution: int, recipe: Recipe | None = None, *, in_memory: bool | None = None) -> DataBundle:
        """The data bundle at ``resolution`` with ``recipe`` (None: :meth:`Recipe.for_data`); see :func:`load_data`."""
        return load_data(self.path, resolution, recipe=recipe, selection_ratio=self.selection_ratio,
                         test_ratio=self.test_ratio, seed=self.seed, max_per_class=self.max_per_class,
                         in_memory=in_memory)

    def replace(self, **changes: object) -> DataSettings:
        """A copy with ``changes`` (keys whose value is None are ignored: "not given")."""
        given = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **given)  # type: ignore[arg-type]

    def describe(self) -> str:
        """One line for people, e.g. ``embedded digits, selection 0.1, test 0.1, split seed 0``."""
        cap = f", at most {self.max_per_class} per class" if self.max_per_class is not None else ""
        return (f"{self.path or 'embedded digits'}, selection {self.selection_ratio:g}, test {self.test_ratio:g}, "
                f"split seed {self.seed}{cap}")

    def to_dict(self) -> dict[str, object]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> DataSettings:
        """Inverse of :meth:`to_dict`; absent fields take the defaults, earlier names are read
        (:data:`LEGACY_SETTING_KEYS`), unknown keys and wrong types raise :class:`~trials.errors.DataError`."""
        body: dict[str, object] = {}
        for key, value in data.items():
            name = LEGACY_SETTING_KEYS.get(key, key)
            if name is not None and (key not in LEGACY_SETTING_KEYS or name not in data):
                body[name] = value
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(body) - known)
        if unknown:
            raise DataError(f"unknown data setting(s) {unknown}", f"known: {', '.join(sorted(known))}")
        try:
            path, cap = body.get("path"), body.get("max_per_class")
            return cls(path=None if path is None else str(path),
                       selection_ratio=float(body.get("selection_ratio", DEFAULT_SELECTION_RATIO)),  # type: ignore[arg-type]
                       test_ratio=float(body.get("test_ratio", DEFAULT_TEST_RATIO)),  # type: ignore[arg-type]
                       seed=int(body.get("seed", 0)),  # type: ignore[call-overload]
                       max_per_class=None if cap is None else int(cap))  # type: ignore[call-overload]
        except (TypeError, ValueError) as exc:
            raise DataError(f"malformed data settings {dict(data)} ({exc})", "the record is damaged") from exc


# -- the bundle -----------------------------------------------------------------------------------

@dataclass
class DataReport:
    """How a data set was read: layout, splits (sizes, ratios, seed), skipped files, recipe, memory (for JSON).

    ``test_ratio`` is None when the test split is a folder of its own (``test_folder``).
    """

    source: str
    layout: str
    resolution: int
    classes: int
    train_images: int
    selection_images: int
    test_images: int
    selection_ratio: float
    test_ratio: float | None
    split_seed: int
    test_folder: str | None = None
    long_tail: str | None = None
    imbalance_factor: float = 1.0
    classes_in_both: list[str] = field(default_factory=list)
    classes_without_test: list[str] = field(default_factory=list)
    profile_shortfall: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    skipped_sample: list[str] = field(default_factory=list)
    ignored_files: int = 0
    channel_modes: dict[str, int] = field(default_factory=dict)
    in_memory: bool = True
    store_size: int = 0
    memory_bytes: int = 0
    recipe: dict[str, Any] = field(default_factory=dict)
    augment: dict[str, object] = field(default_factory=dict)
    load_s: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-able dict."""
        return asdict(self)

    def split_line(self) -> str:
        """How the three splits were made, in one line."""
        how = (f"selection {self.selection_ratio:g} carved per class from train, test = the {self.test_folder}/ folder"
               if self.test_ratio is None else
               f"carved per class: test {self.test_ratio:g}, selection {self.selection_ratio:g}")
        return (f"splits: {self.train_images} train / {self.selection_images} selection / {self.test_images} test "
                f"images ({how}; split seed {self.split_seed})")

    def lines(self) -> list[str]:
        """A short human summary, one fact per line."""
        out = [f"data: {self.source} ({self.layout}), {self.classes} classes, "
               f"train imbalance factor {self.imbalance_factor:.1f}", self.split_line()]
        if self.recipe:
            out.append(f"recipe: {Recipe.from_dict(self.recipe).describe()}")
        if self.long_tail:
            out.append(f"long tail {self.long_tail} applied to the training split")
        if self.profile_shortfall:
            out.append(f"{len(self.profile_shortfall)} classes hold fewer images than the profile asks "
                       f"({sum(self.profile_shortfall.values())} missing)")
        if self.classes_in_both:
            out.append(f"selection = training images (too small for a selection image): "
                       f"{', '.join(self.classes_in_both)}")
        if self.classes_without_test:
            out.append(f"no test images: {', '.join(self.classes_without_test[:10])}")
        if self.skipped:
            out.append(f"skipped {self.skipped} unreadable files, e.g. {'; '.join(self.skipped_sample[:3])}")
        where = "in memory" if self.in_memory else "read from disk on every access"
        out.append(f"pixels: {where}, uint8 {self.store_size}×{self.store_size} "
                   f"({self.memory_bytes / 2**20:.1f} MiB), {self.resolution} px after crop")
        return out


@dataclass
class DataBundle:
    """Train, selection and test datasets of ``(float (3, R, R), int)`` items, per-class counts, a report.

    ``train_eval`` holds the training images with the evaluation transform (center crop, no
    augmentation), for measuring training-set accuracy as the seed did. ``recipe`` is the recipe whose
    augmentation and long tail ``train`` applies; ``settings`` the :class:`DataSettings` that reload the same
    splits (None for hand-made bundles).
    """

    train: Dataset
    selection: Dataset
    test: Dataset
    classes: list[str]
    train_counts: list[int]
    selection_counts: list[int]
    test_counts: list[int]
    report: DataReport
    train_eval: Dataset | None = None
    recipe: Recipe = field(default_factory=Recipe)
    settings: DataSettings | None = None

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
    def selection_labels(self) -> torch.Tensor:
        """int64 label of every selection item, in dataset order."""
        return _labels(self.selection)

    @property
    def test_labels(self) -> torch.Tensor:
        """int64 label of every test item, in dataset order."""
        return _labels(self.test)


def _labels(dataset: Dataset) -> torch.Tensor:
    labels = getattr(dataset, "labels", None)
    if labels is None:
        labels = getattr(dataset, "targets", None)
    if labels is None:
        labels = [int(dataset[i][1]) for i in range(len(dataset))]  # type: ignore[arg-type]
    return torch.as_tensor(labels, dtype=torch.int64)


# -- loading ----------------------------------------------------------------------------------------

def _check_arguments(resolution: int, selection_ratio: float, test_ratio: float, max_per_class: int | None) -> None:
    if resolution < MIN_RESOLUTION:
        raise DataError(f"resolution {resolution} px is below the minimum of {MIN_RESOLUTION} px",
                        f"use at least {MIN_RESOLUTION} (five stride-2 stages)")
    if not 0 < selection_ratio < 1:
        raise DataError(f"selection ratio {selection_ratio} is outside (0, 1)", "use e.g. 0.1 (the seed's) or 0.2")
    if not 0 <= test_ratio < 1 or selection_ratio + test_ratio >= 1:
        raise DataError(f"test ratio {test_ratio} is outside [0, 1) or leaves no training images "
                        f"(selection {selection_ratio})", "use e.g. 0.1 for each")
    if max_per_class is not None and max_per_class < 1:
        raise DataError(f"max_per_class {max_per_class} must be at least 1", "omit it to use every image")


def _split(src: Source, selection_ratio: float, test_ratio: float, seed: int, max_per_class: int | None) -> Split:
    """Cap the classes (digits: :data:`DIGITS_PER_CLASS`; ``max_per_class``), then the split rule."""
    pool, test = src.pool_idx, src.test_idx
    if src.layout == LAYOUT_DIGITS:
        pool = cap_per_class(pool, src.labels, DIGITS_PER_CLASS, seed)
    if max_per_class is not None:
        pool = cap_per_class(pool, src.labels, max_per_class, seed)
        test = cap_per_class(test, src.labels, max_per_class, seed) if test is not None and len(test) else test
    return split_items(src.labels, pool, test, selection_ratio, test_ratio, seed, len(src.classes))


def load_data(
    path: str | os.PathLike[str] | None,
    resolution: int,
    *,
    recipe: Recipe | None = None,
    selection_ratio: float = DEFAULT_SELECTION_RATIO,
    test_ratio: float = DEFAULT_TEST_RATIO,
    seed: int = 0,
    max_per_class: int | None = None,
    in_memory: bool | None = None,
) -> DataBundle:
    """Read a data folder (or the embedded digits for ``path=None``) into train / selection / test datasets.

    ``recipe`` (None: :meth:`Recipe.for_data`) sets the training augmentation and the long tail, applied
    at ``resolution`` (the spec's). ``seed`` fixes the splits and the long-tail subsampling (augmentation
    draws from torch's RNG). ``in_memory=None`` decodes once into memory when the pixels fit in
    :data:`MEMORY_LIMIT_BYTES`. The bundle's ``settings`` reload the same splits (the path made absolute).
    """
    start = time.perf_counter()
    recipe = recipe if recipe is not None else Recipe.for_data(path)
    recipe.validate()
    _check_arguments(resolution, selection_ratio, test_ratio, max_per_class)
    size = store_size(resolution)
    src = digits_source(size) if path is None else folder_source(path)
    labels, classes = src.labels, src.classes
    split = _split(src, selection_ratio, test_ratio, seed, max_per_class)
    apply_long_tail(split, labels, len(classes), recipe.long_tail, seed)

    pixels, pos, skipped = _pixels(src, split, size, in_memory)
    memory = isinstance(pixels, torch.Tensor)
    counts = {name: np.bincount(labels[getattr(split, name)], minlength=len(classes)).tolist()
              for name in ("train", "selection", "test")}
    empty = [classes[c] for c, n in enumerate(counts["train"]) if n == 0]
    if empty:
        raise DataError(f"class {empty[0]!r} has no readable training image"
                        + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""),
                        "add images to it or remove its folder")
    if skipped:
        warnings.warn(DataWarning(f"skipped {len(skipped)} unreadable image files under {path} "
                                  f"(first: {skipped[0][0]}: {skipped[0][1]})"), stacklevel=2)
    augmentation = train_augment(recipe)
    report = DataReport(
        source=DIGITS_SOURCE if path is None else str(Path(path).expanduser()),
        layout=src.layout, resolution=resolution, classes=len(classes),
        train_images=len(split.train), selection_images=len(split.selection), test_images=len(split.test),
        selection_ratio=selection_ratio, test_ratio=None if src.test_idx is not None else test_ratio,
        split_seed=seed, test_folder=src.test_folder,
        long_tail=long_tail_name(recipe.long_tail),
        imbalance_factor=max(counts["train"]) / min(counts["train"]),
        classes_in_both=[classes[c] for c in split.both],
        classes_without_test=[classes[c] for c, n in enumerate(counts["test"]) if n == 0],
        profile_shortfall={classes[c]: n for c, n in split.shortfall.items()},
        skipped=len(skipped), skipped_sample=[f"{p}: {why}" for p, why in skipped[:SKIP_SAMPLE]],
        ignored_files=src.ignored, channel_modes=dict(src.modes), in_memory=memory, store_size=size,
        memory_bytes=int(pixels.numel()) if isinstance(pixels, torch.Tensor) else 0,
        recipe=recipe.to_dict(), augment=augmentation.to_dict(), load_s=round(time.perf_counter() - start, 3),
    )
    evaluate = EvalTransform(resolution)
    train = _dataset(pixels, pos[split.train], labels[split.train], size, TrainTransform(resolution, augmentation))
    return DataBundle(
        train, _dataset(pixels, pos[split.selection], labels[split.selection], size, evaluate),
        _dataset(pixels, pos[split.test], labels[split.test], size, evaluate), list(classes),
        counts["train"], counts["selection"], counts["test"], report,
        train_eval=train.with_transform(evaluate), recipe=recipe,
        settings=DataSettings(None if path is None else str(Path(path).expanduser().absolute()), selection_ratio,
                              test_ratio, seed, max_per_class),
    )


def _pixels(
    src: Source, split: Split, size: int, in_memory: bool | None
) -> tuple[torch.Tensor | list[str], np.ndarray, list[tuple[str, str]]]:
    """``(pixels, pos, skipped)``: an in-memory uint8 store (decoded once when it fits in
    :data:`MEMORY_LIMIT_BYTES`, or as ``in_memory`` says) or the file list, and ``pos[i]``, item ``i``'s row.
    Files that fail to decode join ``skipped`` and leave the split (in place)."""
    rows = np.arange(len(src.labels))
    if src.store is not None:
        return src.store, rows, list(src.skipped)
    needed = np.union1d(np.union1d(split.train, split.selection), split.test)
    if not (len(needed) * 3 * size * size <= MEMORY_LIMIT_BYTES if in_memory is None else in_memory):
        return src.paths, rows, list(src.skipped)
    store, pos, failed = decode(src.paths, needed, size)
    ok = pos >= 0
    split.train, split.selection, split.test = (s[ok[s]] for s in (split.train, split.selection, split.test))
    return store, pos, [*src.skipped, *failed]


def _dataset(
    pixels: torch.Tensor | list[str], rows: np.ndarray, labels: np.ndarray, size: int, transform: Transform
) -> TensorImageDataset | ImagePathDataset:
    """Items ``rows`` of an in-memory store (tensor) or of a list of files (lazy)."""
    y = torch.as_tensor(labels, dtype=torch.int64)
    if isinstance(pixels, torch.Tensor):
        return TensorImageDataset(pixels, torch.as_tensor(rows, dtype=torch.int64), y, transform)
    return ImagePathDataset([pixels[i] for i in rows], y, size, transform)
