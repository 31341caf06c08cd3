"""Library side of ``nas hw measure`` and ``nas hw suggest``: which architectures to time, and timing them.

* **Which**: presets, a spec file, random draws from a :class:`~nas.space.SearchSpace` (by default
  :data:`MEASURE_SPACE`) and the specs :func:`suggest` proposes — together a :class:`SpecChoice`.
* **Timing**: :func:`plan_measurement` checks everything (precisions, protocol, the table, the specs) before
  anything runs; :meth:`MeasurePlan.run` exports each spec (``trials.onnx_export.export_for_timing``), times
  it by the protocol of :mod:`trials.latency` and puts the row into the table through
  :class:`predictors.tables.TableWriter` — the owner of the table format.

:data:`MEASURE_SPACE` is deliberately wider than a typical search space: depths 1–4 / 1–6 / 1–16 / 1–2 per
stage and every stage's width drawn independently from {0.25, 0.5, 0.75, 1, 1.5, 2, 2.5}, so a predictor
fitted on it covers what a search may propose.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from nas.space import SearchSpace
from predictors import DEFAULT_FAMILY, TableWriter, measured_row, suggest_specs
from search_space import SEED_CLASSES, SEED_RESOLUTION, SEED_ROWS, ArchSpec, analyze, parse_arch
from trials.errors import MeasureError
from trials.latency import (
    PRECISIONS,
    RETRIES,
    RUNS,
    SESSIONS,
    WARMUP,
    Probe,
    TimingProtocol,
    parse_notes,
)

__all__ = ["DEFAULT_TABLE", "HOST_TARGET", "MEASURE_SPACE", "PRECISIONS", "RETRIES", "RUNS", "SESSIONS", "WARMUP",
           "MeasurePlan", "SpecChoice", "TimingProtocol", "display_row", "measure_specs", "parse_precisions",
           "parse_resolutions", "plan_measurement", "sample_specs", "space_candidates", "suggest"]

DEFAULT_TABLE = "host_latency.csv"
#: The target name ``nas hw measure`` writes into the table unless told otherwise.
HOST_TARGET = "host-cpu"
MEASURE_SPACE = SearchSpace(depths=((1, 4), (1, 6), (1, 16), (1, 2)),
                            widths=((0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5),) * 4, resolutions=(SEED_RESOLUTION,))
#: A space with more specs than this is represented by its corners and random draws (suggestions, warnings).
CANDIDATE_LIMIT = 2048
Progress = Callable[[int, int, str], None]


# -- which architectures ------------------------------------------------------------------------------------

def sample_specs(n: int, seed: int = 0, resolution: int | None = None, num_classes: int = SEED_CLASSES,
                 space: SearchSpace = MEASURE_SPACE) -> list[ArchSpec]:
    """``n`` distinct random specs from ``space`` (at ``resolution`` when given), reproducible for a ``seed``."""
    if n < 1:
        raise MeasureError(f"the number of random architectures must be at least 1, got {n}")
    if resolution is not None:
        space = replace(space, resolutions=(resolution,))
    rng, seen, specs = random.Random(seed), set(), []
    for _ in range(n * 100):
        spec = space.sample(rng, num_classes)
        if spec not in seen:
            seen.add(spec)
            specs.append(spec)
            if len(specs) == n:
                return specs
    raise MeasureError(f"the space has fewer than {n} distinct architectures", "ask for fewer samples")


def space_corners(space: SearchSpace, num_classes: int) -> list[ArchSpec]:
    """The smallest and the largest spec of ``space`` at each of its resolutions."""
    low = tuple(lo for lo, _ in space.depths), tuple(min(ws) for ws in space.widths)
    high = tuple(hi for _, hi in space.depths), tuple(max(ws) for ws in space.widths)
    return [ArchSpec(d, w, space.blocks[0], space.groups[0], r, num_classes)  # type: ignore[arg-type]
            for r in space.resolutions for d, w in (low, high)]


def space_candidates(space: SearchSpace, num_classes: int, limit: int = CANDIDATE_LIMIT,
                     seed: int = 0) -> list[ArchSpec]:
    """Every spec of ``space`` if it has at most ``limit``; else its corners and random draws, ``limit`` in all."""
    if space.size <= limit:
        return list(space.iter_specs(num_classes))
    rng, chosen = random.Random(seed), dict.fromkeys(space_corners(space, num_classes))
    for _ in range(limit * 20):
        if len(chosen) >= limit:
            break
        chosen.setdefault(space.sample(rng, num_classes))
    return list(chosen)


def suggest(space: SearchSpace, n: int, measured: Sequence[ArchSpec] = (), num_classes: int = SEED_CLASSES,
            family: str = DEFAULT_FAMILY, seed: int = 0) -> list[ArchSpec]:
    """The ``n`` specs of ``space`` whose measurement would most reduce the prediction uncertainty over it,
    given the specs a target has ``measured`` (``predictors.suggest_specs`` over :func:`space_candidates`;
    fewer when fewer are left). A measured spec counts at any class count: only the last layer differs."""
    if n < 1:
        raise MeasureError(f"the number of suggestions must be at least 1, got {n}")
    known = [s.replace(num_classes=num_classes) for s in measured]
    return suggest_specs(space_candidates(space, num_classes, seed=seed), n, measured=known, family=family)


def read_spec_file(path: str | Path) -> list[str]:
    """Lines of a spec file: one preset name or spec string per line; blank lines and ``#`` comments skipped."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MeasureError(f"cannot read spec file {str(source)!r}: {exc}", "one spec or preset a line") from exc
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


