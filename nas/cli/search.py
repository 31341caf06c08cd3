"""``nas search``, ``nas pareto``, ``nas dashboard``: the Optuna search, its front, and optuna-dashboard."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import optuna
from rich.markup import escape

from nas.accuracy import proxy_config
from nas.cli._common import add_format, add_renamed, emit, message, progress
from nas.cli.options import (
    add_data_options,
    add_recipe_options,
    add_space_options,
    data_overrides,
    recipe_overrides,
    space_of,
)
from nas.objectives import Limits, SearchError
from nas.pareto import PICKS, Front, pareto_front, pick, within_noise
from nas.runs import plan_data
from nas.search import DEFAULT_TARGET, Search, SearchConfig
from nas.storage import DEFAULT_STORAGE, HEARTBEAT_INTERVAL, MAX_RETRY, load_study, mask_url, open_storage
from nas.study import SAMPLERS

SEARCH_EPILOG = """examples:
  nas search --objective acc,latency --target T4 --trials 20      the main job on the embedded digits
  nas search -o bacc,latency --target Hexagon698 --data ~/data/signs --hflip 0 --loss balanced_softmax \\
             --repeats 3             a long-tailed folder whose classes come in left/right pairs, 3 proxy seeds
  nas search -o latency:T4,latency:RV1126,memory --classes 89 --trials 200 --sampler nsga2
  nas search -o acc,latency --max-latency T4=0.6 --max-memory 2048 --enqueue N1,N3
  nas search --space examples/space.toml --storage postgresql://user@db-host:5432/nas --study run1
             (start the same command on several machines: they share the study)

--trials N counts distinct specs evaluated, in total: the same command resumes an interrupted study and
stops when N are done (duplicates and failed trials are recorded but not counted; infeasible specs count).
The study records its data and recipe: resuming with others is refused, and nas train/export --trial use them.
"""
PARETO_EPILOG = """examples:
  nas pareto                                   the front of the only study in sqlite:///nas.db
  nas pareto --study acc-latency_T4 -f json    every attribute of every front trial
  nas pareto --plot front.png --pick knee
  nas pareto --pick best-acc-under --under T4=0.5

