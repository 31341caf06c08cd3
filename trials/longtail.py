"""Long-tail profiles and the per-class split rules (pure numpy, deterministic with a seed).

Profiles are lists of targets by rank: rank 0 is the most images. :func:`rank_targets` gives rank ``i``
to the ``i``-th largest class, ties broken by class index (sorted-name order, torchvision's ImageFolder
order): on a balanced source — the usual case, e.g. CIFAR-10 → CIFAR-10-LT — class ``i`` in name order
gets ``n_i``; on an already long-tailed source the profile follows the existing order of sizes instead
of asking a small class for more images than it has.

- ``"exp:IF"``: ``n_i = floor(n_max · IF^(−i/(C−1)))`` (the CIFAR-10-LT rule; ``n_max`` is the largest
  class, a tiny ``1e-9`` is added before the floor so that ``5000 · 100^(−1)`` stays 50).
- ``"seed"``: the seed's training-set class sizes (``resources/seed_class_counts.csv``, 89 classes, 4609 → 8)
  sorted descending and scaled so that the first equals ``n_max``. With ``C ≤ 89`` classes the first ``C``
  values are used; with more, the 89 sorted values are resampled at ``C`` evenly spaced quantiles (linear
  interpolation), which keeps the seed's overall imbalance factor (576).
- ``"none"``: leave the data as it is.

Every target is at least 1, and never more than a class holds (a shortfall is reported by the caller).

The split rules: :func:`split_counts` / :func:`carve_per_class` (train / selection / test, see
:func:`trials.data.load_data`), and :func:`shape_subset`, the proxy's smaller training set with the same
class-count shape.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from trials.errors import DataError

SEED_COUNTS_FILE = Path(__file__).parent / "resources" / "seed_class_counts.csv"
_EPS = 1e-9  # guards floor() against 49.99999999 where the exact product is an integer


@dataclass(frozen=True)
class LongTail:
    """A parsed ``long_tail`` argument: ``kind`` is ``"exp"``, ``"seed"`` or ``"none"``."""

    kind: str
    factor: float | None = None

    def __str__(self) -> str:
        return f"exp:{self.factor:g}" if self.kind == "exp" else self.kind

    def targets(self, n_max: int, num_classes: int) -> list[int] | None:
        """Target images per class (class order), or None for ``"none"``."""
        if self.kind == "exp":
            return exp_counts(n_max, num_classes, self.factor or 1.0)
        if self.kind == "seed":
            return seed_counts(n_max, num_classes)
        return None


def parse_long_tail(text: str | None) -> LongTail | None:
    """Parse ``"exp:IF"``, ``"seed"`` or ``"none"`` (None stays None); anything else → DataError."""
    if text is None:
        return None
    value = text.strip().lower()
    if value in ("seed", "none"):
        return LongTail(value)
    if value.startswith("exp:"):
        try:
            factor = float(value[4:])
        except ValueError:
            factor = math.nan
        if not math.isfinite(factor) or factor < 1:
            raise DataError(f"long-tail imbalance factor {value[4:]!r} is not a number ≥ 1",
                            "use e.g. exp:10 or exp:100 (largest class / smallest class)")
        return LongTail("exp", factor)
    raise DataError(f"unknown long-tail profile {text!r}", "use exp:IF (e.g. exp:100), seed or none")


def long_tail_name(text: str | None) -> str | None:
    """The canonical name of a ``long_tail`` argument (``"exp:10"``, ``"seed"``), None for none."""
    profile = parse_long_tail(text)
    return str(profile) if profile is not None and profile.kind != "none" else None


def exp_counts(n_max: int, num_classes: int, factor: float) -> list[int]:
    """``max(1, floor(n_max · factor^(−i/(C−1))))`` for ``i = 0..C−1`` (C = 1 gives ``[n_max]``)."""
    if num_classes == 1:
        return [int(n_max)]
    return [max(1, math.floor(n_max * factor ** (-i / (num_classes - 1)) + _EPS)) for i in range(num_classes)]


@cache
def seed_profile() -> tuple[int, ...]:
    """The seed's 89 training-set class sizes, sorted descending (from the bundled CSV)."""
    with SEED_COUNTS_FILE.open(newline="", encoding="utf-8") as handle:
        counts = [int(row["train_images"]) for row in csv.DictReader(handle)]
    return tuple(sorted(counts, reverse=True))


