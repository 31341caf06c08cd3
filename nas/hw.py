"""Hardware tables and latency predictors for people: what ``nas hw list|fit|predict|plot|suggest`` show.

Every function takes the table files (``tables``, merged after the shipped seed table unless
``include_seed`` is False) and gets its predictors from :func:`predictors.fitted`, the one cached fit that
the search and the export use too, so all of them predict the same numbers. Notebook use::

    from nas.hw import fit_report, predict_arch
    report = fit_report(["host.csv"])
    predict_arch("M0", targets=["T4"]).rows
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.measure import space_candidates, suggest
from predictors import (
    AUTO,
    DEFAULT_CLASSES,
    DEFAULT_FAMILY,
    DEFAULT_RESOLUTION,
    FAMILIES,
    DevicePredictor,
    FittedTables,
    HardwareTable,
    PredictorError,
    evaluate_loo,
    fitted,
    memory_bounds,
    summarize_loo,
)
from predictors.features import spec_features
from search_space import SEED_ROWS, ArchSpec, analyze, parse_arch
from search_space.io import atomic_path, atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from nas.space import SearchSpace

__all__ = ["AUTO", "DEFAULT_CLASSES", "DEFAULT_FAMILY", "DEFAULT_RESOLUTION", "FAMILIES", "FIT_NOTE", "FitReport",
           "Predictions", "Suggestion", "device_rows", "extrapolation_warnings", "fit_report", "load_predictors",
           "loo_rows", "plot_hw", "predict_arch", "predict_rows", "save_predictors", "suggest_for"]

Tables = Sequence[str | Path]
FIT_NOTE = (
    "loo_*: honest leave-one-out — each measured architecture is dropped from every device of the table and "
    "predicted by a refit on the rest (prior, λ and interval included), as a search predicts architectures no "
    "device measured; row_loo_mape_pct drops only that one (device, architecture) row (optimistic, kept for "
    "comparison); macs_mape_pct is latency ∝ MACs on the honest folds; coverage is the share of held-out points "
    "inside the predicted interval. With 3–6 points per device these are rough estimates."
)
_SUMMARY = ("loo_mape_pct", "max_error_pct", "kendall_tau", "macs_mape_pct", "coverage")


def device_rows(tables: Tables = (), include_seed: bool = True) -> list[dict[str, Any]]:
    """One row per device key: precision, measured points, failures, and the memory bounds they imply."""
    table = fitted(tables, include_seed).table
    rows = []
    for key in table.device_keys:
        _, precision = table.device_precision(key)
        batch1 = table.rows_for(key)
        bounds = memory_bounds([r.spec for r in batch1 if r.ok], [r.spec for r in batch1 if not r.ok])
        rows.append({
            "device": key, "precision": precision, "points": sum(r.ok for r in batch1),
            "failures": sum(not r.ok for r in batch1),
            "other_batch": len(table.rows_for(key, batch=None)) - len(batch1),
            "largest_ok_kib": bounds.largest_ok_kib, "smallest_failure_kib": bounds.smallest_failure_kib,
            "memory_limit_kib": bounds.limit_kib,
        })
    return rows


# -- fit -------------------------------------------------------------------------------------------------------

@dataclass
class FitReport:
    """Per-device fit summary rows, the fitted predictors, and where they were saved (if asked)."""

    rows: list[dict[str, Any]]
    predictors: dict[str, DevicePredictor]
    saved: list[Path] = field(default_factory=list)


def fit_report(tables: Tables = (), include_seed: bool = True, targets: Sequence[str] | None = None,
               family: str = DEFAULT_FAMILY, save: str | Path | None = None) -> FitReport:
    """Fit every (or each of ``targets``) device and evaluate it by honest leave-one-out, with the row-only
    leave-one-out and the MACs baseline beside it; optionally save the predictors as JSON into ``save``."""
    fit = fitted(tables, include_seed, family)
    predictors = fit.select(targets)
    rows = [_fit_row(fit.table, key, predictor, family) for key, predictor in predictors.items()]
    return FitReport(rows, predictors, save_predictors(predictors, save) if save else [])


def _fit_row(table: HardwareTable, key: str, predictor: DevicePredictor, family: str) -> dict[str, Any]:
    name = predictor.family.name if family != AUTO else f"{AUTO}:{predictor.family.name}"
    row: dict[str, Any] = {"device": key, "precision": predictor.precision, "points": predictor.n_points,
                           "family": name, "lam": predictor.lam if predictor.family.uses_prior else None}
    row.update(dict.fromkeys((*_SUMMARY, "row_loo_mape_pct")))
    if predictor.n_points >= 2:
        honest = summarize_loo(evaluate_loo(table, key, family, honest=True))
        row.update({k: round(honest[k], 3 if k in ("kendall_tau", "coverage") else 2) for k in _SUMMARY})
        row["row_loo_mape_pct"] = round(summarize_loo(evaluate_loo(table, key, family, honest=False))
                                        ["loo_mape_pct"], 2)
    limit = predictor.memory_limit_kib
    row["memory_limit_kib"] = None if limit is None else round(limit, 1)
    return row


def loo_rows(table: HardwareTable, devices: Sequence[str] | None = None, family: str = DEFAULT_FAMILY,
             honest: bool = True) -> list[dict[str, Any]]:
    """Per-point leave-one-out rows of every device (or ``devices``) with at least two measured points."""
    from predictors import resolve_device

    keys = [resolve_device(table, d) for d in devices] if devices else table.device_keys
    out: list[dict[str, Any]] = []
    for key in keys:
        if sum(r.ok for r in table.rows_for(key)) >= 2:
            out.extend(evaluate_loo(table, key, family, honest=honest))
    return out


def _file_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key) + ".json"


def save_predictors(predictors: Mapping[str, DevicePredictor], out_dir: str | Path) -> list[Path]:
    """Write each predictor as ``DIR/<device>.json`` (atomically); the folder is created if missing."""
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise PredictorError(f"{str(folder)!r} is a file", "give a folder for the predictor files")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, predictor in predictors.items():
        path = folder / _file_name(key)
        with atomic_write(path) as handle:
            handle.write(predictor.to_json() + "\n")
        paths.append(path)
    return paths


def load_predictors(folder: str | Path, targets: Sequence[str] | None = None) -> dict[str, DevicePredictor]:
    """Read every ``*.json`` predictor in ``folder`` (written by :func:`save_predictors`), or those of ``targets``."""
    path = Path(folder)
    files = sorted(path.glob("*.json")) if path.is_dir() else []
    if not files:
        raise PredictorError(f"no predictor JSON files in {str(path)!r}", "save fitted predictors there first")
    loaded = {}
    for file in files:
        try:
            predictor = DevicePredictor.from_json(file.read_text(encoding="utf-8"))
        except PredictorError as exc:
            raise PredictorError(f"{file}: {exc.message}", exc.hint) from None
        loaded[predictor.key] = predictor
    if targets:
        wanted = {t.lower() for t in targets}
        chosen = {k: p for k, p in loaded.items() if k.lower() in wanted or p.device.lower() in wanted}
        if not chosen:
            raise PredictorError(f"no saved predictor for {', '.join(targets)}", f"saved: {', '.join(loaded)}")
        return chosen
    return loaded


# -- predict ---------------------------------------------------------------------------------------------------

@dataclass
class Predictions:
    """One architecture's predictions on every chosen device."""

    spec: ArchSpec
    rows: list[dict[str, Any]]


