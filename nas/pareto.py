"""The Pareto front of a study: non-dominated feasible trials, hypervolume, and picking one point.

Definitions (also in docs/search.md):

* **Front**: the COMPLETE trials that satisfy every constraint of the study (and the extra filters
  given here), one per spec (duplicates are pruned; in studies of earlier versions a complete
  ``duplicate_of`` trial repeats its original), not dominated by another
  such trial. ``a`` dominates ``b`` when it is no worse in every objective and better in one. In a
  multi-fidelity study each spec counts once, at its highest rung (:func:`trial_values`: a rung below
  the top is PRUNED with ``rung_values``), and its row says which (``rung``, ``rung_epochs``); two specs
  are compared at the highest rung both reached (:func:`common_rung_non_dominated`), so a spec stopped
  early is never dominated by another's value after more training.
* **Hypervolume**: objectives are turned into minimization (accuracy → −accuracy), each scaled to
  [0, 1] by ``bounds`` (by default the min and max over the candidate trials, i.e. the complete
  feasible filtered ones), and the volume dominated by the front up to the reference point
  (1.1, …, 1.1) is computed exactly. The best possible value is 1.1^k (k objectives).
* **Knee**: on the front scaled by its own ranges, the point farthest from the line between the two
  extremes, on the side of the utopia point (2 objectives); with 3+ objectives, or when no point
  bulges toward utopia, the point closest to the utopia point (0, …, 0).
* **Ties**: each front row's ``tied_with`` lists the other front members it is statistically tied with:
  their intervals overlap on every objective (:mod:`nas.uncertainty`: bootstrap intervals of accuracy,
  the predictors' intervals of latency; exact costs are points).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.dashboard import named_constraints
from nas.objectives import Limits, SearchError
from nas.uncertainty import has_intervals, tied, ties
from search_space import ArchSpec, preset_name
from search_space.errors import SpecError

if TYPE_CHECKING:
    import pandas

REFERENCE = 1.1
#: Ways :func:`pick` chooses one front trial.
PICKS = ("knee", "best-acc-under")
#: What an export of a front may take: one trial chosen by :func:`pick`, or ``all`` of them.
PARETO_PICKS = (*PICKS, "all")


# -- geometry (minimization everywhere) -----------------------------------------------------------
def non_dominated(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of ``points`` (n × k, minimized) that no other row dominates."""
    pts = np.asarray(points, dtype=float)
    n = len(pts)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        no_worse = np.all(pts <= pts[i], axis=1)
        better = np.any(pts < pts[i], axis=1)
        if np.any(no_worse & better):
            mask[i] = False
    return mask


def common_rung_non_dominated(ladders: Sequence[Mapping[int, np.ndarray]]) -> np.ndarray:
    """Boolean mask of the specs that no other spec dominates *at the rung both reached*.

    ``ladders[i]`` maps each rung spec i was measured at to its point there (minimized). Spec b dominates
    spec a when it is no worse in every objective and better in one at the highest rung both have, so a spec
    stopped at a low rung meets a promoted one with the values both had there, never its early value against
    the other's later one (which longer training inflates). With one rung each this is :func:`non_dominated`."""
    pts = [{rung: np.asarray(p, dtype=float) for rung, p in ladder.items()} for ladder in ladders]
    mask = np.ones(len(pts), dtype=bool)
    for a, mine in enumerate(pts):
        for b, theirs in enumerate(pts):
            shared = set(mine) & set(theirs)
            if b == a or not shared:
                continue
            rung = max(shared)
            if np.all(theirs[rung] <= mine[rung]) and np.any(theirs[rung] < mine[rung]):
                mask[a] = False
                break
    return mask


