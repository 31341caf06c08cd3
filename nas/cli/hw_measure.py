"""``nas hw measure``: time architectures on this machine (ONNX Runtime, fp32 and int8) into a hardware table."""

from __future__ import annotations

import argparse

from nas.cli._common import add_format, add_renamed, emit, message, progress
from nas.cli.options import add_space_options
from nas.measure import (
    DEFAULT_TABLE,
    HOST_TARGET,
    RETRIES,
    RUNS,
    SESSIONS,
    WARMUP,
    SpecChoice,
    TimingProtocol,
    display_row,
    parse_resolutions,
    plan_measurement,
)
from nas.space import SearchSpace, space_from_options
from search_space import SEED_CLASSES

EPILOG = """examples:
  nas hw measure --presets A0,N1 --out host.csv           two presets at 112 px, 89 classes, fp32 and int8
  nas hw measure --presets N1 --resolution 32,64,112      one preset at three resolutions
  nas hw measure --sample 20 --seed 1 --out host.csv      20 random architectures from the measurement space
  nas hw measure --suggest 5 --resolution 32,48 --out host.csv
                                                          the 5 specs of the search space worth measuring next
  nas hw measure --specs archs.txt --precision int8 -f json
  nas hw fit --tables host.csv                            then fit a latency predictor on the table

protocol: each model is timed in --sessions fresh onnxruntime sessions of --runs runs (after --warmup
untimed runs) on --ort-threads intra-op threads; the label is the fastest session's median, because load
from other processes only ever adds time. Sessions during which the machine was loaded (descheduled, or more
runnable tasks than spare cores) are re-done up to --retries times. Rows already in --out for the same
target, precision and architecture are skipped, so an interrupted run resumes.
"""

COLUMNS = ["precision", "latency_ms", "macs", "spread", "loaded", "redone", "arch"]


def _measure_space(args: argparse.Namespace) -> SearchSpace | None:
    """``nas hw measure``'s space flags without ``--resolution``, or None when none is given."""
    if not any((args.space, args.depths, args.widths, args.blocks, args.groups)):
        return None
    return space_from_options(args.space, args.depths, args.widths, args.blocks, args.groups)


def add_measure_parser(hw_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``measure`` to the ``nas hw`` subcommands; returns its parser."""
    p = hw_subparsers.add_parser(
        "measure", help="measure batch-1 latency on this CPU (onnxruntime, fp32/int8) into a hardware table",
        description="Measure architectures on this machine and append the rows to a hardware CSV.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--presets", metavar="A0,N1", help="comma-separated preset names (default, with no other "
                   "source: the seed's eight rows)")
    p.add_argument("--specs", metavar="FILE", help="a text file with one preset or spec string per line "
                   "(# comments allowed); spec strings keep the resolution and classes they state")
    p.add_argument("--sample", type=int, metavar="N", help="add N random architectures of the measurement space "
                   "(depths 1-4/1-6/1-16/1-2, widths 0.25..2.5; or the space flags' space) — to build a table "
                   "for fitting a predictor")
    p.add_argument("--suggest", type=int, metavar="K", help="add the K specs of the search space (the space "
                   "flags; default: nas search's) that --target most needs measured (see nas hw suggest)")
    p.add_argument("--seed", type=int, default=0, help="random seed for --sample and --suggest (default 0)")
    add_space_options(p, "space of --sample and --suggest (as in nas search); --resolution also sets presets' px")
    p.add_argument("--classes", type=int, default=SEED_CLASSES,
                   help=f"classes of presets, samples and suggestions (default: the seed's {SEED_CLASSES})")
    p.add_argument("--out", default=DEFAULT_TABLE, metavar="TABLE.csv",
                   help=f"hardware CSV to append to (created if missing; default {DEFAULT_TABLE})")
    p.add_argument("--target", default=HOST_TARGET, help=f"device name written in the table (default "
                   f"{HOST_TARGET}); change it when you measure several machines or settings into one table")
    add_renamed(p, "--device", "--target")
    p.add_argument("--precision", default="fp32,int8", metavar="fp32,int8",
                   help="precisions to measure: fp32, int8 (static QDQ, calibrated on random images) or both")
    p.add_argument("--ort-threads", type=int, default=1, help="onnxruntime intra-op threads (default 1: "
                   "repeatable on a shared machine; more only when the machine is otherwise idle)")
    add_renamed(p, "--threads", "--ort-threads")
    p.add_argument("--sessions", type=int, default=SESSIONS,
                   help=f"fresh sessions per model (default {SESSIONS}); fewer is faster, less robust")
    p.add_argument("--runs", type=int, default=RUNS, help=f"timed runs per session (default {RUNS})")
    p.add_argument("--warmup", type=int, default=WARMUP, help=f"untimed runs per session (default {WARMUP})")
    p.add_argument("--retries", type=int, default=RETRIES,
                   help=f"re-do a loaded session at most this often (default {RETRIES}; 0 = never)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: elapsed time (default). cpu: the measuring thread's CPU time per run (--ort-threads "
                        "1 only) — not inflated when the machine is busy; use it when you cannot get a quiet machine")
    p.add_argument("--remeasure", action="store_true",
                   help="measure again specs already in --out and replace their rows (the default skips them)")
    add_format(p)
    p.set_defaults(func=cmd_measure)
    return p


def cmd_measure(args: argparse.Namespace) -> int:
    """Check everything, measure with a progress bar, print the new rows."""
    choice = SpecChoice(args.presets, args.specs, args.sample, args.suggest, args.seed,
                        parse_resolutions(args.resolution), args.classes, _measure_space(args))
    protocol = TimingProtocol(args.ort_threads, args.warmup, args.runs, args.sessions, args.retries, args.clock)
    plan = plan_measurement(choice, args.out, args.precision, target=args.target, protocol=protocol,
                            skip_existing=not args.remeasure)
    with progress("measuring", plan.total) as advance:
        rows = [display_row(r) for r in plan.run(on_progress=lambda done, total, label: advance(1, label))]
    skipped = plan.total - len(rows)
    if skipped:
        message(f"{skipped} of {plan.total} measurement(s) already in {args.out}: skipped (--remeasure to redo)")
    if rows:
        emit(rows, args.format, columns=COLUMNS + (["device", "threads", "clock"] if args.format != "table" else []),
             title=f"host latency, batch 1 — appended to {args.out}")
    loaded = sum(int(r["loaded"]) for r in rows)  # type: ignore[call-overload]
    if loaded:
        why = ("the cpu clock is not inflated by descheduling, cache sharing may still add a little"
               if args.clock == "cpu" else "those labels may be high: rerun on a quiet machine or use --clock cpu")
        message(f"[yellow]{loaded} session(s) stayed loaded after retries — {why}[/]")
    return 0
