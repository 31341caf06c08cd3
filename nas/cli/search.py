"""``nas search``: the Optuna search, its progress, and its front (shown as ``nas pareto`` shows it)."""

from __future__ import annotations

import argparse
import sys

import optuna
from rich.markup import escape

from nas.accuracy import proxy_config
from nas.cli._common import add_format, add_renamed, message, progress
from nas.cli.options import (
    add_data_options,
    add_fidelity_options,
    add_limit_options,
    add_recipe_options,
    add_space_options,
    add_storage_options,
    data_overrides,
    fidelity_config,
    limits_of,
    recipe_overrides,
    space_of,
)
from nas.cli.pareto import show_front
from nas.fidelity import describe, rung_budget
from nas.pareto import Front, all_infeasible_message, pareto_front, trial_values
from nas.runs import plan_data
from nas.search import DEFAULT_TARGET, Search, SearchConfig
from nas.storage import HEARTBEAT_INTERVAL, MAX_RETRY, mask_url
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
    """Add ``nas search``."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("search", help="multi-objective architecture search (Optuna)", epilog=SEARCH_EPILOG,
                       formatter_class=fmt)
    p.add_argument("-o", "--objective", default="acc,latency",
                   help="comma-separated: acc, bacc (maximized: the accuracy proxy), latency[:TARGET], macs, "
                        "params, memory (minimized); default acc,latency")
    p.add_argument("--target", help=f"hardware target of a bare 'latency' (default {DEFAULT_TARGET}); when given, "
                                    "the model must also fit that chip")
    add_renamed(p, "--device", "--target")
    add_limit_options(p, search=True)
    add_space_options(p, "search space (a TOML file, then these flags override it)")
    add_data_options(p.add_argument_group("data (shared with nas train and nas export)"), old_spellings=False)
    add_recipe_options(p.add_argument_group("recipe: how the proxy trains (the same flags train fully)"),
                       old_spellings=False)
    _add_proxy_budget(p.add_argument_group("the accuracy proxy's budget: the recipe trained briefly"))
    add_fidelity_options(p.add_argument_group("multi-fidelity: successive halving over rungs of the proxy"))
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
    add_storage_options(p, "study name (default: the objectives, e.g. acc-latency_T4, plus a digest of the "
                           "space when it is not the default one)")
    p.add_argument("--heartbeat", type=int, default=HEARTBEAT_INTERVAL,
                   help="seconds between a running trial's heartbeats (RDB storages)")
    p.add_argument("--grace", type=int, help="seconds without heartbeat before a trial counts as dead "
                                             "(default 3 heartbeats); it is then retried")
    p.add_argument("--max-retry", type=int, default=MAX_RETRY, help="retries of a dead worker's trial")
    p.add_argument("--zero-cost", action="store_true", help="also record zero-cost scores of each trained trial")
    add_format(p)
    p.set_defaults(func=cmd_search)


def search_config(args: argparse.Namespace) -> SearchConfig:
    """The :class:`SearchConfig` of parsed ``nas search`` arguments."""
    space = space_of(args)
    data, recipe = data_overrides(args), recipe_overrides(args)
    budget = {"epochs": args.proxy_epochs, "max_steps": args.proxy_steps, "train_images": args.proxy_images,
              "selection_per_class": args.proxy_selection}
    fidelity = fidelity_config(args)
    proxy = proxy_config(budget) if any(v is not None for v in budget.values()) else None
    if fidelity is not None:
        proxy = rung_budget(budget, fidelity)  # the top rung is the proxy's full budget, with no step cap
    plan = None
    if any(v is not None for v in (*data.values(), *recipe.values())):  # else the data's defaults, if data is used
        plan = plan_data(data, recipe)
    return SearchConfig(
        objectives=args.objective, target=args.target, limits=limits_of(args), space=space,
        sampler=args.sampler, seed=args.seed, trials=args.trials, timeout=args.timeout,
        storage=args.storage, study=args.study,
        enqueue=[e.strip() for e in (args.enqueue or "").split(",") if e.strip()],
        data=plan.settings if plan else None, recipe=plan.recipe if plan else None, num_classes=args.classes,
        tables=args.tables,
        proxy=proxy,
        repeats=args.repeats, zero_cost=args.zero_cost,
        heartbeat_interval=args.heartbeat, grace_period=args.grace, max_retry=args.max_retry, fidelity=fidelity,
    )


def _front_summary(front: Front) -> str:
    if not front.rows:
        return "front: empty"
    best = front.rows[0]
    parts = [f"{n} {best[n]:.4g}" for n in front.metric_names]
    return f"front {len(front.rows)} · e.g. {', '.join(parts)}"


STOPPED = {"timeout": "stopped by --timeout", "space exhausted": "every spec of the space is evaluated",
           "duplicates": "the sampler kept proposing evaluated specs; the front is probably complete"}


def _value_text(trial: optuna.trial.FrozenTrial, name: str, value: float) -> str:
    """``acc=0.9412 [0.906–0.971]``: an objective's value and, where the trial has one, its interval."""
    low, high = trial.user_attrs.get(f"{name}_low"), trial.user_attrs.get(f"{name}_high")
    return f"{name}={value:.4g}" + (f" [{low:.3g}–{high:.3g}]" if low is not None and high is not None else "")


