"""Objectives, limits and the per-spec metrics of a search.

Objectives: ``acc`` and ``bacc`` (maximize; the accuracy proxy's top-1 and balanced accuracy),
``latency[:TARGET]`` (minimize; predicted ms on a hardware target), ``macs``, ``params``, ``memory`` (peak on-chip KiB).
A cost objective written ``max:macs`` (or ``max:params``) is maximized instead: capacity as a cheap
stand-in for accuracy, which gives cost-only searches a real trade-off.
Limits (``T4=0.6``, ``2048``, ``5M``) become Optuna constraints: each is ``value / limit − 1``
(≤ 0 is feasible; relative, so violations in ms and KiB rank on one scale), and every hardware
target adds ``feasible:TARGET`` (0 when the predictor says the model fits the chip, else 1).
(Objects and stored studies call a target ``device``, as the hardware tables do.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from search_space import ArchSpec, analyze
from search_space.errors import NasError

MAXIMIZE = ("acc", "bacc")
MINIMIZE = ("latency", "macs", "params", "memory")
KINDS = MAXIMIZE + MINIMIZE
#: Metric (attribute) name of each objective kind; latency becomes ``latency_<device>``.
METRIC = {"acc": "acc", "bacc": "bacc", "macs": "macs", "params": "params", "memory": "memory_kib"}
#: The value an untrained (infeasible) trial records for an accuracy objective: the worst possible.
UNTRAINED_ACCURACY = 0.0
_SUFFIX = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}


class SearchError(NasError):
    """A search is misconfigured (objective, limit, study mismatch) or cannot go on."""


@dataclass(frozen=True)
class Objective:
    """One objective: its kind and, for latency, the device key."""

    kind: str
    device: str | None = None
    maximize_cost: bool = False

    @property
    def name(self) -> str:
        """Metric name shown in Optuna and the dashboard (``acc``, ``latency_T4``, ``memory_kib``)."""
        return f"latency_{self.device}" if self.kind == "latency" else METRIC[self.kind]

    @property
    def direction(self) -> str:
        """``maximize`` or ``minimize``."""
        return "maximize" if self.kind in MAXIMIZE or self.maximize_cost else "minimize"

    @property
    def needs_accuracy(self) -> bool:
        """Whether this objective needs the accuracy proxy (a trained model)."""
        return self.kind in MAXIMIZE


def parse_objectives(text: str | Sequence[str], default_target: str | None = None) -> list[Objective]:
    """``"acc,latency:T4,memory"`` → objectives; ``latency`` alone uses the hardware target ``default_target``."""
    items = text.split(",") if isinstance(text, str) else [p for t in text for p in t.split(",")]
    items = [t.strip() for t in items if t.strip()]
    if not items:
        raise SearchError("no objective given",
                          f"choose from {', '.join(KINDS)} (latency:TARGET for a hardware target)")
    out: list[Objective] = []
    for item in items:
        flip = item.lower().startswith("max:")
        kind, _, device = (item[4:] if flip else item).partition(":")
        kind = kind.strip().lower()
        if kind not in KINDS:
            raise SearchError(f"unknown objective {item!r}", f"choose from {', '.join(KINDS)} (e.g. acc,latency:T4)")
        if kind != "latency" and device:
            raise SearchError(f"objective {kind} takes no hardware target ({item!r})",
                              "only latency:TARGET names a target")
        if flip and kind in MAXIMIZE:
            raise SearchError(f"{item!r}: {kind} is always maximized", f"write {kind}")
        if kind == "latency":
            device = device.strip() or (default_target or "")
            if not device:
                raise SearchError("latency needs a hardware target",
                                  "name it in the objective (latency:T4) or set a default target")
        obj = Objective(kind, device or None, flip)
        if obj.name in {o.name for o in out}:
            raise SearchError(f"objective {item!r} is given twice", "list each objective once")
        out.append(obj)
    return out


def parse_number(text: str | float, what: str) -> float:
    """A positive number, optionally with a k/M/G suffix (``5M`` = 5e6)."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        s = text.strip()
        scale = _SUFFIX.get(s[-1:], 1.0)
        try:
            value = float(s[:-1] if scale != 1.0 else s) * scale
        except ValueError:
            raise SearchError(f"{what}: {text!r} is not a number", "e.g. 2048, 0.6 or 5M") from None
    if not (math.isfinite(value) and value > 0):
        raise SearchError(f"{what}: {text!r} must be a positive number")
    return value


def parse_latency_limit(text: str, what: str = "latency limit") -> tuple[str, float]:
    """``"T4=0.6"`` → ``("T4", 0.6)``: a hardware target and its latency limit in ms."""
    device, sep, value = text.partition("=")
    if not sep or not device.strip() or not value.strip():
        raise SearchError(f"{what} {text!r} is not TARGET=MS", "a hardware target and milliseconds, e.g. T4=0.6")
    return device.strip(), parse_number(value, f"{what} {device.strip()}")


