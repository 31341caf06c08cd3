"""On-host latency: a measurement protocol that stays repeatable on a shared machine.

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

A :class:`Measurement` knows its protocol and load as a ``notes`` string (:meth:`Measurement.notes`,
:func:`parse_notes`). Which architectures to measure and where the rows go is not this module's business:
``nas.measure`` exports specs, calls :func:`measure_onnx` and hands rows to ``predictors.tables``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from trials.errors import MeasureError

#: Default sampling: 10 untimed runs, 30 timed runs, 5 sessions.
WARMUP, RUNS, SESSIONS, RETRIES = 10, 30, 5, 2
#: A session is loaded when its CPU/wall ratio falls below this (it was descheduled) …
MIN_CPU_RATIO = 0.85
CLOCKS = ("wall", "cpu")
#: What the host is timed in: fp32 ONNX, and int8 (static QDQ) from it.
PRECISIONS = ("fp32", "int8")


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


def check_protocol(clock: str = "wall", **counts: int) -> None:
    """Raise :class:`MeasureError` for an unknown clock, or a non-integer or too small count (``threads``,
    ``runs``, ``sessions``, …; ``warmup`` and ``retries`` may be 0), before anything is measured."""
    for name, value in counts.items():
        low = 0 if name in ("warmup", "retries") else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise MeasureError(f"{name} must be an integer ≥ {low}, got {value!r}", f"use {low} or more")
    if clock not in CLOCKS:
        raise MeasureError(f"unknown clock {clock!r}", f"allowed: {', '.join(CLOCKS)}")
    if clock == "cpu" and counts.get("threads", 1) != 1:
        raise MeasureError("clock 'cpu' needs threads=1", "worker threads' CPU time is not the latency")


@dataclass(frozen=True)
class TimingProtocol:
    """How :func:`measure_onnx` times a model (the protocol above): intra-op ``threads``, ``warmup`` untimed
    and ``runs`` timed runs per session, ``sessions`` fresh sessions, ``retries`` re-dos of a loaded session,
    and the ``clock`` (``wall`` or ``cpu``)."""

    threads: int = 1
    warmup: int = WARMUP
    runs: int = RUNS
    sessions: int = SESSIONS
    retries: int = RETRIES
    clock: str = "wall"

    def check(self, **other_counts: int) -> None:
        """Raise :class:`MeasureError` for a bad field (or a bad count in ``other_counts``), before timing."""
        check_protocol(self.clock, threads=self.threads, warmup=self.warmup, runs=self.runs, sessions=self.sessions,
                       retries=self.retries, **other_counts)

    def measure(self, path: str | Path, probe: Probe | None = None) -> Measurement:
        """:func:`measure_onnx` of ``path`` with this protocol."""
        return measure_onnx(path, self.threads, self.warmup, self.runs, self.sessions, retries=self.retries,
                            clock=self.clock, probe=probe)


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
    check_protocol(clock, threads=threads, warmup=warmup, runs=runs, sessions=sessions, retries=retries)
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


def parse_notes(notes: str) -> dict[str, str]:
    """``"threads=1;sessions=5"`` → ``{"threads": "1", "sessions": "5"}`` (items without ``=`` are dropped)."""
    return dict(item.split("=", 1) for item in (notes or "").split(";") if "=" in item)
