"""Feasibility: will a spec run on a device at all? Inferred from the table's ``failure`` rows.

A ``failure`` row means the model did not run. The seed's one failure (M1 on the Hexagon 698 DSP) is
explained by on-chip memory — but by *which* memory? One failure cannot tell apart several hypotheses, each
"the device fails when quantity Q exceeds a limit" (:data:`HYPOTHESES`, int8 memory model, KiB):

* ``peak_layer`` — the largest layer's weights + bias + accumulator + output (the seed's explanation),
* ``weights`` — all weights of the model (a runtime that keeps the whole model on chip),
* ``weights_and_activation`` — all weights plus the largest layer's input and output,
* ``activations`` — every activation buffer at once (no buffer reuse).

A hypothesis *stands* when the table cannot rule it out: every architecture that ran has a smaller Q than
every one that failed. Under a standing hypothesis a spec whose Q is at or below the largest that ran fits,
at or above the smallest that failed does not, and in between is undecided. The verdict is **certain only
where every standing hypothesis gives the same decided answer**; otherwise it is *uncertain*, judged by the
first standing hypothesis (peak layer memory, when it stands) at its inferred limit — the geometric midpoint
of its two bounds — and the reason names the hypotheses that disagree. The failed specs themselves are
infeasible (certain). If no hypothesis stands, memory does not explain the failures: every other spec is
reported feasible but uncertain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from predictors.features import MEMORY_QUANTITIES, spec_features
from search_space import ArchSpec

#: Memory hypotheses, in order of preference for the point verdict, with how reasons name them.
HYPOTHESES = {
    "peak_layer": "peak layer memory",
    "weights": "total weights",
    "weights_and_activation": "weights + largest layer input/output",
    "activations": "all activations",
}


@dataclass(frozen=True)
class Feasibility:
    """Verdict for one spec: feasible, whether that is uncertain, and why (None when simply feasible)."""

    feasible: bool
    uncertain: bool
    reason: str | None


@dataclass(frozen=True)
class Hypothesis:
    """What the table says about one memory quantity: the largest that ran and the smallest that failed."""

    quantity: str
    largest_ok_kib: float | None
    smallest_failure_kib: float | None

    @property
    def stands(self) -> bool:
        """True when the table cannot rule it out (no failure, or every run below every failure)."""
        lo, hi = self.largest_ok_kib, self.smallest_failure_kib
        return lo is None or hi is None or lo < hi

    @property
    def limit_kib(self) -> float | None:
        """Point estimate of the limit: geometric midpoint of the bounds (None without a failure or if ruled out)."""
        lo, hi = self.largest_ok_kib, self.smallest_failure_kib
        if hi is None or not self.stands:
            return None
        return hi if lo is None else math.sqrt(lo * hi)

    def decide(self, value: float) -> str:
        """'fits', 'fails' or 'between' for a spec with this quantity ``value`` (KiB)."""
        if self.smallest_failure_kib is not None and value >= self.smallest_failure_kib:
            return "fails"
        if self.smallest_failure_kib is None or (self.largest_ok_kib is not None and value <= self.largest_ok_kib):
            return "fits"
        return "between"

    def explain(self, value: float) -> str:
        """``"total weights 16,455 KiB (ran ≤ 9,550, failed ≥ 17,321)"``."""
        lo = "nothing ran" if self.largest_ok_kib is None else f"ran ≤ {self.largest_ok_kib:,.0f}"
        return f"{HYPOTHESES[self.quantity]} {value:,.0f} KiB ({lo}, failed ≥ {self.smallest_failure_kib:,.0f})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"quantity": self.quantity, "largest_ok_kib": self.largest_ok_kib,
                "smallest_failure_kib": self.smallest_failure_kib}


@dataclass(frozen=True)
class MemoryBounds:
    """Every memory hypothesis' bounds on one device, and the failed specs (canonical strings)."""

    hypotheses: tuple[Hypothesis, ...]
    failed_specs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # parsed once: comparing specs is cheap, formatting them on every call is not
        object.__setattr__(self, "_failed", frozenset(ArchSpec.parse(s) for s in self.failed_specs))

    def hypothesis(self, quantity: str) -> Hypothesis:
        """The bounds of one quantity of :data:`HYPOTHESES`."""
        return next(h for h in self.hypotheses if h.quantity == quantity)

    @property
    def standing(self) -> tuple[Hypothesis, ...]:
        """The hypotheses the table cannot rule out."""
        return tuple(h for h in self.hypotheses if h.stands)

    @property
    def largest_ok_kib(self) -> float | None:
        """Largest peak layer memory that ran (KiB)."""
        return self.hypothesis("peak_layer").largest_ok_kib

    @property
    def smallest_failure_kib(self) -> float | None:
        """Smallest peak layer memory that failed (KiB)."""
        return self.hypothesis("peak_layer").smallest_failure_kib

    @property
    def consistent(self) -> bool:
        """True when some memory hypothesis explains the failures (or there are none)."""
        return bool(self.standing)

    @property
    def limit_kib(self) -> float | None:
        """Inferred peak-layer-memory limit (geometric midpoint); None without a failure or if it is ruled out."""
        return self.hypothesis("peak_layer").limit_kib

    def assess(self, spec: ArchSpec) -> Feasibility:
        """Feasibility of ``spec``: certain only where every standing hypothesis agrees."""
        features = spec_features(spec)
        if spec in self._failed:  # type: ignore[attr-defined]
            return Feasibility(False, False, f"failed on this device in the table (peak on-chip memory "
                                             f"{features.peak_memory_kib:,.0f} KiB)")
        if not self.failed_specs:
            return Feasibility(True, False, None)
        standing = self.standing
        if not standing:
            return Feasibility(True, True, "failures on this device are not explained by memory ("
                                           + ", ".join(HYPOTHESES.values()) + ")")
        values = {h.quantity: features.memory(h.quantity) for h in standing}
        decided = {h.quantity: h.decide(values[h.quantity]) for h in standing}
        if set(decided.values()) == {"fits"}:
            return Feasibility(True, False, None)
        if set(decided.values()) == {"fails"}:
            first = standing[0]
            return Feasibility(False, False, f"{first.explain(values[first.quantity])}: at or above a failure "
                                             f"under every memory explanation the table allows")
        judge = standing[0]
        limit = judge.limit_kib or judge.smallest_failure_kib or math.inf
        feasible = values[judge.quantity] <= limit
        sides = {"fits": "fits", "fails": "fails", "between": "undecided"}
        parts = [f"{sides[decided[h.quantity]]} by {h.explain(values[h.quantity])}" for h in standing]
        verdict = "feasible" if feasible else "infeasible"
        return Feasibility(feasible, True, f"uncertain: {'; '.join(parts)}; {verdict} by the inferred "
                                           f"{HYPOTHESES[judge.quantity]} limit ≈ {limit:,.0f} KiB")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the peak-layer bounds are repeated at the top level for readers)."""
        return {"largest_ok_kib": self.largest_ok_kib, "smallest_failure_kib": self.smallest_failure_kib,
                "failed_specs": list(self.failed_specs), "hypotheses": [h.to_dict() for h in self.hypotheses]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MemoryBounds:
        """Inverse of :meth:`to_dict`."""
        hypotheses = tuple(Hypothesis(h["quantity"], h["largest_ok_kib"], h["smallest_failure_kib"])
                           for h in data["hypotheses"])
        if tuple(h.quantity for h in hypotheses) != MEMORY_QUANTITIES:
            raise ValueError(f"memory hypotheses {[h.quantity for h in hypotheses]} are not {list(HYPOTHESES)}")
        return cls(hypotheses, tuple(data.get("failed_specs", ())))


def memory_bounds(ok_specs: Sequence[ArchSpec], failed_specs: Sequence[ArchSpec]) -> MemoryBounds:
    """Bounds of every hypothesis from the specs that ran and those that failed on one device."""
    ok = [spec_features(s) for s in ok_specs]
    bad = [spec_features(s) for s in failed_specs]
    hypotheses = tuple(
        Hypothesis(q, max((f.memory(q) for f in ok), default=None), min((f.memory(q) for f in bad), default=None))
        for q in MEMORY_QUANTITIES)
    return MemoryBounds(hypotheses, tuple(sorted({s.to_string() for s in failed_specs})))
