"""Search strategies replayed against the learning-curve table (lookups, no training), at equal compute.

    .venv/bin/python bench/fidelity_strategies.py          # reads bench/results/learning_curves.csv

The table (``bench/learning_curves.py``) holds, for specs of the default space, the selection and test
balanced accuracy after every epoch of one run whose schedule spans the reference budget E. A replay seed
draws a *space* (:data:`SPACE_SHARE` of the table's finished seed-0 specs, without replacement) and the
strategies' own random choices, then spends at most C epochs (summed over specs; C = a fraction of training
every spec of the space to E):

- **random**: ⌊C/E⌋ random specs trained to E; the front of their epoch-E values.
- **proxy b**: ⌊C/b⌋ random specs (at most all) at a single fidelity of b epochs; the front of their epoch-b
  values. Approximation: the table's epoch-b snapshot of the E-epoch run stands for a b-epoch proxy; a real
  b-epoch proxy decays its learning rate within b epochs and usually scores higher, but ranks like it only
  as far as the snapshot does — this is the stated approximation, not a measurement of the product's proxy.
- **SH**: successive halving with Pareto promotion (rungs E/9, E/3, E, eta 3; :func:`nas.promotion.promotable`
  on (accuracy at the rung, cost), no noise), replayed synchronously rung by rung (the search promotes
  asynchronously: with every result in, both promote the same specs); as many random specs at the first rung
  as C allows. Three fronts of what it scored: **SH E/9/E/3/E** compares each spec's highest-rung value
  (mixed rungs: how ``nas pareto`` judged a multi-fidelity front before the common-rung rule); **SH top**
  the front of the specs that reached the top rung only (what ``study.best_trials`` holds); **SH common**
  compares two specs at the highest rung both reached (:func:`nas.pareto.common_rung_non_dominated`, what
  ``nas pareto`` does now); **SH+refine** then spends what C leaves (the first rung is capped by the space,
  so often much) on ``nas pareto --refine 0`` repeated: the common-rung front's members below the top climb
  one rung, cheapest step first, until every member is at the top or no step fits.

Objectives: selection balanced accuracy (max) and cost (min): MACs (the cost model) or the predicted T4
latency (``nas.objectives.spec_metrics`` with the shipped tables' predictor). Metric: the hypervolume of the
returned front's **reference** values ÷ the hypervolume of the space's exact reference front (objectives
normalized by the table's bounds, reference point 1.1, as ``nas pareto``). The reference is the epoch-E
selection balanced accuracy (what the search would see with unlimited compute; the test split is never read
by a search); the epoch-E *test* balanced accuracy is reported as a variant. Also: Kendall τ between the values
a strategy ranked by and the reference, over the specs it scored (for SH those are mixed rungs: a spec stopped
at rung 2 competes with its rung-2 value, so its τ is lower than any single rung's, and a cheap spec stopped
early can be dominated on the mixed front by a slightly cheaper one that climbed; the top rung itself *is* the
reference here, τ 1 by construction); compute as a fraction of training every spec to E; the returned front's
size (the HV of a set's reference values never falls when a spec is added, so a larger front is favoured:
read the sizes beside the ratios). Means over seeds with
percentile-bootstrap 90 % intervals (seeds resampled). Each SH variant is compared, paired by seed, with the
**proxy at equal compute** (the longest b whose b epochs for every spec fit the budget, b ≤ fraction × E:
proxy 4 at 25 %) and with the **best proxy** (the highest mean, chosen after the fact among b = 1…9: an
optimistic baseline no user can pick in advance, since the snapshots' ranking swings from epoch to epoch).
Goal (the last lines printed, judged on :data:`PRIMARY`, the front ``nas pareto`` shows): ≥ 0.95 of the
reference hypervolume at ≤ 25 % of the compute, with the CI of SH − the proxy at equal compute above 0 —
against both references. Read the **test** one as the fair judge: SH's top rung *is* the selection reference
(the epoch-E selection accuracy), so SH chooses its front from the very noisy measurements it is then scored
against (a winner's curse in its favour), while a proxy chooses from earlier snapshots; the test reference
(5,000 other images) is independent of every strategy's choice. Written to
``bench/results/fidelity_strategies.json``; the figure is printed last.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_curves import CSV_PATH, REFERENCE_EPOCHS, read_rows  # the table's one reader
from proxy_fidelity import bootstrap  # the benches' percentile bootstrap

from nas.pareto import REFERENCE, common_rung_non_dominated, hypervolume, non_dominated, normalize, to_minimization
from nas.promotion import promotable, promotion_quota

JSON_PATH = Path(__file__).resolve().parent / "results" / "fidelity_strategies.json"
SEEDS = 200
SPACE_SHARE = 0.75
FRACTIONS = (0.10, 0.15, 0.25, 0.35, 0.50)
GOAL_FRACTION = 0.25
PROXY_EPOCHS = (1, 2, 3, 4, 6, 9)
#: The SH variant the goal is judged on: the front ``nas pareto`` shows (judged at the common rung).
PRIMARY = "SH common"
ETA = 3
RESAMPLES = 2000
DIRECTIONS = ("maximize", "minimize")
#: How successive halving's front is judged across rungs (:func:`rung_front`).
FrontRule = Literal["mixed", "top", "common"]


@dataclass(frozen=True)
class Table:
    """Finished seed-0 curves: ``selection[i, e - 1]`` and ``test[i, e - 1]`` after epoch e of spec i."""

    specs: list[str]
    selection: np.ndarray
    test: np.ndarray
    costs: dict[str, np.ndarray]

    @property
    def horizon(self) -> int:
        """The reference budget E."""
        return int(self.selection.shape[1])


@dataclass(frozen=True)
class Outcome:
    """What a strategy returns: the front (indices), the compute spent (epochs), the specs it scored and the
    accuracy it ranked each of them by."""

    front: np.ndarray
    compute: float
    scored: np.ndarray
    values: np.ndarray


def table_from_rows(rows: Sequence[dict[str, Any]], horizon: int = REFERENCE_EPOCHS) -> Table:
    """The finished seed-0 specs of the learning-curve rows (every epoch 1..E present), with MACs and the
    predicted T4 latency."""
    from nas.objectives import spec_metrics
    from predictors import fitted
    from search_space.spec import ArchSpec

    curves: dict[str, dict[int, tuple[float, float, int]]] = {}
    for r in rows:
        if r["seed"] == 0:
            curves.setdefault(r["spec"], {})[int(r["epoch"])] = (r["selection_bacc"], r["test_bacc"], r["macs"])
    specs = sorted(s for s, c in curves.items() if all(e in c for e in range(1, horizon + 1)))
    sel = np.array([[curves[s][e][0] for e in range(1, horizon + 1)] for s in specs]).reshape(len(specs), horizon)
    test = np.array([[curves[s][e][1] for e in range(1, horizon + 1)] for s in specs]).reshape(len(specs), horizon)
    t4 = {"T4": fitted(()).predictors["T4"]}
    latency = [spec_metrics(ArchSpec.parse(s), t4).value("latency_T4") for s in specs]
    return Table(specs, sel, test, {"macs": np.array([float(curves[s][1][2]) for s in specs]),
                                    "latency_T4": np.array(latency, dtype=float)})


# -- strategies ------------------------------------------------------------------------------------

def front_of(indices: np.ndarray, accuracy: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """The members of ``indices`` on the front of (accuracy, cost) (``accuracy`` indexed like ``indices``)."""
    points = to_minimization(np.column_stack([accuracy, cost[indices]]), DIRECTIONS)
    return indices[non_dominated(points)]


def random_search(space: np.ndarray, table: Table, cost: np.ndarray, budget: float,
                  rng: np.random.Generator) -> Outcome:
    """⌊budget/E⌋ random specs of ``space`` trained to E."""
    e = table.horizon
    chosen = rng.permutation(space)[: min(len(space), int(budget // e))]
    values = table.selection[chosen, e - 1]
    return Outcome(front_of(chosen, values, cost), float(len(chosen) * e), chosen, values)


def proxy_search(space: np.ndarray, table: Table, cost: np.ndarray, budget: float, rng: np.random.Generator,
                 epochs: int) -> Outcome:
    """⌊budget/epochs⌋ random specs (at most all) scored by their epoch-``epochs`` snapshot."""
    chosen = rng.permutation(space)[: min(len(space), int(budget // epochs))]
    values = table.selection[chosen, epochs - 1]
    return Outcome(front_of(chosen, values, cost), float(len(chosen) * epochs), chosen, values)


def rungs_of(horizon: int) -> tuple[int, ...]:
    """Rungs E/9, E/3, E in whole epochs (duplicates dropped, at least 1)."""
    return tuple(sorted({max(1, horizon // 9), max(1, horizon // 3), horizon}))


def halving_cost(first: int, rungs: Sequence[int], eta: float) -> float:
    """Epochs spent by synchronous successive halving that starts ``first`` specs at ``rungs[0]``."""
    total, alive, done = 0.0, first, 0
    for rung in rungs:
        total += alive * (rung - done)
        alive, done = promotion_quota(alive, eta), rung
    return total


def _halving(space: np.ndarray, table: Table, cost: np.ndarray, budget: float, rng: np.random.Generator,
             rungs: Sequence[int], eta: float) -> tuple[dict[int, int], float]:
    """Synchronous successive halving: spec → index of the highest rung it reached, and the epochs spent."""
    first = 0
    while first < len(space) and halving_cost(first + 1, rungs, eta) <= budget:
        first += 1
    alive = rng.permutation(space)[:first]
    reached: dict[int, int] = {}
    spent, done = 0.0, 0
    for k, rung in enumerate(rungs):
        spent += len(alive) * (rung - done)
        reached.update(dict.fromkeys(alive.tolist(), k))
        if k + 1 < len(rungs):
            points = to_minimization(np.column_stack([table.selection[alive, rung - 1], cost[alive]]), DIRECTIONS)
            alive, done = alive[np.sort(promotable(points, eta))], rung
    return reached, spent


def rung_front(reached: dict[int, int], table: Table, cost: np.ndarray, rungs: Sequence[int],
               judged: FrontRule = "common") -> np.ndarray:
    """The front of the scored specs (sorted indices), judged by each spec's highest-rung value (``mixed``),
    at the rung both of a pair reached (``common``, :func:`nas.pareto.common_rung_non_dominated`), or among
    the specs at the top rung only (``top``, what ``study.best_trials`` holds)."""
    scored = np.array(sorted(reached), dtype=int)
    if judged == "top":
        top = scored[[reached[i] == len(rungs) - 1 for i in scored.tolist()]]
        return front_of(top, table.selection[top, rungs[-1] - 1], cost)
    if judged == "mixed":
        return front_of(scored, np.array([table.selection[i, rungs[reached[i]] - 1] for i in scored]), cost)
    ladders = [{k: to_minimization(np.array([[table.selection[i, rungs[k] - 1], cost[i]]]), DIRECTIONS)[0]
                for k in range(reached[i] + 1)} for i in scored.tolist()]
    return scored[common_rung_non_dominated(ladders)]


def refine_front(reached: dict[int, int], table: Table, cost: np.ndarray, rungs: Sequence[int],
                 budget: float) -> float:
    """``nas pareto --refine 0`` while ``budget`` lasts: the (common-rung) front's members below the top rung
    climb one rung each, cheapest step first, then the front is recomputed; stops when every front member is
    at the top or the next step does not fit. Updates ``reached``; returns the epochs spent."""
    spent = 0.0
    while True:
        below = [i for i in rung_front(reached, table, cost, rungs).tolist() if reached[i] + 1 < len(rungs)]
        steps = sorted((rungs[reached[i] + 1] - rungs[reached[i]], i) for i in below)
        affordable = [(step, i) for step, i in steps if spent + step <= budget]
        if not affordable:
            return spent
        for step, i in affordable:
            if spent + step <= budget:
                reached[i] += 1
                spent += step


def successive_halving(space: np.ndarray, table: Table, cost: np.ndarray, budget: float, rng: np.random.Generator,
                       rungs: Sequence[int], eta: float = ETA, judged: FrontRule = "mixed",
                       refine: bool = False) -> Outcome:
    """As many random specs as ``budget`` allows at the first rung, then the Pareto-promotable ``1/eta`` of each
    rung continue to the next (:func:`_halving`); with ``refine``, the budget left then goes to refining the
    front (:func:`refine_front`). The front: :func:`rung_front`; the values ranked by: each spec's highest rung."""
    reached, spent = _halving(space, table, cost, budget, rng, rungs, eta)
    if refine:
        spent += refine_front(reached, table, cost, rungs, budget - spent)
    scored = np.array(sorted(reached), dtype=int)
    values = np.array([table.selection[i, rungs[reached[i]] - 1] for i in scored.tolist()])
    return Outcome(rung_front(reached, table, cost, rungs, judged), spent, scored, values)


