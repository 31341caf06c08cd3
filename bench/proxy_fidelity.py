"""Proxy fidelity: does the cheap accuracy proxy rank architectures like (longer) full training does?

    .venv/bin/python bench/proxy_fidelity.py --data /tmp/cifar10-lt          # train (resumable), then report
    .venv/bin/python bench/proxy_fidelity.py --data /tmp/cifar10-lt --ref-epochs 6 --reference-only --subset 15 \
        --second-seed 0 --csv bench/results/proxy_fidelity_long_reference.csv --json /tmp/long.json  # longer reference
    .venv/bin/python bench/proxy_fidelity.py --from-csv                      # statistics from the committed CSVs

Results, what was reduced and why: docs/proxy_fidelity.md.

For a stratified sample of specs from the search space :data:`SPACE` (the default ``nas.space.SearchSpace``
when this was written) at 32 px, below a MACs cap (compute: 2 shared CPU cores), each spec gets

- a reference: ``trials.train.train`` for ``--ref-epochs`` epochs on the whole long-tailed training set
  (seed 0; seed 1 as well on a subset, to measure the reference's own seed-to-seed noise), evaluated by
  ``trials.evaluate.evaluate`` on the whole balanced test set (balanced accuracy and top-1);
- the proxy ``trials.proxy.proxy_accuracy`` with the default :class:`ProxyConfig`, and ONE alternative
  declared before any result was seen: the same budget at half the epochs (``epochs=2, max_steps=75``);
- zero-cost scores (``trials.zero_cost.zero_cost_scores``: log-synflow, naswot, grad_norm), #params and MACs.

Statistics (vs the seed-0 reference balanced accuracy; top-1 beside it): Kendall τ-b and Spearman ρ with
90 % percentile-bootstrap intervals (specs resampled, 2,000 resamples), the paired bootstrap interval of
τ(signal) − τ(#params), the reference's seed-to-seed τ (the ceiling any proxy can reach) and the proxy's
share of the reference compute (training images × MACs, and measured CPU seconds).

Rows go to ``bench/results/proxy_fidelity_specs.csv`` as each job finishes (a partial run is usable; a
rerun resumes and skips finished jobs); the figures go to ``bench/results/proxy_fidelity.json`` and are
printed last. Jobs run in ``--workers`` spawned processes with one torch thread each.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
CSV_PATH = RESULTS / "proxy_fidelity_specs.csv"
LONG_CSV_PATH = RESULTS / "proxy_fidelity_long_reference.csv"
JSON_PATH = RESULTS / "proxy_fidelity.json"

RESOLUTION = 32
MACS_CAP = 6.0e6  # largest spec allowed (compute cap; see docs/proxy_fidelity.md)
#: The space sampled: pinned here (it is the default ``SearchSpace`` of 2026-11-28, 1,296 specs at 32 px, whose
#: MACs span 0.48–10.5 M), so that later changes of the default do not change which specs the CSV describes.
SPACE: dict[str, Any] = {
    "depths": ((1, 2), (1, 2), (1, 4), (1, 1)),
    "widths": ((0.25, 0.5, 0.75), (0.25, 0.5, 0.75), (0.25, 0.5, 0.75), (0.25, 0.5, 1.0)),
}
STRATA = ("small", "medium", "large")  # equal-width bins of log MACs between the space's minimum and the cap
ALT_PROXY = {"epochs": 2, "max_steps": 75}  # the one alternative budget, declared before any result
BOOTSTRAP = 2000
LEVEL = 0.90

CSV_FIELDS = (
    "spec", "stratum", "seed", "macs", "params",
    "ref_bal", "ref_top1", "ref_epochs", "ref_steps", "ref_images", "ref_cpu_s", "ref_wall_s", "ref_val_bal_by_epoch",
    "proxy_bal", "proxy_top1", "proxy_images", "proxy_cpu_s", "proxy_wall_s",
    "proxy_half_bal", "proxy_half_top1", "proxy_half_images", "proxy_half_cpu_s", "proxy_half_wall_s",
    "log_synflow", "naswot", "grad_norm", "zc_cpu_s", "finished_at",
)

#: signal name → (CSV column for balanced accuracy / score, CSV column for top-1 or None, cost columns)
SIGNALS: dict[str, tuple[str, str | None]] = {
    "proxy (default ProxyConfig)": ("proxy_bal", "proxy_top1"),
    "proxy, half epochs": ("proxy_half_bal", "proxy_half_top1"),
    "log_synflow": ("log_synflow", None),
    "naswot": ("naswot", None),
    "grad_norm": ("grad_norm", None),
    "#params": ("params", None),
    "MACs": ("macs", None),
}
COSTS = {"proxy (default ProxyConfig)": "proxy", "proxy, half epochs": "proxy_half",
         "log_synflow": "zc", "naswot": "zc", "grad_norm": "zc"}


def log(text: str) -> None:
    """Progress on stderr."""
    print(text, file=sys.stderr, flush=True)


# -- specs -------------------------------------------------------------------------------------------

def sample_specs(n: int, seed: int = 0, macs_cap: float = MACS_CAP) -> list[dict[str, Any]]:
    """``n`` distinct specs of :data:`SPACE` at 32 px / 10 classes, stratified by log MACs below ``macs_cap``.

    The whole space is enumerated and cut at the cap; the range [minimum MACs, cap] is split into three
    equal log-width strata and ``n / 3`` specs are drawn (seeded) from each; the cheapest spec and the most
    expensive one below the cap are always included. Returns dicts
    ``{spec, stratum, macs, params, share_below_cap}``.
    """
    from nas.space import SearchSpace
    from search_space.cost import analyze

    space, rng = SearchSpace(depths=SPACE["depths"], widths=SPACE["widths"]), random.Random(seed)
    seen: dict[str, tuple[float, float]] = {}
    total = 0
    for spec in space.iter_specs(10):
        total += 1
        report = analyze(spec)
        if report.macs <= macs_cap:
            seen[spec.to_string()] = (float(report.macs), float(report.params))
    names = sorted(seen, key=lambda s: (seen[s][0], s))
    lo, hi = math.log(seen[names[0]][0]), math.log(macs_cap)
    edges = [lo + (hi - lo) * k / len(STRATA) for k in range(len(STRATA) + 1)]
    chosen: list[dict[str, Any]] = []
    per = [n // len(STRATA) + (1 if k < n % len(STRATA) else 0) for k in range(len(STRATA))]
    taken: set[str] = set()
    for k, name in enumerate(STRATA):
        members = [s for s in names if edges[k] <= math.log(seen[s][0]) <= edges[k + 1] + 1e-12 and s not in taken]
        fixed = {0: members[:1], len(STRATA) - 1: members[-1:]}.get(k, [])  # the cheapest / dearest below the cap
        rest = [s for s in members if s not in fixed]
        picks = set(fixed) | set(rng.sample(rest, min(per[k] - len(fixed), len(rest))))
        taken |= picks
        chosen += [{"spec": s, "stratum": name, "macs": seen[s][0], "params": seen[s][1],
                    "share_below_cap": len(seen) / total} for s in sorted(picks, key=lambda s: (seen[s][0], s))]
    return chosen


def spread(specs: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """``n`` of ``specs`` spread evenly over their MACs order (both ends included)."""
    ranked = sorted(specs, key=lambda s: s["macs"])
    idx = np.unique(np.linspace(0, len(ranked) - 1, n).round().astype(int))
    return [ranked[i] for i in idx]


def job_order(specs: list[dict[str, Any]], second_seed: int) -> list[tuple[dict[str, Any], int]]:
    """Seed-0 jobs round-robin over strata (a partial run still spans them), then seed 1 on ``second_seed`` specs
    spread evenly over the MACs order."""
    by = {name: [s for s in specs if s["stratum"] == name] for name in STRATA}
    order: list[dict[str, Any]] = []
    while any(by.values()):
        for name in STRATA:
            if by[name]:
                order.append(by[name].pop(0 if len(order) % 2 else -1))
    jobs = [(s, 0) for s in order]
    if second_seed:
        twins = sorted(spread(specs, second_seed), key=lambda s: order.index(s))
        # each seed-1 job right after every third seed-0 job, once its seed-0 twin is queued
        for k, spec in enumerate(twins):
            at = max(jobs.index((spec, 0)) + 1, 3 * (k + 1) + k)
            jobs.insert(min(at, len(jobs)), (spec, 1))
    return jobs


# -- one job (runs in a worker process) -----------------------------------------------------------------

@dataclass
class Settings:
    """What every worker needs to run a job."""

    data: str
    ref_epochs: int
    ref_batch: int
    ref_lr: float
    val_per_class: int
    reference_only: bool = False


_STATE: dict[str, Any] = {}


class _RefBundle:
    """The reference's training view: un-augmented training images, a small balanced slice of the test split
    for per-epoch curves (the reference keeps no best epoch, so nothing is selected on it)."""

    def __init__(self, data: Any, val_per_class: int) -> None:
        from torch.utils.data import Subset

        from trials.distributed import dataset_labels

        self.train = data.train_eval
        labels = np.asarray(dataset_labels(data.test))
        rng = np.random.default_rng(12345)
        keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:val_per_class]
                                       for c in range(len(data.classes))]))
        self.selection = Subset(data.test, keep.tolist())
        self.classes = list(data.classes)
        self.train_counts = list(data.train_counts)
        self.resolution = RESOLUTION


def _init_worker(settings: Settings) -> None:
    import torch

    torch.set_num_threads(1)
    from trials.data import load_data

    data = load_data(settings.data, RESOLUTION)
    _STATE.update(settings=settings, data=data, ref=_RefBundle(data, settings.val_per_class))


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def run_job(job: tuple[dict[str, Any], int]) -> dict[str, Any]:
    """Reference training (and, for seed 0, the proxies and zero-cost scores) of one spec."""
    from search_space.spec import ArchSpec
    from trials.config import TrainConfig
    from trials.evaluate import evaluate
    from trials.proxy import ProxyBudget, ProxyConfig, proxy_accuracy
    from trials.train import train
    from trials.zero_cost import zero_cost_scores

    info, seed = job
    st: Settings = _STATE["settings"]
    data, ref = _STATE["data"], _STATE["ref"]
    spec = ArchSpec.parse(info["spec"])
    row: dict[str, Any] = {k: info[k] for k in ("spec", "stratum", "macs", "params")}
    row["seed"] = seed
    config = TrainConfig(epochs=st.ref_epochs, batch_size=st.ref_batch, lr=st.ref_lr, warmup_epochs=0.5,
                         seed=seed, device="cpu", num_workers=0)
    result, cpu, wall = _timed(lambda: train(spec, ref, config))
    final = evaluate(result.model, data.test, data.classes)
    steps = int(result.metrics["steps"])
    row.update(ref_bal=final.balanced_acc, ref_top1=final.top1, ref_epochs=st.ref_epochs, ref_steps=steps,
               ref_images=steps * st.ref_batch, ref_cpu_s=cpu, ref_wall_s=wall,
               ref_val_bal_by_epoch=";".join(f"{h['selection_balanced_acc']:.4f}" for h in result.history
                                             if "selection_balanced_acc" in h))
    if seed == 0 and not st.reference_only:
        for prefix, cfg in (("proxy", ProxyConfig()), ("proxy_half", ProxyConfig(budget=ProxyBudget(**ALT_PROXY)))):
            res, cpu, wall = _timed(lambda cfg=cfg: proxy_accuracy(spec, data, cfg))
            row.update({f"{prefix}_bal": res.balanced_acc, f"{prefix}_top1": res.top1,
                        f"{prefix}_images": res.steps * cfg.budget.batch_size, f"{prefix}_cpu_s": cpu,
                        f"{prefix}_wall_s": wall})
        scores, cpu, _ = _timed(lambda: zero_cost_scores(spec, data))
        row.update(log_synflow=scores["log_synflow"], naswot=scores["naswot"], grad_norm=scores["grad_norm"],
                   zc_cpu_s=cpu)
    row["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    return row


# -- CSV ---------------------------------------------------------------------------------------------

def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of the per-spec CSV with numbers parsed (empty cells → None)."""
    if not path.is_file():
        return []
    out = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row: dict[str, Any] = {}
            for k, v in raw.items():
                if v in ("", None):
                    row[k] = None
                elif k in ("spec", "stratum", "ref_val_bal_by_epoch", "finished_at"):
                    row[k] = v
                else:
                    row[k] = float(v)
            row["seed"] = int(row["seed"])
            out.append(row)
    return out


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite the whole CSV atomically (called after every finished job)."""
    from search_space.io import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in CSV_FIELDS})


# -- statistics --------------------------------------------------------------------------------------

def _tau(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(x, y).statistic)


def _rho(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def bootstrap(fn: Callable[[np.ndarray], float], n: int, resamples: int = BOOTSTRAP, seed: int = 0,
              level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of ``fn(indices)`` over ``resamples`` resamples (with replacement) of ``n`` items."""
    rng = np.random.default_rng(seed)
    values = np.array([fn(rng.integers(0, n, n)) for _ in range(resamples)], dtype=float)
    a = (1 - level) / 2
    lo, hi = np.nanpercentile(values, [100 * a, 100 * (1 - a)])
    return float(lo), float(hi)


