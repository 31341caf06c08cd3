"""``nas export``: train a chosen architecture fully, re-parameterize it, write ONNX fp32 + int8, verify."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from nas.cli._common import add_format, add_renamed, emit, message, progress
from nas.cli.options import (
    add_data_options,
    add_optimization_options,
    add_recipe_options,
    add_runtime_options,
    add_study_options,
    config_overrides,
    data_overrides,
    recipe_overrides,
)
from nas.objectives import Limits
from nas.pareto import PARETO_PICKS
from search_space import BLOCK_TYPES

EPILOG = """examples:
  nas export --arch N1 --resolution 32 --epochs 30 --out export/n1
  nas export --trial 7 --study acc-latency_T4 --out export/t7 --int8-budget 0.5
                                   (on the data and with the recipe the search recorded)
  nas export --checkpoint runs/n1/last.pt --out export/n1        (no training: export a trained model)
  nas export --pareto --pick knee --study acc-latency_T4 --out export/knee
  nas export --pareto --out export/front -f json                 (every front trial, one folder each)

Each export folder holds model_fp32.onnx, model_int8.onnx (QDQ), checkpoint.pt (when trained here)
and model_card.json, written last and only when the fp32 parity check passed; see docs/model_card.md.
Accuracies are measured on the held-out test split; the selection split's (the one the search ranked
on, optimistic) are shown beside them.