# -- statistics ------------------------------------------------------------------------------------

def hv_ratio(front: np.ndarray, space: np.ndarray, reference: np.ndarray, cost: np.ndarray,
             bounds: Sequence[tuple[float, float]]) -> float:
    """Hypervolume of ``front``'s reference values ÷ that of the exact reference front of ``space``."""
    def hv(members: np.ndarray) -> float:
        points = to_minimization(np.column_stack([reference[members], cost[members]]), DIRECTIONS)
        return hypervolume(normalize(points, bounds), [REFERENCE, REFERENCE])

    exact = hv(space)
    return hv(front) / exact if exact > 0 else float("nan")


def kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall τ-b (nan for fewer than 3 items)."""
    from scipy.stats import kendalltau

    return float(kendalltau(x, y).statistic) if len(x) >= 3 else float("nan")


def mean_ci(values: Sequence[float], resamples: int = RESAMPLES, seed: int = 0) -> dict[str, float]:
    """Mean over seeds and its percentile-bootstrap 90 % interval (seeds resampled; nan seeds dropped)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    lo, hi = bootstrap(lambda i: float(v[i].mean()), len(v), resamples, seed)
    return {"mean": float(v.mean()), "lo": lo, "hi": hi, "n": len(v)}


def strategies(table: Table) -> dict[str, Callable[..., Outcome]]:
    """Every strategy replayed: random, the proxy at each budget shorter than E, successive halving."""
    rungs = rungs_of(table.horizon)
    out: dict[str, Callable[..., Outcome]] = {"random": random_search}
    for b in (b for b in PROXY_EPOCHS if b < table.horizon):
        out[f"proxy {b}"] = lambda *a, b=b: proxy_search(*a, epochs=b)
    out["SH " + "/".join(map(str, rungs))] = lambda *a: successive_halving(*a, rungs=rungs)
    out["SH top"] = lambda *a: successive_halving(*a, rungs=rungs, judged="top")
    out["SH common"] = lambda *a: successive_halving(*a, rungs=rungs, judged="common")
    out["SH+refine"] = lambda *a: successive_halving(*a, rungs=rungs, judged="common", refine=True)
    return out


