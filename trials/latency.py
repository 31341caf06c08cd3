"""On-host latency: a measurement protocol that stays repeatable on a shared machine, and a table writer.

The protocol (:func:`measure_onnx`), and why:

* **Fixed threads** — ``intra_op_num_threads=threads`` (1 by default), ``inter_op_num_threads=1``,
  sequential execution. On a small shared machine a multi-threaded run waits for its slowest thread, so any
  other process makes it close to random; one thread on one core repeats within a few percent.
* **Several sessions** — each a new ``InferenceSession`` (fresh memory layout and arena), ``warmup`` untimed
  runs, then ``runs`` timed runs; the session's figure is the **median** of its runs (robust to single
  interrupts and page faults).
* **Label = the fastest session's median** — load from other processes, descheduling and cache pollution
  only ever *add* time, so the least disturbed session is the best estimate of the model's own cost.
  The clock is wall time; ``clock="cpu"`` (one thread only) uses the calling thread's CPU time per run,
  which does all the work at one thread and is not inflated by descheduling: on an idle machine the two
  agree, on a loaded one only the CPU clock stays near the model's cost (cache sharing still adds some).
* **Load is recorded and a loaded session is re-done** — per session: this process's CPU time against wall
  time of the timed runs (a session whose wall time far exceeds its CPU time was descheduled), the number of
  other runnable tasks sampled from ``/proc/loadavg`` between runs, and the 1-minute load average. A
  session that is loaded is measured again, at most ``retries`` times (none for the model's later sessions
  once retries did not help: persistent load); ``Measurement.loaded_sessions`` counts those left loaded.

:func:`measure_specs` builds deploy models from specs, exports fp32 and int8 ONNX to a temp folder,
measures them and appends rows to a hardware CSV that ``predictors.load_table`` reads.
"""

from __future__ import annotations

import contextlib
import csv
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from search_space.io import atomic_write
from search_space.spec import ArchSpec
from trials.errors import MeasureError

#: Default sampling: 10 untimed runs, 30 timed runs, 5 sessions.
WARMUP, RUNS, SESSIONS, RETRIES = 10, 30, 5, 2
#: A session is loaded when its CPU/wall ratio falls below this (it was descheduled) …
MIN_CPU_RATIO = 0.85
CLOCKS = ("wall", "cpu")


@dataclass(frozen=True)
class ProbeReading:
    """One look at the machine: clocks of this process and the system's run queue."""

    wall_s: float  # monotonic clock
    cpu_s: float  # CPU time of this process (all threads)
    loadavg_1m: float  # 1-minute load average
    runnable: int  # runnable tasks now (this process's running thread included)


def read_probe() -> ProbeReading:
    """Read the clocks and ``/proc/loadavg`` (load fields are 0 where that file does not exist)."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        fields = Path("/proc/loadavg").read_text().split()
        load, runnable = float(fields[0]), int(fields[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        load, runnable = 0.0, 1
    return ProbeReading(wall, cpu, load, runnable)


Probe = Callable[[], ProbeReading]


@dataclass(frozen=True)
class SessionLoad:
    """How loaded the machine was during one session's timed runs, and whether that counts as loaded."""

    cpu_ratio: float  # process CPU time / wall time over the timed runs (≈1 for an undisturbed 1-thread run)
    others_runnable: float  # mean runnable tasks other than this one, sampled between runs
    loadavg_1m: float  # highest 1-minute load average seen
    loaded: bool
    reason: str  # "" when not loaded


def judge_load(
    first: ProbeReading, samples: Sequence[ProbeReading], threads: int,
    cpus: int | None = None, min_cpu_ratio: float = MIN_CPU_RATIO,
) -> SessionLoad:
    """Classify a session from the probe reading before its timed runs and those taken after each run.

    Loaded when the CPU/wall ratio per thread is below ``min_cpu_ratio`` (descheduled), or when on average
    more other tasks were runnable than there are cores left over by this session's threads.
    """
    last = samples[-1]
    wall = max(last.wall_s - first.wall_s, 1e-9)
    ratio = (last.cpu_s - first.cpu_s) / wall / max(threads, 1)
    others = statistics.fmean(max(s.runnable - 1, 0) for s in samples)
    spare = max((cpus or os.cpu_count() or 1) - threads, 0)
    reasons = []
    if ratio < min_cpu_ratio:
        reasons.append(f"descheduled (cpu/wall {ratio:.2f})")
    if others > spare:
        reasons.append(f"{others:.1f} other runnable tasks for {spare} spare core(s)")
    load = max([first.loadavg_1m] + [s.loadavg_1m for s in samples])
    return SessionLoad(round(ratio, 4), round(others, 3), load, bool(reasons), "; ".join(reasons))


