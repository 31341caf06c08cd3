"""How well does a latency predictor fitted on 10 measured architectures predict the rest, on this host?

    .venv/bin/python bench/latency_predictor.py                # figures from the committed tables (~30 s)
    .venv/bin/python bench/latency_predictor.py --remeasure    # measure every spec again (~45 min on 2 busy cores)
    .venv/bin/python bench/latency_predictor.py --draws 20 --boot 200 --out /tmp/scratch.json   # a quick look
    .venv/bin/python bench/latency_predictor.py --family physical --family spatial   # compare families

Measuring is ``nas hw measure`` in a subprocess (1 onnxruntime thread, CPU clock, :data:`PROTOCOL`), only for
specs missing from a table; tables are read back through ``predictors.load_table``. fp32 and int8 throughout.

**Resolutions** (what searches use). ``results/host_latency_res_specs.txt`` holds, seeded, 100 TEST specs drawn
uniformly from the default search space (``nas.space.SearchSpace()``) at 32/48/64/80/96/112 px and a disjoint
pool of 80 CANDIDATES (the smallest and largest MACs at 32 and at 112 px, then random), measured into
``results/host_latency_res.csv``. Training sets of 10 come from the candidates only:

* ``random`` — ``--draws`` random draws of 10 candidates;
* ``suggested`` — the 10 that ``predictors.suggest_specs(candidates, 10)`` chooses (nothing measured yet).

Each is fitted three ways — ``predictor``: ``predictors.fit_predictors`` (the first ``--family``, by default
``predictors.DEFAULT_FAMILY``) on the seed table plus the training rows, as ``nas hw fit --table`` does;
``macs``: latency = k·MACs; ``nnls5``: non-negative least squares on MACs, weight bytes, activation elements,
conv count and a constant — and tested on the 100
test specs and, reported separately, on the 112-px set (bigger models: extrapolation). Every further
``--family F`` adds a method ``predictor:F`` fitted the same way on the same training sets (the suggested set
is the default family's design), with the goals re-derived for it; the families are *chosen* by
``bench/predictor_selection.py`` (seed table and the candidates only), so every figure here is evaluated after
that choice. Scores: share within
±10 %, MAPE, Kendall τ-b; for the predictor also the share of labels inside its interval (nominal level
``predictors.COVERAGE``) and the share it marks extrapolated. Random draws: median over draws and worst decile
(10th percentile of shares and τ, 90th of MAPE and of the extrapolated share); every figure has a bootstrap
90 % interval over test specs (the median over draws recomputed per resample), ``suggested − random`` a paired
one (same resamples), and the share of random draws the suggested set does at least as well as.

**112 px** (the earlier bench, kept): 100 random specs of ``nas.measure.MEASURE_SPACE`` at 112 px, measured
into ``results/host_latency_res_112px.csv`` under the same protocol and machine state as the resolution table;
``--draws-112`` random splits of 10 train / 90 test. ``--old-112`` (the earlier ``results/host_latency.csv``,
measured on another day) is only compared with it: today's / old latency per spec.

Repeatability floor: the first 10 specs of each part measured again (new export, new sessions) into
``results/host_latency_res_repeat.csv``: |Δ|/label is the error no predictor can beat here. The issue's goals
are judged on the resolution test set. Figures are printed last; all goes to ``--out`` (JSON, atomic write).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

import predictors
from nas.space import SearchSpace
from predictors import HardwareTable, TableRow, fit_predictors, load_table
from search_space import SEED_CLASSES, ArchSpec, analyze
from search_space.io import atomic_write

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # latency_analysis beside this file, also when a test loads it by path
from latency_analysis import (  # noqa: E402
    PRECISIONS,
    WORST_PERCENTILE,
    Predicted,
    bootstrap_weights,
    floor_summary,
    paired_difference,
    print_report,
    repeat_pairs,
    summarize,
    table_meta,
    weighted_scores,
)

RESULTS = BENCH / "results"
DEVICE = "host-cpu"
RESOLUTIONS = (32, 48, 64, 80, 96, 112)
N_TEST, N_CANDIDATES, N_TRAIN, SPEC_SEED = 100, 80, 10, 12
#: The measuring protocol (``nas hw measure``'s defaults at the time), explicit so a re-measurement matches.
PROTOCOL = ("--sessions", "5", "--runs", "30", "--warmup", "10")
GOAL_RANDOM_WITHIN10, GOAL_TAU, GOAL_SUGGESTED_WITHIN10 = 0.95, 0.95, 0.97
BASELINES = ("macs", "nnls5")


def method_names(families: Sequence[str]) -> tuple[str, ...]:
    """``predictor`` (the first family), ``predictor:F`` for every further family, then the baselines."""
    return ("predictor", *(f"predictor:{f}" for f in families[1:]), *BASELINES)


# -- specs ---------------------------------------------------------------------------------------------------

def draw_specs(seed: int = SPEC_SEED) -> tuple[list[ArchSpec], list[ArchSpec]]:
    """(test, candidates): uniform random specs of the default space at :data:`RESOLUTIONS`, disjoint; the
    candidates start with the smallest and largest MACs at the lowest and highest resolution."""
    every = list(SearchSpace(resolutions=RESOLUTIONS).iter_specs(SEED_CLASSES))
    macs = {s: analyze(s).macs for s in every}
    extremes = []
    for r in (RESOLUTIONS[0], RESOLUTIONS[-1]):
        at = sorted((s for s in every if s.resolution == r), key=lambda s: (macs[s], s.to_string()))
        extremes += [at[0], at[-1]]
    rest = [s for s in every if s not in extremes]
    drawn = random.Random(seed).sample(rest, N_TEST + N_CANDIDATES - len(extremes))
    return drawn[:N_TEST], extremes + drawn[N_TEST:]


def write_spec_file(path: Path, test: Sequence[ArchSpec], candidates: Sequence[ArchSpec], seed: int) -> None:
    """One spec a line tagged ``# test`` or ``# candidate`` (``nas hw measure --specs`` reads it as is)."""
    lines = [f"# latency-predictor bench (bench/latency_predictor.py): the default search space at "
             f"{'/'.join(map(str, RESOLUTIONS))} px, {SEED_CLASSES} classes, seed {seed}",
             f"# test: {len(test)} uniform random specs; candidate: {len(candidates)} disjoint specs (smallest and "
             f"largest MACs at {RESOLUTIONS[0]} and {RESOLUTIONS[-1]} px, then random) that training sets come from",
             "# each line: spec  # test|candidate"]
    lines += [f"{s.to_string()}  # test" for s in test] + [f"{s.to_string()}  # candidate" for s in candidates]
    with atomic_write(path) as handle:
        handle.write("\n".join(lines) + "\n")


