"""How well does each sampler find the front, and what does a trial cost the orchestration?

Cheap objectives only (no training): predicted T4 latency and peak on-chip memory (KiB) minimized, MACs
maximized (capacity as a stand-in for accuracy; with all three minimized the smallest spec would dominate
every other and the front would be one point), on an enumerable space (:data:`SPACE`, 5,184 specs at
112 px, 89 classes — the seed's setting).

1. The exact front: every spec of the space is evaluated; its non-dominated set is the true front.
2. Each sampler (tpe, nsga2, nsga3, gp, random) runs :func:`nas.search.run_search` (in memory) for
   ``--trials`` trials per seed. "Trials" counts evaluated (distinct) specs, as ``nas search --trials``
   does; the JSON also has ``hv_by_trials``, which counts duplicate proposals as trials too (stricter).
   The hypervolume of the front found after 50, 100 and 200 trials is
   computed with every objective normalized by the enumerated space's min and max (so 0..1) and the
   fixed reference point (1.1, 1.1, 1.1). Reported: mean ± standard deviation over seeds, the ratio to
   random search, and the fraction of the exact front's hypervolume.
3. Orchestration overhead: ms per trial of run_search with the random sampler (sampling cost ≈ 0),
   in memory and on a SQLite file.

Goals: ≥ 1.1× random at 100 trials; ≥ 0.95 of the exact hypervolume at 200 trials.
Writes bench/results/search_efficiency.json; prints the headline figure last.

    .venv/bin/python bench/search_efficiency.py                 # 5 seeds (GP: 1 seed, 50 trials), ~6 min
    .venv/bin/python bench/search_efficiency.py --seeds 2 --samplers tpe,random
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

from nas.pareto import hypervolume, non_dominated, normalize
from nas.sampler import is_duplicate, observed
from nas.search import SearchConfig, run_search
from nas.space import SearchSpace
from search_space import analyze
from search_space.io import atomic_write

SPACE = SearchSpace(depths=((1, 2), (1, 3), (1, 4), (1, 2)),
                    widths=((0.25, 0.5, 0.75), (0.25, 0.5, 0.75), (0.25, 0.5, 0.75, 1.0), (0.5, 1.0, 2.5)),
                    blocks=("repvgg",), groups=(1,), resolutions=(112,))
CLASSES = 89
# MACs maximized (capacity, a stand-in for accuracy): latency, memory and MACs all minimized would make
# the smallest spec dominate everything (a one-point front).
OBJECTIVES = "latency:T4,memory,max:macs"
NAMES = ("latency_T4", "memory_kib", "macs")
SIGN = np.array([1.0, 1.0, -1.0])  # to minimization
CHECKPOINTS = (50, 100, 200)
REFERENCE = (1.1, 1.1, 1.1)
OUT = Path(__file__).resolve().parent / "results" / "search_efficiency.json"


def exact_front() -> tuple[np.ndarray, list[tuple[float, float]], float, int]:
    """Objective values of every spec, the normalization bounds, the exact front's hypervolume, its size."""
    from predictors import fit_predictors, load_table

    t4 = fit_predictors(load_table())["T4"]
    values = SIGN * np.array([[t4.predict(s).ms, analyze(s).peak_memory_kib, analyze(s).macs]
                              for s in SPACE.iter_specs(CLASSES)])
    bounds = [(float(lo), float(hi)) for lo, hi in zip(values.min(axis=0), values.max(axis=0))]
    mask = non_dominated(values)
    return values, bounds, hypervolume(normalize(values[mask], bounds), REFERENCE), int(mask.sum())


