"""``nas pareto`` and ``nas dashboard``: a study read back, as its front (table, JSON/CSV, plot, a pick) or in
optuna-dashboard."""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape

from nas.cli._common import add_format, emit, message
from nas.cli.options import add_limit_options, add_storage_options, limits_of
from nas.fidelity import Refinement, refine
from nas.objectives import Limits, SearchError
from nas.pareto import PICKS, Front, empty_front_error, pareto_front, pick, within_noise
from nas.storage import DEFAULT_STORAGE, load_study, mask_url, open_storage

PARETO_EPILOG = """examples:
  nas pareto                                   the front of the only study in sqlite:///nas.db
  nas pareto --study acc-latency_T4 -f json    every attribute of every front trial
  nas pareto --plot front.png --pick knee
  nas pareto --plot front.html --offline       hover per trial; plotly.js embedded, views without network
  nas pareto --pick best-acc-under --under T4=0.5

Each objective with an interval shows it (90 %: accuracy by bootstrap over the scored selection images and
proxy seeds, latency from its predictor); tied_with lists the front members whose intervals overlap this
member's on every objective: the search cannot rank them. Plots draw the intervals as error bars.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``nas pareto`` and ``nas dashboard``."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("pareto", help="the Pareto front of a study: table, JSON/CSV, plot, pick one",
                       epilog=PARETO_EPILOG, formatter_class=fmt)
    add_storage_options(p, "study name (default: the storage's only study)")
    add_limit_options(p, search=False)
    p.add_argument("--min-acc", help="keep trials with accuracy at least this (0.8 or 80%%)")
    p.add_argument("--plot", metavar="FILE",
                   help="draw the front, the pick and the infeasible trials to FILE.png or FILE.svg (static) or "
                        "FILE.html (interactive, hover shows each trial; loads plotly.js from its CDN)")
    p.add_argument("--offline", action="store_true",
                   help="embed plotly.js in the HTML plot (~4.8 MB): use it when the plot is viewed without "
                        "network")
    p.add_argument("--pick", choices=PICKS, help="knee: the balanced point; best-acc-under: best accuracy "
                                                 "within --under/--max-* limits")
    p.add_argument("--under", action="append", default=[], metavar="TARGET=MS",
                   help="latency limit for --pick best-acc-under; repeatable")
    p.add_argument("--refine", type=int, metavar="K",
                   help="multi-fidelity studies: queue the front and its K nearest dominated specs one rung up "
                        "(the next run of the same nas search command, on any workers, trains them)")
    add_format(p)
    p.set_defaults(func=cmd_pareto)

    p = sub.add_parser("dashboard", help="open optuna-dashboard on a study storage",
                       epilog="examples:\n  nas dashboard\n  nas dashboard --storage sqlite:///runs/nas.db --port 8081",
                       formatter_class=fmt)
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"storage URL (default {DEFAULT_STORAGE})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on")
    p.set_defaults(func=cmd_dashboard)


def cmd_pareto(args: argparse.Namespace) -> int:
    """Run ``nas pareto``: the (filtered) front of a study, optionally one picked trial and a plot."""
    if args.plot or args.offline:
        from nas.pareto_plot import check_plot_target

        check_plot_target(args.plot, offline=args.offline)  # before anything is read or written
    study = load_study(args.storage, args.study)
    limits = limits_of(args, min_acc=True)
    front = pareto_front(study, limits)
    if not front.rows:
        raise empty_front_error(study, limits)
    extra: dict[str, Any] = {"study": study.study_name}
    chosen = None
    if args.pick:
        under = Limits.parse(args.under or args.max_latency, args.max_memory, args.max_params, args.max_macs)
        chosen = pick(front, args.pick, under)
        tied = within_noise(front, chosen)
        extra["pick"] = chosen["number"] if args.format == "table" else chosen
        if args.format == "table":
            extra["pick_spec"] = chosen.get("spec")
            extra["pick_within_noise"] = (
                f"tied with trial{'s' if len(tied) > 1 else ''} {', '.join(map(str, tied))}: their intervals "
                "overlap the pick's on every objective, so the data cannot say which is better" if tied else
                "no other front member is tied with the pick")
        else:
            extra["pick_tied_with"] = tied
    show_front(front, args.format, extra)
    if args.plot:
        from nas.pareto_plot import plot_front

        written = plot_front(front, args.plot, picked=chosen, picked_by=args.pick or "knee", offline=args.offline)
        message(f"wrote {written}")
    if args.refine is not None:
        message(escape(_refined(refine(study, args.refine))))
    return 0


def _refined(done: Refinement) -> str:
    """What ``--refine`` queued, in one line."""
    parts = [f"queued {len(done.queued)} promotion{'s' if len(done.queued) != 1 else ''}"
             + (f" ({', '.join(f'trial {n} to rung {r}' for n, r in done.queued)})" if done.queued else "")]
    if done.at_top:
        parts.append(f"at the top rung already: {', '.join(map(str, done.at_top))}")
    if done.held:
        parts.append(f"queued, running or done before: {', '.join(map(str, done.held))}")
    tail = "; run the same nas search command again (any number of workers) to train them" if done.queued else ""
    return "; ".join(parts) + tail


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Run ``nas dashboard``: serve optuna-dashboard on a study storage until Ctrl-C."""
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise SearchError("optuna-dashboard is not installed", "pip install 'repvgg-hwnas[dashboard]'") from None
    storage = open_storage(args.storage, heartbeat_interval=None, must_exist=True)
    message(f"optuna-dashboard for {mask_url(args.storage)} at http://{args.host}:{args.port} (Ctrl-C stops)")
    try:
        run_server(storage, host=args.host, port=args.port)
    except OSError as exc:
        raise SearchError(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}",
                          "choose another --port") from None
    return 0