def seed_counts(n_max: int, num_classes: int) -> list[int]:
    """The seed's class-size profile scaled to ``n_max`` for ``num_classes`` classes (see module doc)."""
    profile = np.asarray(seed_profile(), dtype=float)
    if num_classes <= len(profile):
        shape = profile[:num_classes]
    else:
        positions = np.linspace(0, len(profile) - 1, num_classes)
        shape = np.interp(positions, np.arange(len(profile)), profile)
    return [max(1, math.floor(n_max * v / shape[0] + _EPS)) for v in shape]


def rank_targets(targets: Sequence[int], sizes: Sequence[int]) -> list[int]:
    """Per-class targets: rank ``i`` of ``targets`` to the ``i``-th largest of ``sizes`` (ties: lower index first)."""
    order = sorted(range(len(sizes)), key=lambda c: (-sizes[c], c))
    out = [0] * len(sizes)
    for rank, c in enumerate(order):
        out[c] = int(targets[rank])
    return out


#: RNG streams of the carved splits: the test split's draw never depends on the selection split's.
TEST_STREAM, SELECTION_STREAM = 3, 0


def carve_count(n: int, ratio: float) -> int:
    """Images a class of ``n`` gives to a carved split: ``floor(ratio · n)`` (the seed's validation rule)."""
    return math.floor(ratio * n + _EPS)


def carve_per_class(
    indices: np.ndarray, labels: np.ndarray, counts: Sequence[int], seed: int, stream: int
) -> tuple[np.ndarray, np.ndarray]:
    """Move ``counts[c]`` random items of each class ``c`` out of ``indices``: returns ``(rest, carved)``, sorted.

    Class ``c``'s draw depends only on ``(seed, c, stream)`` and its members, so adding a class, or changing
    how many items another split takes, never moves it.
    """
    rest, carved = [], []
    for c, k in enumerate(counts):
        members = np.sort(indices[labels[indices] == c])
        perm = np.random.default_rng([seed, c, stream]).permutation(len(members))
        carved.append(members[perm[:k]])
        rest.append(members[perm[k:]])
    empty = np.zeros(0, dtype=np.int64)
    return (np.sort(np.concatenate(rest)) if rest else empty), (np.sort(np.concatenate(carved)) if carved else empty)


@dataclass
class Split:
    """Item indices of the three splits. ``both``: classes too small for a selection image, whose training
    items are also their selection; ``shortfall``: ``{class: images missing}`` after a long tail."""

    train: np.ndarray
    selection: np.ndarray
    test: np.ndarray
    both: list[int]
    shortfall: dict[int, int] = field(default_factory=dict)


def split_items(
    labels: np.ndarray, pool: np.ndarray, test: np.ndarray | None, selection_ratio: float, test_ratio: float,
    seed: int, num_classes: int,
) -> Split:
    """Split ``pool`` (indices into ``labels``) per class: with ``test=None`` the test split is carved first
    (``floor(test_ratio · n)``), then the selection split (``floor(selection_ratio · n)``, ``n`` the class's
    pool size) from the rest; a given ``test`` (a test folder) is kept as is. See :func:`split_counts`."""
    sizes = np.bincount(labels[pool], minlength=num_classes)
    if test is None:
        pool, test = carve_per_class(pool, labels, [carve_count(n, test_ratio) for n in sizes], seed, TEST_STREAM)
    k_sel = [carve_count(int(n), selection_ratio) for n in sizes]
    train, selection = carve_per_class(pool, labels, k_sel, seed, SELECTION_STREAM)
    both = [c for c in range(num_classes) if k_sel[c] == 0 and sizes[c] > 0]
    if both:
        selection = np.sort(np.concatenate([selection, train[np.isin(labels[train], both)]]))
    return Split(train, selection, test, both)


def apply_long_tail(split: Split, labels: np.ndarray, num_classes: int, long_tail: str | None, seed: int) -> None:
    """Subsample ``split.train`` to a long-tail profile (in place; selection and test untouched)."""
    profile = parse_long_tail(long_tail)
    sizes = np.bincount(labels[split.train], minlength=num_classes)
    targets = profile.targets(int(sizes.max()), num_classes) if profile else None
    if targets is not None:
        split.train, split.shortfall = subsample_per_class(split.train, labels, rank_targets(targets, sizes), seed)


