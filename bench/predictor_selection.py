"""Choose the latency-predictor family by *honest, nested* leave-one-out, and report the figure of that choice.

    .venv/bin/python bench/predictor_selection.py                      # the shipped seed table
    .venv/bin/python bench/predictor_selection.py --table bench/results/host_latency.csv \\
        --split-device host-cpu:fp32 --split-device host-cpu:int8 --train 10 --repeats 40
    .venv/bin/python bench/predictor_selection.py --table bench/results/host_latency_res.csv \\
        --split-device host-cpu:fp32 --split-device host-cpu:int8 --train 10 --repeats 200 \\
        --candidates bench/results/host_latency_res_specs.txt \\
        --out bench/results/predictor_selection_res.md          # the 32–112 px host table, candidates only

Part 1 (seed), for every family in ``predictors.FAMILIES`` and every device:

* **honest LOO** (``predictors.evaluate_loo(..., honest=True)``): each measured architecture is removed from
  *every* device and predicted by a refit on the rest — the cross-device prior, λ (chosen by the device's own
  inner leave-one-out, itself honest) and the interval never see it;
* **row LOO** (the old, optimistic figure): only the (device, architecture) row is removed.

The MACs-proportional baseline (family ``macs``) runs on the same folds. Selection rule
(``predictors.select_family``): lowest mean over devices of the honest LOO MAPE among the families none of
whose constants was picked by looking at the seed's errors (``Family.seed_tuned``: their seed scores are
optimistic, so they are shown but cannot win). Choosing the family on the same numbers that are then reported
would make them optimistic, so the rule is also run *inside* every outer fold (family ``auto``: the family
is chosen on the table without the held-out architecture): that nested figure is the honest error of "the
family the rule picks".

The default family (``predictors.DEFAULT_FAMILY``) changes only if (1) the rule, applied to the whole seed,
picks another family, (2) the nested figure beats the current default's honest figure, *and* (3) the pick does
not lose to the default on the host's split check among the candidates (``--candidates``; every split device,
fp32 and int8): it loses where the paired 90 % bootstrap interval (over the same splits) of its MAPE minus the
default's lies above 0, or that of its share within ±10 % minus the default's lies below 0. Without
``--candidates`` step (3) is not run here and the report says so.

Part 2 (optional, a table with many points on one device, e.g. ``nas hw measure`` output): repeated random
splits, fit on ``--train`` points (plus the other devices of the table as the prior), test on the rest:
MAPE, share within ±10 %, Kendall τ, and the coverage of the nominal 90 % intervals. ``--candidates`` (a spec
list of ``bench/latency_predictor.py``) keeps only the specs tagged ``# candidate``: the latency bench's test
specs are held out of every choice made here, and are scored only by that bench, after the choice.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # latency_predictor (the spec-list format), also when loaded by path

from predictors import (  # noqa: E402
    AUTO,
    COVERAGE,
    DEFAULT_FAMILY,
    FAMILIES,
    fit_predictors,
    load_table,
    loo_all,
    select_family,
    summarize_loo,
)
from predictors.evaluation import SELECTABLE  # noqa: E402
from search_space.io import atomic_write  # noqa: E402


def by_device(rows):
    """LOO rows grouped per device, summarized."""
    groups: dict[str, list] = {}
    for row in rows:
        groups.setdefault(row["device"], []).append(row)
    return {device: summarize_loo(group) for device, group in groups.items()}


def seed_part(table, families):
    """{family: {"honest": {device: summary}, "row": {device: summary}}}, plus the nested ``auto`` rows, how
    often each family was picked inside the folds, and the default family's honest rows point by point."""
    points = {}
    results = {}
    for name in families:
        honest = loo_all(table, name)
        points[name] = honest
        results[name] = {"honest": by_device(honest), "row": by_device(loo_all(table, name, honest=False))}
    nested = loo_all(table, AUTO)
    results[AUTO] = {"honest": by_device(nested), "row": {}}
    picks = Counter(r["family"].split(":", 1)[1] for r in nested)
    return results, picks, points.get(DEFAULT_FAMILY, [])


def point_lines(rows):
    """The default family's honest LOO error of every point, per device, worst first."""
    lines = [f"## Honest LOO of `{DEFAULT_FAMILY}` point by point (error %; [x] = outside the interval)", ""]
    for device in dict.fromkeys(r["device"] for r in rows):
        mine = sorted((r for r in rows if r["device"] == device), key=lambda r: -abs(r["error_pct"]))
        cells = [f"{r['arch']} {r['error_pct']:+.0f}{'' if r['inside'] else ' [x]'}" for r in mine]
        lines.append(f"- {device}: " + ", ".join(cells))
    return [*lines, ""]


