"""What optuna-dashboard needs from a trial: constraints in the form it reads, and a note a person can read.

* **Constraints.** Optuna 5 stores each constraint under its own system attribute (``constraints:KEY``,
  written by ``trial.set_constraint``); optuna-dashboard 0.21 reads only the older list form (system
  attribute ``constraints``) to mark a trial infeasible. :func:`set_constraints` writes both, once, where a
  trial's constraints are set. Optuna 5 reads the two forms together (the list appears in
  ``trial.constraints`` again under the keys ``"0"``, ``"1"``, …, with the same values, so feasibility is
  unchanged); :func:`named_constraints` gives a trial's constraints by name only, and the search's sampler
  (:mod:`nas.sampler`) sees only the named form.
* **The trial note** (:func:`save_trial_note`): spec, costs, feasibility and its reason, accuracy with its
  interval, the fidelity rung when the trial has one, and the twin of a duplicate — the dashboard's note
  panel, instead of ~40 alphabetical attributes. optuna-dashboard is an optional extra: without it no
  note is written and nothing else changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial

#: The system attribute optuna-dashboard 0.21 reads constraints from (a list of floats; ≤ 0 is feasible).
LEGACY_CONSTRAINTS = "constraints"
_NAMED_PREFIX = f"{LEGACY_CONSTRAINTS}:"


def set_constraints(trial: optuna.Trial, values: Mapping[str, float]) -> None:
    """Set ``values`` as the trial's constraints: by name (Optuna 5) and as the list optuna-dashboard reads."""
    for key, value in values.items():
        trial.set_constraint(key, value)
    if values:
        trial.storage.set_trial_system_attr(trial._trial_id, LEGACY_CONSTRAINTS, [float(v) for v in values.values()])


def named_constraints(trial: FrozenTrial) -> dict[str, float]:
    """The trial's constraints by name; a trial with only the list form (an older study) gives that."""
    named = {k.removeprefix(_NAMED_PREFIX): float(v) for k, v in trial.system_attrs.items()
             if k.startswith(_NAMED_PREFIX)}
    return named or dict(trial.constraints)


def without_legacy_constraints(trial: FrozenTrial) -> FrozenTrial:
    """``trial`` itself, or a shallow copy without the list form when it also has named constraints (so that
    Optuna reads each constraint once)."""
    attrs = trial.system_attrs
    if LEGACY_CONSTRAINTS not in attrs or not any(k.startswith(_NAMED_PREFIX) for k in attrs):
        return trial
    view = FrozenTrial(trial.number, trial.state, None, trial.datetime_start, trial.datetime_complete, trial.params,
                       trial.distributions, trial.user_attrs,
                       {k: v for k, v in attrs.items() if k != LEGACY_CONSTRAINTS}, trial.intermediate_values,
                       trial._trial_id, values=trial.values)
    return view


# -- the trial note ----------------------------------------------------------------------------------
def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    return f"{value:.4g}"


def _interval(attrs: Mapping[str, Any], name: str) -> str:
    low, high = attrs.get(f"{name}_low"), attrs.get(f"{name}_high")
    if low is None or high is None:
        return ""
    text = f" (90 % {_number(low)}–{_number(high)}"
    if attrs.get(f"{name}_sd") is not None:
        text += f", seed sd {_number(attrs[f'{name}_sd'])}"
    if attrs.get(f"{name}_extrapolated"):
        text += ", extrapolated"
    return text + ")"


def note_text(number: int, attrs: Mapping[str, Any], metric_names: Sequence[str],
              values: Sequence[float] | None) -> str:
    """The Markdown note of trial ``number`` from its user attributes and objective values (a duplicate's
    values are its twin's)."""
    lines = [f"### Trial {number}" + (f" · preset {attrs['preset']}" if attrs.get("preset") else ""),
             "", f"`{attrs.get('spec', '?')}`", ""]
    if "duplicate_of" in attrs:
        lines.append(f"- **duplicate** of trial {attrs['duplicate_of']}: its spec was evaluated there; "
                     "the values below are that trial's")
    if attrs.get("feasible") is False:
        lines.append(f"- **infeasible**: {attrs.get('infeasible_reason', 'a constraint is violated')} — not trained")
    elif "feasible" in attrs:
        lines.append("- feasible: every limit and target chip satisfied")
    if attrs.get("rung") is not None:
        lines.append(f"- fidelity rung: {attrs['rung']}")
    for name, value in zip(metric_names, values or []):
        if math.isfinite(value):
            lines.append(f"- {name}: **{_number(value)}**{_interval(attrs, name)}")
    shown = set(metric_names)
    costs = [f"{k} {_number(attrs[k])}" for k in ("macs", "params", "memory_kib") if k in attrs and k not in shown]
    if costs:
        lines.append(f"- costs: {', '.join(costs)}" + (f" (peak layer {attrs['peak_layer']})"
                                                       if attrs.get("peak_layer") else ""))
    latency = [k for k in attrs if k.startswith("latency_") and k.count("_") == 1 and k not in shown]
    for key in sorted(latency):
        lines.append(f"- {key} (ms, not an objective): {_number(attrs[key])}{_interval(attrs, key)}")
    return "\n".join(lines) + "\n"


def save_trial_note(trial: optuna.Trial, metric_names: Sequence[str], values: Sequence[float] | None) -> bool:
    """Write the trial's note for optuna-dashboard (:func:`note_text`); False when the package is missing."""
    try:
        from optuna_dashboard import save_note
    except ImportError:
        return False
    save_note(trial, note_text(trial.number, trial.user_attrs, metric_names, values))
    return True
