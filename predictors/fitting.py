"""Fitting one family to the devices of a table, and the family selection rule.

For a family with a prior (the default, see :mod:`predictors.families`) device D's coefficients are shrunk
toward the mean *shape* of the other devices in the table (devices with at least :data:`PRIOR_MIN_POINTS`
measured points), with λ chosen by leave-one-out on D's own points. That inner leave-one-out is *honest*:
while D's point for architecture a is held out, the prior is re-estimated without a on every device, so a's
latency elsewhere cannot vouch for its prediction on D. The held-out residuals of the chosen λ are the
interval's conformity scores; devices with too few points pool them with the other devices'
(:mod:`predictors.calibration`).

:func:`select_family` is the rule that picks a family for a table: the lowest mean over devices of the honest
leave-one-out MAPE (every measured architecture dropped from every device and predicted by a refit on the
rest), among the families none of whose constants was tuned on the seed table.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from predictors.calibration import MIN_SCORES, conformity_scores, interval_scale
from predictors.domain import Domain
from predictors.errors import PredictorError
from predictors.families import DEFAULT_FAMILY, FAMILIES, Family, device_shape, fit_family, get_family, mean_shape
from predictors.features import design_matrix, spec_features
from predictors.tables import HardwareTable, TableRow
from search_space import ArchSpec

BASELINE_FAMILY = "macs"
#: Families the selection rule may pick: not the baseline, not those with a constant tuned on the seed table.
SELECTABLE = tuple(name for name, f in FAMILIES.items() if name != BASELINE_FAMILY and not f.seed_tuned)
PRIOR_MIN_POINTS = 3  # a device contributes to the cross-device prior only with at least this many points


@dataclass(frozen=True)
class DevicePoints:
    """A device's measured ('ok') specs and latencies, and the specs that failed."""

    specs: tuple[ArchSpec, ...]
    latency_ms: np.ndarray
    failed: tuple[ArchSpec, ...]


@dataclass(frozen=True)
class DeviceFit:
    """One device's fit before calibration: coefficients, λ, prior, and honest leave-one-out scores."""

    key: str
    points: DevicePoints
    beta: np.ndarray
    lam: float
    prior: np.ndarray | None
    scores: np.ndarray


def device_points(table: HardwareTable, key: str) -> DevicePoints:
    """Batch-1 rows of ``key``: the measured points and the failures."""
    rows = table.rows_for(key)
    ok = [r for r in rows if r.ok]
    return DevicePoints(tuple(r.spec for r in ok), np.array([r.latency_ms for r in ok], dtype=float),
                        tuple(r.spec for r in rows if not r.ok))


class TableFits:
    """Fits of one family to the devices of one table, sharing the cross-device shapes (computed lazily and
    cached per excluded architecture) and each device's fit."""

    def __init__(self, table: HardwareTable, family: str = DEFAULT_FAMILY) -> None:
        self.table = table
        self.family: Family = get_family(family)
        self.points = {key: device_points(table, key) for key in table.device_keys}
        self._shapes: dict[ArchSpec | None, dict[str, np.ndarray]] = {}
        self._fits: dict[str, DeviceFit] = {}

    def measured_keys(self) -> list[str]:
        """Device keys with at least one measured latency, in table order."""
        return [k for k, p in self.points.items() if len(p.specs)]

    def shapes(self, without: ArchSpec | None = None) -> dict[str, np.ndarray]:
        """Each device's shape (share of each term in the reference latency), fitted without ``without``."""
        if without in self._shapes:
            return self._shapes[without]
        full = self.shapes() if without is not None else None
        out = {}
        for key, pts in self.points.items():
            if full is not None and without not in pts.specs:
                if key in full:
                    out[key] = full[key]
                continue
            keep = [i for i, s in enumerate(pts.specs) if s != without]
            if len(keep) >= PRIOR_MIN_POINTS:
                specs = [pts.specs[i] for i in keep]
                shape = device_shape(design_matrix(specs, self.family.features), pts.latency_ms[keep])
                if shape is not None:
                    out[key] = shape
        self._shapes[without] = out
        return out

    def prior(self, key: str, without: ArchSpec | None = None) -> np.ndarray:
        """The mean shape of the devices other than ``key`` (estimated without ``without``)."""
        shapes = self.shapes(without)
        return mean_shape([s for k, s in shapes.items() if k != key], len(self.family.features))

    def fit(self, key: str) -> DeviceFit:
        """The device's coefficients and honest leave-one-out conformity scores (cached)."""
        if key in self._fits:
            return self._fits[key]
        pts = self.points[key]
        if not pts.specs:
            raise PredictorError(f"device {key!r} has no measured latency (batch 1)",
                                 "add 'ok' rows for it, or leave it out")
        prior = fold_priors = None
        if self.family.uses_prior:
            prior = self.prior(key)
            fold_priors = [self.prior(key, without=s) for s in pts.specs]
        result = fit_family(self.family, design_matrix(pts.specs, self.family.features), pts.latency_ms, prior,
                            fold_priors)
        distances = [Domain.from_specs(pts.specs[:i] + pts.specs[i + 1:]).distance(s)
                     for i, s in enumerate(pts.specs)] if len(pts.specs) > 1 else []
        scores = conformity_scores(result.loo_log_residuals, distances)
        fit = DeviceFit(key, pts, result.beta, result.lam, prior, scores)
        self._fits[key] = fit
        return fit

    def interval(self, key: str) -> tuple[float, str]:
        """The conformal scale ``q`` of ``key`` and its basis (pooling with the other devices when it has few
        scores; see :mod:`predictors.calibration`)."""
        own = self.fit(key).scores
        pooled: list[float] = []
        if len(own) < MIN_SCORES:
            for other in self.measured_keys():
                if other != key:
                    pooled.extend(self.fit(other).scores)
        return interval_scale(own.tolist(), pooled)

    def predict_ms(self, key: str, spec: ArchSpec) -> float:
        """Point prediction of ``spec`` on ``key`` (what model selection compares)."""
        return float(spec_features(spec).vector(self.family.features) @ self.fit(key).beta)