@dataclass(frozen=True)
class Limits:
    """Hard limits of a search (constraints) or filters of a front: latency per device, memory, params, MACs."""

    max_latency: tuple[tuple[str, float], ...] = ()
    max_memory_kib: float | None = None
    max_params: float | None = None
    max_macs: float | None = None
    min_acc: float | None = None

    @classmethod
    def parse(
        cls,
        max_latency: Sequence[str] = (),
        max_memory: str | float | None = None,
        max_params: str | float | None = None,
        max_macs: str | float | None = None,
        min_acc: str | float | None = None,
    ) -> Limits:
        """Build from CLI strings (``T4=0.6`` …); bad syntax raises :class:`SearchError`."""
        lat = tuple(parse_latency_limit(t) for t in max_latency)
        seen = [d.lower() for d, _ in lat]
        if len(set(seen)) != len(seen):
            raise SearchError("the latency limits name a hardware target twice", "give one limit per target")
        acc = None
        if min_acc is not None:
            acc = _parse_fraction(min_acc)
        return cls(
            lat,
            None if max_memory is None else parse_number(max_memory, "memory limit (KiB)"),
            None if max_params is None else parse_number(max_params, "parameter limit"),
            None if max_macs is None else parse_number(max_macs, "MAC limit"),
            acc,
        )

    def checks(self) -> list[tuple[str, str, float]]:
        """``(constraint key, metric name, limit)`` for every upper limit, in a fixed order."""
        out = [(f"latency_{d}<={v:g}", f"latency_{d}", v) for d, v in self.max_latency]
        for metric, value in (("memory_kib", self.max_memory_kib), ("params", self.max_params),
                              ("macs", self.max_macs)):
            if value is not None:
                out.append((f"{metric}<={value:g}", metric, value))
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON form (stored on the study so a resumed search can refuse a change)."""
        return {"max_latency": [list(x) for x in self.max_latency], "max_memory_kib": self.max_memory_kib,
                "max_params": self.max_params, "max_macs": self.max_macs, "min_acc": self.min_acc}

    def with_devices(self, resolve: Any) -> Limits:
        """A copy with device names replaced by ``resolve(name)`` (canonical predictor keys)."""
        return Limits(tuple((resolve(d), v) for d, v in self.max_latency), self.max_memory_kib,
                      self.max_params, self.max_macs, self.min_acc)


def _parse_fraction(text: str | float) -> float:
    """An accuracy limit: ``0.8`` or ``80%``."""
    s = str(text).strip()
    try:
        value = float(s[:-1]) / 100 if s.endswith("%") else float(s)
    except ValueError:
        raise SearchError(f"accuracy limit {text!r} is not a number", "e.g. 0.8 or 80%") from None
    if not 0 <= value <= 1:
        raise SearchError(f"accuracy limit {text!r} is outside 0..1",
                          "accuracies are fractions (0.8) or percents (80%)")
    return value


@dataclass
class SpecMetrics:
    """Everything cheap about one spec: analytic costs and every device's predicted latency."""

    attrs: dict[str, Any] = field(default_factory=dict)
    feasible_on: dict[str, bool] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def value(self, name: str) -> float:
        """A metric by name (``macs``, ``latency_T4`` …)."""
        return float(self.attrs[name])


def spec_metrics(spec: ArchSpec, predictors: Mapping[str, Any]) -> SpecMetrics:
    """Analytic costs of ``spec`` and every predictor's latency (ms, interval, feasibility)."""
    report = analyze(spec)
    m = SpecMetrics({
        "spec": spec.to_string(), "spec_hash": spec.hash, "macs": report.macs, "params": report.params,
        "memory_kib": report.peak_memory_kib, "peak_layer": report.peak_layer,
    })
    for key, predictor in predictors.items():
        p = predictor.predict(spec)
        m.attrs[f"latency_{key}"] = float(p.ms)
        m.attrs[f"latency_{key}_low"] = float(p.low)
        m.attrs[f"latency_{key}_high"] = float(p.high)
        m.attrs[f"feasible_{key}"] = bool(p.feasible)
        if getattr(p, "uncertain", False):
            m.attrs[f"latency_{key}_uncertain"] = True
        m.attrs[f"latency_{key}_extrapolated"] = bool(p.extrapolated)  # outside the table's measured region
        if p.extrapolated:
            m.attrs[f"latency_{key}_extrapolation"] = p.extrapolation  # where and how far
        m.feasible_on[key] = bool(p.feasible)
        if not p.feasible:
            m.reasons[key] = p.reason or "predicted not to fit on the chip"
    return m


def constraint_values(metrics: SpecMetrics, limits: Limits, devices: Sequence[str]) -> dict[str, float]:
    """Optuna constraint values (≤ 0 feasible): relative excess over each limit, then chip feasibility."""
    out = {key: metrics.value(metric) / limit - 1.0 for key, metric, limit in limits.checks()}
    for d in devices:
        out[f"feasible:{d}"] = 0.0 if metrics.feasible_on.get(d, True) else 1.0
    return out


def infeasibility(metrics: SpecMetrics, limits: Limits, devices: Sequence[str]) -> str | None:
    """Why a spec is infeasible (every violated limit and chip), or ``None``."""
    reasons = [
        f"{metric} {metrics.value(metric):.4g} > {limit:g}"
        for _, metric, limit in limits.checks() if metrics.value(metric) > limit
    ]
    reasons += [f"{d}: {metrics.reasons[d]}" for d in devices if not metrics.feasible_on.get(d, True)]
    return "; ".join(reasons) or None


def objective_values(objectives: Sequence[Objective], metrics: SpecMetrics, accuracy: Mapping[str, float] | None
                     ) -> list[float]:
    """The values to tell Optuna, in objective order; accuracy objectives read ``accuracy`` (or 0 when untrained)."""
    values = []
    for o in objectives:
        if o.kind == "acc":
            values.append(UNTRAINED_ACCURACY if accuracy is None else float(accuracy["top1"]))
        elif o.kind == "bacc":
            values.append(UNTRAINED_ACCURACY if accuracy is None else float(accuracy["balanced_acc"]))
        else:
            values.append(metrics.value(o.name))
    return values
