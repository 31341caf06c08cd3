"""Honest held-out evaluation: leave-one-out where the held-out row is removed from the *whole* table.

For each measured point of a device, the row is dropped from the table and everything is refitted on what
is left — the cross-device prior, the λ selection, the interval scale — before the point is predicted. The
held-out latency therefore cannot influence its own prediction by any path. The MACs-proportional baseline
is evaluated on the same folds in the same run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from predictors.errors import PredictorError
from predictors.families import DEFAULT_FAMILY
from predictors.latency import fit_device
from predictors.tables import HardwareTable, resolve_device

BASELINE_FAMILY = "macs"


def _key_in(table: HardwareTable, device: str, precision: str) -> str:
    for key in table.device_keys:
        if table.device_precision(key) == (device, precision):
            return key
    raise PredictorError(f"device {device}:{precision} has no rows left")


def evaluate_loo(table: HardwareTable, device: str, family: str = DEFAULT_FAMILY,
                 baseline: str = BASELINE_FAMILY) -> list[dict[str, Any]]:
    """One row per measured point of ``device``: measured, LOO prediction, interval, and the baseline's."""
    key = resolve_device(table, device)
    dev, precision = table.device_precision(key)
    held = [r for r in table.rows_for(key) if r.ok]
    if len(held) < 2:
        raise PredictorError(f"device {key!r} has {len(held)} measured point(s)",
                             "leave-one-out needs at least 2")
    out = []
    for row in held:
        rest = table.without(row)
        rest_key = _key_in(rest, dev, precision)
        pred = fit_device(rest, rest_key, family).predict(row.spec)
        base = fit_device(rest, rest_key, baseline).predict_ms(row.spec)
        measured = float(row.latency_ms or math.nan)  # ok rows always carry one (checked by the reader)
        out.append({
            "device": key, "arch": row.arch, "spec": row.spec.to_string(), "measured_ms": measured,
            "predicted_ms": pred.ms, "low": pred.low, "high": pred.high,
            "error_pct": 100 * (pred.ms / measured - 1), "inside": pred.low <= measured <= pred.high,
            "baseline_ms": base, "baseline_error_pct": 100 * (base / measured - 1),
        })
    return out


def summarize_loo(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-device summary of :func:`evaluate_loo` rows: MAPE, max |error|, Kendall τ, baseline MAPE, coverage."""
    measured = np.array([r["measured_ms"] for r in rows])
    predicted = np.array([r["predicted_ms"] for r in rows])
    errors = np.abs([r["error_pct"] for r in rows])
    base = np.abs([r["baseline_error_pct"] for r in rows])
    from scipy.stats import kendalltau  # scipy.stats costs seconds to import: only when evaluating

    tau = kendalltau(measured, predicted).statistic if len(rows) >= 2 else math.nan
    return {
        "device": rows[0]["device"] if rows else "",
        "points": len(rows),
        "loo_mape_pct": float(errors.mean()),
        "max_error_pct": float(errors.max()),
        "kendall_tau": float(tau) if tau is not None else math.nan,
        "macs_mape_pct": float(base.mean()),
        "coverage": float(np.mean([r["inside"] for r in rows])),
    }