def replay(table: Table, cost_name: str, fraction: float, seeds: int, share: float = SPACE_SHARE,
           resamples: int = RESAMPLES) -> dict[str, Any]:
    """Every strategy at compute ``fraction`` over ``seeds`` spaces: HV ratio against the selection and the
    test reference, τ against both, compute fraction; SH − best proxy (by mean selection ratio), paired."""
    cost = table.costs[cost_name]
    n, e = len(table.specs), table.horizon
    size = max(2, round(share * n))
    refs = {"selection": table.selection[:, e - 1], "test": table.test[:, e - 1]}
    bounds = {k: [(-float(r.max()), -float(r.min())), (float(cost.min()), float(cost.max()))] for k, r in refs.items()}
    named = strategies(table)
    raw: dict[str, dict[str, list[float]]] = {name: {} for name in named}
    for seed in range(seeds):
        rng = np.random.default_rng([seed, 11])
        space = np.sort(rng.choice(n, size, replace=False))
        for name, run in named.items():
            outcome = run(space, table, cost, fraction * size * e, np.random.default_rng([seed, 12]))
            row = raw[name]
            row.setdefault("compute", []).append(outcome.compute / (size * e))
            row.setdefault("front_size", []).append(float(len(outcome.front)))
            for key, ref in refs.items():
                row.setdefault(f"hv_{key}", []).append(hv_ratio(outcome.front, space, ref, cost, bounds[key]))
                row.setdefault(f"tau_{key}", []).append(kendall(outcome.values, ref[outcome.scored]))
    out: dict[str, Any] = {"strategies": {name: {k: mean_ci(v, resamples) for k, v in row.items()}
                                          for name, row in raw.items()}}
    proxies = [name for name in named if name.startswith("proxy")]
    if not proxies:
        return out
    best = max(proxies, key=lambda p: np.nanmean(raw[p]["hv_selection"]))
    equal = [p for p in proxies if int(p.split()[1]) <= fraction * e]  # b epochs × every spec fit the budget
    for key, proxy in (("sh_minus_best_proxy", best), ("sh_minus_equal_compute_proxy", equal[-1] if equal else None)):
        for ref, suffix in (("selection", ""), ("test", "_test")) if proxy is not None else ():
            out[key + suffix] = {sh: {"proxy": proxy, **mean_ci(np.array(raw[sh][f"hv_{ref}"])
                                                                - np.array(raw[proxy][f"hv_{ref}"]), resamples)}
                                 for sh in named if sh.startswith("SH")}
    return out


