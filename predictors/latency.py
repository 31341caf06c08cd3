"""Per-device latency predictors fitted on a hardware table, with intervals and feasibility; JSON in and out.

``fit_predictors(table)`` fits one :class:`DevicePredictor` per device key. For the default family
(``shrink``, see :mod:`predictors.families`) device D's coefficients are shrunk toward the mean *shape* of the
other devices in the table (devices with at least :data:`PRIOR_MIN_POINTS` measured points), with λ chosen by
leave-one-out on D's own points. Everything :meth:`DevicePredictor.predict` needs is precomputed, so a
prediction costs a cached cost-model lookup and a few dot products (microseconds).

Intervals: the log-scale residual ``s`` is the root mean square of the training points' leave-one-out log
residuals, pooled with a prior scale :data:`PRIOR_SCALE` worth :data:`PRIOR_SCALE_WEIGHT` points (so two or
three points cannot claim a tiny error). The half-width ``w = z·s·(1 + d)`` grows with ``d``, the log-ratio
distance from the spec's features to the nearest measured architecture (:func:`predictors.features.log_distance`):
``[ms·e^(−w), ms·e^(w)]``. ``z`` = 1.645 is nominally 90 %; the achieved leave-one-out coverage is reported by
``nas hw fit`` and the benchmark — with 3–6 points per device it is a rough guide, not a guarantee.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from predictors.errors import PredictorError
from predictors.families import DEFAULT_FAMILY, Family, device_shape, fit_family, get_family, mean_shape
from predictors.feasibility import MemoryBounds, memory_bounds
from predictors.features import REFERENCE, log_distance, spec_features
from predictors.tables import HardwareTable, resolve_device
from search_space import ArchSpec
from search_space.errors import SpecError

Z = 1.645
PRIOR_SCALE = 0.15  # log-scale residual assumed before any point is seen (~15 %)
PRIOR_SCALE_WEIGHT = 2.0  # …worth this many points when pooled with the device's own residuals
PRIOR_MIN_POINTS = 3  # a device contributes to the cross-device prior only with at least this many points
JSON_FORMAT = "repvgg-hwnas/latency-predictor"
JSON_VERSION = 1


@dataclass(frozen=True)
class LatencyPrediction:
    """Predicted batch-1 latency of one spec on one device, its interval, and whether it runs at all."""

    device: str
    precision: str
    ms: float
    low: float
    high: float
    feasible: bool
    reason: str | None
    uncertain: bool = False  # feasibility is uncertain (peak memory between the measured bounds)


class DevicePredictor:
    """A fitted latency + feasibility model of one device and precision.

    Built by :func:`fit_predictors` or :meth:`from_json`; immutable after construction.
    """

    def __init__(self, *, device: str, precision: str, family: str, beta: Sequence[float], lam: float,
                 prior: Sequence[float] | None, residual_scale: float, train_specs: Sequence[str],
                 train_latency_ms: Sequence[float], memory: MemoryBounds, key: str | None = None) -> None:
        self.device = device
        self.precision = precision
        self.key = key or device
        self.family: Family = get_family(family)
        self.beta = np.asarray(beta, dtype=float)
        if self.beta.shape != (len(self.family.features),) or not np.all(np.isfinite(self.beta)):
            raise PredictorError(f"predictor of {device!r}: {len(self.beta)} coefficients for "
                                 f"{len(self.family.features)} features", "refit with `nas hw fit --save`")
        self.lam = float(lam)
        self.prior = None if prior is None else np.asarray(prior, dtype=float)
        self.residual_scale = float(residual_scale)
        self.train_specs = tuple(train_specs)
        self.train_latency_ms = tuple(float(t) for t in train_latency_ms)
        self.memory = memory
        try:
            specs = [ArchSpec.parse(s) for s in self.train_specs]
        except SpecError as exc:
            raise PredictorError(f"predictor of {device!r} names a bad spec: {exc}") from exc
        train_x = np.array([spec_features(s).vector(self.family.features) for s in specs])
        self._log_train_x = np.log(train_x.reshape(len(specs), len(self.family.features)))

    # -- asking ------------------------------------------------------------------------------------
    @property
    def memory_limit_kib(self) -> float | None:
        """Inferred on-chip memory limit (KiB, int8 memory model); None if no failure was seen."""
        return self.memory.limit_kib

    @property
    def n_points(self) -> int:
        """Number of measured latencies the predictor was fitted on."""
        return len(self.train_specs)

    def predict_ms(self, spec: ArchSpec) -> float:
        """Point prediction only (the fastest call)."""
        return float(spec_features(spec).vector(self.family.features) @ self.beta)

    def predict(self, spec: ArchSpec) -> LatencyPrediction:
        """Latency (ms) with an interval that widens away from measured architectures, and feasibility."""
        x = spec_features(spec).vector(self.family.features)
        ms = float(x @ self.beta)
        d = log_distance(x, self._log_train_x)
        w = Z * self.residual_scale * (1.0 + (d if math.isfinite(d) else 1.0))
        verdict = self.memory.assess(spec)
        return LatencyPrediction(self.device, self.precision, ms, ms * math.exp(-w), ms * math.exp(w),
                                 verdict.feasible, verdict.reason, verdict.uncertain)

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
            "residual_scale": self.residual_scale, "train_specs": list(self.train_specs),
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
            raise PredictorError("not a latency-predictor JSON document", "write one with `nas hw fit --save DIR`")
        if data.get("version") != JSON_VERSION:
            raise PredictorError(f"predictor JSON version {data.get('version')!r} is not supported",
                                 f"this version reads {JSON_VERSION}; refit with `nas hw fit --save`")
        try:
            if list(data["features"]) != list(get_family(data["family"]).features):
                raise PredictorError("predictor JSON features do not match its family", "refit it")
            return cls(device=data["device"], precision=data["precision"], family=data["family"],
                       beta=data["beta"], lam=data["lam"], prior=data["prior"],
                       residual_scale=data["residual_scale"], train_specs=data["train_specs"],
                       train_latency_ms=data["train_latency_ms"], memory=MemoryBounds.from_dict(data["memory"]),
                       key=data.get("key"))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, PredictorError):
                raise
            raise PredictorError(f"predictor JSON is incomplete or malformed: {exc!r}", "refit it") from exc

    def __repr__(self) -> str:
        return f"DevicePredictor({self.key!r}, family={self.family.name!r}, points={self.n_points})"


# -- fitting ---------------------------------------------------------------------------------------------


def _device_points(table: HardwareTable, key: str) -> tuple[list[ArchSpec], np.ndarray, list[ArchSpec]]:
    rows = table.rows_for(key)
    ok = [r for r in rows if r.ok]
    return [r.spec for r in ok], np.array([r.latency_ms for r in ok], dtype=float), \
        [r.spec for r in rows if not r.ok]


def _design(specs: Sequence[ArchSpec], family: Family) -> np.ndarray:
    return np.array([spec_features(s).vector(family.features) for s in specs]).reshape(
        len(specs), len(family.features))


def device_shapes(table: HardwareTable, family: Family) -> dict[str, np.ndarray]:
    """Each device's shape (share of each term in the reference latency), for devices with enough points."""
    shapes = {}
    for key in table.device_keys:
        specs, y, _ = _device_points(table, key)
        if len(y) >= PRIOR_MIN_POINTS:
            shape = device_shape(_design(specs, family), y)
            if shape is not None:
                shapes[key] = shape
    return shapes


