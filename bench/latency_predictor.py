"""How well does a latency predictor fitted on 10 measured architectures rank and predict the rest, on this host?

    .venv/bin/python bench/latency_predictor.py                  # reuse bench/results/host_latency.csv
    .venv/bin/python bench/latency_predictor.py --remeasure      # measure all specs again (quiet machine!)
    .venv/bin/python bench/latency_predictor.py --n 12 --sessions 3 --train 6 \\
        --table /tmp/scratch.csv --out /tmp/scratch.json         # a small check of the pipeline

1. ``--n`` random architectures from ``nas.measure.MEASURE_SPACE`` (seeded) at ``--resolution`` px are measured
   on this CPU, fp32 and int8, by the protocol of :mod:`trials.latency` into ``--table`` (specs already in the
   table are reused, so the figures can be recomputed without measuring; ``--remeasure`` measures again).
2. For each precision, ``--draws`` random draws of ``--train`` specs: fit, then predict the held-out rest.
   * predictor: ``predictors.fit_predictors`` (its default family) on the seed table + the training rows,
     exactly what ``nas hw fit --table`` does;
   * baseline ``macs``: latency = k·MACs, k by least relative squared error on the training rows;
   * baseline ``nnls5``: non-negative least squares (relative error) on five totals: MACs, weight bytes,
     activation elements, conv count, constant (``scipy.optimize.nnls``).
   Per draw: MAPE, share of held-out specs within ±10 %, Kendall τ; reported as the median over draws and the
   worst decile (10th percentile of share and τ, 90th of MAPE).
3. Repeatability floor: ``--repeat`` specs are measured a second time (new export, new sessions); the
   distribution of |Δ|/label is the error no predictor can beat on this machine. Stored in the JSON and
   reused with the table unless ``--remeasure`` or ``--repeat-again``.

Figures are printed last; everything goes to ``--out`` (JSON, written atomically).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.optimize import nnls
from scipy.stats import kendalltau

from nas.measure import sample_specs
from search_space import ArchSpec, analyze
from search_space.io import atomic_write
from trials.latency import PRECISIONS, TABLE_COLUMNS, cpu_model, measure_onnx, measure_specs, parse_notes, read_table
from trials.onnx_export import export_for_timing

RESULTS = Path(__file__).resolve().parent / "results"
DEVICE = "host-cpu"
GOAL_WITHIN10, GOAL_TAU = 0.95, 0.95


# -- measurement -------------------------------------------------------------------------------------------

def measure(args, specs) -> float:
    """Measure the specs missing from the table (all of them with --remeasure); returns seconds spent."""
    start = time.perf_counter()

    def report(done, total, label):
        print(f"[{time.perf_counter() - start:7.1f} s] {done}/{total} {label}", file=sys.stderr, flush=True)

    measure_specs(specs, args.table, PRECISIONS, device=DEVICE, threads=args.threads, warmup=args.warmup,
                  runs=args.runs, sessions=args.sessions, clock=args.clock, on_progress=report,
                  skip_existing=not args.remeasure)
    return time.perf_counter() - start


def labels(args, specs) -> dict[str, dict[ArchSpec, float]]:
    """{precision: {spec: latency_ms}} for the bench's specs, from the table."""
    _, rows = read_table(args.table)
    wanted = {s.to_string(): s for s in specs}
    out: dict[str, dict[ArchSpec, float]] = {p: {} for p in PRECISIONS}
    for r in rows:
        if r["device"] == DEVICE and r["arch"] in wanted and r["status"] == "ok" and r["precision"] in out:
            out[r["precision"]][wanted[r["arch"]]] = float(r["latency_ms"])
    return out


def repeat_floor(args, specs, table: dict[str, dict[ArchSpec, float]], previous: dict | None) -> list[dict]:
    """Second measurements of the first ``--repeat`` specs (reused from the last JSON when they still match)."""
    chosen = [s for s in specs[: args.repeat] if all(s in table[p] for p in PRECISIONS)]
    if previous and not (args.remeasure or args.repeat_again):
        old = previous.get("repeat", [])
        if {(r["arch"], r["precision"], r["first_ms"]) for r in old} == {
                (s.to_string(), p, table[p][s]) for s in chosen for p in PRECISIONS}:
            return old
    out = []
    with tempfile.TemporaryDirectory(prefix="bench-repeat-") as scratch:
        for i, spec in enumerate(chosen, 1):
            paths = export_for_timing(spec, scratch, PRECISIONS)
            for p in PRECISIONS:
                m = measure_onnx(paths[p], args.threads, args.warmup, args.runs, args.sessions, clock=args.clock)
                first = table[p][spec]
                out.append({"arch": spec.to_string(), "precision": p, "first_ms": first, "second_ms": m.label_ms,
                            "rel_diff": abs(m.label_ms - first) / first})
            print(f"repeat {i}/{len(chosen)} {spec.to_string()}", file=sys.stderr, flush=True)
    return out


# -- predictors --------------------------------------------------------------------------------------------

