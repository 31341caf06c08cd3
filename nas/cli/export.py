"""``nas export``: train a chosen architecture fully, re-parameterize it, write ONNX fp32 + int8, verify."""

from __future__ import annotations

import argparse
from typing import Any

from nas.cli._common import add_format, emit, message
from nas.cli.train import LOSSES
from nas.objectives import Limits
from nas.pareto import PICKS
from nas.storage import DEFAULT_STORAGE

PARETO_PICKS = (*PICKS, "all")  # = nas.export.PARETO_PICKS; nas.export imports torch, `nas --help` must not

EPILOG = """examples:
  nas export --arch N1 --resolution 32 --epochs 30 --out export/n1
  nas export --trial 7 --study acc-latency_T4 --out export/t7 --per-channel
  nas export --checkpoint runs/n1/last.pt --out export/n1        (no training: export a trained model)
  nas export --pareto --pick knee --study acc-latency_T4 --out export/knee
  nas export --pareto --out export/front -f json                 (every front trial, one folder each)

Each export folder holds model_fp32.onnx, model_int8.onnx (QDQ), checkpoint.pt (when trained here)
and model_card.json, written last and only when the fp32 parity check passed; see docs/model_card.md.
"""

SUMMARY_COLUMNS = ["trial", "spec", "fp32_top1", "int8_top1", "int8_drop", "fp32_bal", "int8_bal", "agreement",
                   "parity_max_diff", "fp32_ms", "int8_ms", "folder", "error"]
TABLE_COLUMNS = ["trial", "spec", "fp32_top1", "int8_top1", "int8_drop", "agreement", "parity_max_diff", "int8_ms",
                 "folder", "error"]


def _add_training(p: argparse.ArgumentParser) -> None:
    # Choices and defaults are spelled out (as in nas/cli/train.py) so that `nas --help` does not import torch.
    g = p.add_argument_group("training, as in nas train (ignored with --checkpoint; defaults: TrainConfig's)")
    g.add_argument("--epochs", type=int, help="passes over the training split (default 30)")
    g.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (quick checks)")
    g.add_argument("--batch-size", type=int, help="images per step (default 32)")
    g.add_argument("--lr", type=float, help="base learning rate, used as given (default 0.05)")
    g.add_argument("--lr-scaling", choices=["none", "linear"],
                   help="linear: lr × batch/256, as the official RepVGG scripts silently did (default none)")
    g.add_argument("--warmup-epochs", type=float, help="linear warm-up before the cosine decay (default 1)")
    g.add_argument("--weight-decay", type=float, help="on conv/linear weights only (default 4e-5)")
    g.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum")
    g.add_argument("--loss", choices=LOSSES, help="eqlv2, balanced_softmax or logit_adjust for long-tailed "
                                                        "data (default ce)")
    g.add_argument("--label-smoothing", type=float, help="for the softmax losses (default 0.1)")
    g.add_argument("--sampler", choices=["none", "class_balanced"],
                   help="class_balanced: every class equally often (default none)")
    g.add_argument("--seed", type=int, help="seeds the split, initialization, batch order and the calibration "
                                            "sample (default 0; with --checkpoint: the recorded split seed)")
    g.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    g.add_argument("--amp", action="store_true", default=None, help="float16 mixed precision (CUDA only)")
    g.add_argument("--channels-last", action="store_true", default=None, help="NHWC memory format")
    g.add_argument("--workers", type=int, help="data-loader processes (default 0)")
    g.add_argument("--torch-threads", type=int, metavar="N",
                   help="torch CPU threads for training; 1 is often much faster on a busy machine")