# -- the front on stdout ---------------------------------------------------------------------------
#: The table's column of a multi-fidelity front: each value's rung and its proxy epochs.
RUNG_COLUMN = "rung (epochs)"


def show_front(front: Front, fmt: str, extra: dict[str, Any]) -> None:
    """The front on stdout (``-f table|json|csv``), with ``extra`` figures beside it."""
    info = {"hypervolume": front.hypervolume, "reference": front.reference, **extra}
    if fmt == "json":
        emit(front.rows, fmt, columns=sorted({k for r in front.rows for k in r}, key=_col_order(front)),
             extra={**info, "metric_names": front.metric_names, "directions": front.directions,
                    "bounds": front.bounds})
        return
    if front.interval_names:
        info["90% intervals"] = _uncertainty_note(front)
    if any(r.get("extrapolated") for r in front.rows):
        info["extrapolated"] = ("* in a latency interval" if fmt == "table" and _marked_targets(front) else
                                "these targets") + (": the latency is predicted outside the region the target's "
                                                    "table measured (nas hw suggest proposes specs to measure there)")
    emit(_display_rows(front), fmt, columns=_front_columns(front, fmt), title=f"Pareto front of {front.study_name}",
         extra=info if fmt == "table" else None)


def _uncertainty_note(front: Front) -> str:
    """What the intervals and ties of a front table mean, in one line."""
    parts = []
    if {"acc", "bacc"} & set(front.interval_names):
        images = sorted({r["proxy_selection_images"] for r in front.rows if "proxy_selection_images" in r})
        seeds = sorted({len(r["acc_seeds"]) for r in front.rows if "acc_seeds" in r})
        scored = (f"{'/'.join(map(str, images))} " if images else "") + "scored selection images"
        parts.append(f"accuracy by bootstrap over the {scored}"
                     + (f" and {'/'.join(map(str, seeds))} proxy seeds" if seeds else ""))
    if any(n.startswith("latency_") for n in front.interval_names):
        parts.append("latency from its predictor")
    return ", ".join(parts) + "; tied: overlap on every objective"


def _col_order(front: Front):
    first = _front_columns(front)
    return lambda k: (first.index(k) if k in first else len(first), k)


def _front_columns(front: Front, fmt: str = "json") -> list[str]:
    """Objectives (each with its interval and seed spread where the trials have them), ties, other figures.

    The table keeps to what fits a 160-column terminal (``-f csv``/``json`` carry every figure): it leaves
    out MACs and parameters, and marks an extrapolated latency with ``*`` in its interval column.
    """
    table = fmt == "table"
    cols = ["number"]
    for n in front.metric_names:
        cols.append(n)
        if n in front.interval_names:
            cols += [_interval_column(n)] if table else [f"{n}_low", f"{n}_high"]
        if any(f"{n}_sd" in r for r in front.rows):
            cols.append(f"{n} sd" if table else f"{n}_sd")
    if front.interval_names:
        cols.append("tied_with")
    if any("rung" in r for r in front.rows):  # multi-fidelity: the rung each value was measured at
        cols += [RUNG_COLUMN] if table else ["rung", "rung_epochs"]
    extra = ("acc", "bacc", "memory_kib") if table else ("acc", "bacc", "macs", "params", "memory_kib")
    cols += [c for c in extra if c not in cols and any(c in r for r in front.rows)]
    targets = {t for r in front.rows for t in (r.get("extrapolated") or "").split(",") if t}
    if targets - (_marked_targets(front) if table else set()):
        cols.append("extrapolated")  # targets whose latency is predicted outside their table's measured region
    if not table or any(r.get("preset") for r in front.rows):
        cols.append("preset")
    return [*cols, "spec"]


def _display_rows(front: Front) -> list[dict[str, Any]]:
    """Front rows for a table or CSV: intervals as ``low–high`` text (``*``: extrapolated), ties as ``13,20``."""
    out = []
    for r in front.rows:
        row = {**r, "tied_with": ",".join(str(n) for n in r.get("tied_with", []))}
        extrapolated = set((r.get("extrapolated") or "").split(","))
        for n in front.interval_names:
            if f"{n}_low" in r and f"{n}_high" in r:
                mark = "*" if n.removeprefix("latency_") in extrapolated else ""
                row[_interval_column(n)] = f"{r[f'{n}_low']:.3g}–{r[f'{n}_high']:.3g}{mark}"
            if f"{n}_sd" in r:
                row[f"{n} sd"] = r[f"{n}_sd"]
        if "rung" in r:
            row[RUNG_COLUMN] = f"{r['rung']} ({r.get('rung_epochs')})"
        out.append(row)
    return out


def _interval_column(name: str) -> str:
    """``acc 90%``, ``T4 90%``: the table header of an objective's interval."""
    return f"{name.removeprefix('latency_')} 90%"


def _marked_targets(front: Front) -> set[str]:
    """Targets whose latency is an objective shown with an interval: the table marks extrapolation there."""
    return {n.removeprefix("latency_") for n in front.interval_names if n.startswith("latency_")}
