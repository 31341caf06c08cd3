"""Data-set statistics as the seed reported them: per-class counts, resolutions, channel modes, plots.

Only image headers are read (``PIL.Image.open`` does not decode pixels), so a 50k-image folder takes
seconds. Both folder layouts work; the class counts add up train and val images of a class (the seed's
count table covered all 50,003 images). A file that is empty or not an image is counted as unreadable;
a file whose header is intact but whose pixel data is truncated is not detected here (``load_data``
finds it when it decodes).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search_space.io import atomic_path
from trials.errors import DataError
from trials.folders import LAYOUT_FOLDERS, scan_images

SMALL_SIDE = 200  # the seed: "most of them are smaller than 200*200"
DESCRIBE_KEYS = ("count", "mean", "std", "min", "25%", "50%", "75%", "max")


def describe(values: Sequence[float]) -> dict[str, float]:
    """pandas ``Series.describe()`` without pandas: count, mean, std (ddof=1), min, quartiles
    (linear interpolation), max. ``std`` is NaN for a single value; an empty input is a DataError."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise DataError("no values to describe", "the data set has no classes")
    q25, q50, q75 = np.percentile(x, [25, 50, 75], method="linear")
    return {"count": float(x.size), "mean": float(x.mean()),
            "std": float(x.std(ddof=1)) if x.size > 1 else math.nan, "min": float(x.min()),
            "25%": float(q25), "50%": float(q50), "75%": float(q75), "max": float(x.max())}