@dataclass(frozen=True)
class SpecChoice:
    """Which architectures to time: presets, a spec file, random draws, suggestions — in that order,
    duplicates removed; with none of them, the seed's eight rows.

    Presets, and what a spec string leaves open, take each of ``resolutions`` (default: the seed's 112 px)
    and ``num_classes``. ``sample`` draws from ``space`` (default :data:`MEASURE_SPACE`), ``suggest`` picks
    from it (default: the default search space); ``resolutions``, when given, replace the space's.
    """

    presets: str | None = None
    specs_file: str | Path | None = None
    sample: int | None = None
    suggest: int | None = None
    seed: int = 0
    resolutions: tuple[int, ...] | None = None
    num_classes: int = SEED_CLASSES
    space: SearchSpace | None = None

    def specs(self, measured: Sequence[ArchSpec] = ()) -> list[ArchSpec]:
        """The specs, in order; ``measured`` are the target's measured specs (what suggestions build on)."""
        names = [p.strip() for p in (self.presets or "").split(",") if p.strip()]
        names += read_spec_file(self.specs_file) if self.specs_file else []
        if not names and self.sample is None and self.suggest is None:
            names = list(SEED_ROWS)
        specs = [parse_arch(name).resolve(default_resolution=r, default_classes=self.num_classes)
                 for name in names for r in (self.resolutions or (SEED_RESOLUTION,))]
        if self.sample is not None:
            specs += sample_specs(self.sample, self.seed, num_classes=self.num_classes,
                                  space=self._space(MEASURE_SPACE))
        if self.suggest is not None:
            specs += suggest(self._space(SearchSpace()), self.suggest, measured, self.num_classes, seed=self.seed)
        return list(dict.fromkeys(specs))

    def _space(self, default: SearchSpace) -> SearchSpace:
        space = self.space or default
        return replace(space, resolutions=self.resolutions) if self.resolutions else space


def parse_resolutions(text: str | None) -> tuple[int, ...] | None:
    """``"32,48"`` → ``(32, 48)``; ``None`` or empty → ``None``; anything else raises :class:`MeasureError`."""
    if not text or not text.strip():
        return None
    try:
        values = tuple(dict.fromkeys(int(r) for r in text.split(",") if r.strip()))
    except ValueError:
        raise MeasureError(f"resolutions {text!r} are not whole numbers", "give pixels separated by commas, "
                           "e.g. 32,48") from None
    if not values or min(values) < 1:
        raise MeasureError(f"resolutions {text!r} must be positive", "e.g. 32,48")
    return values