int8: per-tensor first; while the drop on the selection split exceeds --int8-budget, per-channel, then
4x the calibration images, then the Entropy and Percentile calibrations; the first within budget is kept
(else the smallest drop), every attempt is in the card and the verdict line is printed.
exit status: 0 done; 1 an export failed (nothing of it is left); 2 usage error;
3 int8 over budget (files and card are written; --allow-int8-drop exits 0 instead).
"""

SUMMARY_COLUMNS = ["trial", "spec", "test_images", "test_fp32_top1", "test_int8_top1", "test_int8_drop",
                   "test_fp32_bal", "test_int8_bal", "test_worst_recall", "selection_fp32_top1", "selection_fp32_bal",
                   "agreement", "int8_within_budget", "parity_max_diff", "fp32_ms", "int8_ms", "folder", "error"]
PER_CLASS_COLUMNS = ["class", "name", "images", "fp32_recall", "int8_recall"]
WORST_SHOWN = 10
#: ``nas export``'s exit status when the int8 file misses its budget (see the epilog).
EXIT_INT8_OVER_BUDGET = 3
TABLE_COLUMNS = ["trial", "spec", "test_fp32_bal", "test_int8_drop", "int8_within_budget", "test_worst_recall",
                 "selection_fp32_bal", "int8_ms", "error"]  # the folders are printed as each export ends


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``nas export``."""
    p = sub.add_parser("export", help="train a chosen architecture and export verified ONNX fp32 + int8",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_argument_group("what to export (one of --arch, --trial, --pareto; or --checkpoint alone)")
    ex = what.add_mutually_exclusive_group()
    ex.add_argument("--arch", metavar="SPEC|PRESET", help="a preset (N1, A0, …) or a spec string")
    ex.add_argument("--trial", type=int, metavar="N", help="trial number N of a study (its spec attribute)")
    ex.add_argument("--pareto", action="store_true", help="the chosen trials of a study's Pareto front")
    what.add_argument("--checkpoint", metavar="FILE", help="a trained checkpoint (last.pt/best.pt of nas train): "
                                                            "export it without training")
    what.add_argument("--resolution", type=int, help="input px for --arch (presets default to 224)")
    what.add_argument("--block", choices=BLOCK_TYPES, help="override the block type of --arch")
    add_study_options(what)
    what.add_argument("--pick", choices=PARETO_PICKS, default="all",
                      help="with --pareto: all front trials (default), the knee, or best-acc-under --under")
    what.add_argument("--under", action="append", default=[], metavar="TARGET=MS",
                      help="latency limit for --pick best-acc-under; repeatable")
    what.add_argument("--max-memory", metavar="KIB", help="with --pareto: peak memory limit (filters the front)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (with --pareto: one subfolder per "
                                                              "spec hash, plus summary.json)")
    add_data_options(p.add_argument_group("data (trains, calibrates and checks the model; with --trial or "
                                          "--checkpoint what the study or checkpoint recorded is the default)"))
    add_recipe_options(p.add_argument_group("recipe, as in nas train (with --trial: the study's by default)"))
    add_optimization_options(p.add_argument_group("training, as in nas train (ignored with --checkpoint)"))
    add_runtime_options(p.add_argument_group("runtime"))
    g = p.add_argument_group("export")
    g.add_argument("--int8-budget", type=float, default=1.0, metavar="POINTS",
                   help="largest int8 drop allowed on the selection split, in points (default 1.0)")
    g.add_argument("--int8-metric", choices=["top1", "bacc"], default="top1",
                   help="what the int8 drop is measured in: top-1 (default) or balanced accuracy")
    g.add_argument("--allow-int8-drop", action="store_true",
                   help="exit 0 even when no int8 attempt meets the budget (the card still says so)")
    g.add_argument("--per-channel", action="store_true",
                   help="start the int8 ladder at per-channel weight scales (skip per-tensor; check your NPU "
                        "supports them)")
    g.add_argument("--calibration-images", type=int, default=256, metavar="N",
                   help="training images that calibrate int8 activation ranges at first (default 256; later "
                        "attempts use 4x)")
    g.add_argument("--ort-threads", type=int, default=1, metavar="N",
                   help="onnxruntime threads for the host latency (default 1)")
    add_renamed(g, "--threads", "--ort-threads")
    g.add_argument("--tables", action="append", default=[], metavar="CSV",
                   help="extra measured hardware table for the card's predicted latencies; repeatable")
    add_renamed(g, "--hardware", "--tables")
    add_format(p)
    p.set_defaults(func=cmd_export)


class _TrainingProgress(contextlib.ExitStack):
    """Epoch lines on stderr and, on a terminal, a bar over each model's training steps (a new bar per model
    with --pareto); leaving the block closes the bar, also when an export fails."""

    def __init__(self) -> None:
        super().__init__()
        self.advance: Any = None

    def __call__(self, info: dict[str, Any]) -> None:
        kind = info.get("event")
        if kind == "start":
            self.close()  # the previous model's bar
            self.advance = self.enter_context(progress("training", info["total_steps"] - info["step"]))
        elif kind == "step" and self.advance is not None:
            self.advance(1, description=f"epoch {info['epoch']}/{info['epochs']}  loss {info['loss']:.3f}")
        elif kind == "epoch":
            message(f"  epoch {info['epoch']}/{info['epochs']}: loss {info['train_loss']:.3f}, "
                    f"selection top-1 {info['selection_top1']:.3f}, balanced {info['selection_balanced_acc']:.3f} "
                    f"({info['wall_s']:.0f} s)")


def _usage(text: str) -> int:
    message(f"[bold red]usage error:[/] {text} (see nas export --help)")
    return 2


def cmd_export(args: argparse.Namespace) -> int:
    """Run ``nas export``; exit 1 when any export failed (nothing of it is left behind)."""
    with _TrainingProgress() as on_progress:
        return _export(args, on_progress)


def _export(args: argparse.Namespace, on_progress: _TrainingProgress) -> int:
    from nas.deploy import ExportOptions, export_arch, export_pareto, export_trial
    from nas.runs import set_torch_threads

    if not (args.arch or args.trial is not None or args.pareto or args.checkpoint):
        return _usage("give --arch, --trial, --pareto or --checkpoint")
    if args.pareto and args.checkpoint:
        return _usage("--checkpoint exports one model; it cannot go with --pareto")
    if not args.int8_budget >= 0:
        return _usage(f"--int8-budget is {args.int8_budget}; give 0 or more points")
    set_torch_threads(args.torch_threads)
    options = ExportOptions(per_channel=args.per_channel, calibration_images=args.calibration_images,
                            int8_budget=args.int8_budget, int8_metric=args.int8_metric,
                            ort_threads=args.ort_threads, tables=args.tables)
    common = {"data": data_overrides(args), "recipe": recipe_overrides(args), "config": config_overrides(args),
              "options": options, "on_progress": on_progress, "on_step": lambda text: message(f"[dim]{text}[/]")}
    if args.pareto:
        limits = Limits.parse(max_memory=args.max_memory) if args.max_memory else None
        under = Limits.parse(args.under, args.max_memory) if args.pick == "best-acc-under" else None
        result = export_pareto(args.out, study=args.study, storage=args.storage, pick_how=args.pick,
                               limits=limits, under=under,
                               on_trial=lambda r: message(f"trial {r['trial']}: "
                                                          + (f"[red]failed[/] {r['error']}" if r.get("error")
                                                             else f"exported to {r['folder']}")), **common)
        columns = SUMMARY_COLUMNS if args.format != "table" else [  # a table narrow enough for a terminal
            c for c in TABLE_COLUMNS if c != "error" or result.failed]
        emit(result.rows, args.format, columns=columns, title=f"exports of study {result.study}",
             extra={"summary": str(result.summary), "failed": len(result.failed),
                    "int8_over_budget": len(result.over_budget)})
        if result.failed:
            return 1
        return _int8_status(not result.over_budget, args.allow_int8_drop)
    kwargs = {**common, "checkpoint": args.checkpoint}
    if args.trial is not None:
        card = export_trial(args.trial, args.out, study=args.study, storage=args.storage, **kwargs)
    else:
        card = export_arch(args.arch, args.out, resolution=args.resolution, block=args.block, **kwargs)
    row = {**card.summary(), "trial": card.data["source"].get("trial")}
    quantization = card.data["quantization"]
    for note in card.data["notes"]:
        if note != quantization["verdict"] and not note.startswith(quantization["verdict"]):
            message(f"[yellow]note:[/] {note}")
    colour = "green" if quantization["within_budget"] else "bold red"
    message(f"[{colour}]{quantization['verdict']}[/]")
    extra = {"card": str(card.path), "parity_tolerance": card.data["parity"]["tolerance"]}
    if args.format == "table":  # one model: a two-column table reads better than one very wide row
        emit([{"field": k, "value": v} for k, v in row.items() if v is not None], "table",
             title=f"export verified: test split ({row['test_images']} images), selection split beside it",
             extra=extra)
        worst = card.data["accuracy"]["per_class"][:WORST_SHOWN]
        emit(worst, "table", columns=PER_CLASS_COLUMNS,
             title=f"test: the {len(worst)} lowest recalls (all in the card)")
    else:
        emit([row], args.format, columns=[c for c in SUMMARY_COLUMNS if c != "error"], extra=extra)
    return _int8_status(quantization["within_budget"], args.allow_int8_drop)


def _int8_status(within_budget: bool, allowed: bool) -> int:
    """0, or :data:`EXIT_INT8_OVER_BUDGET` when an int8 file missed its budget and that was not allowed."""
    if within_budget or allowed:
        return 0
    message("int8 is over budget: the export is written for inspection; try the qarepvgg block or a looser "
            "budget, or allow the drop")
    return EXIT_INT8_OVER_BUDGET