def read_spec_file(path: Path) -> tuple[list[ArchSpec], list[ArchSpec]]:
    """(test, candidates) from a file written by :func:`write_spec_file`."""
    groups: dict[str, list[ArchSpec]] = {"test": [], "candidate": []}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        spec, _, tag = line.partition("#")
        if spec.strip():
            if tag.strip() not in groups:
                raise SystemExit(f"{path}:{number}: a spec needs the tag '# test' or '# candidate'")
            groups[tag.strip()].append(ArchSpec.parse(spec.strip()))
    return groups["test"], groups["candidate"]


# -- measuring (through the CLI) and reading back ------------------------------------------------------------

def nas_measure(specs: Sequence[ArchSpec], table: Path, remeasure: bool) -> float:
    """``nas hw measure`` the specs into ``table`` (1 thread, CPU clock) in a subprocess; returns seconds."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as scratch:
        spec_file = Path(scratch) / "specs.txt"
        spec_file.write_text("\n".join(s.to_string() for s in specs) + "\n", encoding="utf-8")
        command = [sys.executable, "-m", "nas", "hw", "measure", "--specs", str(spec_file), "--out", str(table),
                   "--target", DEVICE, "--ort-threads", "1", "--clock", "cpu", *PROTOCOL, "-f", "json"]
        subprocess.run(command + (["--remeasure"] if remeasure else []), check=True, cwd=BENCH.parent,
                       stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def host_rows(table: Path) -> dict[str, dict[ArchSpec, TableRow]]:
    """{precision: {spec: row}} of the host's measured rows (read by ``predictors.load_table``)."""
    out: dict[str, dict[ArchSpec, TableRow]] = {p: {} for p in PRECISIONS}
    if table.is_file():
        for r in load_table([table], include_seed=False).rows:
            if r.device == DEVICE and r.ok and r.batch == 1 and r.precision in out:
                out[r.precision][r.spec] = r
    return out


def ensure_measured(specs: Sequence[ArchSpec], table: Path, again: bool) -> float:
    """Measure the specs missing from ``table`` (all of them with ``again``); returns seconds spent."""
    have = host_rows(table)
    if again or any(s not in have[p] for s in specs for p in PRECISIONS):
        return nas_measure(specs, table, remeasure=again)
    return 0.0


