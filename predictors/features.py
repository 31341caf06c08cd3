"""Features of a spec for latency models, from the analytic cost model (no torch, no measurement).

Each feature is a physically meaningful total of the deploy form, expressed in units of the seed's RepVGG-A0
at 112 px and 89 classes (so every feature of A0 is exactly 1.0 and a coefficient is "ms that term costs A0"):

* ``weight_bytes`` — int8 weight bytes of all layers (weights streamed from memory),
* ``macs`` — multiply-accumulates (compute),
* ``activation_bytes`` — int8 bytes of every conv output (activation traffic),
* ``conv_count`` — number of conv layers (per-layer launch/scheduling overhead),
* ``constant`` — 1 (fixed per-inference overhead).

``roofline`` is a per-layer term Σ_l max(macs_l, weight_bytes_l), each in the same A0 units: a layer costs
whichever of compute and weight traffic dominates it. ``peak_memory_kib`` is the int8 memory model's peak.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from search_space import INT8, SEED_CLASSES, SEED_RESOLUTION, ArchSpec, analyze, get_preset

FEATURES = ("weight_bytes", "macs", "activation_bytes", "conv_count", "constant")
REFERENCE_ARCH = "A0"


@dataclass(frozen=True)
class SpecFeatures:
    """Features of one spec (in A0 units, see module docstring) and its peak on-chip memory."""

    totals: tuple[float, ...]  # in the order of FEATURES
    roofline: float
    macs: float  # raw MACs (the MACs-proportional baseline)
    peak_memory_kib: float

    def vector(self, names: tuple[str, ...] = FEATURES) -> np.ndarray:
        """The named features as an array (``roofline`` allowed as a name)."""
        lookup = dict(zip(FEATURES, self.totals), roofline=self.roofline)
        return np.array([lookup[n] for n in names])


def _raw(spec: ArchSpec) -> tuple[tuple[float, ...], list[tuple[float, float]], float, float]:
    report = analyze(spec, INT8)
    totals = (float(report.weight_bytes), float(report.macs), float(report.activation_elements),
              float(report.conv_count), 1.0)
    per_layer = [(float(layer.macs), float(layer.weight_bytes)) for layer in report.layers]
    return totals, per_layer, float(report.macs), report.peak_memory_kib


_REF_TOTALS, _, _, _ = _raw(get_preset(REFERENCE_ARCH).spec(SEED_RESOLUTION, SEED_CLASSES))
#: Raw values of the reference architecture's features (bytes, MACs, bytes, layers, 1).
REFERENCE = dict(zip(FEATURES, _REF_TOTALS))


@functools.lru_cache(maxsize=65536)
def spec_features(spec: ArchSpec) -> SpecFeatures:
    """Features of ``spec`` (cached: a search asks for the same spec on several devices)."""
    totals, per_layer, macs, peak = _raw(spec)
    ref_w, ref_m = REFERENCE["weight_bytes"], REFERENCE["macs"]
    scaled = tuple(v / r for v, r in zip(totals, _REF_TOTALS))
    roof = sum(max(m / ref_m, w / ref_w) for m, w in per_layer)
    return SpecFeatures(scaled, roof, macs, peak)


def log_distance(x: np.ndarray, log_measured: np.ndarray) -> float:
    """Distance of feature vector ``x`` to the nearest measured architecture, given the *logs* of the measured
    feature rows: min over rows of the largest |ln ratio| over the features (0 at a measured architecture;
    ln 2 when some feature is 2× off)."""
    if log_measured.size == 0:
        return math.inf
    return float(np.abs(np.log(x) - log_measured).max(axis=1).min())