def totals(spec: ArchSpec) -> np.ndarray:
    """MACs, weight bytes, activation elements, conv count, constant (the NNLS baseline's features)."""
    r = analyze(spec)
    return np.array([r.macs, r.weight_bytes, r.activation_elements, r.conv_count, 1.0], dtype=float)


def fit_macs(train: list[ArchSpec], y: np.ndarray):
    """latency = k·MACs with k minimizing Σ(k·x/y − 1)²."""
    x = np.array([analyze(s).macs for s in train], dtype=float) / y
    k = x.sum() / (x**2).sum()
    return lambda specs: k * np.array([analyze(s).macs for s in specs], dtype=float)


def fit_nnls5(train: list[ArchSpec], y: np.ndarray):
    """Non-negative coefficients on :func:`totals`, minimizing the relative squared error."""
    x = np.array([totals(s) for s in train])
    scale = x.mean(axis=0)
    beta, _ = nnls(x / scale / y[:, None], np.ones(len(y)))
    return lambda specs: np.array([totals(s) for s in specs]) / scale @ beta


def fit_main(train: list[ArchSpec], y: np.ndarray, precision: str):
    """``predictors.fit_predictors`` on the seed table plus the training rows (as ``nas hw fit --table``)."""
    from predictors import fit_predictors, load_table

    with tempfile.TemporaryDirectory(prefix="bench-fit-") as scratch:
        path = Path(scratch) / "train.csv"
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(TABLE_COLUMNS), extrasaction="ignore")
            writer.writeheader()
            for spec, ms in zip(train, y):
                writer.writerow({"device": DEVICE, "precision": precision, "arch": spec.to_string(),
                                 "latency_ms": ms, "status": "ok", "batch": 1, "resolution": spec.resolution})
        table = load_table([path], include_seed=True)
    (predictor,) = fit_predictors(table, devices=[f"{DEVICE}:{precision}"]).values()
    return lambda specs: np.array([predictor.predict(s).ms for s in specs])


FITTERS = {"predictor": fit_main, "macs": lambda t, y, p: fit_macs(t, y), "nnls5": lambda t, y, p: fit_nnls5(t, y)}


