"""Choose the latency-predictor family by *nested* leave-one-out, not by in-sample fit.

    .venv/bin/python bench/predictor_selection.py                      # the shipped seed table
    .venv/bin/python bench/predictor_selection.py --table host.csv --split-device host-cpu --train 10

Part 1 (seed): for every family in ``predictors.FAMILIES`` and every device, each measured point is removed
from the whole table and predicted by a refit on the rest (``predictors.evaluate_loo``): the cross-device
prior, any λ chosen by inner leave-one-out, and the interval scale never see the held-out latency. The
MACs-proportional baseline (family ``macs``) runs on the same folds. Selection rule: lowest mean over
devices of the LOO MAPE among the families none of whose constants was picked by looking at the seed's errors
(``Family.seed_tuned``: their seed scores are optimistic, so they are shown but cannot win); ties broken by
the number of devices (≥ 4 points) that beat the MACs baseline.

Part 2 (optional, a table with many points on one device, e.g. ``nas hw measure`` output): repeated random
splits, fit on ``--train`` points (plus the other devices of the table as the prior), test on the rest.

Caveat: the seed has 31 measured points over 7 devices. Choosing among families on it is itself a fit to
those points; the chosen family's seed figures are optimistic. Part 2 is the check that does not share it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from predictors import FAMILIES, evaluate_loo, fit_device, load_table, summarize_loo  # noqa: E402
from search_space.io import atomic_write  # noqa: E402


def seed_part(table, families):
    """Nested LOO per family and device; returns {family: [summary rows]}."""
    results = {}
    for name in families:
        results[name] = [summarize_loo(evaluate_loo(table, key, name)) for key in table.device_keys
                         if sum(r.ok for r in table.rows_for(key)) >= 2]
    return results


def split_part(table, device, n_train, repeats, families, seed=0):
    """Fit on ``n_train`` random points of ``device`` (other devices kept), test on the rest; per family."""
    key = next(k for k in table.device_keys if k.lower() == device.lower())
    points = [r for r in table.rows_for(key) if r.ok]
    others = [r for r in table.rows if r not in points]
    rng = np.random.default_rng(seed)
    splits = [rng.permutation(len(points)) for _ in range(repeats)]
    out = {}
    for name in families:
        errors, taus = [], []
        for idx in splits:
            train = [points[i] for i in idx[:n_train]]
            test = [points[i] for i in idx[n_train:]]
            predictor = fit_device(table.with_rows(others + train), key, name)
            pred = np.array([predictor.predict_ms(r.spec) for r in test])
            meas = np.array([r.latency_ms for r in test])
            errors.extend(np.abs(pred / meas - 1) * 100)
            taus.append(kendalltau(meas, pred).statistic)
        out[name] = {"mape": float(np.mean(errors)), "median": float(np.median(errors)),
                     "p90": float(np.percentile(errors, 90)), "tau": float(np.nanmean(taus))}
    return out, len(points)


def render(results, split, args, elapsed):
    """Markdown report."""
    families = list(results)
    devices = [s["device"] for s in results[families[0]]]
    points = {s["device"]: s["points"] for s in results[families[0]]}
    base = {s["device"]: s["loo_mape_pct"] for s in results["macs"]}
    lines = ["# Predictor family selection (nested leave-one-out)", "",
             f"Command: `{' '.join(['.venv/bin/python', 'bench/predictor_selection.py', *sys.argv[1:]])}` "
             f"({elapsed:.1f} s wall)", "",
             "LOO MAPE % / max |error| % per device (points in brackets); τ = Kendall τ of LOO predictions.", "",
             "| family | " + " | ".join(f"{d} ({points[d]})" for d in devices)
             + " | mean MAPE | worst | beats MACs (≥4 pts) | coverage |",
             "|---|" + "---|" * (len(devices) + 4)]
    scores = {}
    for name in families:
        rows = {s["device"]: s for s in results[name]}
        mean = float(np.mean([rows[d]["loo_mape_pct"] for d in devices]))
        worst = max(devices, key=lambda d: rows[d]["loo_mape_pct"])
        big = [d for d in devices if points[d] >= 4]
        beats = sum(rows[d]["loo_mape_pct"] < base[d] for d in big)
        cover = float(np.mean([rows[d]["coverage"] for d in devices]))
        scores[name] = (mean, -beats)
        cells = [f"{rows[d]['loo_mape_pct']:.1f} / {rows[d]['max_error_pct']:.0f} τ{rows[d]['kendall_tau']:.2f}"
                 for d in devices]
        lines.append(f"| {name} | " + " | ".join(cells) +
                     f" | {mean:.1f} | {worst} {rows[worst]['loo_mape_pct']:.1f} | {beats}/{len(big)} | {cover:.2f} |")
    eligible = [f for f in families if f != "macs" and not FAMILIES[f].seed_tuned]
    chosen = min(eligible, key=lambda f: scores[f])
    tuned = ", ".join(f"`{f}`" for f in families if FAMILIES[f].seed_tuned)
    lines += ["", f"Seed-tuned (optimistic here, not eligible): {tuned}.",
              f"**Selected by the rule (lowest mean MAPE among {', '.join(eligible)}; then most devices beating "
              f"MACs): `{chosen}`.**", ""]
    if split:
        table, n = split
        lines += [f"## Split check: {args.split_device}, fit on {args.train} of {n} points, test on the rest, "
                  f"{args.repeats} random splits", "", "| family | MAPE % | median % | p90 % | Kendall τ |",
                  "|---|---|---|---|---|"]
        for name, s in table.items():
            lines.append(f"| {name} | {s['mape']:.1f} | {s['median']:.1f} | {s['p90']:.1f} | {s['tau']:.2f} |")
        lines.append("")
    return "\n".join(lines), chosen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="append", default=[], help="extra hardware CSV (repeatable)")
    parser.add_argument("--no-seed", action="store_true", help="leave out the shipped seed table")
    parser.add_argument("--split-device", help="device with many points for the split check (e.g. host-cpu)")
    parser.add_argument("--train", type=int, default=10, help="training points per split (default 10)")
    parser.add_argument("--repeats", type=int, default=20, help="random splits (default 20)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "predictor_selection.md"),
                        help="where to write the Markdown report")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    table = load_table(args.table, include_seed=not args.no_seed)
    seed_table = table.with_rows(r for r in table.rows if not args.split_device
                                 or r.device.lower() != args.split_device.lower())
    families = list(FAMILIES)
    results = seed_part(seed_table, families)
    split = None
    if args.split_device:
        split = split_part(table, args.split_device, args.train, args.repeats, families)
    text, _ = render(results, split, args, time.perf_counter() - start)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as handle:
        handle.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