def _add_data(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (trains, calibrates and checks the model; with --checkpoint the recorded "
                             "settings are the defaults)")
    g.add_argument("--data", help="ImageFolder data: PATH/<class>/* or PATH/train|val/<class>/* "
                                  "(default: the embedded digits)")
    g.add_argument("--val-ratio", type=float, help="share of each class held out when the folder has no val/ (0.1)")
    g.add_argument("--long-tail", metavar="PROFILE", help="make the training split long-tailed: exp:IF or seed")
    g.add_argument("--augment", action="store_true", default=None, help="RandAugment during training")
    g.add_argument("--max-per-class", type=int, metavar="N", help="at most N images per class (quick checks)")


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
    what.add_argument("--block", choices=["repvgg", "qarepvgg"], help="override the block type of --arch")
    what.add_argument("--storage", default=DEFAULT_STORAGE, help=f"study storage URL (default {DEFAULT_STORAGE})")
    what.add_argument("--study", help="study name (default: the storage's only study)")
    what.add_argument("--pick", choices=PARETO_PICKS, default="all",
                      help="with --pareto: all front trials (default), the knee, or best-acc-under --under")
    what.add_argument("--under", action="append", default=[], metavar="DEVICE=MS",
                      help="latency limit for --pick best-acc-under; repeatable")
    what.add_argument("--max-memory", metavar="KIB", help="with --pareto: peak memory limit (filters the front)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (with --pareto: one subfolder per "
                                                              "spec hash, plus summary.json)")
    _add_data(p)
    _add_training(p)
    g = p.add_argument_group("export")
    g.add_argument("--per-channel", action="store_true",
                   help="per-channel int8 weight scales (better accuracy; check your NPU supports them)")
    g.add_argument("--calibration-images", type=int, default=256, metavar="N",
                   help="training images that calibrate int8 activation ranges (default 256)")
    g.add_argument("--threads", type=int, default=1, help="onnxruntime threads for the host latency (default 1)")
    g.add_argument("--hardware", action="append", default=[], metavar="CSV",
                   help="extra hardware tables for the card's predicted latencies (repeatable)")
    add_format(p)
    p.set_defaults(func=cmd_export)


def _train_config(args: argparse.Namespace) -> Any:
    from trials.train import TrainConfig

    given = {
        "epochs": args.epochs, "max_steps": args.max_steps, "batch_size": args.batch_size, "lr": args.lr,
        "lr_scaling": args.lr_scaling, "warmup_epochs": args.warmup_epochs, "weight_decay": args.weight_decay,
        "nesterov": args.nesterov, "loss": args.loss, "label_smoothing": args.label_smoothing,
        "sampler": args.sampler, "seed": args.seed, "device": args.device, "amp": args.amp,
        "channels_last": args.channels_last, "num_workers": args.workers,
    }
    return TrainConfig.from_dict({**TrainConfig().to_dict(), **{k: v for k, v in given.items() if v is not None}})


def _on_progress(info: dict[str, Any]) -> None:
    if info.get("event") == "epoch":
        message(f"  epoch {info['epoch']}/{info['epochs']}: loss {info['train_loss']:.3f}, "
                f"val top-1 {info['val_top1']:.3f}, balanced {info['val_balanced_acc']:.3f} "
                f"({info['wall_s']:.0f} s)")


def _usage(text: str) -> int:
    message(f"[bold red]usage error:[/] {text} (see nas export --help)")
    return 2


def cmd_export(args: argparse.Namespace) -> int:
    """Run ``nas export``; exit 1 when any export failed (nothing of it is left behind)."""
    from nas.export import DataOptions, ExportOptions, export_arch, export_pareto, export_trial

    if not (args.arch or args.trial is not None or args.pareto or args.checkpoint):
        return _usage("give --arch, --trial, --pareto or --checkpoint")
    if args.pareto and args.checkpoint:
        return _usage("--checkpoint exports one model; it cannot go with --pareto")
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    data = DataOptions(args.data, args.val_ratio, args.long_tail, args.augment, args.seed, args.max_per_class)
    options = ExportOptions(args.per_channel, args.calibration_images, args.threads, args.hardware)
    common = {"data": data, "config": _train_config(args), "options": options, "on_progress": _on_progress,
              "on_step": lambda text: message(f"[dim]{text}[/]")}
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
             extra={"summary": str(result.summary), "failed": len(result.failed)})
        return 1 if result.failed else 0
    kwargs = {**common, "checkpoint": args.checkpoint}
    if args.trial is not None:
        card = export_trial(args.trial, args.out, study=args.study, storage=args.storage, **kwargs)
    else:
        card = export_arch(args.arch, args.out, resolution=args.resolution, block=args.block, **kwargs)
    row = {**card.summary(), "trial": card.data["source"].get("trial")}
    for note in card.data["notes"]:
        message(f"[yellow]note:[/] {note}")
    extra = {"card": str(card.path), "parity_tolerance": card.data["parity"]["tolerance"]}
    if args.format == "table":  # one model: a two-column table reads better than one very wide row
        emit([{"field": k, "value": v} for k, v in row.items() if v is not None], "table",
             title="export verified", extra=extra)
    else:
        emit([row], args.format, columns=[c for c in SUMMARY_COLUMNS if c != "error"], extra=extra)
    return 0
