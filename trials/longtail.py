"""Long-tail profiles and the per-class split rule (pure numpy, deterministic with a seed).

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
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
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


def val_count(n: int, val_ratio: float) -> int:
    """Validation images of a class of ``n``: ``floor(val_ratio · n)`` (the seed's rule)."""
    return math.floor(val_ratio * n + _EPS)


def split_per_class(
    labels: np.ndarray, num_classes: int, val_ratio: float, seed: int
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Split item indices per class: ``floor(val_ratio · n)`` random items of each class go to validation.

    A class too small for one validation item goes into BOTH splits (the seed's class 81). Returns
    ``(train_idx, val_idx, both_classes)``; the choice of each class depends only on ``seed`` and the
    class index, so adding a class never reshuffles the others.
    """
    if not 0 < val_ratio < 1:
        raise DataError(f"val_ratio {val_ratio} is outside (0, 1)", "use e.g. 0.1 (the seed's) or 0.2")
    train, val, both = [], [], []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        k = val_count(len(members), val_ratio)
        if k == 0:
            both.append(c)
            train.append(members)
            val.append(members)
            continue
        perm = np.random.default_rng([seed, c]).permutation(len(members))
        val.append(np.sort(members[perm[:k]]))
        train.append(np.sort(members[perm[k:]]))
    empty = np.zeros(0, dtype=np.int64)
    return (np.concatenate(train) if train else empty), (np.concatenate(val) if val else empty), both


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