def scores(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """MAPE (%), share within ±10 %, Kendall τ of one held-out set."""
    rel = np.abs(pred / y - 1)
    return {"mape_pct": 100 * float(rel.mean()), "within10": float(np.mean(rel <= 0.10)),
            "tau": float(kendalltau(pred, y).statistic)}


def evaluate(data: dict[ArchSpec, float], precision: str, n_train: int, draws: int, seed: int) -> dict:
    """Repeated random splits; per method the per-draw scores and their median / worst decile."""
    specs = list(data)
    y_all = np.array([data[s] for s in specs])
    if len(specs) < n_train + 3:
        raise SystemExit(f"{precision}: {len(specs)} measured specs, need at least --train + 3 = {n_train + 3}")
    rng = np.random.default_rng(seed)
    per_draw: dict[str, list[dict[str, float]]] = {m: [] for m in FITTERS}
    for _ in range(draws):
        idx = rng.permutation(len(specs))
        tr, te = idx[:n_train], idx[n_train:]
        train, test = [specs[i] for i in tr], [specs[i] for i in te]
        for name, fit in FITTERS.items():
            per_draw[name].append(scores(fit(train, y_all[tr], precision)(test), y_all[te]))
    summary = {}
    for name, rows in per_draw.items():
        col = {k: np.array([r[k] for r in rows]) for k in rows[0]}
        worst = {"within10": 10, "mape_pct": 90, "tau": 10}  # percentile of the worst decile per score
        summary[name] = {f"{k}_median": float(np.median(v)) for k, v in col.items()}
        summary[name] |= {f"{k}_worst_decile": float(np.percentile(v, worst[k])) for k, v in col.items()}
        summary[name]["draws"] = rows
    main = summary["predictor"]
    summary["goal_met"] = bool(main["within10_median"] >= GOAL_WITHIN10 and main["tau_median"] >= GOAL_TAU)
    summary["n_specs"], summary["n_test"] = len(specs), len(specs) - n_train
    return summary


# -- report ------------------------------------------------------------------------------------------------

def table_meta(args, specs) -> dict:
    """Protocol and quality of the table's rows for these specs: settings, spread and load from ``notes``."""
    _, rows = read_table(args.table)
    wanted = {s.to_string() for s in specs}
    notes = [parse_notes(r["notes"]) for r in rows if r["device"] == DEVICE and r["arch"] in wanted]
    spreads = np.array([float(n["spread"]) for n in notes if "spread" in n] or [np.nan])
    first = notes[0] if notes else {}
    return {
        "rows": len(notes), "cpu": first.get("cpu", cpu_model()), "ort": first.get("ort"),
        "protocol": {k: first.get(k) for k in ("threads", "sessions", "runs", "warmup", "clock")},
        "spread_median": float(np.median(spreads)), "spread_p90": float(np.percentile(spreads, 90)),
        "spread_max": float(np.max(spreads)),
        "rows_with_loaded_sessions": sum(int(n.get("loaded", 0)) > 0 for n in notes),
    }


def floor_summary(repeat: list[dict]) -> dict:
    """Distribution of |Δ|/label over the repeated measurements, per precision."""
    out = {}
    for p in PRECISIONS:
        d = np.array([r["rel_diff"] for r in repeat if r["precision"] == p])
        if len(d):
            out[p] = {"n": len(d), "median_pct": 100 * float(np.median(d)),
                      "p90_pct": 100 * float(np.percentile(d, 90)), "max_pct": 100 * float(d.max()),
                      "within10": float(np.mean(d <= 0.10))}
    return out


def print_report(result: dict) -> None:
    """The figures, last on stdout."""
    meta = result["table"]
    print(f"\nhost latency predictor — {meta['cpu']}, ort {meta['ort']}, protocol {meta['protocol']}")
    print(f"table {result['table_path']}: {meta['rows']} rows, session spread median {meta['spread_median']:.3f} "
          f"p90 {meta['spread_p90']:.3f} max {meta['spread_max']:.3f}, rows with loaded sessions "
          f"{meta['rows_with_loaded_sessions']}")
    for p in PRECISIONS:
        ev = result["evaluation"][p]
        print(f"\n{p}: {ev['n_specs']} specs, fit on {result['train']} × {result['draws']} draws, "
              f"tested on {ev['n_test']}      median (worst decile)")
        print(f"  {'method':10} {'within ±10%':>18} {'MAPE %':>16} {'Kendall τ':>16}")
        for name in FITTERS:
            s = ev[name]
            print(f"  {name:10} {s['within10_median']:>9.1%} ({s['within10_worst_decile']:5.1%})"
                  f" {s['mape_pct_median']:>8.2f} ({s['mape_pct_worst_decile']:5.2f})"
                  f" {s['tau_median']:>8.3f} ({s['tau_worst_decile']:5.3f})")
    print("\nrepeatability floor (|Δ|/label of a second measurement):")
    for p, f in result["floor"].items():
        print(f"  {p}: n={f['n']} median {f['median_pct']:.2f} %, p90 {f['p90_pct']:.2f} %, max {f['max_pct']:.2f} %, "
              f"within ±10 %: {f['within10']:.0%}")
    verdict = ", ".join(f"{p} {'met' if result['evaluation'][p]['goal_met'] else 'NOT met'}" for p in PRECISIONS)
    print(f"goal (median ≥ {GOAL_WITHIN10:.0%} within ±10 % and τ ≥ {GOAL_TAU}): {verdict}")
    if result.get("measure_s") is not None:
        print(f"measured in this run: {result['measure_s']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    """Measure (or reuse), evaluate, write the JSON, print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", default=str(RESULTS / "host_latency.csv"), help="measured table (reused)")
    ap.add_argument("--out", default=str(RESULTS / "latency_predictor.json"), help="JSON results")
    ap.add_argument("--n", type=int, default=100, help="random specs (default 100)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the specs and of the draws")
    ap.add_argument("--resolution", type=int, default=112, help="input px (default 112)")
    ap.add_argument("--classes", type=int, default=89, help="classes (default 89)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sessions", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    ap.add_argument("--train", type=int, default=10, help="training specs per draw (default 10)")
    ap.add_argument("--draws", type=int, default=20, help="random train/test draws (default 20)")
    ap.add_argument("--repeat", type=int, default=10, help="specs re-measured for the repeatability floor")
    ap.add_argument("--remeasure", action="store_true", help="measure every spec again (and the repeats)")
    ap.add_argument("--repeat-again", action="store_true", help="re-measure only the repeatability floor")
    args = ap.parse_args(argv)

    specs = sample_specs(args.n, args.seed, args.resolution, args.classes)
    previous = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else None
    _, before = read_table(args.table)
    done = {(r["arch"], r["precision"]) for r in before if r["device"] == DEVICE}
    missing = args.remeasure or any((s.to_string(), p) not in done for s in specs for p in PRECISIONS)
    measure_s = measure(args, specs) if missing else None
    table = labels(args, specs)
    start = time.perf_counter()
    repeat = repeat_floor(args, specs, table, previous)
    repeat_s = time.perf_counter() - start
    result = {
        "table_path": str(args.table), "n": args.n, "seed": args.seed, "resolution": args.resolution,
        "train": args.train, "draws": args.draws, "table": table_meta(args, specs),
        "evaluation": {p: evaluate(table[p], p, args.train, args.draws, args.seed) for p in PRECISIONS},
        "floor": floor_summary(repeat), "repeat": repeat, "measure_s": measure_s,
        "repeat_s": repeat_s if repeat is not (previous or {}).get("repeat") else None,
        "goal": {"within10": GOAL_WITHIN10, "tau": GOAL_TAU},
    }
    with atomic_write(args.out) as handle:
        json.dump(result, handle, indent=1)
    print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
