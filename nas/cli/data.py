"""``nas data stats|split`` and ``nas eval``: what a data set holds, how it is split, how a model does on it."""

from __future__ import annotations

import argparse

from nas.cli._common import add_format, emit, message

# nas.reports (torch, torchvision) is imported inside the commands: `nas arch …` stays fast.

PER_CLASS_COLUMNS = ["class", "name", "count", "correct", "acc"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``nas data stats``, ``nas data split`` and ``nas eval``."""
    parser = sub.add_parser("data", help="data sets: per-class counts, resolutions, the train/val split")
    cmds = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = cmds.add_parser(
        "stats", help="per-class count statistics, resolutions and channel modes of an image folder (headers only)",
        epilog="examples:\n  nas data stats ~/data/caltech101 --out-dir stats/\n"
               "  nas data stats ~/data/cifar10-lt -f json\n"
               "  nas data stats ~/data/caltech101 --per-class -f csv > counts.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", metavar="PATH", help="PATH/<class>/<image> or PATH/train/… + PATH/val/… (ImageFolder)")
    p.add_argument("--out-dir", metavar="DIR",
                   help="also write class_histogram.png, resolutions.png, stats.json and class_counts.csv here")
    p.add_argument("--per-class", action="store_true",
                   help="print one row per class (largest first) instead of the statistics table")
    add_format(p)
    p.set_defaults(func=cmd_stats)

    p = cmds.add_parser(
        "split", help="load a data set as training would: per-class train/val counts, skipped files, long tail",
        epilog="examples:\n  nas data split                         the embedded long-tailed digits\n"
               "  nas data split ~/data/caltech101 --resolution 112 --long-tail seed\n"
               "  nas data split ~/data/cifar10-lt --max-per-class 100 -f json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", metavar="PATH", nargs="?", help="data folder (default: the embedded digits)")
    _add_data_options(p)
    p.add_argument("--resolution", type=int, default=32, help="training resolution in px (default 32)")
    p.add_argument("--max-per-class", type=int, metavar="N", help="use at most N images per class (quick checks)")
    add_format(p)
    p.set_defaults(func=cmd_split)

    p = sub.add_parser(
        "eval", help="top-1, balanced accuracy and the per-class table of a checkpoint (val and/or train)",
        epilog="examples:\n  nas eval --checkpoint runs/a0/best.pt --data ~/data/caltech101\n"
               "  nas eval --checkpoint runs/a0/best.pt --data ~/data/caltech101 --split both --out-dir eval/\n"
               "  nas eval --checkpoint runs/digits/last.pt -f json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, metavar="C", help="a best.pt / last.pt written by `nas train`")
    p.add_argument("--data", metavar="PATH",
                   help="the data folder the model was trained on (default: the one the checkpoint records, "
                        "else the embedded digits)")
    p.add_argument("--split", choices=["val", "train", "both"], default="val",
                   help="which split to evaluate; train uses the evaluation transform (no augmentation)")
    p.add_argument("--out-dir", metavar="DIR",
                   help="also write confusion_<split>.png, per_class_<split>.csv and eval.json here")
    _add_data_options(p, defaults_from_checkpoint=True)
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default 256)")
    add_format(p)
    p.set_defaults(func=cmd_eval)


def _add_data_options(p: argparse.ArgumentParser, defaults_from_checkpoint: bool = False) -> None:
    same = " (default: as recorded in the checkpoint)" if defaults_from_checkpoint else ""
    p.add_argument("--val-ratio", type=float, default=None if defaults_from_checkpoint else 0.1,
                   help="share of each class held out for validation when the folder has no val/ "
                        f"(the seed's 0.1){same}")
    p.add_argument("--long-tail", metavar="PROFILE",
                   help="make the training split long-tailed: exp:IF (e.g. exp:100) or seed (the seed's class "
                        f"sizes); digits default to exp:10{same}")
    p.add_argument("--seed", type=int, default=None if defaults_from_checkpoint else 0,
                   help=f"seed of the split and the long-tail subsampling{same or ' (default 0)'}")


def cmd_stats(args: argparse.Namespace) -> int:
    """Run ``nas data stats``: the statistics (or per-class rows) on stdout, written files on stderr."""
    from nas.reports import stats_figures, stats_outputs

    stats, files = stats_outputs(args.path, args.out_dir)
    if args.format == "json":
        emit(stats.class_rows(), "json", extra={**{k: v for k, v in stats.to_dict().items() if k != "per_class"},
                                                "files": {k: str(v) for k, v in files.items()}})
    elif args.per_class or args.format == "csv":
        emit(stats.class_rows(), args.format, title=f"images per class in {stats.root}")
    else:
        emit(stats.describe_rows(), "table", title=f"images per class ({stats.layout})", extra=stats_figures(stats))
    if stats.unreadable:
        message(f"[yellow]{stats.unreadable} unreadable files skipped[/], e.g. {stats.unreadable_sample[0]}")
    for name, path in files.items():
        message(f"wrote {name}: {path}")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    """Run ``nas data split``: per-class train/val counts on stdout (the loader's report on stderr)."""
    from nas.reports import split_report

    split = split_report(args.path, args.resolution, val_ratio=args.val_ratio, long_tail=args.long_tail,
                         seed=args.seed, max_per_class=args.max_per_class)
    if args.format == "table":
        for line in split.report.lines():
            message(line)
    emit(split.rows, args.format, title="images per class and split",
         extra={"report": split.report.to_dict()} if args.format == "json" else None)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Run ``nas eval``: per-class accuracy of a checkpoint per split (the data report on stderr)."""
    from nas.reports import data_warnings_silenced, eval_checkpoint

    splits = ["val", "train"] if args.split == "both" else [args.split]
    with data_warnings_silenced():  # the data report below lists skipped files
        run = eval_checkpoint(args.checkpoint, args.data, splits, args.out_dir, val_ratio=args.val_ratio,
                              long_tail=args.long_tail, seed=args.seed, batch_size=args.batch_size)
    if args.format == "json":
        emit(run.summary_rows(), "json", extra={**run.to_dict(), "files": {k: str(v) for k, v in run.files.items()}})
    elif args.format == "csv":
        rows = [{"split": s, **r} for s, res in run.results.items() for r in res.per_class]
        emit(rows, "csv", columns=["split", *PER_CLASS_COLUMNS])
    else:
        for line in run.data.lines():
            message(line)
        for split, res in run.results.items():
            emit(res.per_class, "table", columns=PER_CLASS_COLUMNS,
                 title=f"{split}: per-class accuracy ({res.images} images)",
                 extra={"top-1": f"{res.top1:.2%}", "balanced accuracy": f"{res.balanced_acc:.2%}"})
    for name, path in run.files.items():
        message(f"wrote {name}: {path}")
    return 0