def fit_device(table: HardwareTable, key: str, family: str = DEFAULT_FAMILY,
               shapes: dict[str, np.ndarray] | None = None) -> DevicePredictor:
    """Fit the predictor of one device key (``shapes``: precomputed :func:`device_shapes`, optional)."""
    fam = get_family(family)
    specs, y, failed = _device_points(table, key)
    if len(y) == 0:
        raise PredictorError(f"device {key!r} has no measured latency (batch 1)",
                             "add 'ok' rows for it, or leave it out")
    prior = None
    if fam.uses_prior:
        shapes = device_shapes(table, fam) if shapes is None else shapes
        prior = mean_shape([s for k, s in shapes.items() if k != key], len(fam.features))
    result = fit_family(fam, _design(specs, fam), y, prior)
    r = result.loo_log_residuals
    scale = math.sqrt((float(np.sum(r**2)) + PRIOR_SCALE_WEIGHT * PRIOR_SCALE**2) / (len(r) + PRIOR_SCALE_WEIGHT))
    device, precision = table.device_precision(key)
    return DevicePredictor(device=device, precision=precision, family=fam.name, beta=result.beta, lam=result.lam,
                           prior=prior, residual_scale=scale, train_specs=[s.to_string() for s in specs],
                           train_latency_ms=y.tolist(), memory=memory_bounds(specs, failed), key=key)


def fit_predictors(table: HardwareTable, devices: Sequence[str] | None = None,
                   family: str = DEFAULT_FAMILY) -> dict[str, DevicePredictor]:
    """One predictor per device key. ``devices=None`` fits every device with a measured latency; names are
    resolved case-insensitively (an unknown one raises :class:`PredictorError` listing the known ones)."""
    fam = get_family(family)
    if devices is None:
        keys = [k for k in table.device_keys if any(r.ok for r in table.rows_for(k))]
    else:
        keys = list(dict.fromkeys(resolve_device(table, d) for d in devices))
    shapes = device_shapes(table, fam) if fam.uses_prior else {}
    return {key: fit_device(table, key, family, shapes) for key in keys}
