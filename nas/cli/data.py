"""``nas data stats|split`` and ``nas eval``: what a data set holds, how it is split (train / selection /
test), how a model does on it."""

from __future__ import annotations

import argparse

from nas.cli._common import add_format, emit, message
from nas.cli.options import (
    add_data_options,
    add_long_tail_option,
    add_recipe_options,
    add_split_options,
    data_overrides,
    recipe_overrides,
)

# nas.reports (torch, torchvision) is imported inside the commands: `nas arch …` stays fast.

PER_CLASS_COLUMNS = ["class", "name", "count", "correct", "acc"]
EVAL_SPLITS = ("train", "selection", "test")
SPLIT_MEANING = {"test": "held out", "selection": "chose best.pt", "train": "trained on"}


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``nas data stats``, ``nas data split`` and ``nas eval``."""
    parser = sub.add_parser("data", help="data sets: per-class counts, resolutions, the train/selection/test split")
    cmds = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = cmds.add_parser(
        "stats", help="per-class counts, the training split's imbalance, resolutions, channel modes and warnings "
                      "about the recipe (headers only)",
        epilog="examples:\n  nas data stats                         the embedded digits\n"
               "  nas data stats ~/data/caltech101 --out-dir stats/\n"
               "  nas data stats ~/data/gtsrb-lt --hflip 0 --crop-scale 0.6,1 -f json\n"
               "  nas data stats ~/data/caltech101 --per-class -f csv > counts.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", metavar="PATH", nargs="?",
                   help="PATH/<class>/<image> or PATH/train/… + PATH/val/… (ImageFolder); default: the embedded digits")
    p.add_argument("--out-dir", metavar="DIR",
                   help="also write class_histogram.png, resolutions.png, stats.json and class_counts.csv here")
    p.add_argument("--per-class", action="store_true",
                   help="print one row per class (largest first) instead of the statistics table")
    add_recipe_options(p.add_argument_group("recipe to check against the data (default: the data's)"))
    add_format(p)
    p.set_defaults(func=cmd_stats)

    p = cmds.add_parser(
        "split", help="load a data set as training would: per-class train/selection/test counts, skipped files",
        epilog="examples:\n  nas data split                         the embedded long-tailed digits\n"
               "  nas data split ~/data/caltech101 --resolution 112 --long-tail seed\n"
               "  nas data split ~/data/cifar10-lt --max-per-class 100 -f json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", metavar="PATH", nargs="?", help="data folder (default: the embedded digits)")
    add_split_options(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the splits and the long-tail subsampling (0)")
    add_long_tail_option(p)
    p.add_argument("--resolution", type=int, default=32, help="training resolution in px (default 32)")
    add_format(p)
    p.set_defaults(func=cmd_split)

    p = sub.add_parser(
        "eval", help="top-1, balanced accuracy and the per-class table of a checkpoint on a split (default test)",
        epilog="examples:\n  nas eval --checkpoint runs/a0/best.pt                 the held-out test split\n"
               "  nas eval --checkpoint runs/a0/best.pt --split all --out-dir eval/\n"
               "  nas eval --checkpoint runs/digits/last.pt --split selection -f json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, metavar="C", help="a best.pt / last.pt written by `nas train`")
    p.add_argument("--split", choices=[*EVAL_SPLITS, "all"], default="test",
                   help="test (default: held out, the figure to expect), selection (what the best epoch was "
                        "chosen on: optimistic), train (evaluation transform, no augmentation) or all")
    p.add_argument("--out-dir", metavar="DIR",
                   help="also write confusion_<split>.png, per_class_<split>.csv and eval.json here")
    add_data_options(p.add_argument_group("data (default: what the checkpoint recorded)"))
    p.add_argument("--seed", type=int, help="seed of the splits (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default 256)")
    add_format(p)
    p.set_defaults(func=cmd_eval)


def cmd_stats(args: argparse.Namespace) -> int:
    """Run ``nas data stats``: the statistics (or per-class rows) on stdout; warnings and files on stderr."""
    from nas.reports import recipe_for, stats_figures, stats_outputs

    stats, files = stats_outputs(args.path, args.out_dir, recipe_for(args.path, recipe_overrides(args)))
    if args.format == "json":
        emit(stats.class_rows(), "json", extra={**{k: v for k, v in stats.to_dict().items() if k != "per_class"},
                                                "files": {k: str(v) for k, v in files.items()}})
    elif args.per_class or args.format == "csv":
        emit(stats.class_rows(), args.format, title=f"images per class in {stats.root}")
    else:
        emit(stats.describe_rows(), "table", title=f"images per class ({stats.layout})", extra=stats_figures(stats))
    if stats.unreadable:
        message(f"[yellow]{stats.unreadable} unreadable files skipped[/], e.g. {stats.unreadable_sample[0]}")
    for warning in stats.warnings:
        message(f"[yellow]warning:[/] {warning}")
    for name, path in files.items():
        message(f"wrote {name}: {path}")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    """Run ``nas data split``: per-class train/selection/test counts on stdout (the loader's report on stderr)."""
    from nas.reports import recipe_for, split_report
    from nas.runs import plan_data

    plan = plan_data({**data_overrides(args), "path": args.path}, seed=args.seed)
    split = split_report(plan.settings, args.resolution, recipe_for(args.path, {"long_tail": args.long_tail}))
    if args.format == "table":
        for line in split.report.lines():
            message(line)
    emit(split.rows, args.format, title="images per class and split",
         extra={"report": split.report.to_dict()} if args.format == "json" else None)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Run ``nas eval``: per-class accuracy of a checkpoint per split (the data report on stderr)."""
    from nas.reports import data_warnings_silenced, eval_checkpoint

    splits = list(EVAL_SPLITS) if args.split == "all" else [args.split]
    with data_warnings_silenced():  # the data report below lists skipped files
        run = eval_checkpoint(args.checkpoint, {**data_overrides(args), "seed": args.seed}, splits, args.out_dir,
                              batch_size=args.batch_size)
    for note in run.notes:
        message(f"[yellow]note:[/] {note}")
    if args.format == "json":
        emit(run.summary_rows(), "json", extra={**run.to_dict(), "files": {k: str(v) for k, v in run.files.items()}})
    elif args.format == "csv":
        rows = [{"split": s, **r} for s, res in run.results.items() for r in res.per_class]
        emit(rows, "csv", columns=["split", *PER_CLASS_COLUMNS])
    else:
        for line in run.data.lines():
            message(line)
        for split, res in run.results.items():
            worst = res.per_class[0]
            emit(res.per_class, "table", columns=PER_CLASS_COLUMNS,
                 title=f"{split}: {res.images} images, {SPLIT_MEANING[split]}",
                 extra={"top-1": f"{res.top1:.2%}", "balanced accuracy": f"{res.balanced_acc:.2%}",
                        "worst class": f"{worst['name']} ({(worst['acc'] or 0):.2%})"})
    for name, path in run.files.items():
        message(f"wrote {name}: {path}")
    return 0