def split_part(table, device, n_train, repeats, families, seed=0, pool=None):
    """Fit on ``n_train`` random points of ``device`` (other devices kept), test on the rest; per family.
    ``pool``: when given, only the device's points whose spec is in it take part (train and test)."""
    key = next(k for k in table.device_keys if k.lower() == device.lower())
    points = [r for r in table.rows_for(key) if r.ok and (pool is None or r.spec in pool)]
    name_of = table.device_precision(key)[0]
    others = [r for r in table.rows if r.device != name_of]  # not its other precisions: they measure the test archs
    rng = np.random.default_rng(seed)
    splits = [rng.permutation(len(points)) for _ in range(repeats)]
    out = {}
    for family in families:
        errors, taus, covered, per_split = [], [], [], []
        for idx in splits:
            train = [points[i] for i in idx[:n_train]]
            test = [points[i] for i in idx[n_train:]]
            (predictor,) = fit_predictors(table.with_rows(others + train), [name_of], family).values()
            preds = [predictor.predict(r.spec) for r in test]
            pred = np.array([p.ms for p in preds])
            meas = np.array([r.latency_ms for r in test])
            relative = np.abs(pred / meas - 1)
            errors.extend(relative * 100)
            per_split.append((100 * float(relative.mean()), float(np.mean(relative * 100 <= 10))))
            taus.append(kendalltau(meas, pred).statistic)
            covered.append(np.mean([p.low <= m <= p.high for p, m in zip(preds, meas)]))
        errors_arr = np.array(errors)
        out[family] = {"mape": float(errors_arr.mean()), "median": float(np.median(errors_arr)),
                     "p90": float(np.percentile(errors_arr, 90)), "within10": float(np.mean(errors_arr <= 10)),
                     "tau": float(np.nanmean(taus)), "coverage": float(np.mean(covered)),
                     "coverage_sd": float(np.std(covered)), "per_split": np.array(per_split)}
    return out, len(points)


def _family_lines(results, devices, points, flavour):
    base = results["macs"][flavour]
    lines = ["| family | " + " | ".join(f"{d} ({points[d]})" for d in devices)
             + " | mean MAPE | worst | beats MACs (≥4 pts) | coverage |", "|---|" + "---|" * (len(devices) + 4)]
    means = {}
    for name, result in results.items():
        rows = result[flavour]
        if not rows:
            continue
        mean = float(np.mean([rows[d]["loo_mape_pct"] for d in devices]))
        means[name] = mean
        worst = max(devices, key=lambda d: rows[d]["loo_mape_pct"])
        big = [d for d in devices if points[d] >= 4]
        beats = sum(rows[d]["loo_mape_pct"] < base[d]["loo_mape_pct"] for d in big)
        cover = float(np.mean([rows[d]["coverage"] for d in devices]))
        cells = [f"{rows[d]['loo_mape_pct']:.1f} / {rows[d]['max_error_pct']:.0f} τ{rows[d]['kendall_tau']:.2f}"
                 for d in devices]
        label = "auto (chosen in each fold)" if name == AUTO else name
        lines.append(f"| {label} | " + " | ".join(cells) +
                     f" | {mean:.1f} | {worst} {rows[worst]['loo_mape_pct']:.1f} | {beats}/{len(big)} | {cover:.2f} |")
    return lines, means