def drift(old: dict[str, dict[ArchSpec, TableRow]], new: dict[str, dict[ArchSpec, TableRow]]) -> dict:
    """new/old latency of the specs both tables hold, per precision: median and range (an older table of the
    same specs measured on another day, machine or code: how far its labels are from today's)."""
    out = {}
    for p in PRECISIONS:
        r = np.array([new[p][s].latency_ms / old[p][s].latency_ms for s in new[p] if s in old[p]])
        if len(r):
            out[p] = {"n": len(r), "median": float(np.median(r)), "min": float(r.min()), "max": float(r.max())}
    return out


# -- fitting -------------------------------------------------------------------------------------------------

Fitted = Callable[[Sequence[ArchSpec]], Predicted]


def totals(spec: ArchSpec) -> np.ndarray:
    """MACs, weight bytes, activation elements, conv count, constant (the NNLS baseline's features)."""
    r = analyze(spec)
    return np.array([r.macs, r.weight_bytes, r.activation_elements, r.conv_count, 1.0], dtype=float)


def fit_macs(train: Sequence[ArchSpec], y: np.ndarray) -> Fitted:
    """latency = k·MACs with k minimizing Σ(k·x/y − 1)²."""
    x = np.array([analyze(s).macs for s in train], dtype=float) / y
    k = x.sum() / (x**2).sum()
    return lambda specs: Predicted(k * np.array([analyze(s).macs for s in specs], dtype=float))


def fit_nnls5(train: Sequence[ArchSpec], y: np.ndarray) -> Fitted:
    """Non-negative coefficients on :func:`totals`, minimizing the relative squared error."""
    x = np.array([totals(s) for s in train])
    scale = x.mean(axis=0)
    beta, _ = nnls(x / scale / y[:, None], np.ones(len(y)))
    return lambda specs: Predicted(np.array([totals(s) for s in specs]) / scale @ beta)


def fit_predictor(seed_table: HardwareTable, rows: Sequence[TableRow], family: str) -> Fitted:
    """``predictors.fit_predictors`` on the seed table plus the training rows (as ``nas hw fit --table``)."""
    table = seed_table.with_rows(seed_table.rows + tuple(rows))
    (model,) = fit_predictors(table, devices=[DEVICE], family=family).values()

    def predict(specs: Sequence[ArchSpec]) -> Predicted:
        ps = [model.predict(s) for s in specs]
        return Predicted(*(np.array([getattr(p, f) for p in ps]) for f in ("ms", "low", "high", "extrapolated")))

    return predict


def fit_all(seed_table: HardwareTable, rows: Sequence[TableRow], families: Sequence[str]) -> dict[str, Fitted]:
    """Every method (:func:`method_names`) fitted on one training set (rows of one precision)."""
    specs, y = [r.spec for r in rows], np.array([r.latency_ms for r in rows], dtype=float)
    fitted = {name: fit_predictor(seed_table, rows, family) for name, family in zip(method_names(families), families)}
    return fitted | {"macs": fit_macs(specs, y), "nnls5": fit_nnls5(specs, y)}


# -- evaluation ----------------------------------------------------------------------------------------------

def predict_many(seed_table: HardwareTable, train_sets: Sequence[Sequence[TableRow]],
                 tests: dict[str, list[ArchSpec]], families: Sequence[str]) -> dict[str, dict[str, Predicted]]:
    """{method: {test set: predictions stacked over the training sets, (D, n)}}."""
    stacks: dict[str, dict[str, list[Predicted]]] = {m: {t: [] for t in tests} for m in method_names(families)}
    for rows in train_sets:
        for method, fitted in fit_all(seed_table, rows, families).items():
            for name, specs in tests.items():
                stacks[method][name].append(fitted(specs))

    def stack(ps: list[Predicted]) -> Predicted:
        if ps[0].low is None:
            return Predicted(np.array([p.ms for p in ps]))
        return Predicted(*(np.array([getattr(p, f) for p in ps]) for f in ("ms", "low", "high", "extrapolated")))

    return {m: {t: stack(ps) for t, ps in per.items()} for m, per in stacks.items()}


