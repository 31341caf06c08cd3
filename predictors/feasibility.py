"""Feasibility: will a spec run on a device at all? Inferred from the table's ``failure`` rows.

A ``failure`` row means the model did not run. The seed's one failure (M1 on the Hexagon 698 DSP, 14.2 MiB
peak layer memory) is explained by on-chip memory, so the device's limit is inferred from the int8 memory
model (``analyze(spec).peak_memory_kib``): it lies between the largest peak that ran and the smallest peak
that failed. The point estimate is their geometric midpoint. A spec whose peak is

* at or below the largest that ran → feasible (certain),
* at or above the smallest that failed → infeasible (certain),
* in between → *uncertain*; judged by the midpoint, and said so in the reason.

If a failure has a *smaller* peak than some run that succeeded, peak memory does not explain the failures:
no limit is inferred, only the measured failures themselves are called infeasible, and every other spec is
reported feasible but uncertain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from predictors.features import spec_features
from search_space import ArchSpec


@dataclass(frozen=True)
class Feasibility:
    """Verdict for one spec: feasible, whether that is uncertain, and why (None when simply feasible)."""

    feasible: bool
    uncertain: bool
    reason: str | None


@dataclass(frozen=True)
class MemoryBounds:
    """What the table says about a device's on-chip memory (KiB, int8 memory model)."""

    largest_ok_kib: float | None
    smallest_failure_kib: float | None
    failed_specs: tuple[str, ...] = ()  # canonical spec strings of the failures

    def __post_init__(self) -> None:
        # parsed once: comparing specs is cheap, formatting them on every call is not
        object.__setattr__(self, "_failed", frozenset(ArchSpec.parse(s) for s in self.failed_specs))

    @property
    def consistent(self) -> bool:
        """True unless some failure has a smaller peak than a run that succeeded."""
        lo, hi = self.largest_ok_kib, self.smallest_failure_kib
        return lo is None or hi is None or lo < hi

    @property
    def limit_kib(self) -> float | None:
        """Point estimate of the limit: geometric midpoint of the bounds (None if no failure or inconsistent)."""
        lo, hi = self.largest_ok_kib, self.smallest_failure_kib
        if hi is None or not self.consistent:
            return None
        return hi if lo is None else math.sqrt(lo * hi)

    def assess(self, spec: ArchSpec) -> Feasibility:
        """Feasibility of ``spec`` from its int8 peak memory and the bounds."""
        peak = spec_features(spec).peak_memory_kib
        if spec in self._failed:  # type: ignore[attr-defined]
            return Feasibility(False, False, f"failed on this device in the table (peak on-chip memory "
                                             f"{peak:,.0f} KiB)")
        if self.smallest_failure_kib is None:
            return Feasibility(True, False, None)
        lo, hi = self.largest_ok_kib, self.smallest_failure_kib
        if not self.consistent:
            return Feasibility(True, True, "failures on this device are not explained by peak memory")
        if lo is not None and peak <= lo:
            return Feasibility(True, False, None)
        limit = self.limit_kib or hi
        if peak >= hi:
            return Feasibility(False, False, f"peak on-chip memory {peak:,.0f} KiB ≥ {hi:,.0f} KiB, the smallest "
                                             f"that failed (inferred limit ≈ {limit:,.0f} KiB)")
        lower = f"{lo:,.0f} KiB (largest that ran)" if lo is not None else "0 (nothing ran)"
        verdict = "feasible" if peak <= limit else "infeasible"
        return Feasibility(peak <= limit, True,
                           f"uncertain: peak {peak:,.0f} KiB lies between {lower} and {hi:,.0f} KiB (smallest "
                           f"that failed); {verdict} by the inferred limit ≈ {limit:,.0f} KiB")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"largest_ok_kib": self.largest_ok_kib, "smallest_failure_kib": self.smallest_failure_kib,
                "failed_specs": list(self.failed_specs)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemoryBounds:
        """Inverse of :meth:`to_dict`."""
        return cls(data["largest_ok_kib"], data["smallest_failure_kib"], tuple(data.get("failed_specs", ())))


def memory_bounds(ok_specs: Sequence[ArchSpec], failed_specs: Sequence[ArchSpec]) -> MemoryBounds:
    """Bounds from the specs that ran and those that failed on one device."""
    ok_peaks = [spec_features(s).peak_memory_kib for s in ok_specs]
    bad_peaks = [spec_features(s).peak_memory_kib for s in failed_specs]
    return MemoryBounds(max(ok_peaks) if ok_peaks else None, min(bad_peaks) if bad_peaks else None,
                        tuple(sorted({s.to_string() for s in failed_specs})))
