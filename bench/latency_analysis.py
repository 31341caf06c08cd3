"""Statistics and printed report of the latency-predictor bench (``bench/latency_predictor.py``): scores of many
fits on one test set, bootstrap intervals over test specs, paired differences, the repeatability floor, table
quality. Pure numpy, no measuring, no fitting.

A resample of the test specs is a row of counts (how often each spec is drawn); every score is computed for
every fit and every resample at once, so 200 fits × 1000 resamples cost a few matrix products.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from predictors import TableRow
    from search_space import ArchSpec

PRECISIONS = ("fp32", "int8")
#: Percentile that is the worst decile of each score (low is bad for shares and τ, high for MAPE).
WORST_PERCENTILE = {"within10": 10, "mape_pct": 90, "tau": 10, "coverage": 10, "extrapolated": 90}


@dataclass(frozen=True)
class Predicted:
    """Point predictions for a list of specs, and where the method gives them: the interval and whether each
    prediction is marked as extrapolated (outside the measured domain)."""

    ms: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    extrapolated: np.ndarray | None = None


# -- scores of many fits, bootstrap over test specs -----------------------------------------------------------

def _quad(weights: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Σ_ij w_i·m_ij·w_j for each row w of ``weights`` (B, n)."""
    return ((weights @ m) * weights).sum(axis=1)