def evaluate_training(seed_table: HardwareTable, candidates: dict[ArchSpec, TableRow], suggested: Sequence[ArchSpec],
                      tests: dict[str, dict[ArchSpec, TableRow]], draws: int, boot: int, seed: int,
                      families: Sequence[str]) -> dict:
    """Random vs suggested training sets of one precision, on each test set: summaries and differences."""
    rng, pool = random.Random(seed), list(candidates)
    random_sets = [[candidates[s] for s in rng.sample(pool, N_TRAIN)] for _ in range(draws)]
    test_specs = {name: list(rows) for name, rows in tests.items()}
    preds = {"random": predict_many(seed_table, random_sets, test_specs, families),
             "suggested": predict_many(seed_table, [[candidates[s] for s in suggested]], test_specs, families)}
    out: dict[str, dict] = {}
    for name, specs in test_specs.items():
        y = np.array([tests[name][s].latency_ms for s in specs])
        weights = bootstrap_weights(len(y), boot, np.random.default_rng(seed))
        out[name] = {"n_test": len(y)}
        for method in method_names(families):
            r, boot_r = summarize(preds["random"][method][name], y, weights)
            s, boot_s = summarize(preds["suggested"][method][name], y, weights)
            out[name][method] = {"random": r, "suggested": s, "difference": paired_difference(s, r, boot_s, boot_r)}
    return out


def evaluate_splits(seed_table: HardwareTable, rows: dict[ArchSpec, TableRow], draws: int, seed: int,
                    families: Sequence[str]) -> dict:
    """Random splits of one table: ``N_TRAIN`` to fit, the rest to test; per method median and worst decile."""
    rng, specs = random.Random(seed), list(rows)
    if len(specs) < N_TRAIN + 3:
        raise SystemExit(f"{len(specs)} measured specs, need at least {N_TRAIN + 3}")
    per: dict[str, dict[str, list[float]]] = {m: {} for m in method_names(families)}
    for _ in range(draws):
        train = set(rng.sample(specs, N_TRAIN))
        test = [s for s in specs if s not in train]
        y = np.array([rows[s].latency_ms for s in test])
        for method, fitted in fit_all(seed_table, [rows[s] for s in train], families).items():
            for m, v in weighted_scores(fitted(test), y, np.ones((1, len(y)))).items():
                per[method].setdefault(m, []).append(float(v[0, 0]))
    return {method: {m: {"median": float(np.median(v)), "worst_decile": float(np.percentile(v, WORST_PERCENTILE[m]))}
                     for m, v in scores.items()} for method, scores in per.items()}


def goals(results: dict, method: str = "predictor") -> list[dict]:
    """The issue's host goals on the resolution test set for one predictor method, each with its figure and
    whether it is met."""
    out = []
    for p in PRECISIONS:
        ev = results[p]["test"][method]
        rnd, sug, diff = ev["random"], ev["suggested"], ev["difference"]["within10"]
        out += [
            {"goal": f"{p}: 10 random, within ±10 % ≥ {GOAL_RANDOM_WITHIN10:.0%} (median over draws)",
             "value": rnd["within10"]["median"], "met": rnd["within10"]["median"] >= GOAL_RANDOM_WITHIN10},
            {"goal": f"{p}: 10 random, Kendall τ ≥ {GOAL_TAU} (median over draws)",
             "value": rnd["tau"]["median"], "met": rnd["tau"]["median"] >= GOAL_TAU},
            {"goal": f"{p}: 10 suggested, within ±10 % ≥ {GOAL_SUGGESTED_WITHIN10:.0%}",
             "value": sug["within10"]["median"], "met": sug["within10"]["median"] >= GOAL_SUGGESTED_WITHIN10},
            {"goal": f"{p}: suggested − random (share within ±10 %), 90 % CI excluding 0",
             "value": diff["diff"], "ci90": diff["ci90"], "met": diff["ci90"][0] > 0},
        ]
    return out


# -- main ----------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--specs", default=str(RESULTS / "host_latency_res_specs.txt"),
                    help="test/candidate spec list (written, seeded by --spec-seed, when missing)")
    ap.add_argument("--spec-seed", type=int, default=SPEC_SEED, help="seed of a new spec list")
    ap.add_argument("--table", default=str(RESULTS / "host_latency_res.csv"), help="resolution part's table")
    ap.add_argument("--table-112", default=str(RESULTS / "host_latency_res_112px.csv"), help="112-px part's table")
    ap.add_argument("--repeat-table", default=str(RESULTS / "host_latency_res_repeat.csv"),
                    help="second measurements of the first --repeat specs of each part")
    ap.add_argument("--old-112", default=str(RESULTS / "host_latency.csv"),
                    help="an earlier table of the 112-px specs, compared with today's (drift); read only")
    ap.add_argument("--out", default=str(RESULTS / "latency_predictor.json"), help="JSON results")
    ap.add_argument("--family", action="append", choices=list(predictors.FAMILIES),
                    help=f"predictor family (repeatable: the first is 'predictor', whose goals are judged; each "
                         f"further one is 'predictor:F'); default {predictors.DEFAULT_FAMILY}")
    ap.add_argument("--draws", type=int, default=200, help="random training sets (default 200)")
    ap.add_argument("--draws-112", type=int, default=200, help="random splits of the 112-px table (default 200)")
    ap.add_argument("--boot", type=int, default=1000, help="bootstrap resamples of the test specs (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the draws and resamples")
    ap.add_argument("--repeat", type=int, default=10, help="specs measured twice for the repeatability floor")
    ap.add_argument("--remeasure", action="store_true", help="measure every spec again (and the repeats)")
    ap.add_argument("--repeat-again", action="store_true", help="re-measure only the repeatability floor")
    return ap.parse_args(argv)


