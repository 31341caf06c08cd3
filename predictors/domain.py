"""Domain of validity: the region of architectures a device's table actually measured.

A latency model is linear in a few totals, and each coefficient is only pinned down over the range its
feature varied among the measured architectures. The domain is therefore a box over the coordinates in
:data:`predictors.features.DOMAIN_FEATURES`, each the [min, max] over the device's measured ('ok') specs:

* MACs, int8 weight bytes, int8 activation bytes and conv count — the totals the model is linear in: outside
  their range a term is extrapolated (a search at 32 px asks for 0.5–10 M MACs where the seed measured 36–573 M);
* input resolution — what a search changes most, and it changes the per-layer shapes (tiling, cache reuse,
  fixed per-layer costs) in ways the totals alone do not capture.

:meth:`Domain.distance` is 0 inside the box; outside it is the largest log-ratio by which a coordinate lies
beyond its measured range, in natural-log units: ln 2 ≈ 0.69 means "some coordinate is 2× beyond what was
measured", ln 10 ≈ 2.3 means 10×. Intervals widen with it (:mod:`predictors.calibration`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from predictors.errors import PredictorError
from predictors.features import DOMAIN_FEATURES, spec_features
from search_space import ArchSpec

#: How each coordinate is named and printed: (label, divisor, unit).
_SHOW = {
    "macs": ("MACs", 1e6, " M"),
    "weight_bytes": ("weights", 1024 * 1024, " MiB"),
    "activation_bytes": ("activations", 1024 * 1024, " MiB"),
    "resolution": ("resolution", 1, " px"),
    "conv_count": ("depth", 1, " convs"),
}


def _fmt(value: float, name: str) -> str:
    _, divisor, unit = _SHOW[name]
    scaled = value / divisor
    text = f"{scaled:.0f}" if scaled >= 100 or scaled == int(scaled) else f"{scaled:.3g}"
    return text + unit


def _log_excess(value: float, low: float, high: float) -> float:
    if value < low:
        return math.log(low / value)
    if value > high:
        return math.log(value / high)
    return 0.0


@dataclass(frozen=True)
class Domain:
    """Measured [low, high] per coordinate of :data:`~predictors.features.DOMAIN_FEATURES` (raw units)."""

    low: tuple[float, ...]
    high: tuple[float, ...]
    points: int  # measured architectures it was built from

    @classmethod
    def from_specs(cls, specs: Sequence[ArchSpec]) -> Domain:
        """The box spanned by ``specs`` (at least one)."""
        if not specs:
            raise PredictorError("a domain needs at least one measured architecture")
        coords = [spec_features(s).domain for s in specs]
        return cls(tuple(min(c) for c in zip(*coords)), tuple(max(c) for c in zip(*coords)), len(specs))

    def excess(self, spec: ArchSpec) -> dict[str, float]:
        """Log-ratio beyond the measured range per coordinate (0 where inside)."""
        values = spec_features(spec).domain
        return {name: _log_excess(v, lo, hi)
                for name, v, lo, hi in zip(DOMAIN_FEATURES, values, self.low, self.high)}

    def distance(self, spec: ArchSpec) -> float:
        """0 inside the domain; else the largest natural-log ratio by which a coordinate is outside it."""
        values = spec_features(spec).domain
        return max(_log_excess(v, lo, hi) for v, lo, hi in zip(values, self.low, self.high))

    def contains(self, spec: ArchSpec) -> bool:
        """True when every coordinate of ``spec`` lies within the measured range."""
        return self.distance(spec) == 0.0

    def describe(self, spec: ArchSpec) -> str:
        """'' inside; else every coordinate outside, farthest first, e.g.
        ``"MACs 0.5 M below the measured 36.9–573 M; resolution 32 px below the measured 112 px"``."""
        values = dict(zip(DOMAIN_FEATURES, spec_features(spec).domain))
        excess = self.excess(spec)
        parts = []
        for name in sorted((n for n in DOMAIN_FEATURES if excess[n] > 0), key=lambda n: -excess[n]):
            i = DOMAIN_FEATURES.index(name)
            side = "below" if values[name] < self.low[i] else "above"
            parts.append(f"{_SHOW[name][0]} {_fmt(values[name], name)} {side} the measured {self._range(i)}")
        return "; ".join(parts)

    def summary(self) -> str:
        """The measured ranges in words, e.g. ``"MACs 36.9–573 M, weights …, resolution 112 px, depth 9–22 convs"``."""
        return ", ".join(f"{_SHOW[n][0]} {self._range(i)}" for i, n in enumerate(DOMAIN_FEATURES))

    def _range(self, i: int) -> str:
        name = DOMAIN_FEATURES[i]
        lo, hi = _fmt(self.low[i], name), _fmt(self.high[i], name)
        if lo == hi:
            return lo
        unit = _SHOW[name][2]
        return f"{lo.removesuffix(unit)}–{hi}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"features": […], "low": […], "high": […], "points": n}``."""
        return {"features": list(DOMAIN_FEATURES), "low": list(self.low), "high": list(self.high),
                "points": self.points}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Domain:
        """Inverse of :meth:`to_dict`; a document for other coordinates raises :class:`PredictorError`."""
        if list(data["features"]) != list(DOMAIN_FEATURES):
            raise PredictorError("predictor JSON domain is over other features", "refit the predictor")
        low, high = tuple(float(v) for v in data["low"]), tuple(float(v) for v in data["high"])
        if len(low) != len(DOMAIN_FEATURES) or len(high) != len(DOMAIN_FEATURES):
            raise PredictorError("predictor JSON domain has the wrong number of bounds", "refit the predictor")
        return cls(low, high, int(data["points"]))