def correlation(x: Sequence[float], y: Sequence[float], resamples: int = BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """Kendall τ-b and Spearman ρ of x vs y with percentile-bootstrap intervals (pairs resampled)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    tau_ci = bootstrap(lambda i: _tau(x[i], y[i]), len(x), resamples, seed)
    rho_ci = bootstrap(lambda i: _rho(x[i], y[i]), len(x), resamples, seed)
    return {"n": len(x), "tau": _tau(x, y), "tau_ci": tau_ci, "rho": _rho(x, y), "rho_ci": rho_ci}


def compute_stats(rows: list[dict[str, Any]], resamples: int = BOOTSTRAP) -> dict[str, Any]:
    """All figures of the report from the per-spec rows (seed-0 rows are the reference; seed-1 rows its noise)."""
    base = {r["spec"]: r for r in rows if r["seed"] == 0 and r.get("ref_bal") is not None}
    specs = sorted(base, key=lambda s: base[s]["macs"])
    if len(specs) < 3:
        return {"specs": len(specs), "error": "fewer than 3 finished specs"}
    ref_bal = np.array([base[s]["ref_bal"] for s in specs])
    ref_top1 = np.array([base[s]["ref_top1"] for s in specs])
    params = np.array([base[s]["params"] for s in specs])
    ref_work = np.array([base[s]["ref_images"] * base[s]["macs"] for s in specs])
    ref_cpu = np.array([base[s]["ref_cpu_s"] for s in specs])
    signals: dict[str, Any] = {}
    for name, (col, top_col) in SIGNALS.items():
        ok = [i for i, s in enumerate(specs) if base[s].get(col) is not None and math.isfinite(base[s][col])]
        if len(ok) < 3:
            continue
        idx = np.array(ok)
        x = np.array([base[specs[i]][col] for i in ok])
        entry = {"vs_balanced": correlation(x, ref_bal[idx], resamples)}
        if top_col is not None:
            entry["vs_top1"] = correlation([base[specs[i]][top_col] for i in ok], ref_top1[idx], resamples)
        xp, yb = params[idx], ref_bal[idx]
        entry["tau_minus_params"] = _tau(x, yb) - _tau(xp, yb)
        entry["tau_minus_params_ci"] = bootstrap(lambda i, x=x, xp=xp, yb=yb: _tau(x[i], yb[i]) - _tau(xp[i], yb[i]),
                                                 len(idx), resamples, seed=1)
        xm = np.array([base[specs[i]]["macs"] for i in ok])
        entry["tau_minus_macs"] = _tau(x, yb) - _tau(xm, yb)
        entry["tau_minus_macs_ci"] = bootstrap(lambda i, x=x, xm=xm, yb=yb: _tau(x[i], yb[i]) - _tau(xm[i], yb[i]),
                                               len(idx), resamples, seed=1)
        within = []  # τ inside each MACs stratum (specs of similar cost: what a latency-bounded search compares)
        for stratum in STRATA:
            sub = [j for j, i in enumerate(ok) if base[specs[i]]["stratum"] == stratum]
            if len(sub) >= 3:
                within.append(_tau(x[sub], ref_bal[idx][sub]))
        entry["tau_within_strata"] = within
        entry["tau_within_strata_mean"] = float(np.nanmean(within)) if within else None
        prefix = COSTS.get(name)
        if prefix in ("proxy", "proxy_half"):
            work = np.array([base[specs[i]][f"{prefix}_images"] * base[specs[i]]["macs"] for i in ok])
            entry["share_images_macs"] = float(work.sum() / ref_work[idx].sum())
            entry["share_cpu_s"] = float(sum(base[specs[i]][f"{prefix}_cpu_s"] for i in ok) / ref_cpu[idx].sum())
        elif prefix == "zc":
            entry["share_images_macs"] = None  # forward/backward of one batch at init: no training
            entry["share_cpu_s"] = float(sum(base[specs[i]]["zc_cpu_s"] for i in ok) / ref_cpu[idx].sum())
        else:
            entry["share_images_macs"], entry["share_cpu_s"] = 0.0, 0.0
        signals[name] = entry
    # the reference's own noise: seed 0 vs seed 1 on the subset that has both
    second = {r["spec"]: r for r in rows if r["seed"] == 1 and r.get("ref_bal") is not None}
    both = [s for s in specs if s in second]
    noise: dict[str, Any] = {"n": len(both)}
    if len(both) >= 3:
        a = np.array([base[s]["ref_bal"] for s in both])
        b = np.array([second[s]["ref_bal"] for s in both])
        noise.update(correlation(a, b, resamples))
        noise["mean_abs_diff"] = float(np.mean(np.abs(a - b)))
        noise["seed_sd"] = float(np.sqrt(np.mean((a - b) ** 2) / 2))  # per-run SD from paired differences
    # does the ranking still move at the end of the reference? τ(second-to-last epoch, last epoch) on the small val
    by_epoch = [[float(v) for v in base[s]["ref_val_bal_by_epoch"].split(";")] for s in specs
                if base[s].get("ref_val_bal_by_epoch")]
    stability = None
    if len(by_epoch) >= 3 and all(len(e) >= 2 for e in by_epoch):
        stability = _tau(np.array([e[-2] for e in by_epoch]), np.array([e[-1] for e in by_epoch]))
    strata = {name: sum(1 for s in specs if base[s]["stratum"] == name) for name in STRATA}
    return {
        "specs": len(specs),
        "strata": strata,
        "macs_range": [float(min(base[s]["macs"] for s in specs)), float(max(base[s]["macs"] for s in specs))],
        "reference": {
            "balanced_acc_range": [float(ref_bal.min()), float(ref_bal.max())],
            "balanced_acc_sd_across_specs": float(ref_bal.std(ddof=1)),
            "top1_range": [float(ref_top1.min()), float(ref_top1.max())],
            "epochs": sorted({int(base[s]["ref_epochs"]) for s in specs}),
            "train_images_per_run": float(np.median([base[s]["ref_images"] for s in specs])),
            "cpu_s_total": float(ref_cpu.sum()),
            "cpu_s_range": [float(ref_cpu.min()), float(ref_cpu.max())],
            "tau_last_two_epochs_small_val": stability,
        },
        "seed_noise": noise,
        "signals": signals,
    }


def long_reference_stats(rows: list[dict[str, Any]], long_rows: list[dict[str, Any]],
                         resamples: int = BOOTSTRAP) -> dict[str, Any] | None:
    """A longer reference (more epochs, seed 0) on a subset of the specs: does it rank like the short one, and
    how do the signals (taken from ``rows``) rank against it?"""
    base = {r["spec"]: r for r in rows if r["seed"] == 0 and r.get("ref_bal") is not None}
    long = {r["spec"]: r for r in long_rows if r["seed"] == 0 and r.get("ref_bal") is not None}
    specs = sorted((s for s in long if s in base), key=lambda s: base[s]["macs"])
    if len(specs) < 3:
        return None
    y = np.array([long[s]["ref_bal"] for s in specs])
    out: dict[str, Any] = {
        "n": len(specs),
        "epochs": sorted({int(long[s]["ref_epochs"]) for s in specs}),
        "balanced_acc_range": [float(y.min()), float(y.max())],
        "balanced_acc_sd_across_specs": float(y.std(ddof=1)),
        "top1_range": [float(min(long[s]["ref_top1"] for s in specs)), float(max(long[s]["ref_top1"] for s in specs))],
        "cpu_s_total": float(sum(long[s]["ref_cpu_s"] for s in specs)),
        "short_vs_long": correlation([base[s]["ref_bal"] for s in specs], y, resamples),
        "signals": {},
    }
    for name, (col, _) in SIGNALS.items():
        ok = [s for s in specs if base[s].get(col) is not None and math.isfinite(base[s][col])]
        if len(ok) >= 3:
            out["signals"][name] = correlation([base[s][col] for s in ok], [long[s]["ref_bal"] for s in ok],
                                               resamples)
            # the same specs against the short reference: separates "other reference" from "other specs"
            out["signals"][name]["tau_vs_short_same_specs"] = _tau(
                np.array([base[s][col] for s in ok]), np.array([base[s]["ref_bal"] for s in ok]))
    return out


def _ci(ci: Sequence[float]) -> str:
    return f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def format_table(stats: dict[str, Any]) -> str:
    """The report as plain text (printed last)."""
    if "error" in stats:
        return f"proxy fidelity: {stats['error']} ({stats['specs']})"
    ref, noise = stats["reference"], stats["seed_noise"]
    lines = [
        f"specs: {stats['specs']} {stats['strata']}, MACs {stats['macs_range'][0] / 1e6:.2f}–"
        f"{stats['macs_range'][1] / 1e6:.2f} M at {RESOLUTION} px",
        f"reference: {ref['epochs']} epochs, {ref['train_images_per_run']:.0f} training images/run, balanced acc "
        f"{ref['balanced_acc_range'][0]:.3f}–{ref['balanced_acc_range'][1]:.3f} (SD across specs "
        f"{ref['balanced_acc_sd_across_specs']:.3f}), top-1 {ref['top1_range'][0]:.3f}–{ref['top1_range'][1]:.3f}, "
        f"{ref['cpu_s_total']:.0f} CPU s in all",
    ]
    if "tau" in noise:
        lines.append(f"reference noise (seed 0 vs 1, {noise['n']} specs): τ {noise['tau']:+.2f} "
                     f"{_ci(noise['tau_ci'])}, ρ {noise['rho']:+.2f}, mean |Δ bal acc| {noise['mean_abs_diff']:.3f}, "
                     f"per-run SD {noise['seed_sd']:.3f}")
    else:
        lines.append(f"reference noise: only {noise['n']} specs with two seeds")
    if ref["tau_last_two_epochs_small_val"] is not None:
        lines.append(f"reference ranking, second-to-last vs last epoch (500-image val): "
                     f"τ {ref['tau_last_two_epochs_small_val']:+.2f}")
    header = (f"{'signal':<28} {'τ vs bal':>7} {'90% CI':>15} {'ρ vs bal':>8} {'90% CI':>15} {'τ top1':>7} "
              f"{'τ−τ(params)':>11} {'90% CI':>15} {'τ in strata':>11} {'share img×MAC':>13} {'share CPU s':>11}")
    lines += ["", header, "-" * len(header)]
    for name, e in stats["signals"].items():
        b = e["vs_balanced"]
        top = f"{e['vs_top1']['tau']:+.2f}" if "vs_top1" in e else "—"
        img = "—" if e["share_images_macs"] is None else f"{100 * e['share_images_macs']:.2f} %"
        lines.append(f"{name:<28} {b['tau']:>+7.2f} {_ci(b['tau_ci']):>15} {b['rho']:>+8.2f} {_ci(b['rho_ci']):>15} "
                     f"{top:>7} {e['tau_minus_params']:>+11.2f} {_ci(e['tau_minus_params_ci']):>15} "
                     f"{e['tau_within_strata_mean'] if e['tau_within_strata_mean'] is not None else math.nan:>+11.2f} "
                     f"{img:>13} "
                     f"{100 * e['share_cpu_s']:>9.2f} %")
    longer = stats.get("long_reference")
    if longer:
        sl = longer["short_vs_long"]
        lines += ["", f"longer reference ({longer['epochs']} epochs, seed 0) on {longer['n']} of the specs: "
                  f"balanced acc "
                  f"{longer['balanced_acc_range'][0]:.3f}–{longer['balanced_acc_range'][1]:.3f} (SD across specs "
                  f"{longer['balanced_acc_sd_across_specs']:.3f}), top-1 {longer['top1_range'][0]:.3f}–"
                  f"{longer['top1_range'][1]:.3f}; τ(short, long reference) {sl['tau']:+.2f} {_ci(sl['tau_ci'])}",
                  f"{'signal':<28} {'τ vs long':>9} {'90% CI':>15} {'ρ vs long':>9} {'90% CI':>15} "
                  f"{'τ vs short, same specs':>22}"]
        for name, c in longer["signals"].items():
            lines.append(f"{name:<28} {c['tau']:>+9.2f} {_ci(c['tau_ci']):>15} {c['rho']:>+9.2f} "
                         f"{_ci(c['rho_ci']):>15} {c['tau_vs_short_same_specs']:>+22.2f}")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import torch

    from trials.latency import cpu_name

    cpu = cpu_name()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "load_avg": os.getloadavg()}


# -- main --------------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """Run the missing jobs (unless ``--from-csv``), then compute, print and write the statistics."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="CIFAR-10-LT folder (train/ + test/), e.g. extracted to /tmp/cifar10-lt")
    parser.add_argument("--from-csv", action="store_true", help="train nothing: statistics from the CSV only")
    parser.add_argument("--csv", type=Path, default=CSV_PATH, help="per-spec results (read, resumed, appended)")
    parser.add_argument("--json", type=Path, default=JSON_PATH, help="where the figures go")
    parser.add_argument("--specs", type=int, default=30, help="specs to sample (stratified by MACs)")
    parser.add_argument("--second-seed", type=int, default=8, help="specs trained with a second reference seed")
    parser.add_argument("--ref-epochs", type=int, default=3, help="reference training epochs (the committed run: 3)")
    parser.add_argument("--ref-batch", type=int, default=64, help="reference batch size")
    parser.add_argument("--ref-lr", type=float, default=0.05, help="reference learning rate")
    parser.add_argument("--macs-cap", type=float, default=MACS_CAP, help="largest spec (MACs at 32 px)")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (one torch thread each)")
    parser.add_argument("--deadline-min", type=float, default=None,
                        help="stop submitting new jobs after this many minutes (finished rows are kept)")
    parser.add_argument("--reference-only", action="store_true",
                        help="train only the reference (no proxies, no zero-cost scores); with --subset and a "
                             "separate --csv this is the longer-reference check")
    parser.add_argument("--subset", type=int, default=None,
                        help="only this many of the specs, spread evenly over the MACs order (seed 0 only)")
    parser.add_argument("--long-csv", type=Path, default=LONG_CSV_PATH,
                        help="per-spec results of a longer reference on a subset (compared when present)")
    parser.add_argument("--resamples", type=int, default=BOOTSTRAP, help="bootstrap resamples")
    args = parser.parse_args(argv)

    rows = read_rows(args.csv)
    start = time.time()
    if not args.from_csv:
        if not args.data:
            parser.error("--data is required unless --from-csv")
        specs = sample_specs(args.specs, macs_cap=args.macs_cap)
        done = {(r["spec"], r["seed"]) for r in rows}
        order = job_order(specs, args.second_seed)
        if args.subset:
            few = spread(specs, args.subset)
            order = [(few[k // 2] if k % 2 == 0 else few[-1 - k // 2], 0) for k in range(len(few))]  # ends first
        jobs = [j for j in order if (j[0]["spec"], j[1]) not in done]
        log(f"{len(specs)} specs ({specs[0]['share_below_cap']:.0%} of the space is below the MACs cap), "
            f"{len(jobs)} jobs to run, {len(done)} done")
        settings = Settings(args.data, args.ref_epochs, args.ref_batch, args.ref_lr, val_per_class=50,
                            reference_only=args.reference_only)
        if jobs:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")
            with ctx.Pool(args.workers, initializer=_init_worker, initargs=(settings,), maxtasksperchild=None) as pool:
                pending = list(jobs)
                running: list[Any] = []
                while pending or running:
                    late = args.deadline_min is not None and time.time() - start > 60 * args.deadline_min
                    while pending and len(running) < args.workers and not late:
                        job = pending.pop(0)
                        running.append((job, pool.apply_async(run_job, (job,))))
                    if late and not running:
                        log(f"deadline reached: {len(pending)} jobs not started")
                        break
                    if late:
                        pending = []
                    for item in list(running):
                        if item[1].ready():
                            running.remove(item)
                            row = item[1].get()
                            rows.append(row)
                            write_rows(args.csv, rows)
                            log(f"[{len(rows)}] {row['spec']} seed {row['seed']}: ref bal {row['ref_bal']:.3f} "
                                f"({row['ref_cpu_s']:.0f} CPU s, {row['ref_wall_s']:.0f} s), proxy bal "
                                f"{row.get('proxy_bal') or float('nan'):.3f}, "
                                f"{(time.time() - start) / 60:.1f} min")
                    time.sleep(1.0)
        rows = read_rows(args.csv)
    if not rows:
        log(f"no rows in {args.csv}")
        return 1
    stats = compute_stats(rows, args.resamples)
    if not args.reference_only and args.long_csv.is_file():
        stats["long_reference"] = long_reference_stats(rows, read_rows(args.long_csv), args.resamples)
    config = {"space": SPACE, "resolution": RESOLUTION, "macs_cap": args.macs_cap, "specs": args.specs,
              "second_seed": args.second_seed, "alt_proxy": ALT_PROXY,
              "bootstrap": {"resamples": args.resamples, "level": LEVEL, "method": "percentile, specs resampled"},
              "reference": {"epochs": args.ref_epochs, "batch_size": args.ref_batch, "lr": args.ref_lr,
                            "warmup_epochs": 0.5, "augment": False, "loss": "ce", "label_smoothing": 0.1,
                            "eval": "whole balanced test set"},
              "data": args.data}
    if "reference" in stats:  # what the CSV holds (the flags do not describe it under --from-csv)
        config["reference"]["epochs"] = stats["reference"]["epochs"]
    from trials.proxy import ProxyConfig

    config["proxy_default"] = ProxyConfig().to_dict()
    from search_space.io import atomic_write

    with atomic_write(args.json) as f:
        json.dump({"stats": stats, "config": config, "machine": machine(), "csv": str(args.csv.name),
                   "from_csv": bool(args.from_csv)}, f, indent=2)
    print(format_table(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
