"""A fitted per-device latency predictor: point prediction, calibrated interval, domain, feasibility; JSON.

:class:`DevicePredictor` is built by :func:`fit_predictors` below (or loaded with
:meth:`DevicePredictor.from_json`). Everything :meth:`DevicePredictor.predict` needs is precomputed, so a
prediction costs a cached cost-model lookup and a few dot products (microseconds).

* **Point**: ``ms = x·β`` over the family's features (:mod:`predictors.families`).
* **Interval** (nominally 90 %, :mod:`predictors.calibration`): ``[ms·e^(−w), ms·e^(w)]`` with
  ``w = q·(1 + d)``, ``q`` the split-conformal quantile of the device's honest leave-one-out scores and ``d``
  the spec's distance from the device's measured domain.
* **Domain** (:mod:`predictors.domain`): a spec outside the measured box is ``extrapolated``, and
  ``extrapolation`` says where and how far.
* **Feasibility** (:mod:`predictors.feasibility`): certain only where every memory hypothesis agrees.

How the coefficients, λ and the interval's scores are fitted: :mod:`predictors.fitting`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from predictors.calibration import COVERAGE as COVERAGE_NOMINAL
from predictors.calibration import half_width
from predictors.domain import Domain
from predictors.errors import PredictorError
from predictors.families import AUTO, DEFAULT_FAMILY, Family, get_family
from predictors.feasibility import MemoryBounds, memory_bounds
from predictors.features import REFERENCE, spec_features
from predictors.fitting import TableFits, select_family
from predictors.tables import HardwareTable, resolve_device
from search_space import ArchSpec
from search_space.errors import SpecError

JSON_FORMAT = "repvgg-hwnas/latency-predictor"
JSON_VERSION = 2
INTERVAL_BASES = ("own", "pooled", "floor")


@dataclass(frozen=True)
class LatencyPrediction:
    """Predicted batch-1 latency of one spec on one device, its interval, whether it runs, and whether the
    spec lies outside what the device's table measured."""

    device: str
    precision: str
    ms: float
    low: float
    high: float
    feasible: bool
    reason: str | None
    uncertain: bool = False  # feasibility is uncertain (the memory hypotheses disagree)
    extrapolated: bool = False  # the spec lies outside the measured domain
    extrapolation: str = ""  # where and how far, e.g. "MACs 0.5 M below the measured 36.9–573 M"; "" inside
    distance: float = 0.0  # domain distance (natural-log ratio beyond the measured range; 0 inside)