def to_minimization(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Negate the maximized columns, so that smaller is better in every column."""
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return np.asarray(values, dtype=float) * sign


def normalize(points: np.ndarray, bounds: Sequence[tuple[float, float]]) -> np.ndarray:
    """Scale each minimized column from ``(lo, hi)`` to [0, 1] (a zero span maps to 0)."""
    lo = np.array([b[0] for b in bounds], dtype=float)
    span = np.array([b[1] - b[0] for b in bounds], dtype=float)
    span[span <= 0] = 1.0
    return (np.asarray(points, dtype=float) - lo) / span


def hypervolume(points: np.ndarray, reference: Sequence[float]) -> float:
    """Exact volume dominated by ``points`` (minimized) and bounded by ``reference``.

    Points not strictly better than the reference in every objective add nothing. Slices the last
    objective recursively (exact; fine for the fronts of a search: hundreds of points, ≤ 5 objectives).
    """
    ref = np.asarray(reference, dtype=float)
    pts = np.asarray(points, dtype=float).reshape(-1, len(ref))
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    return _hv(pts[non_dominated(pts)], ref)


def _hv(pts: np.ndarray, ref: np.ndarray) -> float:
    k = pts.shape[1]
    if k == 1:
        return float(ref[0] - pts[:, 0].min())
    if k == 2:
        order = np.lexsort((pts[:, 1], pts[:, 0]))
        volume, best_y = 0.0, ref[1]
        for x, y in pts[order]:
            if y < best_y:
                volume += (ref[0] - x) * (best_y - y)
                best_y = y
        return float(volume)
    order = np.argsort(pts[:, -1], kind="stable")
    pts = pts[order]
    volume = 0.0
    for i in range(len(pts)):
        top = pts[i + 1, -1] if i + 1 < len(pts) else ref[-1]
        depth = top - pts[i, -1]
        if depth > 0:
            head = pts[: i + 1, :-1]
            volume += depth * _hv(head[non_dominated(head)], ref[:-1])
    return float(volume)


def knee_index(points: np.ndarray) -> int:
    """Index of the knee of a front (minimized, any scale): see the module docstring."""
    pts = np.asarray(points, dtype=float)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    z = (pts - lo) / span
    if z.shape[1] == 2 and len(z) >= 3:
        a = z[np.lexsort((z[:, 1], z[:, 0]))[0]]  # best in objective 1
        b = z[np.lexsort((z[:, 0], z[:, 1]))[0]]  # best in objective 2
        d = b - a
        norm = math.hypot(*d)
        if norm > 0:
            # Signed distance from the line a→b; positive on the utopia (origin) side.
            side = np.sign(d[0] * (0 - a[1]) - d[1] * (0 - a[0])) or 1.0
            dist = side * (d[0] * (z[:, 1] - a[1]) - d[1] * (z[:, 0] - a[0])) / norm
            if dist.max() > 1e-12:
                return int(np.argmax(dist))
    return int(np.argmin(np.linalg.norm(z, axis=1)))


# -- study → rows ----------------------------------------------------------------------------------
#: User attribute of a multi-fidelity trial stopped below the top rung (PRUNED): its objective values there.
RUNG_VALUES = "rung_values"


def trial_rung(trial: FrozenTrial | optuna.Trial) -> int:
    """The rung a trial was evaluated at (user attribute ``rung``; 0 for a search without rungs)."""
    return int(trial.user_attrs.get("rung", 0))


def trial_values(trial: FrozenTrial) -> list[float] | None:
    """The objective values a trial measured: a COMPLETE trial's values, or the ``rung_values`` of a trial
    that successive halving stopped at a lower rung (PRUNED, :mod:`nas.fidelity`); None for any other."""
    if trial.state == TrialState.COMPLETE:
        return list(trial.values)
    if trial.state == TrialState.PRUNED and RUNG_VALUES in trial.user_attrs:
        return [float(v) for v in trial.user_attrs[RUNG_VALUES]]
    return None


def spec_key(row: dict[str, Any]) -> str | int:
    """What makes two rows the same spec: its hash (the trial number for a row without one)."""
    return row.get("spec_hash") or row["number"]


def trial_row(trial: FrozenTrial, metric_names: Sequence[str]) -> dict[str, Any]:
    """A flat dict for people and tools: number, objective values by name (:func:`trial_values`), spec,
    preset, every attribute (a multi-fidelity trial's ``rung`` and ``rung_epochs`` among them)."""
    row: dict[str, Any] = {"number": trial.number, "state": trial.state.name}
    for name, value in zip(metric_names, trial_values(trial) or []):
        row[name] = value
    attrs = dict(trial.user_attrs)
    spec = attrs.get("spec")
    preset = attrs.get("preset")
    if spec and not preset:
        try:
            preset = preset_name(ArchSpec.parse(spec))
        except SpecError:
            preset = None
    row["preset"] = preset
    constraints = named_constraints(trial)  # each once (the dashboard's list copy left out)
    row["feasible"] = all(v <= 0 for v in constraints.values())
    latency = [n for n in metric_names if n.startswith("latency_")]
    latency += [k.partition("<=")[0] for k in constraints if k.startswith("latency_")]
    if latency:  # the targets whose predicted latency lies outside their table's measured region
        row["extrapolated"] = ",".join(n.removeprefix("latency_") for n in dict.fromkeys(latency)
                                       if attrs.get(f"{n}_extrapolated"))
    for key, value in attrs.items():
        row.setdefault(key, value)
    row["constraints"] = constraints
    return row


def metric_names(study: optuna.Study) -> list[str]:
    """The study's metric names (``values_0``… for a study not created by nas search)."""
    names = study.metric_names
    return list(names) if names else [f"values_{i}" for i in range(len(study.directions))]


@dataclass
class Front:
    """The front of a study and what it was computed from."""

    study_name: str
    metric_names: list[str]
    directions: list[str]
    rows: list[dict[str, Any]]
    dominated: list[dict[str, Any]] = field(default_factory=list)
    excluded: list[dict[str, Any]] = field(default_factory=list)
    bounds: list[tuple[float, float]] = field(default_factory=list)
    hypervolume: float = 0.0
    reference: list[float] = field(default_factory=list)
    interval_names: list[str] = field(default_factory=list)  # objectives whose rows carry ``_low``/``_high``

    def points(self, rows: Sequence[dict[str, Any]] | None = None) -> np.ndarray:
        """Objective values of ``rows`` (default: the front) as a minimized array."""
        rows = self.rows if rows is None else rows
        k = len(self.metric_names)
        vals = np.array([[r[n] for n in self.metric_names] for r in rows], dtype=float).reshape(-1, k)
        return to_minimization(vals, self.directions)

    def to_dataframe(self, dominated: bool = False) -> pandas.DataFrame:
        """The front as a pandas DataFrame, one row per trial (best first in the first objective; with
        ``dominated`` the dominated feasible trials after them): ``number``, the objectives, then every
        attribute. pandas is not a dependency of nas: a missing one is a :class:`SearchError`."""
        try:
            import pandas
        except ImportError:
            raise SearchError("the front as a DataFrame needs pandas, which is not installed",
                              "install pandas (pip install pandas), or read the front's rows as dicts") from None
        rows = self.rows + (self.dominated if dominated else [])
        columns = dict.fromkeys(["number", *self.metric_names, *(k for r in rows for k in r)])
        return pandas.DataFrame(rows, columns=list(columns))


def _attr_key(rows: Sequence[dict[str, Any]], metric: str, device: str) -> str:
    wanted = f"{metric}_{device}".lower()
    extras = ("_low", "_high", "_uncertain", "_extrapolated", "_extrapolation")
    keys = {k for r in rows for k in r if k.startswith(f"{metric}_") and not k.endswith(extras)}
    for k in keys:
        if k.lower() == wanted:
            return k
    known = sorted(k.removeprefix(f"{metric}_") for k in keys)
    raise SearchError(f"the study has no predicted {metric} for hardware target {device!r}",
                      f"targets in the study: {', '.join(known) or 'none'}")


def limit_filter(rows: Sequence[dict[str, Any]], limits: Limits | None) -> list[tuple[str, str, float]]:
    """``(attribute, op, value)`` checks of ``limits`` against the rows' attributes (device names resolved)."""
    if limits is None:
        return []
    checks = [(_attr_key(rows, "latency", d), "<=", v) for d, v in limits.max_latency]
    for attr, value in (("memory_kib", limits.max_memory_kib), ("params", limits.max_params),
                        ("macs", limits.max_macs)):
        if value is not None:
            checks.append((attr, "<=", value))
    if limits.min_acc is not None:
        if rows and not any("acc" in r for r in rows):
            raise SearchError("an accuracy limit needs a study with accuracy (objective acc)")
        checks.append(("acc", ">=", limits.min_acc))
    return checks


def _passes(row: dict[str, Any], checks: Sequence[tuple[str, str, float]]) -> bool:
    for attr, op, value in checks:
        v = row.get(attr)
        if v is None or not math.isfinite(float(v)):
            return False
        if (op == "<=" and float(v) > value) or (op == ">=" and float(v) < value):
            return False
    return True


def pareto_front(study: optuna.Study, limits: Limits | None = None,
                 bounds: Sequence[tuple[float, float]] | None = None) -> Front:
    """The front of ``study`` under its constraints and ``limits``; see the module docstring."""
    names = metric_names(study)
    directions = [d.name.lower() for d in study.directions]
    measured = [t for t in study.get_trials(deepcopy=False) if trial_values(t) is not None]
    complete = [trial_row(t, names) for t in measured]
    checks = limit_filter(complete, limits)
    candidates, excluded, seen = [], [], set()
    for row in sorted(complete, key=lambda r: (-r.get("rung", 0), r["number"])):  # each spec's highest rung
        key = spec_key(row)
        if not row["feasible"] or not _passes(row, checks) or key in seen:
            excluded.append(row)
            continue
        seen.add(key)
        candidates.append(row)
    candidates.sort(key=lambda r: r["number"])
    front = Front(study.study_name, names, directions, [], reference=[REFERENCE] * len(names))
    front.excluded = excluded
    if not candidates:
        return front
    pts = front.points(candidates)
    mask = _front_mask(front, candidates, complete)
    order = sorted(range(len(candidates)), key=lambda i: tuple(pts[i]))  # best first in the first objective
    front.rows = [candidates[i] for i in order if mask[i]]
    front.dominated = [r for r, m in zip(candidates, mask) if not m]
    front.bounds = list(bounds) if bounds is not None else [(float(a), float(b)) for a, b in
                                                             zip(pts.min(axis=0), pts.max(axis=0))]
    front.hypervolume = hypervolume(normalize(front.points(), front.bounds), front.reference)
    front.interval_names = has_intervals(front.rows, names)
    for row, others in zip(front.rows, ties(front.rows, names)):
        row["tied_with"] = others
    return front


def rung_ladders(front: Front, candidates: Sequence[dict[str, Any]],
                 measured: Sequence[dict[str, Any]]) -> list[dict[int, np.ndarray]]:
    """Each candidate's minimized points at every rung up to its own (its lower rungs' rows from
    ``measured``, the first of a spec at each rung), for :func:`common_rung_non_dominated`."""
    by_spec: dict[Any, dict[int, dict[str, Any]]] = {}
    for row in sorted(measured, key=lambda r: r["number"]):
        by_spec.setdefault(spec_key(row), {}).setdefault(row.get("rung", 0), row)
    ladders = []
    for row in candidates:
        top = row.get("rung", 0)
        rows = {rung: r for rung, r in by_spec.get(spec_key(row), {}).items() if rung < top}
        rows[top] = row
        ladders.append(dict(zip(rows, front.points(list(rows.values())), strict=True)))
    return ladders


def _front_mask(front: Front, candidates: Sequence[dict[str, Any]],
                measured: Sequence[dict[str, Any]]) -> np.ndarray:
    """Which ``candidates`` are on the front: non-dominated, in a multi-fidelity study at the rung both of a
    pair reached (:func:`common_rung_non_dominated`)."""
    if not any("rung" in r for r in candidates):
        return non_dominated(front.points(candidates))
    return common_rung_non_dominated(rung_ladders(front, candidates, measured))


def within_noise(front: Front, row: dict[str, Any]) -> list[int]:
    """The trial numbers of the front members (other than ``row``) that ``row`` is tied with."""
    return sorted(r["number"] for r in front.rows if r["number"] != row["number"] and tied(row, r, front.metric_names))


def pick(front: Front, how: str = "knee", under: Limits | None = None) -> dict[str, Any]:
    """One row: ``knee`` of the front, or ``best-acc-under`` (best accuracy among the feasible trials
    that satisfy ``under``; it may be dominated in objectives the limits do not mention)."""
    if how not in PICKS:
        raise SearchError(f"unknown pick {how!r}", f"choose from {', '.join(PICKS)}")
    if not front.rows:
        raise SearchError(f"study {front.study_name!r} has no feasible complete trial to pick from",
                          "run more trials or relax the limits")
    if how == "knee":
        return front.rows[knee_index(front.points())]
    rows = front.rows + front.dominated
    metric = "acc" if "acc" in front.metric_names or any("acc" in r for r in rows) else "bacc"
    if not any(metric in r for r in rows):
        raise SearchError("best-acc-under needs a study with an accuracy objective (acc or bacc)")
    if under is None or not (under.max_latency or under.max_memory_kib or under.max_params or under.max_macs):
        raise SearchError("best-acc-under needs a limit",
                          "give a latency limit (e.g. T4=0.6) or a memory, parameter or MAC limit")
    checks = limit_filter(rows, under)
    ok = [r for r in rows if _passes(r, checks) and metric in r]
    if not ok:
        raise SearchError("no feasible trial satisfies the limits of best-acc-under",
                          "relax them or run more trials")
    return max(ok, key=lambda r: (r[metric], -r["number"]))


# -- saying why a front is empty --------------------------------------------------------------------
def empty_front_error(study: optuna.Study, limits: Limits) -> SearchError:
    """The error for a front with no trial: what the study holds, and what to do."""
    unfiltered = pareto_front(study).rows if limits != Limits() else []
    if unfiltered:
        return SearchError(f"no front trial of study {study.study_name!r} passes the given limits "
                           f"({len(unfiltered)} without them)", "relax the limits")
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    words = {"complete": "complete, all infeasible", "fail": "failed"}
    held = "; ".join(f"{n} {words.get(state, state)}" for state, n in states.items())
    hint = ("wait for its running trials" if states.get("running") else
            "relax the study's limits and search again" if states.get("complete") else "run a search on it")
    return SearchError(f"study {study.study_name!r} has no feasible complete trial ({held or 'no trials'})", hint)


def all_infeasible_message(study: optuna.Study, evaluated: int) -> str:
    """What to say when every evaluated spec is infeasible: how many each limit or chip ruled out (with the
    smallest value seen), and what to relax."""
    names = metric_names(study)
    rows = [trial_row(t, names) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    parts = []
    for key in dict.fromkeys(k for r in rows for k in r["constraints"]):
        over = [r for r in rows if r["constraints"].get(key, 0) > 0]
        if not over:
            continue
        metric, _, limit = key.partition("<=")
        if key.startswith("feasible:"):
            parts.append(f"{len(over)} do not fit {key.removeprefix('feasible:')}")
        else:
            least = min((r[metric] for r in over if isinstance(r.get(metric), (int, float))), default=None)
            parts.append(f"{len(over)} over the {metric} limit {limit}"
                         + (f" (smallest {metric} {least:.4g})" if least is not None else ""))
    return (f"all {evaluated} evaluated specs are infeasible: {'; '.join(parts) or 'see infeasible_reason'}; "
            "relax those limits, or search a space of smaller specs")
