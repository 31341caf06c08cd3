"""``nas hw``: hardware latency tables, per-device latency predictors, feasibility, and what to measure next."""

from __future__ import annotations

import argparse

from nas.cli._common import add_format, add_renamed, emit, message
from nas.cli.hw_measure import add_measure_parser
from nas.cli.options import add_space_options, space_of
from nas.hw import (
    AUTO,
    DEFAULT_CLASSES,
    DEFAULT_FAMILY,
    DEFAULT_RESOLUTION,
    FAMILIES,
    FIT_NOTE,
    device_rows,
    fit_report,
    plot_hw,
    predict_arch,
    suggest_for,
)

PREDICT_COLUMNS = ["device", "precision", "ms", "low", "high", "extrapolated", "verdict", "peak_memory_kib",
                   "memory_limit_kib", "points", "reason"]
FIT_COLUMNS = ["device", "precision", "points", "family", "lam", "loo_mape_pct", "row_loo_mape_pct", "max_error_pct",
               "macs_mape_pct", "kendall_tau", "coverage", "memory_limit_kib"]


def _add_table_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tables", action="append", default=[], metavar="FILE",
                   help="extra hardware CSV (repeatable), merged with the shipped seed table; use it for your "
                        "own measurements, e.g. from `nas hw measure`")
    add_renamed(p, "--table", "--tables")
    p.add_argument("--no-seed", action="store_true",
                   help="leave out the shipped seed table (use only the --tables files)")


def _add_target_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--target", action="append", metavar="T",
                   help=f"{what} only this hardware target (repeatable; case-insensitive, e.g. T4 or host-cpu:int8)")
    add_renamed(p, "--device", "--target")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``nas hw list|fit|predict|plot|suggest|measure``."""
    parser = sub.add_parser("hw", help="hardware tables, latency predictors and feasibility per device")
    cmds = parser.add_subparsers(dest="hw_command", metavar="ACTION", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    p = cmds.add_parser("list", help="devices in the tables: precision, points, failures, memory bounds",
                        epilog="examples:\n  nas hw list\n  nas hw list --tables host.csv -f json", formatter_class=fmt)
    _add_table_args(p)
    add_format(p)
    p.set_defaults(func=cmd_list)

    p = cmds.add_parser(
        "fit", help="fit per-device predictors; report honest leave-one-out accuracy against latency ∝ MACs",
        epilog="examples:\n  nas hw fit\n  nas hw fit --target T4 --target TDA4VM\n"
               "  nas hw fit --tables host.csv --no-seed --save predictors/", formatter_class=fmt)
    _add_target_arg(p, "fit")
    _add_table_args(p)
    p.add_argument("--family", default=DEFAULT_FAMILY, choices=[*FAMILIES, AUTO],
                   help=f"model family (default {DEFAULT_FAMILY}, chosen by bench/predictor_selection.py; "
                        f"{AUTO}: chosen on the tables by honest nested leave-one-out); others are there to compare")
    p.add_argument("--save", metavar="DIR", help="write the fitted predictors as DIR/<device>.json")
    add_format(p)
    p.set_defaults(func=cmd_fit)

    p = cmds.add_parser(
        "predict", help="predicted latency ± interval and feasibility of one architecture on every device",
        epilog="examples:\n  nas hw predict M0\n  nas hw predict M1 --target Hexagon698\n"
               "  nas hw predict repvgg_d1-2-4-1_w0.5-0.5-1-1_g1_r112_c89 -f json\n"
               "  nas hw predict A0 --load predictors/", formatter_class=fmt)
    p.add_argument("arch", metavar="SPEC|PRESET", help="a preset name (A0, M1, …) or a spec string")
    _add_target_arg(p, "predict for")
    p.add_argument("--resolution", type=int, help=f"input resolution (what the architecture leaves open defaults "
                                                  f"to {DEFAULT_RESOLUTION}, the tables' setting)")
    p.add_argument("--classes", type=int, help=f"number of classes (default {DEFAULT_CLASSES}, as --resolution)")
    _add_table_args(p)
    p.add_argument("--load", metavar="DIR", help="use predictors saved by `nas hw fit --save DIR` instead of "
                                                 "fitting the tables")
    add_format(p)
    p.set_defaults(func=cmd_predict)

    p = cmds.add_parser(
        "suggest", help="which architectures of a search space to measure next on a target",
        description="Propose the specs whose measurement would most reduce the prediction uncertainty of "
                    "--target over the space you will search, given what the tables already hold for it.",
        epilog="examples:\n  nas hw suggest --target T4 -n 5                     over nas search's default space\n"
               "  nas hw suggest --target host-cpu --tables host.csv --resolution 32,48 -n 8\n"
               "  nas hw suggest --target NewChip --space examples/space.toml   (a device no table has yet)\n"
               "  nas hw measure --suggest 5 --resolution 32,48 --out host.csv   measure them on this host",
        formatter_class=fmt)
    p.add_argument("--target", required=True, help="hardware target (a device of the tables, or a new one)")
    add_renamed(p, "--device", "--target")
    p.add_argument("-n", type=int, default=5, metavar="K", help="how many specs to propose (default 5)")
    add_space_options(p, "search space (as in nas search: a TOML file, then these flags override it)")
    p.add_argument("--classes", type=int, default=DEFAULT_CLASSES,
                   help=f"class count of the proposed specs (default {DEFAULT_CLASSES}, the tables' setting)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws that stand for a large space")
    _add_table_args(p)
    add_format(p)
    p.set_defaults(func=cmd_suggest)

    p = cmds.add_parser("plot", help="PNG: latency across devices, and leave-one-out predicted vs measured",
                        epilog="examples:\n  nas hw plot --out hw.png", formatter_class=fmt)
    p.add_argument("--out", default="hw_latency.png", metavar="FILE.png", help="where to write the PNG")
    p.add_argument("--family", default=DEFAULT_FAMILY, choices=[*FAMILIES, AUTO], help="model family to evaluate")
    _add_table_args(p)
    p.set_defaults(func=cmd_plot)
    add_measure_parser(cmds)  # `nas hw measure` (nas/cli/hw_measure.py)


def cmd_list(args: argparse.Namespace) -> int:
    """``nas hw list``."""
    emit(device_rows(args.tables, not args.no_seed), args.format,
         title="hardware tables (memory in KiB, int8 memory model)")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    """``nas hw fit``."""
    report = fit_report(args.tables, not args.no_seed, args.target, args.family, args.save)
    emit(report.rows, args.format, columns=FIT_COLUMNS, title=f"latency predictors ({args.family}), leave-one-out",
         extra={"note": FIT_NOTE} if args.format != "csv" else None)
    if report.saved:
        message(f"wrote {len(report.saved)} predictor(s) to {args.save}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """``nas hw predict``."""
    result = predict_arch(args.arch, args.tables, not args.no_seed, args.target, args.resolution, args.classes,
                          args.load)
    emit(result.rows, args.format, title=result.spec.to_string(),
         columns=PREDICT_COLUMNS if args.format == "table" else None)
    return 0


def cmd_suggest(args: argparse.Namespace) -> int:
    """``nas hw suggest``."""
    space = space_of(args)
    result = suggest_for(args.target, space, args.n, args.tables, not args.no_seed, args.classes, args.seed)
    if not result.known:
        message(f"{args.target} is not in the tables: proposing a first set for a new device")
    emit(result.rows, args.format, title=f"measure next on {result.target} ({result.measured} measured; space "
                                         f"{space.describe()})")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """``nas hw plot``."""
    message(f"wrote {plot_hw(args.tables, not args.no_seed, args.out, args.family)}")
    return 0
