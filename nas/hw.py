"""Hardware tables and latency predictors for people: the rows behind ``nas hw list|fit|predict|plot``.

Notebook use::

    from nas.hw import fit_rows, predict_rows
    from predictors import load_table
    rows, predictors = fit_rows(load_table())
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from predictors import (
    DEFAULT_FAMILY,
    DevicePredictor,
    HardwareTable,
    PredictorError,
    evaluate_loo,
    fit_predictors,
    resolve_device,
    summarize_loo,
)
from predictors.features import spec_features
from search_space import SEED_ROWS, ArchSpec
from search_space.io import atomic_path, atomic_write


def device_rows(table: HardwareTable) -> list[dict[str, Any]]:
    """One row per device key: precision, measured points, failures, and the memory bounds they imply."""
    from predictors import memory_bounds

    rows = []
    for key in table.device_keys:
        _, precision = table.device_precision(key)
        batch1 = table.rows_for(key)
        ok = [r.spec for r in batch1 if r.ok]
        failed = [r.spec for r in batch1 if not r.ok]
        bounds = memory_bounds(ok, failed)
        rows.append({
            "device": key, "precision": precision, "points": len(ok), "failures": len(failed),
            "other_batch": len(table.rows_for(key, batch=None)) - len(batch1),
            "largest_ok_kib": bounds.largest_ok_kib, "smallest_failure_kib": bounds.smallest_failure_kib,
            "memory_limit_kib": bounds.limit_kib,
        })
    return rows


def fit_rows(table: HardwareTable, devices: Sequence[str] | None = None,
             family: str = DEFAULT_FAMILY) -> tuple[list[dict[str, Any]], dict[str, DevicePredictor]]:
    """Fit every (or the given) device and evaluate it by leave-one-out, with the MACs baseline on the same folds.

    Returns the summary rows and the predictors fitted on all points.
    """
    predictors = fit_predictors(table, devices, family)
    rows = []
    for key, predictor in predictors.items():
        row: dict[str, Any] = {"device": key, "precision": predictor.precision, "points": predictor.n_points,
                               "family": family, "lam": predictor.lam if predictor.family.uses_prior else None}
        if predictor.n_points >= 2:
            summary = summarize_loo(evaluate_loo(table, key, family))
            row.update({k: round(summary[k], 2) for k in ("loo_mape_pct", "max_error_pct", "macs_mape_pct")})
            row.update({k: round(summary[k], 3) for k in ("kendall_tau", "coverage")})
        else:
            row.update(dict.fromkeys(("loo_mape_pct", "max_error_pct", "kendall_tau", "macs_mape_pct",
                                      "coverage")))
        limit = predictor.memory_limit_kib
        row["memory_limit_kib"] = None if limit is None else round(limit, 1)
        rows.append(row)
    return rows, predictors


def loo_rows(table: HardwareTable, devices: Sequence[str] | None = None,
             family: str = DEFAULT_FAMILY) -> list[dict[str, Any]]:
    """Per-point leave-one-out rows of every device with at least two measured points."""
    keys = [resolve_device(table, d) for d in devices] if devices else table.device_keys
    out: list[dict[str, Any]] = []
    for key in keys:
        if sum(r.ok for r in table.rows_for(key)) >= 2:
            out.extend(evaluate_loo(table, key, family))
    return out


def _file_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key) + ".json"


def save_predictors(predictors: dict[str, DevicePredictor], out_dir: str | Path) -> list[Path]:
    """Write each predictor as ``DIR/<device>.json`` (atomically); the folder is created if missing."""
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise PredictorError(f"{str(folder)!r} is a file", "give a folder for --save")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, predictor in predictors.items():
        path = folder / _file_name(key)
        with atomic_write(path) as handle:
            handle.write(predictor.to_json() + "\n")
        paths.append(path)
    return paths


def load_predictors(folder: str | Path) -> dict[str, DevicePredictor]:
    """Read every ``*.json`` predictor in ``folder`` (written by :func:`save_predictors`)."""
    path = Path(folder)
    files = sorted(path.glob("*.json")) if path.is_dir() else []
    if not files:
        raise PredictorError(f"no predictor JSON files in {str(path)!r}", "write them with `nas hw fit --save DIR`")
    loaded = {}
    for file in files:
        try:
            predictor = DevicePredictor.from_json(file.read_text(encoding="utf-8"))
        except PredictorError as exc:
            raise PredictorError(f"{file}: {exc.message}", exc.hint) from None
        loaded[predictor.key] = predictor
    return loaded


def predict_rows(predictors: dict[str, DevicePredictor], spec: ArchSpec) -> list[dict[str, Any]]:
    """Prediction of ``spec`` on every predictor: ms, interval, feasibility and why."""
    peak = spec_features(spec).peak_memory_kib
    rows = []
    for key, predictor in predictors.items():
        p = predictor.predict(spec)
        verdict = "uncertain" if p.uncertain else ("yes" if p.feasible else "no")
        rows.append({"device": key, "precision": p.precision, "ms": p.ms, "low": p.low, "high": p.high,
                     "feasible": p.feasible, "certainty": "uncertain" if p.uncertain else "certain",
                     "verdict": verdict, "peak_memory_kib": peak, "memory_limit_kib": predictor.memory_limit_kib,
                     "points": predictor.n_points, "reason": p.reason or ""})
    return rows


def plot_hw(table: HardwareTable, out: str | Path, family: str = DEFAULT_FAMILY) -> Path:
    """Two panels: measured latency of each architecture across devices (log scale, as the seed's figure),
    and leave-one-out predicted vs measured per device with the predicted intervals. Writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = Path(out)
    if not target.parent.is_dir():
        raise PredictorError(f"folder {str(target.parent)!r} does not exist", "create it or choose another --out")
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    archs = list(dict.fromkeys(r.arch for r in table.rows if r.batch == 1))
    order = {name: i for i, name in enumerate(SEED_ROWS)}  # the seed's row order: A0, N0…N4, M0, M1
    archs.sort(key=lambda a: order.get(a, len(order)))
    keys = table.device_keys
    for key in keys:
        by_arch = {r.arch: r for r in table.rows_for(key)}
        xs = [i for i, a in enumerate(archs) if a in by_arch and by_arch[a].ok]
        line = left.plot(xs, [by_arch[archs[i]].latency_ms for i in xs], marker="o", label=key)[0]
        for i, a in enumerate(archs):
            if a in by_arch and not by_arch[a].ok:
                left.plot([i], [max(r.latency_ms or 0 for r in by_arch.values()) * 1.3], marker="x",
                          color=line.get_color(), markersize=10, linestyle="none")
    left.set_xticks(range(len(archs)), [a if len(a) < 12 else f"#{i}" for i, a in enumerate(archs)])
    left.set_yscale("log")
    left.set_ylabel("measured latency (ms, batch 1)")
    left.set_title("latency across devices (× = failure)")
    left.legend(fontsize=8)
    rows = loo_rows(table, family=family)
    lo = min([r["measured_ms"] for r in rows] + [r["low"] for r in rows], default=0.1)
    hi = max([r["measured_ms"] for r in rows] + [r["high"] for r in rows], default=10)
    for key in keys:
        pts = [r for r in rows if r["device"] == key]
        if pts:
            pred = [r["predicted_ms"] for r in pts]
            err = [[p - r["low"] for p, r in zip(pred, pts)], [r["high"] - p for p, r in zip(pred, pts)]]
            right.errorbar([r["measured_ms"] for r in pts], pred, yerr=err, fmt="o", capsize=2, label=key)
    right.plot([lo, hi], [lo, hi], color="grey", linewidth=1)
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("measured (ms)")
    right.set_ylabel(f"leave-one-out predicted (ms), family {family}")
    right.set_title("held-out prediction vs measurement (bars: interval)")
    right.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return target