def paired(pick: dict, default: dict, boot: int = 2000, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """``pick`` − ``default`` over the same splits: mean, and its 90 % bootstrap interval over splits, for the
    MAPE (points) and the share within ±10 %."""
    diff = pick["per_split"] - default["per_split"]  # (splits, [mape, within10])
    draws = np.random.default_rng(seed).integers(0, len(diff), size=(boot, len(diff)))
    means = diff[draws].mean(axis=1)
    low, high = np.percentile(means, [5, 95], axis=0)
    mean = diff.mean(axis=0)
    return {"mape": (mean[0], low[0], high[0]), "within10": (mean[1], low[1], high[1])}


def decide(chosen: str, honest: dict[str, float], splits: dict) -> tuple[str, list[str]]:
    """The default-family verdict (steps 1–3 of the module docstring) and the host-check lines behind it."""
    if chosen == DEFAULT_FAMILY:
        return "(the family the rule picks).", []
    if honest[AUTO] >= honest[DEFAULT_FAMILY]:
        return (f"(the rule picks `{chosen}`, but its nested figure does not beat the default's "
                f"{honest[DEFAULT_FAMILY]:.1f} %: the default stays).", [])
    step2 = f"the rule picks `{chosen}` and its nested figure beats the default's {honest[DEFAULT_FAMILY]:.1f} %"
    if not splits:
        return (f"({step2}; the default changes only if `{chosen}` also does not lose on the host's split check "
                "among the candidates, which needs `--candidates`: see `predictor_selection_res.md`).", [])
    lines, lost = [], []
    for device, (table, _) in splits.items():
        d = paired(table[chosen], table[DEFAULT_FAMILY])
        m, w = d["mape"], d["within10"]
        if m[1] > 0 or w[2] < 0:
            lost.append(device)
        lines.append(f"Host check, {device}: `{chosen}` − `{DEFAULT_FAMILY}` over the same splits: MAPE "
                     f"{m[0]:+.2f} [{m[1]:+.2f}, {m[2]:+.2f}] points, within ±10 % {w[0]:+.3f} [{w[1]:+.3f}, "
                     f"{w[2]:+.3f}] (90 % bootstrap interval over splits){' — loses' if device in lost else ''}.")
    if lost:
        return (f"({step2}, but it loses on the host's split check among the candidates ({', '.join(lost)}): "
                "the default stays).", lines)
    return f"(**{step2} and it does not lose on the host's split check: change the default**).", lines


def render(results, picks, chosen, splits, args, elapsed, default_rows=()):
    """Markdown report; returns (text, the family the rule picks on the whole seed)."""
    honest_rows = results["macs"]["honest"]
    devices = list(honest_rows)
    points = {d: honest_rows[d]["points"] for d in devices}
    lines = ["# Predictor family selection (honest, nested leave-one-out)", "",
             f"Command: `{' '.join(['.venv/bin/python', 'bench/predictor_selection.py', *sys.argv[1:]])}` "
             f"({elapsed:.1f} s wall)", "",
             "LOO MAPE % / max |error| % per device (points in brackets); τ = Kendall τ of LOO predictions; "
             f"coverage = share of held-out points inside the nominal {COVERAGE:.0%} interval.", "",
             "## Honest LOO (the architecture dropped from every device; λ chosen inside the fold)", ""]
    honest_lines, honest = _family_lines(results, devices, points, "honest")
    row_lines, row = _family_lines(results, devices, points, "row")
    lines += [*honest_lines, "", "## Row LOO (only the row dropped — the old, optimistic figure)", "", *row_lines]
    tuned = ", ".join(f"`{f}`" for f in results if f in FAMILIES and FAMILIES[f].seed_tuned)
    folds = ", ".join(f"`{f}` {n}×" for f, n in picks.most_common())
    verdict, host_lines = decide(chosen, honest, splits if args.candidates else {})
    lines += ["", f"Seed-tuned (optimistic here, not eligible): {tuned}.",
              f"**Selected by the rule (lowest mean honest MAPE among {', '.join(SELECTABLE)}): `{chosen}`.**",
              f"Chosen inside the outer folds (per held-out point): {folds}; the nested figure of the rule "
              f"(`auto`) is {honest[AUTO]:.1f} % mean MAPE against {honest[chosen]:.1f} % for `{chosen}` fixed "
              f"(optimistic: chosen on these folds); row LOO of `{chosen}`: {row[chosen]:.1f} %.",
              *host_lines, f"Default family in the code: `{DEFAULT_FAMILY}` {verdict}", "", *point_lines(default_rows)]
    for device, (table, n) in splits.items():
        among = f"{n} candidate points ({args.candidates})" if args.candidates else f"{n} points"
        lines += [f"## Split check: {device}, fit on {args.train} of {among}, test on the rest, "
                  f"{args.repeats} random splits", "",
                  "| family | MAPE % | median % | p90 % | within ±10 % | Kendall τ | coverage (sd over splits) |",
                  "|---|---|---|---|---|---|---|"]
        for name, s in table.items():
            lines.append(f"| {name} | {s['mape']:.1f} | {s['median']:.1f} | {s['p90']:.1f} | {s['within10']:.3f} | "
                         f"{s['tau']:.2f} | {s['coverage']:.3f} ({s['coverage_sd']:.3f}) |")
        lines.append("")
    return "\n".join(lines), chosen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="append", default=[], help="extra hardware CSV (repeatable)")
    parser.add_argument("--no-seed", action="store_true", help="leave out the shipped seed table")
    parser.add_argument("--split-device", action="append", default=[],
                        help="device key with many points for the split check (repeatable, e.g. host-cpu:fp32)")
    parser.add_argument("--train", type=int, default=10, help="training points per split (default 10)")
    parser.add_argument("--repeats", type=int, default=20, help="random splits (default 20)")
    parser.add_argument("--candidates", help="spec list tagged '# test' / '# candidate' (bench/latency_predictor.py's):"
                        " the split check uses only the candidates, the test specs stay held out")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "predictor_selection.md"),
                        help="where to write the Markdown report")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    table = load_table(args.table, include_seed=not args.no_seed)
    split_names = {d.split(":")[0].lower() for d in args.split_device}
    seed_table = table.with_rows(r for r in table.rows if r.device.lower() not in split_names)
    families = list(FAMILIES)
    results, picks, default_rows = seed_part(seed_table, families)
    chosen = select_family(seed_table)
    pool = None
    if args.candidates:
        from latency_predictor import read_spec_file  # the owner of the spec-list format, beside this file

        pool = set(read_spec_file(Path(args.candidates))[1])
    splits = {d: split_part(table, d, args.train, args.repeats, families, pool=pool) for d in args.split_device}
    text, _ = render(results, picks, chosen, splits, args, time.perf_counter() - start, default_rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as handle:
        handle.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
