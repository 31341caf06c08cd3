"""How sure a front is: bootstrap intervals of accuracy, the spread over proxy seeds, and ties between members.

**Accuracy.** A proxy run scores N selection images; its top-1 and balanced accuracy are estimates whose
noise comes from *which* images were scored and, for a short training run, from the seed.
:func:`accuracy_estimate` takes the correctness of every scored image under each of K proxy seeds
(a K × N array) and returns the mean over the seeds with a percentile-bootstrap interval:

* each of :data:`RESAMPLES` resamples draws, **within each class**, as many images as the class has, with
  replacement (the selection split is stratified, so its class counts are fixed by design and a resample
  keeps them; balanced accuracy is then the mean of per-class recalls over the classes that have images);
* with K ≥ 2 seeds a resample also draws K seeds with replacement (from its own random stream, so the
  image draws are those of one seed), and the interval covers the seed noise as well;
* the interval is the central :data:`LEVEL` (90 %) of the resampled values (5th and 95th percentiles);
  it is seeded: the same correctness gives the same interval.

With one seed and one class the resampled count of correct images is Binomial(n, p̂), so the interval is
the binomial's 5 % and 95 % quantiles divided by n (tests/test_uncertainty.py checks this and, by exact
enumeration, the other cases). The spread over seeds is also reported as the per-seed values and their
sample standard deviation.

**Ties.** Two front members are *tied* when, on every objective, their intervals overlap: the accuracy
intervals above and the latency predictors' intervals (``latency_<T>_low``/``_high``). An objective
without an interval (MACs, parameters and memory are computed exactly; an accuracy from a custom
evaluator that gives none) is a point, which overlaps only an equal value. Two 90 % intervals that
overlap do not prove two members equal, and two that barely miss do not prove them different: a tie
says the search cannot rank them from what it measured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from search_space.errors import NasError

#: Bootstrap resamples per interval.
RESAMPLES = 1000
#: Central share of the resampled values that the interval covers.
LEVEL = 0.9
#: Attributes an accuracy estimate adds to a trial (besides ``acc`` and ``bacc``).
ACCURACY_ATTRS = ("acc_low", "acc_high", "bacc_low", "bacc_high", "acc_seeds", "bacc_seeds", "acc_sd", "bacc_sd")


class UncertaintyError(NasError):
    """The inputs of an accuracy estimate do not fit together (shapes, empty sets)."""


@dataclass(frozen=True)
class Interval:
    """A closed interval ``[low, high]``."""

    low: float
    high: float

    def overlaps(self, other: Interval) -> bool:
        """Whether the two intervals share at least one point."""
        return self.low <= other.high and other.low <= self.high


@dataclass(frozen=True)
class AccuracyEstimate:
    """Top-1 and balanced accuracy (means over the seeds), their bootstrap intervals and per-seed values."""

    top1: float
    balanced_acc: float
    top1_interval: Interval
    balanced_interval: Interval
    top1_seeds: tuple[float, ...]
    balanced_seeds: tuple[float, ...]

    def attrs(self) -> dict[str, Any]:
        """Trial attributes: ``acc_low/high``, ``bacc_low/high``; with 2+ seeds ``*_seeds`` and ``*_sd``."""
        out: dict[str, Any] = {"acc_low": self.top1_interval.low, "acc_high": self.top1_interval.high,
                               "bacc_low": self.balanced_interval.low, "bacc_high": self.balanced_interval.high}
        if len(self.top1_seeds) > 1:
            out.update(acc_seeds=list(self.top1_seeds), bacc_seeds=list(self.balanced_seeds),
                       acc_sd=_sd(self.top1_seeds), bacc_sd=_sd(self.balanced_seeds))
        return out


def _sd(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1))


def _inputs(labels: Sequence[int] | np.ndarray, correct: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` (N,) as int64 and ``correct`` as a float (K, N) array; shapes checked."""
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    hits = np.atleast_2d(np.asarray(correct, dtype=float))
    if hits.ndim != 2 or hits.shape[1] != len(y) or len(y) == 0 or hits.shape[0] == 0:
        raise UncertaintyError(f"correctness of shape {hits.shape} does not fit {len(y)} labelled images",
                               "give one row of per-image correctness per seed, one column per scored image")
    return y, hits