def split_counts(
    pool: Sequence[int], selection_ratio: float, test_ratio: float | None
) -> tuple[list[int], list[int], list[int]]:
    """Per-class ``(train, selection, test)`` sizes of the split rule (:func:`trials.data.load_data`).

    ``pool[c]`` is class ``c``'s images before the split (the training folder's when ``test_ratio`` is None:
    the test split is then a folder of its own and counts 0 here). The test split takes
    ``floor(test_ratio · n)`` first, the selection split ``floor(selection_ratio · n)`` of the rest (``n``
    the whole class, so the selection size does not depend on the test ratio); a class too small for a
    selection image keeps all its images for training and is evaluated on them (``selection == train``).
    """
    train, selection, test = [], [], []
    for n in pool:
        k_test = carve_count(n, test_ratio) if test_ratio is not None else 0
        k_sel = carve_count(n, selection_ratio)
        train.append(n - k_test - k_sel)
        selection.append(k_sel if k_sel else n - k_test)
        test.append(k_test)
    return train, selection, test


def long_tail_counts(sizes: Sequence[int], profile: LongTail | None) -> list[int]:
    """Training images per class after applying ``profile`` to a split of ``sizes`` (no shortfall beyond a size)."""
    targets = profile.targets(max(sizes), len(sizes)) if profile and sizes else None
    if targets is None:
        return list(sizes)
    return [min(t, n) for t, n in zip(rank_targets(targets, sizes), sizes)]


def subsample_per_class(
    indices: np.ndarray, labels: np.ndarray, targets: Sequence[int], seed: int
) -> tuple[np.ndarray, dict[int, int]]:
    """Keep ``targets[c]`` random items of each class among ``indices`` (all of them if fewer).

    Returns the kept indices (sorted) and ``{class: missing}`` for classes that held fewer than their target.
    """
    kept, short = [], {}
    for c, target in enumerate(targets):
        members = indices[labels[indices] == c]
        if len(members) < target:
            short[c] = int(target - len(members))
        rng = np.random.default_rng([seed, c, 1])
        kept.append(np.sort(rng.permutation(members)[: min(target, len(members))]))
    return (np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)), short


def cap_per_class(indices: np.ndarray, labels: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """At most ``cap`` random items per class among ``indices`` (``max_per_class``), order kept."""
    if cap < 1:
        raise DataError(f"max_per_class {cap} must be at least 1", "omit it to use every image")
    kept = []
    for c in np.unique(labels[indices]):
        members = indices[labels[indices] == c]
        kept.append(np.random.default_rng([seed, int(c), 2]).permutation(members)[:cap])
    return np.sort(np.concatenate(kept)) if kept else indices


#: Images the smallest class keeps in a :func:`shape_subset` (when it has them): rounding a class of k images
#: moves the imbalance ratio by at most 1/(2k), so 5 keeps the shape within ±10 %.
SUBSET_MIN_PER_CLASS = 5


def shape_subset(labels: np.ndarray, max_images: int | None, seed: int,
                 min_per_class: int = SUBSET_MIN_PER_CLASS) -> np.ndarray:
    """Positions of a stratified subset of ``labels`` that keeps the class-count *shape*.

    Every class is scaled by the same factor ``f``: the largest that keeps about ``max_images`` in all,
    raised so that the smallest class keeps ``min_per_class`` images (or all it has). ``f`` is then
    pinned to ``k_min / n_min`` so that the smallest class is exact and the imbalance ratio moves only by
    the rounding of the larger classes. Class ``c`` keeps ``round(f · n_c)`` images drawn with
    ``(seed, c)``; ``max_images=None`` keeps everything. Returns sorted positions.
    """
    counts = np.bincount(labels) if len(labels) else np.zeros(0, dtype=np.int64)
    present = counts[counts > 0]
    if max_images is None or not len(present) or max_images >= len(labels):
        return np.arange(len(labels))
    n_min = int(present.min())
    factor = min(1.0, max(max_images / len(labels), min_per_class / n_min))
    k_min = max(1, round(factor * n_min))
    factor = k_min / n_min
    kept = []
    for c, n in enumerate(counts):
        members = np.flatnonzero(labels == c)
        k = min(int(n), max(1, round(factor * n))) if n else 0
        kept.append(np.random.default_rng([seed, c, 4]).permutation(members)[:k])
    return np.sort(np.concatenate(kept))
