"""``nas arch``: the search space, presets and analytic costs."""

from __future__ import annotations

import argparse

from nas.arch import arch_table, memory_strategy, preset_rows
from nas.cli._common import add_format, emit
from search_space import BLOCK_TYPES, SEED_ROWS, analyze, resolve_arch

LEGACY_NOTE = (
    "legacy_flops reproduces the seed's 'Flops' column: thop 0.1.x on an unbatched (3,H,W) input reads the "
    "height where the input channels belong, so it grows linearly with width. True MACs are in 'macs'."
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``nas arch list|show|table``."""
    parser = sub.add_parser("arch", help="the search space: presets, per-layer costs, the seed's table")
    cmds = parser.add_subparsers(dest="arch_command", metavar="ACTION", required=True)

    p = cmds.add_parser("list", help="list the presets (official RepVGG and the seed's variants)")
    add_format(p)
    p.set_defaults(func=cmd_list)

    p = cmds.add_parser(
        "show", help="per-layer costs and totals of one architecture",
        epilog="examples:\n  nas arch show A0 --resolution 112 --classes 89\n"
               "  nas arch show repvgg_d2-2-2-2_w1-1-1-1_g1_r112_c89 -f json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("arch", metavar="SPEC|PRESET", help="a preset name (A0, N3, …) or a spec string")
    p.add_argument("--resolution", type=int, help="input resolution in px (presets default to 224)")
    p.add_argument("--classes", type=int, help="number of classes (presets default to 1000)")
    p.add_argument("--block", choices=BLOCK_TYPES, help="override the block type")
    p.add_argument("--memory", default="int8", choices=["int8", "fp16"],
                   help="data widths for on-chip memory: int8 (the seed's) or fp16")
    add_format(p)
    p.set_defaults(func=cmd_show)

    p = cmds.add_parser(
        "table", help="the seed's model-analysis table: true MACs, legacy FLOPs, params, peak memory",
        epilog="examples:\n  nas arch table\n  nas arch table A0 B0 --resolution 224 --classes 1000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("names", nargs="*", default=list(SEED_ROWS), metavar="NAME",
                   help="presets or spec strings (default: the seed's eight rows)")
    p.add_argument("--resolution", type=int,
                   help="input resolution for every row (default: presets at the seed's 112, spec strings their own)")
    p.add_argument("--classes", type=int,
                   help="number of classes for every row (default: presets the seed's 89, spec strings their own)")
    p.add_argument("--memory", default="int8", choices=["int8", "fp16"], help="memory strategy (default int8)")
    add_format(p)
    p.set_defaults(func=cmd_table)


def cmd_list(args: argparse.Namespace) -> int:
    """``nas arch list``: every preset with its source and note."""
    emit(preset_rows(), args.format, title="presets")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """``nas arch show``: per-layer costs (rows) and totals of one architecture."""
    spec = resolve_arch(args.arch, args.resolution, args.classes, args.block)
    report = analyze(spec, memory_strategy(args.memory))
    emit(report.layer_rows(), args.format, title=spec.to_string(), extra=report.totals())
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    """``nas arch table``: one row of totals per preset or spec string (the seed's table by default)."""
    rows = arch_table(args.names, args.resolution, args.classes, args.memory)
    columns = ["name", "depths", "widths", "macs", "legacy_flops", "params", "peak_memory_kib", "peak_layer"]
    shapes = {(r["resolution"], r["num_classes"]) for r in rows}
    if len(shapes) == 1:
        title = "model analysis at {} px, {} classes".format(*shapes.pop())
    else:  # spec strings of different inputs: show each row's
        title, columns = "model analysis", [*columns[:3], "resolution", "num_classes", *columns[3:]]
    emit(rows, args.format, title=title, columns=None if args.format == "json" else columns,  # JSON: every field
         extra={"note": LEGACY_NOTE} if args.format != "csv" else None)
    return 0