@dataclass
class DatasetStats:
    """Counts and shapes of an image folder. ``sizes`` is an ``(N, 2)`` int array of (width, height)."""

    root: str
    layout: str
    classes: list[str]
    counts: list[int]
    split_counts: dict[str, list[int]]
    sizes: np.ndarray
    modes: dict[str, int]
    unreadable: int = 0
    unreadable_sample: list[str] = field(default_factory=list)
    ignored_files: int = 0

    @property
    def images(self) -> int:
        """Readable images."""
        return int(sum(self.counts))

    @property
    def count_summary(self) -> dict[str, float]:
        """:func:`describe` of the per-class counts (the seed's statistics table)."""
        return describe(self.counts)

    @property
    def distinct_resolutions(self) -> int:
        """Number of distinct (width, height) pairs."""
        return len({(int(w), int(h)) for w, h in self.sizes}) if len(self.sizes) else 0

    @property
    def share_small(self) -> float:
        """Share of images with both sides under :data:`SMALL_SIDE` px."""
        if not len(self.sizes):
            return 0.0
        return float(np.mean((self.sizes[:, 0] < SMALL_SIDE) & (self.sizes[:, 1] < SMALL_SIDE)))

    @property
    def imbalance_factor(self) -> float:
        """Largest class / smallest class (inf when a class is empty)."""
        return max(self.counts) / min(self.counts) if min(self.counts) else math.inf

    def summary(self) -> dict[str, Any]:
        """Headline figures: images, classes, the count statistics, resolutions, channel modes."""
        w, h = (self.sizes[:, 0], self.sizes[:, 1]) if len(self.sizes) else (np.zeros(1), np.zeros(1))
        return {"root": self.root, "layout": self.layout, "images": self.images, "classes": len(self.classes),
                **{f"count_{k}": v for k, v in self.count_summary.items() if k != "count"},
                "imbalance_factor": self.imbalance_factor,
                "distinct_resolutions": self.distinct_resolutions,
                f"share_under_{SMALL_SIDE}x{SMALL_SIDE}": self.share_small,
                "median_width": float(np.median(w)), "median_height": float(np.median(h)),
                "channel_modes": dict(self.modes), "unreadable": self.unreadable,
                "ignored_files": self.ignored_files}

    def describe_rows(self) -> list[dict[str, Any]]:
        """The seed's statistics table: one row per statistic."""
        return [{"stat": k, "num": v} for k, v in self.count_summary.items()]

    def class_rows(self) -> list[dict[str, Any]]:
        """One row per class, largest first: name, count (and per split in the train/val layout)."""
        rows = []
        for c in np.argsort(-np.asarray(self.counts), kind="stable"):
            row: dict[str, Any] = {"class": self.classes[c], "count": self.counts[c]}
            for split, counts in self.split_counts.items():
                row[split] = counts[c]
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: the summary, the statistics and the class rows (not the raw sizes)."""
        return {**self.summary(), "count_stats": self.count_summary, "per_class": self.class_rows(),
                "unreadable_sample": list(self.unreadable_sample)}


def dataset_stats(path: str | os.PathLike[str]) -> DatasetStats:
    """Statistics of the image folder at ``path`` (either layout; headers only). A class without images
    counts 0; a folder without any readable image is a DataError."""
    scan = scan_images(path)
    if not scan.images:
        raise DataError(f"no readable image under {scan.root} ({len(scan.skipped)} files skipped)",
                        "expected PATH/<class>/<image> files (jpg, png, …)")
    k = len(scan.classes)
    labels = np.array([im.label for im in scan.images], dtype=np.int64)
    split_counts: dict[str, list[int]] = {}
    if scan.layout == LAYOUT_FOLDERS:
        for split in ("train", "val"):
            mask = np.array([im.split == split for im in scan.images], dtype=bool)
            split_counts[split] = np.bincount(labels[mask], minlength=k).tolist() if mask.any() else [0] * k
    sizes = np.array([(im.width, im.height) for im in scan.images], dtype=np.int64).reshape(-1, 2)
    return DatasetStats(
        root=str(scan.root), layout=scan.layout, classes=scan.classes,
        counts=np.bincount(labels, minlength=k).tolist() if len(labels) else [0] * k,
        split_counts=split_counts, sizes=sizes, modes=dict(Counter(im.mode for im in scan.images)),
        unreadable=len(scan.skipped), unreadable_sample=[f"{p}: {why}" for p, why in scan.skipped[:10]],
        ignored_files=scan.ignored,
    )


def save_class_histogram(stats: DatasetStats, path: str | os.PathLike[str]) -> Path:
    """Bar chart of images per class, sorted descending (the seed's figure), as a PNG written atomically."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    order = np.argsort(-np.asarray(stats.counts), kind="stable")
    counts = np.asarray(stats.counts)[order]
    fig = Figure(figsize=(max(6.0, min(18.0, 0.12 * len(counts) + 4)), 4.5), dpi=100)
    ax = fig.add_subplot()
    ax.bar(range(len(counts)), counts, width=0.85, color="#4477aa")
    ax.set_xlabel("class (sorted by image count)")
    ax.set_ylabel("images")
    ax.set_title(f"{stats.images} images in {len(counts)} classes, imbalance factor {stats.imbalance_factor:.0f}")
    if len(counts) <= 40:
        ax.set_xticks(range(len(counts)), [stats.classes[c] for c in order], rotation=90, fontsize=7)
    ax.margins(x=0.01)
    fig.tight_layout()
    return _save(fig, path)


def save_resolution_scatter(stats: DatasetStats, path: str | os.PathLike[str]) -> Path:
    """Scatter of image width vs height (one dot per image), with the 200×200 box, as a PNG written atomically."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 6), dpi=100)
    ax = fig.add_subplot()
    if len(stats.sizes):
        ax.scatter(stats.sizes[:, 0], stats.sizes[:, 1], s=4, alpha=0.3, color="#cc6677", linewidths=0)
    ax.plot([0, SMALL_SIDE, SMALL_SIDE], [SMALL_SIDE, SMALL_SIDE, 0], "--", color="gray", linewidth=1)
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title(f"{stats.distinct_resolutions} distinct resolutions, "
                 f"{stats.share_small:.0%} under {SMALL_SIDE}×{SMALL_SIDE}")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png")
    return target