def parse_precisions(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"fp32,int8"`` → ``("fp32", "int8")``; an unknown precision raises :class:`MeasureError`."""
    items = [p.strip().lower() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    bad = [p for p in items if p not in PRECISIONS]
    if bad or not items:
        raise MeasureError(f"unknown precision {','.join(bad) or repr(text)}", f"allowed: {','.join(PRECISIONS)}")
    return tuple(dict.fromkeys(items))


# -- timing them into a table ---------------------------------------------------------------------------------

@dataclass
class MeasurePlan:
    """Specs × precisions to time on this host into ``table`` as ``target``, checked and ready to :meth:`run`."""

    specs: list[ArchSpec]
    precisions: tuple[str, ...]
    table: TableWriter
    target: str
    protocol: TimingProtocol = field(default_factory=TimingProtocol)
    skip_existing: bool = True
    calibration_images: int = 8
    seed: int = 0

    @property
    def total(self) -> int:
        """Measurements the plan covers (those already in the table included)."""
        return len(self.specs) * len(self.precisions)

    def run(self, on_progress: Progress | None = None, probe: Probe | None = None) -> list[dict[str, str]]:
        """Time every spec not yet in the table (all with ``skip_existing=False``, replacing their rows); the
        table is rewritten after each measurement, so an interrupted run keeps what it measured. Returns the
        new rows; ``on_progress(done, total, label)`` is called after each item, ``probe`` goes to
        :func:`trials.latency.measure_onnx`."""
        from trials.onnx_export import export_for_timing  # torch: only when something is timed

        done, new = 0, []

        def advance(label: str) -> None:
            nonlocal done
            done += 1
            if on_progress:
                on_progress(done, self.total, label)

        with tempfile.TemporaryDirectory(prefix="nas-measure-") as scratch:
            for spec in self.specs:
                todo = [p for p in self.precisions
                        if not (self.skip_existing and self.table.has(self.target, p, spec))]
                for _ in range(len(self.precisions) - len(todo)):
                    advance(f"{spec} (in table)")
                if not todo:
                    continue
                paths = export_for_timing(spec, scratch, todo, seed=self.seed,
                                          calibration_images=self.calibration_images)
                for precision in todo:
                    m = self.protocol.measure(paths[precision], probe)
                    new.append(measured_row(self.target, precision, spec, m.label_ms, m.notes()))
                    self.table.put(new[-1])
                    advance(f"{spec} {precision} {m.label_ms:.3f} ms")
        return new


def plan_measurement(
    specs: Sequence[ArchSpec] | SpecChoice,
    out: str | Path = DEFAULT_TABLE,
    precisions: str | Sequence[str] = PRECISIONS,
    *,
    target: str = HOST_TARGET,
    protocol: TimingProtocol | None = None,
    skip_existing: bool = True,
    calibration_images: int = 8,
    seed: int = 0,
) -> MeasurePlan:
    """Check a measurement before anything is timed or written: precisions, protocol, the table at ``out``
    (writable, readable by the predictors), the specs (a :class:`SpecChoice` is resolved against the
    target's rows in ``out``), and that ``target``'s rows there share this thread count and clock.
    ``protocol`` (default: :class:`TimingProtocol`'s) says how each model is timed."""
    chosen = parse_precisions(precisions)
    protocol = protocol or TimingProtocol()
    protocol.check(calibration_images=calibration_images)
    table = TableWriter.open(out)
    if isinstance(specs, SpecChoice):
        mine = [r.spec for r in table.rows if r.ok and r.device.lower() == target.lower()]
        specs = specs.specs(measured=mine)
    if not specs:
        raise MeasureError("no architectures to measure", "give presets, a spec file or a number of random ones")
    _check_setting(table, target, protocol.threads, protocol.clock)
    return MeasurePlan(list(specs), chosen, table, target, protocol, skip_existing, calibration_images, seed)


def measure_specs(specs: Sequence[ArchSpec] | SpecChoice, out: str | Path = DEFAULT_TABLE,
                  precisions: str | Sequence[str] = PRECISIONS, *, on_progress: Progress | None = None,
                  probe: Probe | None = None, **options: object) -> list[dict[str, str]]:
    """:func:`plan_measurement` (``options`` are its keywords) and :meth:`MeasurePlan.run`, in one call."""
    return plan_measurement(specs, out, precisions, **options).run(on_progress, probe)  # type: ignore[arg-type]


def _check_setting(table: TableWriter, target: str, threads: int, clock: str) -> None:
    """One target name, one setting (threads, clock): the predictors treat a device's rows as one machine."""
    notes = [parse_notes(r.notes) for r in table.rows if r.device.lower() == target.lower()]
    other = {(n.get("threads", str(threads)), n.get("clock", "wall")) for n in notes} - {(str(threads), clock)}
    if other:
        t, c = sorted(other)[0]
        raise MeasureError(
            f"the table has {target} rows measured with threads={t} clock={c}, not threads={threads} clock={clock}",
            f"measure this setting under another target name, e.g. {target}-{threads}t-{clock}",
        )


def display_row(row: dict[str, str]) -> dict[str, object]:
    """A measured table row for people: latency, MACs, session spread, load, the spec."""
    notes = parse_notes(row.get("notes", ""))
    return {
        "precision": row["precision"],
        "latency_ms": float(row["latency_ms"]),
        "macs": analyze(ArchSpec.parse(row["arch"])).macs,
        "spread": float(notes.get("spread", "nan")),
        "loaded": int(notes.get("loaded", 0)),
        "redone": int(notes.get("redone", 0)),
        "arch": row["arch"],
        "device": row["device"],
        "threads": int(notes.get("threads", 0)),
        "clock": notes.get("clock", "wall"),
    }