class DevicePredictor:
    """A fitted latency + feasibility model of one device and precision.

    Built by :func:`predictors.fit_predictors` or :meth:`from_json`; immutable after construction.
    ``interval_scale`` is the conformal quantile ``q`` and ``interval_basis`` says whose scores it came from
    (``"own"``, ``"pooled"`` with other devices, or the ``"floor"``).
    """

    def __init__(self, *, device: str, precision: str, family: str, beta: Sequence[float], lam: float,
                 prior: Sequence[float] | None, interval_scale: float, interval_basis: str,
                 train_specs: Sequence[str], train_latency_ms: Sequence[float], memory: MemoryBounds,
                 key: str | None = None) -> None:
        self.device = device
        self.precision = precision
        self.key = key or device
        self.family: Family = get_family(family)
        self.beta = np.asarray(beta, dtype=float)
        if self.beta.shape != (len(self.family.features),) or not np.all(np.isfinite(self.beta)):
            raise PredictorError(f"predictor of {device!r}: {len(self.beta)} coefficients for "
                                 f"{len(self.family.features)} features", "refit the predictor")
        self.lam = float(lam)
        self.prior = None if prior is None else np.asarray(prior, dtype=float)
        self.interval_scale = float(interval_scale)
        if not (math.isfinite(self.interval_scale) and self.interval_scale >= 0) \
                or interval_basis not in INTERVAL_BASES:
            raise PredictorError(f"predictor of {device!r}: bad interval scale {interval_scale!r} "
                                 f"({interval_basis!r})", "refit the predictor")
        self.interval_basis = interval_basis
        self.train_specs = tuple(train_specs)
        self.train_latency_ms = tuple(float(t) for t in train_latency_ms)
        self.memory = memory
        try:
            specs = [ArchSpec.parse(s) for s in self.train_specs]
        except SpecError as exc:
            raise PredictorError(f"predictor of {device!r} names a bad spec: {exc}") from exc
        if not specs or len(specs) != len(self.train_latency_ms):
            raise PredictorError(f"predictor of {device!r}: {len(specs)} specs for "
                                 f"{len(self.train_latency_ms)} latencies", "refit the predictor")
        self.domain = Domain.from_specs(specs)

    # -- asking ------------------------------------------------------------------------------------
    @property
    def memory_limit_kib(self) -> float | None:
        """Inferred on-chip memory limit (KiB, peak layer memory); None if no failure was seen."""
        return self.memory.limit_kib

    @property
    def n_points(self) -> int:
        """Number of measured latencies the predictor was fitted on."""
        return len(self.train_specs)

    def predict_ms(self, spec: ArchSpec) -> float:
        """Point prediction only (the fastest call)."""
        return float(spec_features(spec).vector(self.family.features) @ self.beta)

    def predict(self, spec: ArchSpec) -> LatencyPrediction:
        """Latency (ms) with a calibrated interval that widens outside the measured domain, and feasibility."""
        ms = self.predict_ms(spec)
        d = self.domain.distance(spec)
        w = half_width(self.interval_scale, d)
        verdict = self.memory.assess(spec)
        where = self.domain.describe(spec) if d > 0 else ""
        return LatencyPrediction(self.device, self.precision, ms, ms * math.exp(-w), ms * math.exp(w),
                                 verdict.feasible, verdict.reason, verdict.uncertain, d > 0, where, d)

    def coefficients(self) -> dict[str, float]:
        """β in physical units: ms per byte, per MAC, per activation byte, per conv, per inference."""
        out = {}
        for name, b in zip(self.family.features, self.beta):
            out[name] = float(b / REFERENCE[name]) if name in REFERENCE else float(b)
        return out

    # -- JSON --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (plain floats; ``repr`` round-trips them exactly)."""
        return {
            "format": JSON_FORMAT, "version": JSON_VERSION, "device": self.device, "precision": self.precision,
            "key": self.key, "family": self.family.name, "features": list(self.family.features),
            "beta": [float(b) for b in self.beta], "lam": self.lam,
            "prior": None if self.prior is None else [float(p) for p in self.prior],
            "interval": {"coverage": COVERAGE_NOMINAL, "scale": self.interval_scale, "basis": self.interval_basis},
            "domain": self.domain.to_dict(), "train_specs": list(self.train_specs),
            "train_latency_ms": list(self.train_latency_ms), "memory": self.memory.to_dict(),
        }

    def to_json(self) -> str:
        """JSON text of the predictor (never a pickle)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DevicePredictor:
        """Load a predictor written by :meth:`to_json`; a malformed document raises :class:`PredictorError`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PredictorError(f"predictor JSON does not parse: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != JSON_FORMAT:
            raise PredictorError("not a latency-predictor JSON document", "save fitted predictors to get one")
        if data.get("version") != JSON_VERSION:
            raise PredictorError(f"predictor JSON version {data.get('version')!r} is not supported",
                                 f"this version reads {JSON_VERSION}; refit the predictor and save it again")
        try:
            if list(data["features"]) != list(get_family(data["family"]).features):
                raise PredictorError("predictor JSON features do not match its family", "refit it")
            predictor = cls(device=data["device"], precision=data["precision"], family=data["family"],
                            beta=data["beta"], lam=data["lam"], prior=data["prior"],
                            interval_scale=data["interval"]["scale"], interval_basis=data["interval"]["basis"],
                            train_specs=data["train_specs"], train_latency_ms=data["train_latency_ms"],
                            memory=MemoryBounds.from_dict(data["memory"]), key=data.get("key"))
            if predictor.domain != Domain.from_dict(data["domain"]):
                raise PredictorError("predictor JSON domain does not match its measured specs", "refit it")
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, PredictorError):
                raise
            raise PredictorError(f"predictor JSON is incomplete or malformed: {exc!r}", "refit it") from exc
        return predictor

    def __repr__(self) -> str:
        return f"DevicePredictor({self.key!r}, family={self.family.name!r}, points={self.n_points})"


# -- fitting -------------------------------------------------------------------------------------------------


def build_predictor(fits: TableFits, key: str) -> DevicePredictor:
    """The calibrated predictor of ``key`` from a table's fits."""
    fit = fits.fit(key)
    q, basis = fits.interval(key)
    device, precision = fits.table.device_precision(key)
    pts = fit.points
    return DevicePredictor(device=device, precision=precision, family=fits.family.name, beta=fit.beta,
                           lam=fit.lam, prior=fit.prior, interval_scale=q, interval_basis=basis,
                           train_specs=[s.to_string() for s in pts.specs], train_latency_ms=pts.latency_ms.tolist(),
                           memory=memory_bounds(pts.specs, pts.failed), key=key)


def _concrete(table: HardwareTable, family: str) -> str:
    """``family``, or for ``"auto"`` the family the selection rule picks on ``table``."""
    return select_family(table) if family == AUTO else family


def fit_device(table: HardwareTable, key: str, family: str = DEFAULT_FAMILY,
               fits: TableFits | None = None) -> DevicePredictor:
    """Fit the predictor of one device key (``fits``: a :class:`TableFits` of the same table to share work).
    ``family="auto"`` fits the family :func:`predictors.fitting.select_family` picks on ``table``."""
    fits = fits if fits is not None and fits.table is table and fits.family.name == family else None
    return build_predictor(fits or TableFits(table, _concrete(table, family)), key)


def fit_predictors(table: HardwareTable, devices: Sequence[str] | None = None,
                   family: str = DEFAULT_FAMILY) -> dict[str, DevicePredictor]:
    """One predictor per device key. ``devices=None`` fits every device with a measured latency; names are
    resolved case-insensitively (an unknown one raises :class:`PredictorError` listing the known ones).
    ``family="auto"`` fits the family :func:`predictors.fitting.select_family` picks on ``table``."""
    fits = TableFits(table, _concrete(table, family))
    keys = fits.measured_keys() if devices is None else [resolve_device(table, d) for d in devices]
    return {key: build_predictor(fits, key) for key in dict.fromkeys(keys)}