def run_all(table: Table, seeds: int = SEEDS, fractions: Sequence[float] = FRACTIONS,
            resamples: int = RESAMPLES) -> dict[str, Any]:
    """The replay for both cost objectives at every compute fraction."""
    return {cost: {f"{f:.2f}": replay(table, cost, f, seeds, resamples=resamples) for f in fractions}
            for cost in table.costs}


def _ci(c: dict[str, float]) -> str:
    return f"{c['mean']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}]"


def format_figure(results: dict[str, Any], specs: int, horizon: int, detail: float = GOAL_FRACTION) -> str:
    """Per cost objective: every strategy at the goal's compute fraction (HV ratio against the selection and the
    test reference, τ, compute), then SH and SH − best proxy at every fraction."""
    lines = [f"fidelity strategies on {specs} specs (E = {horizon}): HV of the returned front's reference values "
             f"÷ HV of the exact reference front, mean [90 % CI] over seeds"]
    for cost, by_fraction in results.items():
        res = by_fraction[f"{detail:.2f}"]
        lines.append(f"\n{cost}, compute ≤ {detail:.0%} of training every spec to E")
        lines.append(f"  {'strategy':<11} {'HV, selection ref':<22} {'HV, test ref':<22} {'τ vs selection ref':<22} "
                     "compute  front")
        for name, st in res["strategies"].items():
            size = st["front_size"]["mean"]
            lines.append(f"  {name:<11} {_ci(st['hv_selection']):<22} {_ci(st['hv_test']):<22} "
                         f"{_ci(st['tau_selection']):<22} {st['compute']['mean']:>6.0%}  {size:.1f}")
        lines.append(f"  {cost} by compute: SH variant (selection ref) at the compute it spent | minus the proxy "
                     "at equal compute | minus the best proxy (chosen after the fact)")
        for fraction, at in by_fraction.items():
            for name, sh in ((k, v) for k, v in at["strategies"].items() if k.startswith("SH")):
                diffs = [_diff(at[key][name]) for key in ("sh_minus_equal_compute_proxy", "sh_minus_best_proxy")
                         if key in at]
                lines.append(f"  ≤ {float(fraction):.0%} {name:<10}: {_ci(sh['hv_selection'])} at "
                             f"{sh['compute']['mean']:.0%} | " + " | ".join(diffs))
    lines.append(_verdict(results))
    return "\n".join(lines)


