"""Held-out evaluation: leave-one-out where nothing about the held-out point can reach its prediction.

Two flavours, for each measured point (device D, architecture a) of a device:

* **honest** (the headline): architecture ``a`` is removed from *every* device — its latencies and failures —
  and everything is refitted on what is left (the cross-device prior, the λ chosen by D's inner
  leave-one-out, the interval's scores) before ``a`` is predicted on D. This is the situation of a search,
  which asks for architectures no device has measured.
* **row** (the old figure, labelled "row LOO"): only the (D, a) row is removed; the other devices still
  measure ``a`` and shape D's prior, so it is optimistic.

The MACs-proportional baseline is evaluated on the same folds in the same run. With ``family="auto"`` the
family is chosen *inside* each fold (:func:`predictors.fitting.select_family` on the fold's table: nested),
so that a figure for "the family the rule picks" is honest too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from predictors.errors import PredictorError
from predictors.families import AUTO, DEFAULT_FAMILY
from predictors.fitting import (
    BASELINE_FAMILY,
    SELECTABLE,
    TableFits,
    family_scores,
    fold_key,
    honest_folds,
    select_family,
    without_arch,
)
from predictors.latency import build_predictor
from predictors.tables import HardwareTable, TableRow, resolve_device

__all__ = ["AUTO", "BASELINE_FAMILY", "LOO_LABELS", "SELECTABLE", "evaluate_loo", "family_scores", "loo_all",
           "select_family", "summarize_loo", "without_arch"]

LOO_LABELS = {True: "honest", False: "row"}


def _held_out_row(device: str, row: TableRow, fits: TableFits, base: TableFits, key_in_fold: str, honest: bool,
                  family: str) -> dict[str, Any]:
    """The evaluation row of ``row`` of ``device``, predicted by the fold's fits (where its key is
    ``key_in_fold``)."""
    pred = build_predictor(fits, key_in_fold).predict(row.spec)
    base_ms = base.predict_ms(key_in_fold, row.spec)
    measured = float(row.latency_ms or math.nan)  # ok rows always carry one (checked by the reader)
    return {
        "device": device, "arch": row.arch, "spec": row.spec.to_string(), "loo": LOO_LABELS[honest],
        "family": fits.family.name if family != AUTO else f"{AUTO}:{fits.family.name}",
        "measured_ms": measured, "predicted_ms": pred.ms, "low": pred.low, "high": pred.high,
        "error_pct": 100 * (pred.ms / measured - 1), "inside": pred.low <= measured <= pred.high,
        "extrapolated": pred.extrapolated, "extrapolation": pred.extrapolation,
        "baseline_ms": base_ms, "baseline_error_pct": 100 * (base_ms / measured - 1),
    }


def _fold_fits(rest: HardwareTable, family: str) -> TableFits:
    """Fits of ``family`` on a fold's table; ``"auto"`` first chooses the family on that table alone."""
    return TableFits(rest, select_family(rest) if family == AUTO else family)


def evaluate_loo(table: HardwareTable, device: str, family: str = DEFAULT_FAMILY, *, honest: bool = True,
                 baseline: str = BASELINE_FAMILY) -> list[dict[str, Any]]:
    """One row per measured point of ``device``: measured, held-out prediction, interval, extrapolation, and
    the baseline's prediction. ``honest=False`` gives the optimistic row LOO (``"loo": "row"`` in the rows).
    ``family="auto"`` chooses the family inside every fold (:func:`select_family` on the fold's table)."""
    key = resolve_device(table, device)
    dev, precision = table.device_precision(key)
    held = [r for r in table.rows_for(key) if r.ok]
    if len(held) < 2:
        raise PredictorError(f"device {key!r} has {len(held)} measured point(s)",
                             "leave-one-out needs at least 2")
    out = []
    for row in held:
        rest = without_arch(table, row) if honest else table.without(row)
        out.append(_held_out_row(key, row, _fold_fits(rest, family), TableFits(rest, baseline),
                                 fold_key(rest, dev, precision), honest, family))
    return out


def loo_all(table: HardwareTable, family: str = DEFAULT_FAMILY, *, honest: bool = True,
            baseline: str = BASELINE_FAMILY) -> list[dict[str, Any]]:
    """:func:`evaluate_loo` rows of every device with at least two measured points, in table order; honest
    folds are shared across devices (one refit per held-out architecture, not per row)."""
    keys = [k for k in table.device_keys if sum(r.ok for r in table.rows_for(k)) >= 2]
    if not honest:
        return [row for key in keys for row in evaluate_loo(table, key, family, honest=False, baseline=baseline)]
    rows: dict[int, dict[str, Any]] = {}
    for rest, held in honest_folds(table):
        fits, base = _fold_fits(rest, family), TableFits(rest, baseline)
        for key, row in held:
            dev, precision = table.device_precision(key)
            rows[id(row)] = _held_out_row(key, row, fits, base, fold_key(rest, dev, precision), True, family)
    return [rows[id(r)] for key in keys for r in table.rows_for(key) if id(r) in rows]


def summarize_loo(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-device summary of :func:`evaluate_loo` rows: MAPE, max |error|, Kendall τ, baseline MAPE, coverage,
    and which leave-one-out it was (``loo``: "honest" or "row")."""
    measured = np.array([r["measured_ms"] for r in rows])
    predicted = np.array([r["predicted_ms"] for r in rows])
    errors = np.abs([r["error_pct"] for r in rows])
    base = np.abs([r["baseline_error_pct"] for r in rows])
    from scipy.stats import kendalltau  # scipy.stats costs seconds to import: only when evaluating

    tau = kendalltau(measured, predicted).statistic if len(rows) >= 2 else math.nan
    return {
        "device": rows[0]["device"] if rows else "",
        "loo": rows[0].get("loo", "honest") if rows else "",
        "points": len(rows),
        "loo_mape_pct": float(errors.mean()),
        "max_error_pct": float(errors.max()),
        "kendall_tau": float(tau) if tau is not None else math.nan,
        "macs_mape_pct": float(base.mean()),
        "coverage": float(np.mean([r["inside"] for r in rows])),
        "extrapolated": int(sum(bool(r.get("extrapolated")) for r in rows)),
    }