def tau_b(pred: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Kendall τ-b of each row of ``pred`` (D, n) against ``y`` (n,) on each resample of ``weights`` (B, n:
    how often each test spec is in the resample; ``np.ones((1, n))`` is the plain τ-b) → (D, B).

    Ordered pairs (i, j) weigh w_i·w_j; copies of one spec tie on both sides and drop out, as in τ-b."""
    sy = np.sign(y[:, None] - y[None, :])
    den_y = _quad(weights, np.abs(sy))
    out = np.empty((len(pred), len(weights)))
    for d, row in enumerate(pred):
        sp = np.sign(row[:, None] - row[None, :])
        out[d] = _quad(weights, sp * sy) / np.sqrt(_quad(weights, np.abs(sp)) * den_y)
    return out


def weighted_scores(pred: Predicted, y: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Scores of each fit (rows of ``pred``: (D, n), or (n,) for one fit) on each resample (rows of
    ``weights``) → (D, B): share within ±10 %, MAPE (%), Kendall τ-b and, where given, the interval's coverage
    and the share marked extrapolated."""
    ms, count = np.atleast_2d(pred.ms), weights.sum(axis=1)
    rel = np.where(ms > 0, np.abs(ms / y - 1), 1.0)
    out = {"within10": (rel <= 0.10).astype(float) @ weights.T / count,
           "mape_pct": 100 * rel @ weights.T / count, "tau": tau_b(ms, y, weights)}
    if pred.low is not None and pred.high is not None:
        inside = (np.atleast_2d(pred.low) <= y) & (y <= np.atleast_2d(pred.high))
        out["coverage"] = inside.astype(float) @ weights.T / count
    if pred.extrapolated is not None:
        out["extrapolated"] = np.atleast_2d(pred.extrapolated).astype(float) @ weights.T / count
    return out


def bootstrap_weights(n: int, boot: int, rng: np.random.Generator) -> np.ndarray:
    """``boot`` resamples of ``n`` test specs with replacement, as counts per spec (boot, n)."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=boot).astype(float)


def summarize(pred: Predicted, y: np.ndarray, weights: np.ndarray) -> tuple[dict, dict[str, np.ndarray]]:
    """Per score: median over fits, worst decile, bootstrap 90 % interval of the median, per-fit values; and
    the bootstrap medians themselves (for paired differences)."""
    plain = weighted_scores(pred, y, np.ones((1, len(y))))
    boot = {m: np.median(v, axis=0) for m, v in weighted_scores(pred, y, weights).items()}
    out = {}
    for m, v in plain.items():
        per_fit = v[:, 0]
        out[m] = {"median": float(np.median(per_fit)),
                  "worst_decile": float(np.percentile(per_fit, WORST_PERCENTILE[m])),
                  "ci90": [float(x) for x in np.percentile(boot[m], [5, 95])],
                  "per_fit": [round(float(x), 5) for x in per_fit]}
    return out, boot


def paired_difference(suggested: dict, random_: dict, boot_s: dict[str, np.ndarray],
                      boot_r: dict[str, np.ndarray]) -> dict:
    """suggested − random (median over draws) per score, its paired bootstrap 90 % interval, and the share of
    random draws the suggested set does at least as well as."""
    out = {}
    for m in ("within10", "mape_pct", "tau"):
        s, draws = suggested[m]["median"], np.array(random_[m]["per_fit"])
        better = draws >= s - 1e-9 if m == "mape_pct" else draws <= s + 1e-9
        out[m] = {"diff": s - random_[m]["median"],
                  "ci90": [float(x) for x in np.percentile(boot_s[m] - boot_r[m], [5, 95])],
                  "share_of_draws_matched": float(np.mean(better))}
    return out


# -- tables and the repeatability floor ----------------------------------------------------------------------

def floor_summary(pairs: Sequence[dict]) -> dict:
    """|Δ|/label of second measurements, per precision: median, p90, max (%), share within ±10 %."""
    out = {}
    for p in PRECISIONS:
        d = np.array([r["rel_diff"] for r in pairs if r["precision"] == p])
        if len(d):
            out[p] = {"n": len(d), "median_pct": 100 * float(np.median(d)),
                      "p90_pct": 100 * float(np.percentile(d, 90)), "max_pct": 100 * float(d.max()),
                      "within10": float(np.mean(d <= 0.10))}
    return out


def notes_of(row: TableRow) -> dict[str, str]:
    """The ``notes`` cell as a dict (``threads=1;clock=cpu;…``)."""
    return dict(item.split("=", 1) for item in row.notes.split(";") if "=" in item)


def table_meta(rows: Sequence[TableRow]) -> dict:
    """Protocol and quality of the rows: CPU, runtime, settings, session spread, rows with loaded sessions."""
    notes = [notes_of(r) for r in rows]
    spreads = np.array([float(n["spread"]) for n in notes if "spread" in n] or [np.nan])
    first = notes[0] if notes else {}
    return {"rows": len(rows), "cpu": first.get("cpu"), "ort": first.get("ort"),
            "protocol": {k: first.get(k) for k in ("threads", "sessions", "runs", "warmup", "clock")},
            "spread_median": float(np.median(spreads)), "spread_p90": float(np.percentile(spreads, 90)),
            "spread_max": float(np.max(spreads)),
            "rows_with_loaded_sessions": sum(int(n.get("loaded", 0)) > 0 for n in notes)}


def repeat_pairs(first: dict[str, dict[ArchSpec, TableRow]], second: dict[str, dict[ArchSpec, TableRow]],
                 specs: Sequence[ArchSpec]) -> list[dict]:
    """First and second measurement of each spec and precision, with |Δ|/first."""
    return [{"arch": s.to_string(), "precision": p, "first_ms": first[p][s].latency_ms,
             "second_ms": second[p][s].latency_ms,
             "rel_diff": abs(second[p][s].latency_ms - first[p][s].latency_ms) / first[p][s].latency_ms}
            for s in specs for p in PRECISIONS if s in first[p] and s in second[p]]


# -- report --------------------------------------------------------------------------------------------------

def _cell(s: dict, m: str, fmt: str, draws: bool) -> str:
    """``median (worst decile) [CI]`` of one score, or its value and CI for a single fit."""
    f = {"pct": lambda v: f"{100 * v:.1f}", "num": lambda v: f"{v:.2f}", "tau": lambda v: f"{v:.3f}"}[fmt]
    if m not in s:
        return "—"
    x = s[m]
    worst = f" ({f(x['worst_decile'])})" if draws else ""
    return f"{f(x['median'])}{worst} [{f(x['ci90'][0])}, {f(x['ci90'][1])}]"


def print_resolution(res: dict) -> None:
    """Random vs suggested training sets, per precision and test set."""
    print(f"\nresolution part: fit on {res['train']} of {res['n_candidates']} candidates ({res['draws']} random "
          f"draws, or the {res['train']} suggested); nominal interval level {res['nominal_level']:.0%}; bootstrap: "
          f"{res['boot']} resamples of the test specs\n"
          "  cells: median over draws (worst decile) [90 % CI]; suggested: value [90 % CI]")
    print(f"  suggested: {', '.join(res['suggested'])}")
    families = res.get("families", {"predictor": "the default family"})
    print("  predictor families (chosen beforehand, evaluated here after the choice): "
          + ", ".join(f"{m} = {f}" for m, f in families.items()))
    for p in PRECISIONS:
        for name, ev in res["results"][p].items():
            print(f"\n  {p}, test set {name!r} ({ev['n_test']} specs)")
            print(f"    {'method':17} {'train':10} {'within ±10 % (%)':>28} {'MAPE %':>28} {'Kendall τ':>30}")
            for method in (m for m in ev if m != "n_test"):
                for strategy in ("random", "suggested"):
                    s, draws = ev[method][strategy], strategy == "random"
                    print(f"    {method:17} {strategy:10} {_cell(s, 'within10', 'pct', draws):>28}"
                          f" {_cell(s, 'mape_pct', 'num', draws):>28} {_cell(s, 'tau', 'tau', draws):>30}")
            for method in families:
                _print_predictor(method, ev[method])


def _print_predictor(method: str, ev: dict) -> None:
    """A predictor method's interval coverage, extrapolation share, and suggested − random."""
    for strategy in ("random", "suggested"):
        s, draws = ev[strategy], strategy == "random"
        print(f"    {method} {strategy:9}: interval coverage {_cell(s, 'coverage', 'pct', draws)} %, "
              f"marked extrapolated {_cell(s, 'extrapolated', 'pct', draws)} %")
    d = ev["difference"]
    print(f"    {method}, suggested − random: " + "; ".join(
        f"{m} {d[m]['diff']:+.3f} [{d[m]['ci90'][0]:+.3f}, {d[m]['ci90'][1]:+.3f}] (as good as "
        f"{d[m]['share_of_draws_matched']:.0%} of draws)" for m in ("within10", "mape_pct", "tau")))


def _print_goals(goals: Sequence[dict]) -> None:
    for g in goals:
        ci = f" [{g['ci90'][0]:+.3f}, {g['ci90'][1]:+.3f}]" if "ci90" in g else ""
        print(f"  {'met    ' if g['met'] else 'NOT met'}  {g['goal']}: {g['value']:.3f}{ci}")


def print_report(result: dict) -> None:
    """The figures, last on stdout."""
    for part in ("res", "112"):
        meta = result["tables"][part]
        print(f"\ntable {meta['path']}: {meta['rows']} rows, {meta['cpu']}, ort {meta['ort']}, protocol "
              f"{meta['protocol']}, session spread median {meta['spread_median']:.3f} p90 {meta['spread_p90']:.3f} "
              f"max {meta['spread_max']:.3f}, rows with loaded sessions {meta['rows_with_loaded_sessions']}")
    print_resolution(result["resolution"])
    part = result["set112"]
    print(f"\n112-px part: {part['draws']} random splits, fit on {part['train']}, test on the rest"
          "      median (worst decile)")
    old = result["set112"]["drift_from_old_table"]
    for p in PRECISIONS:
        if p in old:
            print(f"  {p}: latency today / in {old['path']}: median {old[p]['median']:.2f} "
                  f"({old[p]['min']:.2f}–{old[p]['max']:.2f}) over {old[p]['n']} specs")
    for p in PRECISIONS:
        for method, s in result["set112"]["evaluation"][p].items():
            cov = "".join(f"  {m} {100 * s[m]['median']:.1f} ({100 * s[m]['worst_decile']:.1f}) %"
                          for m in ("coverage", "extrapolated") if m in s)
            print(f"  {p} {method:17} within ±10 % {100 * s['within10']['median']:5.1f} "
                  f"({100 * s['within10']['worst_decile']:5.1f}) %  MAPE {s['mape_pct']['median']:6.2f} "
                  f"({s['mape_pct']['worst_decile']:6.2f}) %  τ {s['tau']['median']:.3f} "
                  f"({s['tau']['worst_decile']:.3f}){cov}")
    print("\nrepeatability floor (|Δ|/label of a second measurement, new export and sessions):")
    for part in ("res", "112"):
        for p, f in result["floor"][part].items():
            print(f"  {part:4} {p}: n={f['n']} median {f['median_pct']:.2f} %, p90 {f['p90_pct']:.2f} %, "
                  f"max {f['max_pct']:.2f} %, within ±10 %: {f['within10']:.0%}")
    family = result["resolution"].get("families", {}).get("predictor", "the default family")
    print(f"\ngoals (resolution test set, predictor = family {family}):")
    _print_goals(result["goals"])
    for other, goals in result.get("goals_other_families", {}).items():
        print(f"\ngoals of family {other} (predictor:{other}, evaluated after the choice, same test set):")
        _print_goals(goals)
    if result["measure_s"] or result["repeat_s"]:
        print(f"measured in this run: {result['measure_s']:.0f} s, repeats {result['repeat_s']:.0f} s")
