"""``nas hw``: hardware latency tables, per-device latency predictors and feasibility."""

from __future__ import annotations

import argparse

from nas.cli._common import add_format, emit, message
from nas.cli.hw_measure import add_measure_parser
from nas.hw import device_rows, fit_rows, load_predictors, plot_hw, predict_rows, save_predictors
from predictors import DEFAULT_CLASSES, DEFAULT_FAMILY, DEFAULT_RESOLUTION, FAMILIES, fit_predictors, load_table
from predictors.tables import resolve_device
from search_space import resolve_arch

FIT_NOTE = (
    "leave-one-out: each measured point is dropped from the whole table and predicted by a refit on the rest "
    "(prior, λ and interval included); macs_mape_pct is latency ∝ MACs on the same folds; coverage is the share "
    "of held-out points inside the predicted interval. With 3–6 points per device these are rough estimates."
)


def _add_table_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--table", action="append", default=[], metavar="FILE",
                   help="extra hardware CSV (repeatable), merged with the shipped seed table; use it for your "
                        "own measurements, e.g. from `nas hw measure`")
    p.add_argument("--no-seed", action="store_true",
                   help="leave out the shipped seed table (use only the --table files)")


def _add_device_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--device", action="append", metavar="D",
                   help=f"{what} only this device (repeatable; case-insensitive, e.g. T4 or host-cpu:int8)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``nas hw list|fit|predict|plot``."""
    parser = sub.add_parser("hw", help="hardware tables, latency predictors and feasibility per device")
    cmds = parser.add_subparsers(dest="hw_command", metavar="ACTION", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    p = cmds.add_parser("list", help="devices in the tables: precision, points, failures, memory bounds",
                        epilog="examples:\n  nas hw list\n  nas hw list --table host.csv -f json", formatter_class=fmt)
    _add_table_args(p)
    add_format(p)
    p.set_defaults(func=cmd_list)

    p = cmds.add_parser(
        "fit", help="fit per-device predictors and report leave-one-out accuracy against latency ∝ MACs",
        epilog="examples:\n  nas hw fit\n  nas hw fit --device T4 --device TDA4VM\n"
               "  nas hw fit --table host.csv --no-seed --save predictors/", formatter_class=fmt)
    _add_device_arg(p, "fit")
    _add_table_args(p)
    p.add_argument("--family", default=DEFAULT_FAMILY, choices=list(FAMILIES),
                   help=f"model family (default {DEFAULT_FAMILY}, chosen by bench/predictor_selection.py); "
                        "others are there to compare")
    p.add_argument("--save", metavar="DIR", help="write the fitted predictors as DIR/<device>.json")
    add_format(p)
    p.set_defaults(func=cmd_fit)

    p = cmds.add_parser(
        "predict", help="predicted latency ± interval and feasibility of one architecture on every device",
        epilog="examples:\n  nas hw predict M0\n  nas hw predict M1 --device Hexagon698\n"
               "  nas hw predict repvgg_d1-2-4-1_w0.5-0.5-1-1_g1_r112_c89 -f json\n"
               "  nas hw predict A0 --load predictors/", formatter_class=fmt)
    p.add_argument("arch", metavar="SPEC|PRESET", help="a preset name (A0, M1, …) or a spec string")
    _add_device_arg(p, "predict for")
    p.add_argument("--resolution", type=int,
                   help=f"input resolution (presets default to {DEFAULT_RESOLUTION}, the tables' setting)")
    p.add_argument("--classes", type=int, help=f"number of classes (presets default to {DEFAULT_CLASSES})")
    _add_table_args(p)
    p.add_argument("--load", metavar="DIR", help="use predictors saved by `nas hw fit --save DIR` instead of "
                                                 "fitting the tables")
    add_format(p)
    p.set_defaults(func=cmd_predict)

    p = cmds.add_parser("plot", help="PNG: latency across devices, and leave-one-out predicted vs measured",
                        epilog="examples:\n  nas hw plot --out hw.png", formatter_class=fmt)
    p.add_argument("--out", default="hw_latency.png", metavar="FILE.png", help="where to write the PNG")
    p.add_argument("--family", default=DEFAULT_FAMILY, choices=list(FAMILIES), help="model family to evaluate")
    _add_table_args(p)
    p.set_defaults(func=cmd_plot)
    add_measure_parser(cmds)  # `nas hw measure` (nas/cli/hw_measure.py)


def _table(args: argparse.Namespace):
    return load_table(args.table, include_seed=not args.no_seed)


def cmd_list(args: argparse.Namespace) -> int:
    """``nas hw list``."""
    emit(device_rows(_table(args)), args.format, title="hardware tables (memory in KiB, int8 memory model)")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    """``nas hw fit``."""
    rows, predictors = fit_rows(_table(args), args.device, args.family)
    emit(rows, args.format, title=f"latency predictors ({args.family}), leave-one-out",
         extra={"note": FIT_NOTE} if args.format != "csv" else None)
    if args.save:
        paths = save_predictors(predictors, args.save)
        message(f"wrote {len(paths)} predictor(s) to {args.save}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """``nas hw predict``."""
    is_preset = "_" not in args.arch.strip()
    spec = resolve_arch(args.arch,
                        args.resolution if args.resolution or not is_preset else DEFAULT_RESOLUTION,
                        args.classes if args.classes or not is_preset else DEFAULT_CLASSES)
    if args.load:
        predictors = load_predictors(args.load)
        if args.device:
            from predictors import PredictorError

            wanted = {d.lower() for d in args.device}
            predictors = {k: p for k, p in predictors.items()
                          if k.lower() in wanted or p.device.lower() in wanted}
            if not predictors:
                raise PredictorError(f"no saved predictor for {', '.join(args.device)}",
                                     f"saved: {', '.join(load_predictors(args.load))}")
    else:
        table = _table(args)
        devices = [resolve_device(table, d) for d in args.device] if args.device else None
        predictors = fit_predictors(table, devices)
    emit(predict_rows(predictors, spec), args.format, title=spec.to_string(),
         columns=["device", "precision", "ms", "low", "high", "verdict", "peak_memory_kib", "memory_limit_kib",
                  "points", "reason"] if args.format == "table" else None)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """``nas hw plot``."""
    path = plot_hw(_table(args), args.out, args.family)
    message(f"wrote {path}")
    return 0