def _trial_line(trial: optuna.trial.FrozenTrial, names: list[str], counts: dict[str, int], total: int) -> str:
    duplicate = "duplicate_of" in trial.user_attrs  # pruned: its values are its twin's
    values = trial_values(trial)  # a rung below the top is pruned with its values
    detail = (", ".join(_value_text(trial, n, v) for n, v in zip(names, values)) if values
              else trial.user_attrs.get("fail_reason") or ("its spec was evaluated before" if duplicate
                                                           else "nothing trained" if "claim_lost" in trial.user_attrs
                                                           else "another worker evaluated the last spec"))
    note = trial.user_attrs.get("infeasible_reason") or (
        f"duplicate of {trial.user_attrs['duplicate_of']}" if "duplicate_of" in trial.user_attrs else describe(trial))
    return (f"trial {trial.number} {trial.state.name.lower()}: {detail}" + (f" [{note}]" if note else "")
            + f" ({counts['evaluated']}/{total})")


def cmd_search(args: argparse.Namespace) -> int:
    """Run ``nas search``: progress on stderr, the study's Pareto front on stdout."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    search = Search(search_config(args))
    for line in search.skipped:  # presets of --enqueue that the space cannot hold: one line, said loudly
        message(f"[yellow]warning: --enqueue {escape(line)}[/]")
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
            if trial_values(trial) is not None and not trial.user_attrs.get("rung") and "duplicate_of" not in \
                    trial.user_attrs:  # a new spec evaluated (at rung 0 with multi-fidelity)
                advance(1, f"trial {trial.number} · {_front_summary(pareto_front(search.study))}")
            if not tty:
                message(escape(_trial_line(trial, list(search.study.metric_names or []), counts, total)))

        try:
            summary = search.run(on_trial)
        except KeyboardInterrupt:
            c = search.counts()
            message(f"[yellow]interrupted with {c['evaluated']}/{total} specs evaluated; "
                    "run the same command to resume[/]")
            show_front(pareto_front(search.study), args.format, {"evaluated": c["evaluated"]})
            return 130
    c = search.counts()
    promoted = f"{c['promoted']} promotions to higher rungs, " if search.rungs is not None else ""
    message(escape(f"{summary.evaluated}/{total} specs evaluated ({promoted}{c['duplicates']} duplicates, "
                   f"{c['fail']} failed; {summary.ran} trials run now)"
                   + (f"; {STOPPED[summary.stopped]}" if summary.stopped in STOPPED else "")))
    front = pareto_front(search.study)
    show_front(front, args.format,
               {"study": search.study_name, "storage": mask_url(args.storage), "evaluated": c["evaluated"],
                "duplicates": c["duplicates"], "failed": c["fail"]})
    if not front.rows and c["evaluated"]:  # the search did its work; the limits left nothing (exit 0, said)
        message(f"[yellow]warning: {escape(all_infeasible_message(search.study, c['evaluated']))}[/]")
    return 0