def predict_arch(arch: str, tables: Tables = (), include_seed: bool = True, targets: Sequence[str] | None = None,
                 resolution: int | None = None, classes: int | None = None,
                 load: str | Path | None = None) -> Predictions:
    """Predict a preset or spec string (what it leaves open at the tables' 112 px / 89 classes unless given)
    on every device of the tables, or of ``targets``, or with the predictors saved in ``load``."""
    spec = parse_arch(arch).resolve(resolution, classes, default_resolution=DEFAULT_RESOLUTION,
                                    default_classes=DEFAULT_CLASSES)
    predictors = load_predictors(load, targets) if load else fitted(tables, include_seed).select(targets)
    return Predictions(spec, predict_rows(predictors, spec))


def predict_rows(predictors: Mapping[str, DevicePredictor], spec: ArchSpec) -> list[dict[str, Any]]:
    """Prediction of ``spec`` on every predictor: ms, interval, whether it extrapolates, feasibility and why."""
    peak = spec_features(spec).peak_memory_kib
    rows = []
    for key, predictor in predictors.items():
        p = predictor.predict(spec)
        verdict = "uncertain" if p.uncertain else ("yes" if p.feasible else "no")
        rows.append({"device": key, "precision": p.precision, "ms": p.ms, "low": p.low, "high": p.high,
                     "extrapolated": p.extrapolated, "extrapolation": p.extrapolation,
                     "feasible": p.feasible, "certainty": "uncertain" if p.uncertain else "certain",
                     "verdict": verdict, "peak_memory_kib": peak, "memory_limit_kib": predictor.memory_limit_kib,
                     "points": predictor.n_points, "reason": p.reason or ""})
    return rows


# -- where the tables end --------------------------------------------------------------------------------------

def extrapolation_warnings(predictors: Mapping[str, DevicePredictor], targets: Sequence[str],
                           space: SearchSpace, num_classes: int) -> list[str]:
    """One line per target whose predictor extrapolates on part of ``space`` (its specs, or corners and
    random draws of a large space): how much of it, and the farthest spec with how far it lies outside."""
    candidates = space_candidates(space, num_classes)
    what = "specs" if len(candidates) == space.size else "sampled specs"
    lines = []
    for key in targets:
        predictor = predictors.get(key)
        if predictor is None:
            continue
        outside = [s for s in candidates if predictor.predict(s).extrapolated]
        if outside:
            far = max(outside, key=predictor.domain.distance)
            lines.append(f"{key}: {len(outside):,} of {len(candidates):,} {what} of the search space lie outside "
                         f"the region its table measured; their latency is extrapolated (farthest: {far}: "
                         f"{predictor.predict(far).extrapolation})")
    return lines