def shown(path: str | Path) -> str:
    """A path as the JSON records it: relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(BENCH.parent)) if path.is_relative_to(BENCH.parent) else str(path)


def main(argv: list[str] | None = None) -> int:
    """Measure what is missing, evaluate both parts, write the JSON, print the figures."""
    from nas.measure import sample_specs

    args = parse_args(argv)
    families = list(dict.fromkeys(args.family or [predictors.DEFAULT_FAMILY]))
    spec_path, table, table112, repeat_table = map(Path, (args.specs, args.table, args.table_112, args.repeat_table))
    if not spec_path.is_file():
        write_spec_file(spec_path, *draw_specs(args.spec_seed), args.spec_seed)
    test, candidates = read_spec_file(spec_path)
    specs112 = sample_specs(100, 0, 112, SEED_CLASSES)
    measure_s = ensure_measured(test + candidates, table, args.remeasure) + \
        ensure_measured(specs112, table112, args.remeasure)
    again = args.remeasure or args.repeat_again
    twice, twice112 = test[: args.repeat], specs112[: args.repeat]
    repeat_s = ensure_measured(twice + twice112, repeat_table, again)
    rows, rows112, second = host_rows(table), host_rows(table112), host_rows(repeat_table)
    pairs, pairs112 = repeat_pairs(rows, second, twice), repeat_pairs(rows112, second, twice112)

    seed_table = load_table()
    suggested = predictors.suggest_specs(candidates, N_TRAIN)
    if len(set(suggested)) != N_TRAIN or not set(suggested) <= set(candidates):
        raise SystemExit(f"suggest_specs returned {len(set(suggested))} specs, not {N_TRAIN} distinct candidates")
    results = {}
    for p in PRECISIONS:
        tests = {"test": {s: rows[p][s] for s in test}, "112px": {s: rows112[p][s] for s in specs112}}
        pool = {s: rows[p][s] for s in candidates}
        results[p] = evaluate_training(seed_table, pool, suggested, tests, args.draws, args.boot, args.seed, families)
    named = dict(zip(method_names(families), families))
    result = {
        "command": " ".join([".venv/bin/python", "bench/latency_predictor.py",
                             *(sys.argv[1:] if argv is None else argv)]),
        "tables": {part: {"path": shown(path)} | table_meta([r for p in PRECISIONS for r in by_p[p].values()])
                   for part, path, by_p in (("res", table, rows), ("112", table112, rows112))},
        "resolution": {"specs": shown(spec_path), "n_test": len(test), "n_candidates": len(candidates),
                       "train": N_TRAIN, "draws": args.draws, "boot": args.boot, "seed": args.seed,
                       "nominal_level": predictors.COVERAGE, "families": named,
                       "default_family": predictors.DEFAULT_FAMILY,
                       "suggested": [s.to_string() for s in suggested], "results": results},
        "set112": {"draws": args.draws_112, "train": N_TRAIN,
                   "evaluation": {p: evaluate_splits(seed_table, rows112[p], args.draws_112, args.seed, families)
                                  for p in PRECISIONS},
                   "drift_from_old_table": {"path": shown(args.old_112),
                                            **drift(host_rows(Path(args.old_112)), rows112)}},
        "floor": {"res": floor_summary(pairs), "112": floor_summary(pairs112)}, "repeat": pairs + pairs112,
        "goals": goals(results),
        "goals_other_families": {family: goals(results, method) for method, family in named.items()
                                 if method != "predictor"},
        "measure_s": measure_s, "repeat_s": repeat_s,
    }
    with atomic_write(args.out) as handle:
        json.dump(result, handle, indent=1)
    print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
