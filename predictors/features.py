"""Features of a spec for latency models, from the analytic cost model (no torch, no measurement).

Each model feature is a physically meaningful total of the deploy form, expressed in units of the seed's
RepVGG-A0 at 112 px and 89 classes (so every feature of A0 is exactly 1.0 and a coefficient is "ms that term
costs A0"):

* ``weight_bytes`` — int8 weight bytes of all layers (weights streamed from memory),
* ``macs`` — multiply-accumulates (compute),
* ``activation_bytes`` — int8 bytes of every conv output (activation traffic),
* ``conv_count`` — number of conv layers (per-layer launch/scheduling overhead),
* ``constant`` — 1 (fixed per-inference overhead),
* ``traffic_bytes`` — Σ over layers of the bytes a layer moves: its weights, its input and its output (int8),
* ``roofline`` — Σ over layers of max(macs_l, weight_bytes_l), each in A0 units: a layer costs whichever of
  compute and weight traffic dominates it,
* ``positions`` — Σ over conv layers of the output positions ``H_out·W_out``, whatever the channel count: work a
  kernel does once per output pixel (building an im2col / indirection buffer, per-pixel requantization in
  int8 kernels, loop and edge handling), which neither MACs nor bytes see when channels are few.

Besides the model features, :class:`SpecFeatures` carries the raw coordinates a predictor's domain of
validity is measured in (:data:`DOMAIN_FEATURES`) and the memory quantities the feasibility hypotheses
compare (:data:`MEMORY_QUANTITIES`, KiB under the int8 memory model).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from search_space import INT8, SEED_CLASSES, SEED_RESOLUTION, ArchSpec, analyze, get_preset, layer_plan

FEATURES = ("weight_bytes", "macs", "activation_bytes", "conv_count", "constant")
#: Every name :meth:`SpecFeatures.vector` accepts.
MODEL_FEATURES = (*FEATURES, "traffic_bytes", "roofline", "positions")
REFERENCE_ARCH = "A0"
#: Raw coordinates of the domain of validity: MACs, int8 weight bytes, int8 activation bytes, input px, convs.
DOMAIN_FEATURES = ("macs", "weight_bytes", "activation_bytes", "resolution", "conv_count")
#: Memory quantities (KiB) a device's on-chip limit might apply to; see :mod:`predictors.feasibility`.
MEMORY_QUANTITIES = ("peak_layer", "weights", "weights_and_activation", "activations")


@dataclass(frozen=True)
class SpecFeatures:
    """Model features of one spec (A0 units), its domain coordinates and its memory quantities."""

    totals: tuple[float, ...]  # in the order of FEATURES
    roofline: float
    traffic: float
    positions: float
    macs: float  # raw MACs (the MACs-proportional baseline)
    peak_memory_kib: float
    domain: tuple[float, ...]  # raw values, in the order of DOMAIN_FEATURES
    memory_kib: tuple[float, ...]  # in the order of MEMORY_QUANTITIES

    def __post_init__(self) -> None:
        named = dict(zip(FEATURES, self.totals), roofline=self.roofline, traffic_bytes=self.traffic,
                     positions=self.positions)
        object.__setattr__(self, "_named", named)  # vector() runs once per prediction: look-ups, not a rebuild

    def vector(self, names: tuple[str, ...] = FEATURES) -> np.ndarray:
        """The named model features as an array (any of :data:`MODEL_FEATURES`)."""
        named: dict[str, float] = self._named  # type: ignore[attr-defined]
        return np.array([named[n] for n in names])

    def memory(self, quantity: str) -> float:
        """One of :data:`MEMORY_QUANTITIES`, in KiB."""
        return self.memory_kib[MEMORY_QUANTITIES.index(quantity)]


@dataclass(frozen=True)
class _Raw:
    totals: tuple[float, ...]
    per_layer: tuple[tuple[float, float], ...]  # (macs, weight bytes) of every layer
    traffic: float
    positions: float  # Σ H_out·W_out over conv layers
    peak_kib: float
    domain: tuple[float, ...]
    memory_kib: tuple[float, ...]


def _raw(spec: ArchSpec) -> _Raw:
    report = analyze(spec, INT8)
    layers = report.layers
    act = INT8.act_bytes
    # bytes each conv reads (its input) and writes (its output); the head reads the pooled vector
    inputs = [layer.cin * layer.h_in * layer.h_in * act for layer in layer_plan(spec)]
    head = layers[-1]
    inputs.append(head.cin * act)
    traffic = sum(layer.weight_bytes + layer.activation_bytes + i for layer, i in zip(layers, inputs))
    largest_io = max(layer.activation_bytes + i for layer, i in zip(layers, inputs))
    totals = (float(report.weight_bytes), float(report.macs), float(report.activation_elements),
              float(report.conv_count), 1.0)
    domain = (float(report.macs), float(report.weight_bytes), float(report.activation_elements * act),
              float(spec.resolution), float(report.conv_count))
    memory = (report.peak_memory_kib, report.weight_bytes / 1024, (report.weight_bytes + largest_io) / 1024,
              (report.activation_elements * act + inputs[0]) / 1024)
    per_layer = tuple((float(layer.macs), float(layer.weight_bytes)) for layer in layers)
    positions = sum(layer.h_out * layer.w_out for layer in layers if layer.kind == "conv3x3")
    return _Raw(totals, per_layer, float(traffic), float(positions), report.peak_memory_kib, domain, memory)


_REF = _raw(get_preset(REFERENCE_ARCH).spec(SEED_RESOLUTION, SEED_CLASSES))
#: Raw values of the reference architecture's features (bytes, MACs, bytes, layers, 1, bytes, output positions).
REFERENCE = dict(zip(FEATURES, _REF.totals), traffic_bytes=_REF.traffic, positions=_REF.positions)


@functools.lru_cache(maxsize=65536)
def spec_features(spec: ArchSpec) -> SpecFeatures:
    """Features of ``spec`` (cached: a search asks for the same spec on several devices)."""
    raw = _raw(spec)
    ref_w, ref_m = REFERENCE["weight_bytes"], REFERENCE["macs"]
    scaled = tuple(v / r for v, r in zip(raw.totals, _REF.totals))
    roof = sum(max(m / ref_m, w / ref_w) for m, w in raw.per_layer)
    return SpecFeatures(scaled, roof, raw.traffic / _REF.traffic, raw.positions / _REF.positions, raw.totals[1],
                        raw.peak_kib, raw.domain, raw.memory_kib)


def design_matrix(specs: list[ArchSpec] | tuple[ArchSpec, ...], names: tuple[str, ...]) -> np.ndarray:
    """Rows of the named features, one per spec (shape ``(len(specs), len(names))``, also when empty)."""
    return np.array([spec_features(s).vector(names) for s in specs]).reshape(len(specs), len(names))