def _signed(d: dict[str, Any]) -> str:
    return f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"


def _diff(d: dict[str, Any]) -> str:
    return f"{_signed(d)} vs {d['proxy']}"


def _verdict(results: dict[str, Any]) -> str:
    """The goal, judged on :data:`PRIMARY` at :data:`GOAL_FRACTION` for each cost objective, against the
    selection reference (what the search itself measures at E) and the test reference (independent of it)."""
    lines = [f"\ngoal ({PRIMARY}, ≤ {GOAL_FRACTION:.0%} compute; HV ≥ 0.95 and above the proxy at equal compute):"]
    for cost, by_fraction in results.items():
        at = by_fraction[f"{GOAL_FRACTION:.2f}"]
        parts = []
        for ref, suffix in (("selection", ""), ("test", "_test")):
            hv = at["strategies"][PRIMARY][f"hv_{ref}"]
            eq = at.get(f"sh_minus_equal_compute_proxy{suffix}", {}).get(PRIMARY)
            verdict = "✘" if eq is None else "✔" if eq["lo"] > 0 else "✘ (behind)" if eq["hi"] < 0 else "✘ (tie)"
            parts.append(f"{ref} ref HV {hv['mean']:.3f} {'✔' if hv['mean'] >= 0.95 else '✘'}, "
                         f"− {eq['proxy'] if eq else 'proxy'} {_signed(eq) if eq else '-'} {verdict}")
        lines.append(f"  {cost}: " + "; ".join(parts))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Replay the strategies on the table, write the JSON, print the figure."""
    from search_space.io import atomic_write

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=CSV_PATH, help="the learning-curve CSV")
    parser.add_argument("--out", type=Path, default=JSON_PATH, help="where the JSON goes")
    parser.add_argument("--seeds", type=int, default=SEEDS, help="replay seeds per strategy")
    parser.add_argument("--epochs", type=int, default=REFERENCE_EPOCHS, help="the table's reference budget E")
    args = parser.parse_args(argv)
    table = table_from_rows(read_rows(args.table), args.epochs)
    if len(table.specs) < 4:
        raise SystemExit(f"{args.table} has {len(table.specs)} finished specs; the replay needs at least 4")
    results = run_all(table, args.seeds)
    body = {"table": str(args.table), "specs": len(table.specs), "horizon": table.horizon, "seeds": args.seeds,
            "space_share": SPACE_SHARE, "rungs": list(rungs_of(table.horizon)), "eta": ETA,
            "machine": platform.node(), "results": results}
    with atomic_write(args.out, "w") as handle:
        json.dump(body, handle, indent=1)
    print(format_figure(results, len(table.specs), table.horizon))


if __name__ == "__main__":
    main()