Each objective with an interval shows it (90 %: accuracy by bootstrap over the scored selection images and
proxy seeds, latency from its predictor); tied_with lists the front members whose intervals overlap this
member's on every objective: the search cannot rank them. Plots draw the intervals as error bars.
"""


def _add_limits(p: argparse.ArgumentParser, search: bool) -> None:
    verb = "constraint (trials over it are infeasible, never trained)" if search else "filter the front"
    p.add_argument("--max-latency", action="append", default=[], metavar="TARGET=MS",
                   help=f"predicted latency limit on a hardware target; repeatable; {verb}")
    p.add_argument("--max-memory", metavar="KIB", help=f"peak on-chip memory limit in KiB; {verb}")
    p.add_argument("--max-params", metavar="N", help=f"parameter limit (5M = 5e6); {verb}")
    p.add_argument("--max-macs", metavar="N", help=f"MAC limit (300M = 3e8); {verb}")


def _add_storage(p: argparse.ArgumentParser, study_help: str) -> None:
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help="Optuna storage URL: sqlite:///FILE for one machine, postgresql://user@host/db for "
                        f"many, :memory: for a throw-away run (default {DEFAULT_STORAGE})")
    p.add_argument("--study", help=study_help)


def _add_proxy_budget(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--proxy-epochs", type=int, metavar="N", help="passes over the proxy's training subset (default 6)")
    g.add_argument("--proxy-steps", type=int, metavar="N",
                   help="at most N optimizer steps per proxy run, whatever the spec (default 120)")
    g.add_argument("--proxy-images", type=int, metavar="N",
                   help="train on about N images, every class scaled alike so the imbalance is kept (default 1000)")
    g.add_argument("--proxy-selection", type=int, metavar="N",
                   help="selection images scored per class (default 50); more narrows the accuracy intervals")
    g.add_argument("--repeats", type=int, default=1, metavar="K",
                   help="train each spec with K proxy seeds: the objective is their mean and the spread is "
                        "recorded; costs K times the proxy (default 1)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``nas search``, ``nas pareto`` and ``nas dashboard``."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("search", help="multi-objective architecture search (Optuna)", epilog=SEARCH_EPILOG,
                       formatter_class=fmt)
    p.add_argument("-o", "--objective", default="acc,latency",
                   help="comma-separated: acc, bacc (maximized: the accuracy proxy), latency[:TARGET], macs, "
                        "params, memory (minimized); default acc,latency")
    p.add_argument("--target", help=f"hardware target of a bare 'latency' (default {DEFAULT_TARGET}); when given, "
                                    "the model must also fit that chip")
    add_renamed(p, "--device", "--target")
    _add_limits(p, search=True)
    add_space_options(p, "search space (a TOML file, then these flags override it)")
    add_data_options(p.add_argument_group("data (shared with nas train and nas export)"), old_spellings=False)
    add_recipe_options(p.add_argument_group("recipe: how the proxy trains (the same flags train fully)"),
                       old_spellings=False)
    _add_proxy_budget(p.add_argument_group("the accuracy proxy's budget: the recipe trained briefly"))
    p.add_argument("--classes", type=int, help="class count when no data is used (cost-only objectives)")
    p.add_argument("--tables", action="append", default=[], metavar="CSV",
                   help="extra measured hardware table for the latency predictors; repeatable")
    add_renamed(p, "--hardware", "--tables")
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe",
                   help="the Optuna sampler that proposes specs (default tpe)")
    p.add_argument("--seed", type=int, help="sampler seed, for a reproducible single-worker run")
    p.add_argument("--enqueue", help="presets to evaluate first as reference points, e.g. A0,N1,N3")
    p.add_argument("--trials", type=int, default=20, metavar="N",
                   help="distinct specs to evaluate, in total: a resumed study stops when it has N (default 20)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    _add_storage(p, "study name (default: the objectives, e.g. acc-latency_T4)")
    p.add_argument("--heartbeat", type=int, default=HEARTBEAT_INTERVAL,
                   help="seconds between a running trial's heartbeats (RDB storages)")
    p.add_argument("--grace", type=int, help="seconds without heartbeat before a trial counts as dead "
                                             "(default 3 heartbeats); it is then retried")
    p.add_argument("--max-retry", type=int, default=MAX_RETRY, help="retries of a dead worker's trial")
    p.add_argument("--zero-cost", action="store_true", help="also record zero-cost scores of each trained trial")
    add_format(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("pareto", help="the Pareto front of a study: table, JSON/CSV, plot, pick one",
                       epilog=PARETO_EPILOG, formatter_class=fmt)
    _add_storage(p, "study name (default: the storage's only study)")
    _add_limits(p, search=False)
    p.add_argument("--min-acc", help="keep trials with accuracy at least this (0.8 or 80%%)")
    p.add_argument("--plot", metavar="FILE", help="write the front as FILE.png (matplotlib) or FILE.html (plotly)")
    p.add_argument("--pick", choices=PICKS, help="knee: the balanced point; best-acc-under: best accuracy "
                                                 "within --under/--max-* limits")
    p.add_argument("--under", action="append", default=[], metavar="TARGET=MS",
                   help="latency limit for --pick best-acc-under; repeatable")
    add_format(p)
    p.set_defaults(func=cmd_pareto)

    p = sub.add_parser("dashboard", help="open optuna-dashboard on a study storage",
                       epilog="examples:\n  nas dashboard\n  nas dashboard --storage sqlite:///runs/nas.db --port 8081",
                       formatter_class=fmt)
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"storage URL (default {DEFAULT_STORAGE})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on")
    p.set_defaults(func=cmd_dashboard)


def _limits(args: argparse.Namespace, min_acc: bool = False) -> Limits:
    return Limits.parse(args.max_latency, args.max_memory, args.max_params, args.max_macs,
                        args.min_acc if min_acc else None)


def search_config(args: argparse.Namespace) -> SearchConfig:
    """The :class:`SearchConfig` of parsed ``nas search`` arguments."""
    space = space_of(args)
    data, recipe = data_overrides(args), recipe_overrides(args)
    budget = {"epochs": args.proxy_epochs, "max_steps": args.proxy_steps, "train_images": args.proxy_images,
              "selection_per_class": args.proxy_selection}
    plan = None
    if any(v is not None for v in (*data.values(), *recipe.values())):  # else the data's defaults, if data is used
        plan = plan_data(data, recipe)
    return SearchConfig(
        objectives=args.objective, target=args.target, limits=_limits(args), space=space,
        sampler=args.sampler, seed=args.seed, trials=args.trials, timeout=args.timeout,
        storage=args.storage, study=args.study,
        enqueue=[e.strip() for e in (args.enqueue or "").split(",") if e.strip()],
        data=plan.settings if plan else None, recipe=plan.recipe if plan else None, num_classes=args.classes,
        tables=args.tables,
        proxy=proxy_config(budget) if any(v is not None for v in budget.values()) else None,
        repeats=args.repeats, zero_cost=args.zero_cost,
        heartbeat_interval=args.heartbeat, grace_period=args.grace, max_retry=args.max_retry,
    )


def _interval_column(name: str) -> str:
    """``acc 90%``, ``T4 90%``: the table header of an objective's interval."""
    return f"{name.removeprefix('latency_')} 90%"