@dataclass
class Suggestion:
    """What to measure next on ``target``: ranked specs, and what the tables knew of the target."""

    target: str
    known: bool  # the tables have rows of the target
    measured: int  # specs the target has measured (what the suggestions build on)
    rows: list[dict[str, Any]]


def suggest_for(target: str, space: SearchSpace, n: int, tables: Tables = (), include_seed: bool = True,
                num_classes: int = DEFAULT_CLASSES, seed: int = 0) -> Suggestion:
    """The ``n`` specs of ``space`` to measure next on ``target`` (a device of the tables, or a new one),
    with the target's current prediction for each where it has a predictor."""
    fit = fitted(tables, include_seed)
    device, _, precision = target.partition(":")
    mine = [r for r in fit.table.rows if r.ok and r.device.lower() == device.strip().lower()
            and (not precision or r.precision == precision.strip().lower())]
    known = any(r.device.lower() == device.strip().lower() for r in fit.table.rows)
    predictor = _predictor_of(fit, target) if known else None
    specs = suggest(space, n, [r.spec for r in mine], num_classes, seed=seed)
    rows = []
    for rank, spec in enumerate(specs, 1):
        report = analyze(spec)
        row: dict[str, Any] = {"rank": rank, "resolution": spec.resolution, "macs": report.macs,
                               "params": report.params, "spec": spec.to_string()}
        if predictor is not None:
            p = predictor.predict(spec)
            row.update(predicted_ms=p.ms, low=p.low, high=p.high, extrapolated=p.extrapolated)
        rows.append(row)
    return Suggestion(target, known, len({r.spec for r in mine}), rows)


def _predictor_of(fit: FittedTables, target: str) -> DevicePredictor | None:
    """The target's predictor, or None where its name is ambiguous (several precisions) or it has no latency."""
    try:
        return next(iter(fit.select([target]).values()))
    except PredictorError:
        return None


# -- plot ------------------------------------------------------------------------------------------------------

def plot_hw(tables: Tables = (), include_seed: bool = True, out: str | Path = "hw_latency.png",
            family: str = DEFAULT_FAMILY) -> Path:
    """Two panels: measured latency of each architecture across devices (log scale, as the seed's figure),
    and honest leave-one-out predicted vs measured per device with the predicted intervals. Writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = Path(out)
    if not target.parent.is_dir():
        raise PredictorError(f"folder {str(target.parent)!r} does not exist",
                             "create the folder or choose another file for the plot")
    table = fitted(tables, include_seed).table
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    _plot_measured(left, table)
    _plot_loo(right, table, family)
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return target


def _plot_measured(ax: Axes, table: HardwareTable) -> None:
    archs = list(dict.fromkeys(r.arch for r in table.rows if r.batch == 1))
    order = {name: i for i, name in enumerate(SEED_ROWS)}  # the seed's row order: A0, N0…N4, M0, M1
    archs.sort(key=lambda a: order.get(a, len(order)))
    for key in table.device_keys:
        by_arch = {r.arch: r for r in table.rows_for(key)}
        xs = [i for i, a in enumerate(archs) if a in by_arch and by_arch[a].ok]
        line = ax.plot(xs, [by_arch[archs[i]].latency_ms for i in xs], marker="o", label=key)[0]
        for i, a in enumerate(archs):
            if a in by_arch and not by_arch[a].ok:
                ax.plot([i], [max(r.latency_ms or 0 for r in by_arch.values()) * 1.3], marker="x",
                        color=line.get_color(), markersize=10, linestyle="none")
    ax.set_xticks(range(len(archs)), [a if len(a) < 12 else f"#{i}" for i, a in enumerate(archs)])
    ax.set_yscale("log")
    ax.set_ylabel("measured latency (ms, batch 1)")
    ax.set_title("latency across devices (× = failure)")
    ax.legend(fontsize=8)


def _plot_loo(ax: Axes, table: HardwareTable, family: str) -> None:
    rows = loo_rows(table, family=family)
    lo = min([r["measured_ms"] for r in rows] + [r["low"] for r in rows], default=0.1)
    hi = max([r["measured_ms"] for r in rows] + [r["high"] for r in rows], default=10)
    for key in table.device_keys:
        pts = [r for r in rows if r["device"] == key]
        if pts:
            pred = [r["predicted_ms"] for r in pts]
            err = [[p - r["low"] for p, r in zip(pred, pts)], [r["high"] - p for p, r in zip(pred, pts)]]
            ax.errorbar([r["measured_ms"] for r in pts], pred, yerr=err, fmt="o", capsize=2, label=key)
    ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured (ms)")
    ax.set_ylabel(f"honest leave-one-out predicted (ms), family {family}")
    ax.set_title("held-out prediction vs measurement (bars: interval)")
    ax.legend(fontsize=8)
