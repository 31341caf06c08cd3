"""Library side of ``nas hw measure``: which architectures to time, and timing them into a hardware table.

The measurement sampling space (:data:`MEASURE_SPACE`) is deliberately wider than a typical search space:
depths 1–4 / 1–6 / 1–16 / 1–2 per stage and every stage's width multiplier drawn independently from
{0.25, 0.5, 0.75, 1, 1.5, 2, 2.5}, so a latency predictor fitted on it covers what a search may propose.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from search_space import SEED_CLASSES, SEED_RESOLUTION, SEED_ROWS, ArchSpec, analyze, resolve_arch
from trials.errors import MeasureError
from trials.latency import PRECISIONS, RETRIES, RUNS, SESSIONS, WARMUP, measure_specs, parse_notes

DEFAULT_TABLE = "host_latency.csv"


@dataclass(frozen=True)
class MeasureSpace:
    """Inclusive depth range per stage and width-multiplier choices (the same list for every stage)."""

    depths: tuple[tuple[int, int], ...] = ((1, 4), (1, 6), (1, 16), (1, 2))
    widths: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5)

    def sample(self, rng: random.Random, resolution: int, num_classes: int) -> ArchSpec:
        """One architecture: each stage's depth uniform in its range, each width uniform over the choices."""
        depths = tuple(rng.randint(lo, hi) for lo, hi in self.depths)
        widths = tuple(rng.choice(self.widths) for _ in range(4))
        return ArchSpec(depths, widths, resolution=resolution, num_classes=num_classes)


MEASURE_SPACE = MeasureSpace()


def sample_specs(
    n: int, seed: int = 0, resolution: int = SEED_RESOLUTION, num_classes: int = SEED_CLASSES,
    space: MeasureSpace = MEASURE_SPACE,
) -> list[ArchSpec]:
    """``n`` distinct random architectures from ``space`` (reproducible for a given ``seed``)."""
    if n < 1:
        raise MeasureError(f"--sample must be at least 1, got {n}")
    rng, seen, specs = random.Random(seed), set(), []
    for _ in range(n * 100):
        spec = space.sample(rng, resolution, num_classes)
        if spec not in seen:
            seen.add(spec)
            specs.append(spec)
            if len(specs) == n:
                return specs
    raise MeasureError(f"the space has fewer than {n} distinct architectures", "ask for fewer samples")


def read_spec_file(path: str | Path) -> list[str]:
    """Lines of a spec file: one preset name or spec string per line; blank lines and ``#`` comments skipped."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MeasureError(f"cannot read spec file {str(source)!r}: {exc}", "one spec or preset a line") from exc
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def collect_specs(
    presets: str | None = None, specs_file: str | Path | None = None, sample: int | None = None,
    seed: int = 0, resolution: int = SEED_RESOLUTION, num_classes: int = SEED_CLASSES,
) -> list[ArchSpec]:
    """The architectures to measure, in order, duplicates removed.

    ``presets`` is a comma list of preset names (at ``resolution``/``num_classes``); ``specs_file`` lines are
    presets (same overrides) or complete spec strings (kept as written); ``sample`` adds random draws from
    :data:`MEASURE_SPACE`. With none of the three, the seed's eight rows are measured.
    """
    names: list[str] = []
    if presets:
        names += [p.strip() for p in presets.split(",") if p.strip()]
    if specs_file:
        names += read_spec_file(specs_file)
    if not names and sample is None:
        names = list(SEED_ROWS)
    specs = []
    for name in names:
        if "_" in name:
            specs.append(resolve_arch(name))
        else:
            specs.append(resolve_arch(name, resolution, num_classes))
    if sample is not None:
        specs += sample_specs(sample, seed, resolution, num_classes)
    return list(dict.fromkeys(specs))


def parse_precisions(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"fp32,int8"`` → ``("fp32", "int8")``; an unknown precision raises :class:`MeasureError`."""
    items = [p.strip().lower() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    bad = [p for p in items if p not in PRECISIONS]
    if bad or not items:
        raise MeasureError(f"unknown precision {','.join(bad) or repr(text)}", f"allowed: {','.join(PRECISIONS)}")
    return tuple(dict.fromkeys(items))


def display_row(row: dict[str, object]) -> dict[str, object]:
    """A measured table row for people: latency, MACs, session spread, load, the spec."""
    notes = parse_notes(str(row.get("notes", "")))
    spec = ArchSpec.parse(str(row["arch"]))
    return {
        "precision": row["precision"],
        "latency_ms": float(row["latency_ms"]),  # type: ignore[arg-type]
        "macs": analyze(spec).macs,
        "spread": float(notes.get("spread", "nan")),
        "loaded": int(notes.get("loaded", 0)),
        "redone": int(notes.get("redone", 0)),
        "arch": row["arch"],
        "device": row["device"],
        "threads": int(notes.get("threads", 0)),
        "clock": notes.get("clock", "wall"),
    }


def measure_table(
    specs: Sequence[ArchSpec],
    out: str | Path = DEFAULT_TABLE,
    precisions: Sequence[str] = PRECISIONS,
    *,
    device: str = "host-cpu",
    threads: int = 1,
    sessions: int = SESSIONS,
    runs: int = RUNS,
    warmup: int = WARMUP,
    retries: int = RETRIES,
    clock: str = "wall",
    skip_existing: bool = True,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> list[dict[str, object]]:
    """Measure ``specs`` on this host (see :mod:`trials.latency` for the protocol); append to ``out``.

    Returns the newly measured rows as :func:`display_row` dicts.
    """
    rows = measure_specs(
        specs, out, precisions, device=device, threads=threads, warmup=warmup, runs=runs,
        sessions=sessions, retries=retries, clock=clock, on_progress=on_progress, skip_existing=skip_existing,
    )
    return [display_row(r) for r in rows]