def bootstrap_replicates(labels: Sequence[int] | np.ndarray, correct: Sequence[Any] | np.ndarray,
                         resamples: int = RESAMPLES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Resampled ``(top1, balanced_acc)``, each of shape ``(resamples,)`` (see the module docstring).

    ``labels`` (N,) are the scored images' classes; ``correct`` (K, N) or (N,) says which of them each of
    K seeds got right (booleans or 0/1).
    """
    y, hits = _inputs(labels, correct)
    k = hits.shape[0]
    seed_rng, image_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    weights = (seed_rng.multinomial(k, np.full(k, 1 / k), size=resamples) / k if k > 1
               else np.ones((resamples, 1)))  # (B, K): how often each seed is drawn, as a share
    total = np.zeros(resamples)
    recalls = []
    for c in np.unique(y):
        scores = weights @ hits[:, y == c]  # (B, n_c): each image's correctness averaged over the drawn seeds
        n_c = scores.shape[1]
        picks = image_rng.integers(0, n_c, size=(resamples, n_c))  # (B, n_c) images drawn with replacement
        sums = np.take_along_axis(scores, picks, axis=1).sum(axis=1)
        total += sums
        recalls.append(sums / n_c)
    return total / len(y), np.mean(recalls, axis=0)


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> Interval:
    """The central ``level`` of ``values``: their ``(1 − level)/2`` and ``(1 + level)/2`` quantiles."""
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(low), float(high))


def accuracy_estimate(labels: Sequence[int] | np.ndarray, correct: Sequence[Any] | np.ndarray, *,
                      resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> AccuracyEstimate:
    """Accuracy of K proxy seeds on the same N scored images, with bootstrap intervals (module docstring)."""
    y, hits = _inputs(labels, correct)
    classes = np.unique(y)
    top1_seeds = hits.mean(axis=1)
    balanced_seeds = np.mean([hits[:, y == c].mean(axis=1) for c in classes], axis=0)
    top1, balanced = bootstrap_replicates(y, hits, resamples, seed)
    return AccuracyEstimate(
        top1=float(top1_seeds.mean()), balanced_acc=float(balanced_seeds.mean()),
        top1_interval=percentile_interval(top1, level), balanced_interval=percentile_interval(balanced, level),
        top1_seeds=tuple(float(v) for v in top1_seeds), balanced_seeds=tuple(float(v) for v in balanced_seeds),
    )


# -- ties on a front --------------------------------------------------------------------------------

def interval(row: Mapping[str, Any], name: str) -> Interval:
    """The interval of objective ``name`` in a front row: ``<name>_low``/``<name>_high``, else the value itself."""
    value = float(row[name])
    low, high = row.get(f"{name}_low"), row.get(f"{name}_high")
    if low is None or high is None or not (math.isfinite(float(low)) and math.isfinite(float(high))):
        return Interval(value, value)
    return Interval(float(low), float(high))


def tied(a: Mapping[str, Any], b: Mapping[str, Any], names: Sequence[str]) -> bool:
    """Whether rows ``a`` and ``b`` are tied: their intervals overlap on every objective in ``names``."""
    return all(interval(a, n).overlaps(interval(b, n)) for n in names)


def ties(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[list[int]]:
    """For each row, the trial ``number`` of every other row it is tied with (ascending)."""
    return [sorted(b["number"] for b in rows if b["number"] != a["number"] and tied(a, b, names)) for a in rows]


def has_intervals(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[str]:
    """The objectives among ``names`` for which some row carries an interval."""
    return [n for n in names if any(f"{n}_low" in r and f"{n}_high" in r for r in rows)]