# -- honest leave-one-out of point predictions, and the family selection rule built on it -----------------


def without_arch(table: HardwareTable, row: TableRow) -> HardwareTable:
    """The table without ``row``'s architecture on any device (every row with the same spec and batch)."""
    return table.with_rows(r for r in table.rows if not (r.spec == row.spec and r.batch == row.batch))


def fold_key(table: HardwareTable, device: str, precision: str) -> str:
    """The key of (device, precision) in ``table`` (a fold may have turned ``name:precision`` into ``name``)."""
    for key in table.device_keys:
        if table.device_precision(key) == (device, precision):
            return key
    raise PredictorError(f"device {device}:{precision} has no rows left")


def honest_folds(table: HardwareTable) -> Iterator[tuple[HardwareTable, list[tuple[str, TableRow]]]]:
    """For every measured architecture: the table without it on any device, and the (device key, row) pairs it
    holds out — one refit serves every device that measured it."""
    keys = [k for k in table.device_keys if sum(r.ok for r in table.rows_for(k)) >= 2]
    for spec in dict.fromkeys(r.spec for r in table.rows if r.ok and r.batch == 1):
        held = [(key, row) for key in keys for row in table.rows_for(key) if row.ok and row.spec == spec]
        if held:
            yield without_arch(table, held[0][1]), held


def family_scores(table: HardwareTable, candidates: Sequence[str] = SELECTABLE) -> dict[str, float]:
    """Mean over devices (with ≥ 2 points) of the honest leave-one-out MAPE (%) of each candidate family."""
    errors: dict[str, dict[str, list[float]]] = {name: {} for name in candidates}
    for rest, held in honest_folds(table):
        for name in candidates:
            fits = TableFits(rest, name)
            for key, row in held:
                dev, precision = table.device_precision(key)
                predicted = fits.predict_ms(fold_key(rest, dev, precision), row.spec)
                errors[name].setdefault(key, []).append(abs(100 * (predicted / float(row.latency_ms or 1) - 1)))
    return {name: float(np.mean([np.mean(v) for v in per.values()])) if per else math.inf
            for name, per in errors.items()}


@functools.lru_cache(maxsize=32)
def select_family(table: HardwareTable, candidates: tuple[str, ...] = SELECTABLE) -> str:
    """The selection rule: the candidate with the lowest mean honest-LOO MAPE over devices on ``table`` (ties:
    the earlier candidate). Candidates exclude the baseline and the families tuned on the seed table."""
    scores = family_scores(table, candidates)
    if not all(math.isfinite(v) for v in scores.values()):
        return DEFAULT_FAMILY  # no device has two points: nothing to choose with
    return min(candidates, key=lambda name: scores[name])