@dataclass(frozen=True)
class Measurement:
    """The result of :func:`measure_onnx`: the robust label and everything needed to judge it."""

    label_ms: float  # the fastest session's median (on ``clock``)
    session_medians_ms: tuple[float, ...]  # per session, on ``clock``
    spread: float  # max/min of session medians (1.0 = perfectly repeatable)
    loaded_sessions: int  # sessions still loaded after their retries
    redone: int  # sessions measured again because they were loaded
    load: tuple[SessionLoad, ...]  # one per kept session
    cpu: str
    threads: int
    ort_version: str
    warmup: int = WARMUP
    runs: int = RUNS
    sessions: int = SESSIONS
    clock: str = "wall"  # "wall" (perf_counter) or "cpu" (the calling thread's CPU time; threads=1 only)
    cpu_label_ms: float | None = None  # the fastest session's median thread CPU time per run (threads=1)

    def notes(self) -> str:
        """The ``notes`` cell of a table row: ``threads=1;sessions=5;spread=1.02;…`` (no commas)."""
        parts = {
            "threads": self.threads, "sessions": self.sessions, "runs": self.runs, "warmup": self.warmup,
            "spread": f"{self.spread:.3f}", "loaded": self.loaded_sessions, "redone": self.redone,
            "clock": self.clock, "cpu_ms": "" if self.cpu_label_ms is None else f"{self.cpu_label_ms:.4f}",
            "cpu": self.cpu.replace(";", " ").replace(",", " ").replace("=", " "), "ort": self.ort_version,
        }
        return ";".join(f"{k}={v}" for k, v in parts.items())

    def to_dict(self) -> dict:
        """Plain-JSON form."""
        d = asdict(self)
        d["session_medians_ms"] = list(self.session_medians_ms)
        d["load"] = [asdict(s) for s in self.load]
        return d


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` or the machine type elsewhere)."""
    name = ""
    with contextlib.suppress(OSError):
        lines = [x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.lower().startswith("model name")]
        name = lines[0].split(":", 1)[1].strip() if lines else ""
    return name or platform.processor() or platform.machine()


def cpu_model() -> str:
    """The CPU's model name and its core count, e.g. ``AMD EPYC x2``."""
    return f"{cpu_name()} x{os.cpu_count() or 1}"


def _session_options(threads: int):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def _input_feed(session, seed: int = 0) -> dict[str, np.ndarray]:
    """A fixed random input for the session's (static) input shape."""
    rng = np.random.default_rng(seed)
    return {arg.name: rng.standard_normal([d if isinstance(d, int) and d > 0 else 1 for d in arg.shape])
            .astype(np.float32) for arg in session.get_inputs()}


def _one_session(path: Path, threads: int, warmup: int, runs: int, probe: Probe) -> tuple[float, float, SessionLoad]:
    """Open a new session, warm it up, time ``runs`` runs; return the median wall ms, the median CPU ms of
    the calling thread (which does all the work at one thread) and the load during the timed runs."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), _session_options(threads), providers=["CPUExecutionProvider"])
    feed = _input_feed(session)
    for _ in range(warmup):
        session.run(None, feed)
    walls, cpus, samples = [], [], []
    first = probe()
    for _ in range(runs):
        start, cpu = time.perf_counter(), time.thread_time()
        session.run(None, feed)
        walls.append(time.perf_counter() - start)
        cpus.append(time.thread_time() - cpu)
        samples.append(probe())
    return statistics.median(walls) * 1e3, statistics.median(cpus) * 1e3, judge_load(first, samples, threads)


def _check_counts(**counts: int) -> None:
    """Raise :class:`MeasureError` for a non-integer or too small protocol count (warmup/retries may be 0)."""
    for name, value in counts.items():
        low = 0 if name in ("warmup", "retries") else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise MeasureError(f"{name} must be an integer ≥ {low}, got {value!r}", f"use {low} or more")


def measure_onnx(
    path: str | Path,
    threads: int = 1,
    warmup: int = WARMUP,
    runs: int = RUNS,
    sessions: int = SESSIONS,
    *,
    retries: int = RETRIES,
    clock: str = "wall",
    probe: Probe | None = None,
) -> Measurement:
    """Measure an ONNX model's batch-1 latency with onnxruntime on this CPU by the protocol above.

    Each of ``sessions`` sessions that is loaded is re-done up to ``retries`` times (the least loaded
    attempt is kept); once a session stays loaded through its retries, later ones are not re-done (the
    load is persistent; re-doing would only multiply the time). ``clock="cpu"`` (threads=1): see above.
    ``probe`` replaces :func:`read_probe` (tests inject a loaded machine).
    """
    import onnxruntime as ort

    source = Path(path)
    if not source.is_file():
        raise MeasureError(f"model {str(source)!r} not found", "export it first (trials.onnx_export)")
    _check_counts(threads=threads, warmup=warmup, runs=runs, sessions=sessions, retries=retries)
    _check_clock(clock, threads)
    probe, pick = probe or read_probe, (0 if clock == "wall" else 1)
    kept, redone, busy = [], 0, False
    try:
        for _ in range(sessions):
            attempts = [_one_session(source, threads, warmup, runs, probe)]
            while attempts[-1][2].loaded and len(attempts) <= retries and not busy:
                redone += 1
                attempts.append(_one_session(source, threads, warmup, runs, probe))
            busy = busy or attempts[-1][2].loaded  # retries did not help: the load is persistent, stop re-doing
            # keep an unloaded attempt if there is one, else the fastest (least disturbed) one
            kept.append(min(attempts, key=lambda a: (a[2].loaded, a[pick])))
    except (RuntimeError, ValueError, ort.capi.onnxruntime_pybind11_state.Fail) as exc:
        raise MeasureError(f"onnxruntime cannot run {str(source)!r}: {exc}", "check the model file") from exc
    medians, loads = [a[pick] for a in kept], [a[2] for a in kept]
    return Measurement(
        label_ms=min(medians), session_medians_ms=tuple(medians), spread=max(medians) / min(medians),
        loaded_sessions=sum(load.loaded for load in loads), redone=redone, load=tuple(loads),
        cpu=cpu_model(), threads=threads, ort_version=ort.__version__, warmup=warmup, runs=runs,
        sessions=sessions, clock=clock, cpu_label_ms=min(a[1] for a in kept) if threads == 1 else None,
    )


def _check_clock(clock: str, threads: int) -> None:
    if clock not in CLOCKS:
        raise MeasureError(f"unknown clock {clock!r}", f"allowed: {', '.join(CLOCKS)}")
    if clock == "cpu" and threads != 1:
        raise MeasureError("clock 'cpu' needs threads=1", "worker threads' CPU time is not the latency")


# -- measuring specs into a hardware table ---------------------------------------------------------

TABLE_COLUMNS = ("device", "precision", "arch", "latency_ms", "status", "batch", "resolution", "notes")
PRECISIONS = ("fp32", "int8")


def parse_notes(notes: str) -> dict[str, str]:
    """``"threads=1;sessions=5"`` → ``{"threads": "1", "sessions": "5"}`` (items without ``=`` are dropped)."""
    return dict(item.split("=", 1) for item in (notes or "").split(";") if "=" in item)


def read_table(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """Read a hardware CSV (columns :data:`TABLE_COLUMNS`, extra columns kept); a missing file is empty."""
    target = Path(path)
    if not target.exists():
        return list(TABLE_COLUMNS), []
    try:
        with target.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = [dict(r) for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MeasureError(f"cannot read table {str(target)!r}: {exc}", "fix or move the file") from exc
    missing = [c for c in ("device", "precision", "arch", "latency_ms", "status") if c not in header]
    if missing:
        raise MeasureError(
            f"{str(target)!r} is not a hardware table (missing columns {missing})",
            f"expected a CSV with columns {','.join(TABLE_COLUMNS)}",
        )
    return list(TABLE_COLUMNS) + [c for c in header if c not in TABLE_COLUMNS], rows


def write_table(path: str | Path, columns: Sequence[str], rows: Sequence[dict]) -> None:
    """Rewrite the whole table atomically (complete or untouched, never half-written)."""
    with atomic_write(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})


def check_writable(path: str | Path) -> Path:
    """Raise :class:`MeasureError` unless ``path``'s folder exists and is writable (checked before measuring)."""
    target = Path(path)
    if target.is_dir():
        raise MeasureError(f"{str(target)!r} is a folder", "give a CSV file name")
    if not target.parent.is_dir():
        raise MeasureError(f"folder {str(target.parent)!r} does not exist", "create it or choose another --out")
    if not os.access(target.parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise MeasureError(f"{str(target)!r} is not writable", "choose a writable --out")
    return target


def _key(device: str, precision: str, arch: str) -> tuple[str, str, str]:
    """What makes two rows the same measurement for ``predictors`` (device names compare case-insensitively)."""
    return device.lower(), precision, arch


def _row_key(row: dict[str, str]) -> tuple[str, str, str]:
    arch = row.get("arch", "")
    with contextlib.suppress(ValueError):  # spec strings compare in canonical form
        arch = ArchSpec.parse(arch).to_string() if "_" in arch else arch
    return _key(row.get("device", ""), row.get("precision", ""), arch)


def _check_setting(rows: Sequence[dict[str, str]], device: str, threads: int, clock: str) -> None:
    """One device name, one setting (threads, clock): ``predictors`` treats a device's rows as one machine."""
    notes = [parse_notes(r.get("notes", "")) for r in rows if r.get("device", "").lower() == device.lower()]
    other = {(n.get("threads", str(threads)), n.get("clock", "wall")) for n in notes} - {(str(threads), clock)}
    if other:
        t, c = sorted(other)[0]
        raise MeasureError(
            f"the table has {device} rows measured with threads={t} clock={c}, not threads={threads} clock={clock}",
            f"give this setting another device name, e.g. --device {device}-{threads}t-{clock}",
        )


def measure_specs(
    specs: Sequence[ArchSpec],
    table_path: str | Path,
    precisions: Sequence[str] = PRECISIONS,
    device: str = "host-cpu",
    threads: int = 1,
    warmup: int = WARMUP,
    runs: int = RUNS,
    sessions: int = SESSIONS,
    *,
    retries: int = RETRIES,
    clock: str = "wall",
    calibration_images: int = 8,
    seed: int = 0,
    on_progress: Callable[[int, int, str], None] | None = None,
    skip_existing: bool = True,
    probe: Probe | None = None,
) -> list[dict[str, object]]:
    """Measure every spec at every precision on this host and append the rows to ``table_path``.

    Models are :func:`timing_model` deploy forms exported to a temp folder; int8 is calibrated on
    ``calibration_images`` random-normal images (ranges only matter for accuracy, not for timing). The
    table is rewritten atomically after each measurement, so an interrupted run keeps what it measured.
    With ``skip_existing``, a spec already in the table for this device and precision is not measured
    again; without it, it is measured and its old row replaced. A device's rows share one thread count
    and clock (another setting needs another device name).
    ``on_progress(done, total, label)`` is called after each item. Returns the new rows.
    """
    from trials.onnx_export import export_for_timing

    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise MeasureError(f"unknown precision(s) {bad or precisions!r}", f"allowed: {', '.join(PRECISIONS)}")
    if not specs:
        raise MeasureError("no architectures to measure", "give presets, a spec file or --sample N")
    _check_counts(threads=threads, warmup=warmup, runs=runs, sessions=sessions, retries=retries,
                  calibration_images=calibration_images)
    _check_clock(clock, threads)
    target = check_writable(table_path)
    columns, rows = read_table(target)
    _check_setting(rows, device, threads, clock)
    done_keys = {_row_key(r) for r in rows}
    total, done, new_rows = len(specs) * len(precisions), 0, []
    with tempfile.TemporaryDirectory(prefix="nas-measure-") as scratch:
        for spec in specs:
            arch = spec.to_string()
            todo = [p for p in precisions if not (skip_existing and _key(device, p, arch) in done_keys)]
            for _ in range(len(precisions) - len(todo)):
                done += 1
                if on_progress:
                    on_progress(done, total, f"{arch} (in table)")
            if not todo:
                continue
            paths = export_for_timing(spec, scratch, todo, seed=seed, calibration_images=calibration_images)
            for precision in todo:
                m = measure_onnx(paths[precision], threads, warmup, runs, sessions, retries=retries, clock=clock,
                                 probe=probe)
                row = {"device": device, "precision": precision, "arch": arch, "latency_ms": round(m.label_ms, 6),
                       "status": "ok", "batch": 1, "resolution": spec.resolution, "notes": m.notes()}
                key = _key(device, precision, arch)
                rows = [r for r in rows if _row_key(r) != key] + [row]  # a re-measurement replaces the row
                new_rows.append(row)
                done_keys.add(key)
                write_table(target, columns, rows)
                done += 1
                if on_progress:
                    on_progress(done, total, f"{arch} {precision} {m.label_ms:.3f} ms")
    return new_rows
