"""Multi-fidelity search: asynchronous successive halving with Pareto promotion, kept in the Optuna storage.

``nas search --fidelity --rungs 1,3,9 --eta 3`` trains every sampled spec for the first rung's epochs and
promotes the best ``1/eta`` of each rung to the next (:func:`nas.promotion.promotable`: non-dominated rank,
then crowding distance), where it continues from the checkpoint its lower rung left
(:func:`trials.rungs.rung_accuracy`): the top rung is the proxy at its full budget.

**Records** (all in the study, so optuna-dashboard shows them):

* one trial per (spec, rung), with user attributes ``rung`` (0, 1, …) and ``rung_epochs``;
* a rung below the top ends PRUNED (Optuna's meaning: stopped early by successive halving) with its
  objective values in ``rung_values`` (:func:`nas.pareto.trial_values` reads them); the top rung ends
  COMPLETE, so ``study.best_trials`` holds only fully trained specs, while the front uses each spec's highest
  rung. Infeasible specs are never trained: rung 0 records them COMPLETE with their constraints, as always;
* a promotion is a trial enqueued with the spec's parameters and the attributes ``rung``, ``rung_epochs``,
  ``promoted_from`` (the number of the lower rung's trial) and the claim key ``promotion`` =
  ``"<spec_hash>@<rung>"``, all created in one transaction (``study.enqueue_trial``).

**Claims.** A trial *holds* its promotion key unless it FAILed or lost the claim (PRUNED with
``claim_lost``). A worker that pops a promotion looks for a holder with a lower number: if there is one, it
records itself PRUNED with ``claim_lost`` = that number and trains nothing. It looks once more before it
records its result (the window between two commits). A promotion whose worker died is failed by the
heartbeat machinery and retried with its attributes (:mod:`nas.storage`); a key that nobody holds is owed
again and enqueued by the next free worker. So no promotion is trained twice and none is lost (a key that
failed :data:`GIVE_UP_AFTER` times, Ctrl-C not counted, is given up).

**Who promotes.** A worker that becomes free first looks for an owed promotion, top rung down:
:func:`~nas.promotion.promotable` over the rung's finished, feasible specs, minus the keys held; only if
there is none does it sample a new spec. The search ends when ``trials`` specs are evaluated at rung 0 and
no promotion is owed, waiting or running.

**Noise.** The ranking uses optimistic values: each accuracy objective is moved by one standard error
towards better (:func:`standard_error`: the half-width of the trial's 90 % bootstrap interval over the
normal quantile, :mod:`nas.uncertainty`), so a spec within noise of the cut is promoted rather than dropped.
Cost objectives (latency, MACs, memory) get none: more training cannot narrow a predictor's interval.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.objectives import MAXIMIZE, SearchError
from nas.pareto import RUNG_VALUES, pareto_front, rung_ladders, to_minimization, trial_rung, trial_values
from nas.promotion import common_rung_ranks, promotable, promotion_order
from nas.sampler import is_duplicate
from nas.study import CONFIG_ATTR, PROMOTION_ATTRS
from nas.uncertainty import LEVEL

if TYPE_CHECKING:
    from nas.accuracy import Accuracy, RungAccuracyFn
    from nas.objectives import Objective
    from search_space import ArchSpec
    from trials.data import DataBundle
    from trials.proxy import ProxyConfig

#: User attribute of a promotion that found its key held by a lower-numbered trial: that trial's number.
CLAIM_LOST = "claim_lost"
#: A promotion key that failed this many times (Ctrl-C not counted) is no longer owed.
GIVE_UP_AFTER = 3
DEFAULT_RUNGS = (1, 3, 9)
DEFAULT_ETA = 3.0
_Z = NormalDist().inv_cdf((1 + LEVEL) / 2)  # 1.645: a 90 % interval's half-width in standard errors


@dataclass(frozen=True)
class FidelityConfig:
    """Successive halving's settings: ``rungs`` (proxy epochs at each rung, increasing; the last is the
    proxy's full budget), ``eta`` (each rung promotes the best ``1/eta``) and ``rung_dir`` (where the rung
    checkpoints live; None: next to a SQLite storage, see :func:`rung_root`)."""

    rungs: tuple[int, ...] = DEFAULT_RUNGS
    eta: float = DEFAULT_ETA
    rung_dir: str | None = None

    def __post_init__(self) -> None:
        rungs = tuple(self.rungs)
        if not rungs or any(not isinstance(r, int) or r < 1 for r in rungs) or any(
                b <= a for a, b in pairwise(rungs)):
            raise SearchError(f"rungs must be increasing whole epoch counts of at least 1, got {list(rungs)}",
                              "e.g. 1,3,9: each rung trains longer than the one below, the last is the full proxy")
        if not self.eta > 1:
            raise SearchError(f"eta must be greater than 1, got {self.eta}",
                              "e.g. 3: each rung promotes its best third")
        object.__setattr__(self, "rungs", rungs)

    @property
    def top(self) -> int:
        """The index of the top rung."""
        return len(self.rungs) - 1

    def to_dict(self) -> dict[str, Any]:
        """What the study records (``nas:config`` key ``fidelity``); the rung folder is a place, not a setting."""
        return {"rungs": list(self.rungs), "eta": float(self.eta)}

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> FidelityConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(int(r) for r in body["rungs"]), float(body["eta"]))


def parse_rungs(text: str) -> tuple[int, ...]:
    """``"1,3,9"`` → ``(1, 3, 9)`` (checked by :class:`FidelityConfig`)."""
    try:
        return tuple(int(p) for p in text.split(","))
    except ValueError:
        raise SearchError(f"rungs {text!r} are not whole numbers", "give epochs per rung, e.g. 1,3,9") from None


def fidelity_of(study: optuna.Study) -> FidelityConfig | None:
    """The fidelity settings a study was searched with (None: a single-fidelity study)."""
    body = study.user_attrs.get(CONFIG_ATTR, {}).get("fidelity")
    return None if body is None else FidelityConfig.from_dict(body)


def rung_proxy(proxy: ProxyConfig | None, config: FidelityConfig) -> ProxyConfig:
    """The proxy whose full budget is the top rung: the default one trained ``rungs[-1]`` epochs with no step
    cap (the rungs are the budget, and the proxy's training subset bounds each epoch), or ``proxy`` when its
    epochs already are the top rung (a :class:`SearchError` otherwise)."""
    if proxy is None:
        return rung_budget({}, config)
    _check_top_rung(proxy.budget.epochs, config)
    return proxy


def _check_top_rung(epochs: int | None, config: FidelityConfig) -> None:
    """A :class:`SearchError` when proxy ``epochs`` are given and are not the top rung."""
    if epochs is not None and epochs != config.rungs[-1]:
        raise SearchError(f"the proxy trains {epochs} epochs but the top rung is {config.rungs[-1]}",
                          "the top rung is the proxy's full budget: give its epochs once, as the last rung")


def rung_budget(given: Mapping[str, int | None], config: FidelityConfig) -> ProxyConfig:
    """The proxy of a multi-fidelity search from the budget fields ``given`` (None: not given): its epochs are
    the top rung, and it has no step cap unless one is given — a cap would stop the top rung early, so that
    the rung's epochs would not be what the study says."""
    from nas.accuracy import proxy_config

    _check_top_rung(given.get("epochs"), config)
    proxy = proxy_config({**given, "epochs": config.rungs[-1]})
    if given.get("max_steps") is None:
        proxy = dataclasses.replace(proxy, budget=dataclasses.replace(proxy.budget, max_steps=None))
    return proxy


def rung_base(config: FidelityConfig, storage: str | None) -> Path | None:
    """The folder that holds every study's rung folders: ``rung_dir``, by default next to a SQLite file
    (``nas.db`` → ``nas.rungs``); None in memory (every rung retrains from scratch). A database server
    (PostgreSQL) needs ``rung_dir``: no file of it lies on this machine."""
    if config.rung_dir is not None:
        return Path(config.rung_dir).expanduser()
    if storage is None or storage in (":memory:", "sqlite:///:memory:"):
        return None
    if storage.startswith("sqlite:///"):
        return Path(storage.removeprefix("sqlite:///")).expanduser().with_suffix(".rungs")
    raise SearchError("multi-fidelity on a database server needs a rung folder for the checkpoints between rungs",
                      "give a rung folder that every worker reaches (a shared file system); a worker that cannot "
                      "see a checkpoint retrains the spec from scratch, with the same result")


def standard_error(attrs: dict[str, Any], name: str) -> float:
    """One standard error of objective ``name`` from its 90 % interval (``<name>_low``/``_high``):
    the half-width over the normal quantile; 0 without an interval."""
    low, high = attrs.get(f"{name}_low"), attrs.get(f"{name}_high")
    if low is None or high is None:
        return 0.0
    return max(0.0, (float(high) - float(low)) / (2 * _Z))


# -- claims --------------------------------------------------------------------------------------------

def promotion_key(spec_hash: str, rung: int) -> str:
    """The claim key of a spec's promotion to ``rung``."""
    return f"{spec_hash}@{rung}"


def holds_claim(trial: FrozenTrial) -> bool:
    """Whether ``trial`` holds its promotion key: it did not fail and did not lose the claim (a trial that
    recorded values holds it whatever attributes a retry copied)."""
    lost = trial.state == TrialState.PRUNED and CLAIM_LOST in trial.user_attrs and trial_values(trial) is None
    return trial.state != TrialState.FAIL and not lost


def claim_holder(trials: Sequence[FrozenTrial], key: str, below: int) -> int | None:
    """The lowest number below ``below`` of a trial holding ``key`` (None: nobody there)."""
    numbers = [t.number for t in trials if t.number < below and t.user_attrs.get("promotion") == key and holds_claim(t)]
    return min(numbers, default=None)


def owed_keys(trials: Sequence[FrozenTrial]) -> tuple[set[str], set[str]]:
    """``(held, given_up)``: the promotion keys some trial holds, and those that failed too often."""
    held, failures = set(), {}
    for t in trials:
        key = t.user_attrs.get("promotion")
        if key is None:
            continue
        if holds_claim(t):
            held.add(key)
        elif t.state == TrialState.FAIL and t.user_attrs.get("fail_reason") != "interrupted":
            failures[key] = failures.get(key, 0) + 1
    return held, {k for k, n in failures.items() if n >= GIVE_UP_AFTER}


def rung_pool(trials: Sequence[FrozenTrial], rung: int) -> list[FrozenTrial]:
    """The specs evaluated at ``rung``: one trial per spec (the lowest number), trained (feasible) and with
    values (:func:`nas.pareto.trial_values`), duplicates left out."""
    seen: dict[str, FrozenTrial] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if trial_rung(t) == rung and not is_duplicate(t) and t.user_attrs.get("feasible", True) \
                and trial_values(t) is not None:
            seen.setdefault(t.user_attrs.get("spec_hash", str(t.number)), t)
    return list(seen.values())


def enqueue_promotion(study: optuna.Study, trial: FrozenTrial, rung: int, config: FidelityConfig,
                      **extra: Any) -> None:
    """Queue ``trial``'s spec at ``rung`` (its parameters and claim attributes in one transaction)."""
    values = (rung, config.rungs[rung], trial.number, promotion_key(trial.user_attrs["spec_hash"], rung))
    attrs = {**dict(zip(PROMOTION_ATTRS, values, strict=True)), **extra}
    study.enqueue_trial(dict(trial.params), user_attrs=attrs)


# -- a worker's side -------------------------------------------------------------------------------------

@dataclass
class Rungs:
    """One worker's successive halving over a study: the rung of the trial it runs, its claim, its result
    and the promotions it owes (see the module notes)."""

    config: FidelityConfig
    evaluate: RungAccuracyFn
    metric_names: Sequence[str]
    directions: Sequence[str]
    base: Path | None = None
    _rung: int = field(default=0, init=False)
    _root: Path | None = field(default=None, init=False)

    @classmethod
    def of(cls, config: FidelityConfig, evaluate: RungAccuracyFn | None, objectives: Sequence[Objective],
           storage: str | None) -> Rungs:
        """A worker's rungs for a search with ``objectives`` on ``storage`` (checked: an accuracy objective
        and, on a database server, a rung folder)."""
        if evaluate is None or not any(o.needs_accuracy for o in objectives):
            raise SearchError("multi-fidelity needs an accuracy objective",
                              "successive halving promotes specs by what longer training changes: add acc or bacc")
        return cls(config, evaluate, [o.name for o in objectives], [o.direction for o in objectives],
                   rung_base(config, storage))

    def begin(self, trial: optuna.Trial) -> None:
        """Record the trial's rung; a promotion whose key a lower-numbered trial holds is pruned here,
        ``claim_lost``, before anything trains."""
        self._rung = trial_rung(trial)
        name = re.sub(r"[^\w.-]", "_", trial.study.study_name)
        self._root = None if self.base is None else self.base / name
        if self._rung > self.config.top:
            raise SearchError(f"trial {trial.number} asks for rung {self._rung}; the study has {self.config.top + 1}")
        trial.set_user_attr("rung", self._rung)
        trial.set_user_attr("rung_epochs", self.config.rungs[self._rung])
        self._check_claim(trial)

    def accuracy(self, spec: ArchSpec, data: DataBundle | None) -> Accuracy:
        """The accuracy of ``spec`` at the current trial's rung (an ``AccuracyFn``), continuing from the
        checkpoint of the spec's rung folder (``<base>/<study>/<spec_hash>``) when a lower rung left one."""
        folder = None if self._root is None else self._root / spec.hash
        return self.evaluate(spec, data, self.config.rungs[self._rung], folder)

    def finish(self, trial: optuna.Trial, values: list[float], trained: bool) -> list[float]:
        """The values to record COMPLETE (top rung, or an untrained infeasible spec); below the top rung,
        record them as ``rung_values`` and end the trial PRUNED."""
        self._check_claim(trial)
        if not trained or self._rung == self.config.top:
            return values
        trial.set_user_attr(RUNG_VALUES, [float(v) for v in values])
        raise optuna.TrialPruned(f"rung {self._rung} of {self.config.top}: continues only if promoted")

    def _check_claim(self, trial: optuna.Trial) -> None:
        key = trial.user_attrs.get("promotion")
        if key is None:
            return
        holder = claim_holder(trial.study.get_trials(deepcopy=False), key, below=trial.number)
        if holder is not None:
            trial.set_user_attr(CLAIM_LOST, holder)
            raise optuna.TrialPruned(f"trial {holder} holds promotion {key}")

    def points(self, rows: Sequence[FrozenTrial]) -> tuple[np.ndarray, np.ndarray]:
        """The minimized values of ``rows`` and their noise (one standard error on accuracy columns)."""
        k = len(self.metric_names)
        values = np.array([trial_values(t) for t in rows], dtype=float).reshape(-1, k)
        noise = np.array([[standard_error(t.user_attrs, n) if n in MAXIMIZE else 0.0 for n in self.metric_names]
                          for t in rows], dtype=float).reshape(-1, k)
        return to_minimization(values, self.directions), noise

    def promote(self, study: optuna.Study) -> bool:
        """Enqueue the first owed promotion, top rung down; False when none is owed."""
        trials = study.get_trials(deepcopy=False)
        held, given_up = owed_keys(trials)
        for rung in reversed(range(self.config.top)):
            pool = rung_pool(trials, rung)
            if not pool:
                continue
            points, noise = self.points(pool)
            for i in promotable(points, self.config.eta, noise):
                key = promotion_key(pool[i].user_attrs["spec_hash"], rung + 1)
                if key not in held and key not in given_up:
                    enqueue_promotion(study, pool[i], rung + 1, self.config)
                    return True
        return False


def describe(trial: FrozenTrial) -> str:
    """``rung 1 (3 epochs), promoted from 4`` / ``promotion held by trial 12``: a trial's place in the rungs."""
    if CLAIM_LOST in trial.user_attrs and trial_values(trial) is None:
        return f"promotion held by trial {trial.user_attrs[CLAIM_LOST]}"
    if "rung" not in trial.user_attrs:
        return ""
    attrs = trial.user_attrs
    text = f"rung {attrs['rung']} ({attrs.get('rung_epochs')} epochs)"
    return text + (f", promoted from {attrs['promoted_from']}" if "promoted_from" in attrs else "")


# -- refining a front ----------------------------------------------------------------------------------

@dataclass
class Refinement:
    """What :func:`refine` did: the queued promotions ``(from trial, to rung)``, and the chosen trials left
    as they are because they are at the top rung or their promotion is already held."""

    queued: list[tuple[int, int]]
    at_top: list[int]
    held: list[int]


def refine(study: optuna.Study, neighbours: int) -> Refinement:
    """Promote the current front and its ``neighbours`` nearest dominated specs one rung up (enqueued; any
    worker of the search trains them).

    The neighbours are the first ``neighbours`` non-front candidates in promotion order over all of the
    front's candidates (non-dominated rank at the rung both of a pair reached, as the front is judged, then
    crowding distance, on optimistic values: one standard error of accuracy, the highest rung's at every
    rung), so a spec within noise of the front comes first. A front member already at the top
    rung, or whose promotion is already queued, running or done, is left as it is.
    """
    config = fidelity_of(study)
    if config is None:
        raise SearchError(f"study {study.study_name!r} was not searched with multi-fidelity",
                          "refining promotes specs one rung up: search with rungs first")
    if neighbours < 0:
        raise SearchError(f"the number of neighbours must be 0 or more, got {neighbours}")
    front = pareto_front(study)
    candidates = front.rows + front.dominated
    chosen = [r["number"] for r in front.rows]
    if front.dominated:
        noise = np.array([[standard_error(r, n) if n in MAXIMIZE else 0.0 for n in front.metric_names]
                          for r in candidates])
        ladders = rung_ladders(front, candidates, candidates + front.excluded)
        optimistic = [{rung: p - shift for rung, p in ladder.items()} for ladder, shift in zip(ladders, noise)]
        order = promotion_order(front.points(candidates), noise, common_rung_ranks(optimistic))
        chosen += [candidates[i]["number"] for i in order if i >= len(front.rows)][:neighbours]
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    held, _ = owed_keys(list(trials.values()))
    out = Refinement([], [], [])
    for number in chosen:
        trial = trials[number]
        rung = trial_rung(trial) + 1
        if rung > config.top:
            out.at_top.append(number)
        elif promotion_key(trial.user_attrs["spec_hash"], rung) in held:
            out.held.append(number)
        else:
            enqueue_promotion(study, trial, rung, config, refine=True)
            out.queued.append((number, rung))
    return out