def _marked_targets(front: Front) -> set[str]:
    """Targets whose latency is an objective shown with an interval: the table marks extrapolation there."""
    return {n.removeprefix("latency_") for n in front.interval_names if n.startswith("latency_")}


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
        out.append(row)
    return out


def _front_summary(front: Front) -> str:
    if not front.rows:
        return "front: empty"
    best = front.rows[0]
    parts = [f"{n} {best[n]:.4g}" for n in front.metric_names]
    return f"front {len(front.rows)} · e.g. {', '.join(parts)}"


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


def _show_front(front: Front, fmt: str, extra: dict[str, Any]) -> None:
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


def _col_order(front: Front):
    first = _front_columns(front)
    return lambda k: (first.index(k) if k in first else len(first), k)


STOPPED = {"timeout": "stopped by --timeout", "space exhausted": "every spec of the space is evaluated",
           "duplicates": "the sampler kept proposing evaluated specs; the front is probably complete"}


def _value_text(trial: optuna.trial.FrozenTrial, name: str, value: float) -> str:
    """``acc=0.9412 [0.906–0.971]``: an objective's value and, where the trial has one, its interval."""
    low, high = trial.user_attrs.get(f"{name}_low"), trial.user_attrs.get(f"{name}_high")
    return f"{name}={value:.4g}" + (f" [{low:.3g}–{high:.3g}]" if low is not None and high is not None else "")


def _trial_line(trial: optuna.trial.FrozenTrial, names: list[str], counts: dict[str, int], total: int) -> str:
    detail = (", ".join(_value_text(trial, n, v) for n, v in zip(names, trial.values)) if trial.values
              else trial.user_attrs.get("fail_reason", "another worker evaluated the last spec"))
    note = trial.user_attrs.get("infeasible_reason") or (
        f"duplicate of {trial.user_attrs['duplicate_of']}" if "duplicate_of" in trial.user_attrs else "")
    return (f"trial {trial.number} {trial.state.name.lower()}: {detail}" + (f" [{note}]" if note else "")
            + f" ({counts['evaluated']}/{total})")


def cmd_search(args: argparse.Namespace) -> int:
    """Run ``nas search``: progress on stderr, the study's Pareto front on stdout."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    search = Search(search_config(args))
    for line in search.skipped:
        message(f"[yellow]{escape(line)}[/]")
    for line in search.warnings:  # predictions outside a target's measured region: said once, at start
        message(f"[yellow]warning: {escape(line)} — `nas hw suggest --target T` proposes specs to measure[/]")
    c = search.counts()
    total = search.config.trials
    message(escape(f"study {search.study_name!r} in {mask_url(args.storage)}: {c['evaluated']}/{total} specs "
                   f"evaluated; space {search.space.describe()}"))
    tty = sys.stderr.isatty()
    with progress("search", total) as advance:
        advance(min(c["evaluated"], total))

        def on_trial(trial: optuna.trial.FrozenTrial, counts: dict[str, int]) -> None:
            if trial.state == optuna.trial.TrialState.COMPLETE and "duplicate_of" not in trial.user_attrs:
                advance(1, f"trial {trial.number} · {_front_summary(pareto_front(search.study))}")
            if not tty:
                message(escape(_trial_line(trial, list(search.study.metric_names or []), counts, total)))

        try:
            summary = search.run(on_trial)
        except KeyboardInterrupt:
            c = search.counts()
            message(f"[yellow]interrupted with {c['evaluated']}/{total} specs evaluated; "
                    "run the same command to resume[/]")
            _show_front(pareto_front(search.study), args.format, {"evaluated": c["evaluated"]})
            return 130
    c = search.counts()
    message(escape(f"{summary.evaluated}/{total} specs evaluated ({c['complete'] - c['evaluated']} duplicates, "
                   f"{c['fail']} failed; {summary.ran} trials run now)"
                   + (f"; {STOPPED[summary.stopped]}" if summary.stopped in STOPPED else "")))
    _show_front(pareto_front(search.study), args.format,
                {"study": search.study_name, "storage": mask_url(args.storage), "evaluated": c["evaluated"],
                 "duplicates": c["complete"] - c["evaluated"], "failed": c["fail"]})
    return 0


def cmd_pareto(args: argparse.Namespace) -> int:
    """Run ``nas pareto``: the (filtered) front of a study, optionally one picked trial and a plot."""
    study = load_study(args.storage, args.study)
    front = pareto_front(study, _limits(args, min_acc=True))
    extra: dict[str, Any] = {"study": study.study_name}
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
    _show_front(front, args.format, extra)
    if args.plot:
        from nas.pareto_plot import plot_front

        message(f"wrote {plot_front(front, args.plot)}")
    return 0


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