def run_one(sampler: str, seed: int, trials: int, storage: str | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Objective values of each evaluated or duplicate trial in order, which are duplicates, and the search's
    wall seconds. A duplicate is recorded PRUNED; :func:`nas.sampler.observed` gives it its twin's values."""
    cfg = SearchConfig(objectives=OBJECTIVES, space=SPACE, num_classes=CLASSES, sampler=sampler, seed=seed,
                       trials=trials, storage=storage, study=f"{sampler}-{seed}", heartbeat_interval=None)
    start = time.perf_counter()
    study = run_search(cfg).study
    wall = time.perf_counter() - start
    trials_seen = observed(study.get_trials(deepcopy=False))
    done = sorted((t for t in trials_seen if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.number)
    dup = np.array([is_duplicate(t) for t in done], dtype=bool)
    return SIGN * np.array([t.values for t in done]), dup, wall


def hv_after(values: np.ndarray, n: int, bounds: list[tuple[float, float]]) -> float:
    """Hypervolume of the front of the first ``n`` rows, normalized by the space's bounds."""
    return hypervolume(normalize(values[:n], bounds), REFERENCE)


def overhead(trials: int) -> dict[str, float]:
    """ms per trial of run_search (random sampler) in memory and on SQLite."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, url in (("memory", None), ("sqlite", f"sqlite:///{tmp}/bench.db")):
            _, _, wall = run_one("random", 0, trials, url)
            out[label] = 1000 * wall / trials
    return out


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per sampler (GP: --gp-seeds)")
    parser.add_argument("--gp-trials", type=int, default=50,
                        help="GP trials (each GP step costs ~5 s on 3 objectives on 2 cores: 200 trials take ~20 min)")
    parser.add_argument("--gp-seeds", type=int, default=1)
    parser.add_argument("--samplers", default="tpe,nsga2,nsga3,gp,random")
    parser.add_argument("--trials", type=int, default=max(CHECKPOINTS))
    parser.add_argument("--overhead-trials", type=int, default=100)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    checkpoints = [c for c in CHECKPOINTS if c <= args.trials]

    t0 = time.perf_counter()
    _, bounds, exact_hv, front_size = exact_front()
    print(f"space: {SPACE.size} specs ({SPACE.describe()}); exact front {front_size} points, "
          f"hypervolume {exact_hv:.4f} (enumerated in {time.perf_counter() - t0:.1f} s)", file=sys.stderr)

    results: dict[str, dict] = {}
    for sampler in [s.strip() for s in args.samplers.split(",")]:
        seeds = range(args.gp_seeds if sampler == "gp" else args.seeds)
        trials = min(args.trials, args.gp_trials) if sampler == "gp" else args.trials
        points = [n for n in checkpoints if n <= trials]
        runs = []
        for seed in seeds:
            vals, dup, wall = run_one(sampler, seed, trials)
            # A duplicate repeats an earlier point, so the front after n evaluations is that of the distinct rows.
            runs.append({"seed": seed, "wall_s": wall, "trials_run": len(vals), "duplicates": int(dup.sum()),
                         "hv": {n: hv_after(vals[~dup], n, bounds) for n in points},
                         "hv_by_trials": {n: hv_after(vals, n, bounds) for n in points}})
            print(f"{sampler} seed {seed}: " + ", ".join(f"HV@{n} {runs[-1]['hv'][n]:.4f}" for n in points)
                  + f" ({wall:.1f} s)", file=sys.stderr)
        results[sampler] = {
            "seeds": len(runs), "wall_s_mean": statistics.mean(r["wall_s"] for r in runs),
            "hv": {n: {"mean": statistics.mean(r["hv"][n] for r in runs),
                       "std": statistics.stdev(r["hv"][n] for r in runs) if len(runs) > 1 else 0.0}
                   for n in points},
            "hv_by_trials_mean": {n: statistics.mean(r["hv_by_trials"][n] for r in runs) for n in points},
            "runs": runs,
        }
    rnd = results.get("random")
    for res in results.values():
        for n, hv in res["hv"].items():
            hv["fraction_of_exact"] = hv["mean"] / exact_hv
            hv["vs_random"] = hv["mean"] / rnd["hv"][n]["mean"] if rnd and n in rnd["hv"] else None

    cost = overhead(args.overhead_trials)
    print(f"orchestration overhead: {cost['memory']:.1f} ms/trial in memory, {cost['sqlite']:.1f} ms/trial on "
          f"SQLite ({args.overhead_trials} random-sampler trials; 2 shared cores, noisy)", file=sys.stderr)
    report = {
        "space": {"size": SPACE.size, "definition": SPACE.to_dict(), "classes": CLASSES},
        "objectives": list(NAMES), "normalization": {"bounds": bounds, "source": "min/max over the enumerated space"},
        "reference_point": list(REFERENCE), "exact_front": {"points": front_size, "hypervolume": exact_hv},
        "trials": args.trials, "samplers": results, "overhead_ms_per_trial": cost,
        "goals": {"vs_random_at_100": 1.1, "fraction_of_exact_at_200": 0.95},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out) as f:
        json.dump(report, f, indent=2)

    print(f"{'sampler':8} " + " ".join(f"{'HV@' + str(n):>17}" for n in checkpoints) + "   ×random@100  of-exact@200")
    for name, res in results.items():
        cells = " ".join(f"{res['hv'][n]['mean']:.4f} ± {res['hv'][n]['std']:.4f}" if n in res["hv"] else f"{'-':>15}"
                         for n in checkpoints)
        ratio = res["hv"].get(100, {}).get("vs_random")
        frac = res["hv"].get(200, {}).get("fraction_of_exact")
        print(f"{name:8} {cells}   {_num(ratio):>11}  {_num(frac):>12}")
    full = [r for r in results if r != "random" and checkpoints[-1] in results[r]["hv"]]
    best = max(full, key=lambda r: results[r]["hv"][checkpoints[-1]]["mean"], default="random")
    b = results[best]["hv"]
    print(f"FIGURE: best sampler {best}: {b[checkpoints[-1]]['fraction_of_exact']:.3f} of the exact front's "
          f"hypervolume at {checkpoints[-1]} trials"
          + (f", {b[100]['vs_random']:.2f}× random at 100" if 100 in b and rnd else "")
          + f"; overhead {cost['memory']:.1f} ms/trial in memory, {cost['sqlite']:.1f} on SQLite"
          + f"; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
