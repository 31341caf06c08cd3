"""The multi-objective architecture search: one Optuna study, many trials, any number of workers.

:func:`run_search` (or :class:`Search` for step-by-step use) samples specs from a
:class:`~nas.space.SearchSpace`, computes their cheap metrics (MACs, params, memory, every hardware target's
predicted latency), sets the limits as Optuna constraints and, for feasible specs only, calls the
accuracy proxy. Semantics worth knowing:

* **Trials in total, counted as distinct specs.** ``trials=N`` means the study ends with N complete
  trials that evaluated a new spec, however many workers and restarts it took: the same command
  resumes an interrupted study and stops when N are done. Duplicates (below) are recorded on top.
* **One trial** (:mod:`nas.search_trial`, which says the details): infeasible specs are recorded with their
  constraints and never trained; a spec already evaluated is recorded PRUNED with ``duplicate_of`` (the
  sampler sees its twin's values, :mod:`nas.sampler`); a failure is recorded as ``fail_reason``, and the
  search goes on (it stops after ``max_consecutive_failures`` in a row).
* **The study's data and recipe.** The proxy trains on the data loaded with the recipe at each spec's
  resolution and scores on its selection split, never the test split; the study records both
  (:func:`nas.study.record_data`), and each accuracy with its uncertainty (:mod:`nas.accuracy`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.accuracy import AccuracyFn, RungAccuracyFn, proxy_evaluator, rung_evaluator, search_inputs
from nas.fidelity import FidelityConfig, Rungs, rung_proxy
from nas.objectives import Limits, Objective, SearchError, parse_objectives
from nas.pareto import trial_rung, trial_values
from nas.sampler import is_duplicate
from nas.search_trial import TrialRunner
from nas.space import SearchSpace
from nas.storage import DEFAULT_STORAGE, HEARTBEAT_INTERVAL, MAX_RETRY, mask_url, open_storage, storage_errors
from nas.study import SAMPLERS, enqueue_presets, make_sampler, open_study, record_data, requeue_interrupted
from search_space.errors import SpecError

if TYPE_CHECKING:
    from trials.data import DataBundle, DataSettings
    from trials.proxy import ProxyConfig
    from trials.recipe import Recipe

#: A worker stops after this many duplicates in a row: the sampler keeps proposing evaluated specs.
MAX_DUPLICATE_STREAK = 100
#: The hardware target of a bare ``latency`` objective when no ``target`` is given.
DEFAULT_TARGET = "T4"


@dataclass
class SearchConfig:
    """Everything ``nas search`` takes; the defaults are the CLI's.

    ``target`` is the hardware target of a bare ``latency`` objective (default :data:`DEFAULT_TARGET`);
    when given, every spec must also fit that chip. ``tables`` are extra hardware-table CSVs merged with
    the shipped seed table. ``trials`` counts distinct specs evaluated, in total (see the module notes).
    ``data`` says which images form the train / selection / test splits (None: the embedded digits; a
    path: that folder; both with the default splits), ``recipe`` how to train (None: the default for the data,
    ``Recipe.for_data(path)``), ``proxy`` the proxy's budget (None: the default ``ProxyConfig``; a recipe
    in it must equal ``recipe``), ``repeats`` how many proxy seeds score each spec. ``sampler`` is a name
    (:data:`~nas.study.SAMPLERS`) or an Optuna sampler object; either is wrapped in
    :class:`~nas.sampler.NasSampler`, which with a ``seed`` reseeds it from the seed and each trial number.
    ``fidelity`` turns on successive halving over rungs of the proxy (:mod:`nas.fidelity`).
    """

    objectives: str | Sequence[str] = "acc,latency"
    target: str | None = None
    limits: Limits = field(default_factory=Limits)
    space: SearchSpace = field(default_factory=SearchSpace)
    sampler: str | optuna.samplers.BaseSampler = "tpe"
    seed: int | None = None
    trials: int = 20
    timeout: float | None = None
    storage: str | None = DEFAULT_STORAGE
    study: str | None = None
    enqueue: Sequence[str] = ()
    data: DataSettings | str | None = None
    recipe: Recipe | None = None
    num_classes: int | None = None
    tables: Sequence[str] = ()
    proxy: ProxyConfig | None = None
    repeats: int = 1
    zero_cost: bool = False
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL
    grace_period: int | None = None
    max_retry: int | None = MAX_RETRY
    max_consecutive_failures: int = 5
    fidelity: FidelityConfig | None = None


@dataclass
class SearchSummary:
    """What one call of :meth:`Search.run` did, and the study's state after it."""

    study: optuna.Study
    ran: int
    failed: int
    evaluated: int
    stopped: str  # "done", "timeout", "space exhausted", "duplicates"


def default_study_name(objectives: Sequence[Objective], space: SearchSpace | None = None) -> str:
    """``acc-latency_T4``: one study per objective set and search space in a shared storage file.

    The default space adds nothing; any other space adds a digest of it (``acc-latency_T4-space-1f0c2a``),
    so a search over another space starts its own study instead of being refused by the default one.
    """
    name = "-".join(o.name for o in objectives)
    if space is None or space == SearchSpace():
        return name
    text = json.dumps(space.to_dict(), sort_keys=True)
    return f"{name}-space-{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def check_run_settings(config: SearchConfig) -> None:
    """Refuse a timeout, heartbeat, grace period, retry count or class count that cannot work, before the
    data is loaded or the study is created."""
    if config.timeout is not None and not config.timeout > 0:
        raise SearchError(f"timeout must be a positive number of seconds, got {config.timeout:g}",
                          "leave it unset for no time limit")
    beat, grace = config.heartbeat_interval, config.grace_period
    if beat is not None and beat < 1:
        raise SearchError(f"heartbeat interval must be at least 1 s, got {beat}",
                          f"the default is {HEARTBEAT_INTERVAL} s")
    if grace is not None and grace <= (beat or 0):
        raise SearchError(f"grace period must be longer than the heartbeat interval ({beat or 0} s), got {grace} s",
                          "a shorter one declares running trials dead between two heartbeats; the default is "
                          "3 intervals")
    if config.max_retry is not None and config.max_retry < 0:
        raise SearchError(f"max retry must be 0 or more, got {config.max_retry}", "0 never retries a dead trial")
    if config.num_classes is not None:
        try:
            next(config.space.iter_specs(config.num_classes))  # the spec's own rule: at least 2 classes
        except SpecError as exc:
            raise SearchError(f"cannot search for {config.num_classes} classes: {exc.message}", exc.hint) from None


class Search:
    """A prepared search: objectives resolved, predictors fitted, data loaded, study opened and checked.

    Every configuration error is raised here, before any trial runs and before the study is changed.
    """

    def __init__(self, config: SearchConfig, evaluate_accuracy: AccuracyFn | RungAccuracyFn | None = None) -> None:
        self.config = config
        if config.trials < 1:
            raise SearchError(f"trials must be at least 1, got {config.trials}")
        if not isinstance(config.sampler, optuna.samplers.BaseSampler) and config.sampler not in SAMPLERS:
            raise SearchError(f"unknown sampler {config.sampler!r}",
                              f"choose from {', '.join(SAMPLERS)}, or give an Optuna sampler object")
        if config.repeats < 1:
            raise SearchError(f"repeats must be at least 1, got {config.repeats}", "use 1 for one proxy seed")
        check_run_settings(config)
        self._resolve_objectives(config)
        self.space = config.space
        self.needs_accuracy = any(o.needs_accuracy for o in self.objectives)
        # The data decides the class count, except with a custom evaluator (or none) and an explicit count.
        self.uses_data = config.num_classes is None or (self.needs_accuracy and evaluate_accuracy is None)
        self.uses_proxy = self.needs_accuracy and evaluate_accuracy is None
        proxy = config.proxy if config.fidelity is None or not self.uses_proxy else rung_proxy(config.proxy,
                                                                                               config.fidelity)
        inputs = search_inputs(config.data, config.recipe, proxy) if self.uses_data else (None, None, None)
        self.settings: DataSettings | None = inputs[0]
        self.recipe: Recipe | None = inputs[1]
        self.proxy: ProxyConfig | None = inputs[2]
        self._data: dict[int, DataBundle] = {}
        first = self.data(self.space.resolutions[0])
        self.num_classes = len(first.classes) if first is not None else int(config.num_classes)  # type: ignore[arg-type]
        if config.num_classes is not None and config.num_classes != self.num_classes:
            raise SearchError(f"the data has {self.num_classes} classes, not {config.num_classes}",
                              "drop the class count: it comes from the data")
        #: Targets whose predicted latency extrapolates over part of the space; the caller says so once.
        self.warnings = self._extrapolation_warnings()
        self.evaluate = evaluate_accuracy
        if self.uses_proxy:
            evaluator = rung_evaluator if config.fidelity else proxy_evaluator
            self.evaluate = evaluator(self.proxy, repeats=config.repeats, zero_cost=config.zero_cost)
        #: Successive halving's side of this worker (None: single fidelity); its accuracy is the rung's.
        self.rungs = None if config.fidelity is None else Rungs.of(config.fidelity, self.evaluate, self.objectives,
                                                                  config.storage)
        if self.rungs is not None:
            self.evaluate = self.rungs.accuracy
        self._open_study(config, first)
        #: Runs one trial at a time: the spec measured, deduplicated, trained when feasible, recorded.
        self.runner = TrialRunner(
            self.study, self.storage, space=self.space, num_classes=self.num_classes, objectives=self.objectives,
            limits=self.limits, devices=self.devices, predictors=self.predictors, trials=config.trials,
            evaluate=self.evaluate if self.needs_accuracy else None, data=self.data, rungs=self.rungs,
            check_stale=config.heartbeat_interval is not None and config.storage not in (None, ":memory:"))

    # -- preparation ---------------------------------------------------------------------------
    def _resolve_objectives(self, config: SearchConfig) -> None:
        """Objectives, limits and target devices with canonical device names (predictors fitted here)."""
        raw = parse_objectives(config.objectives, config.target or DEFAULT_TARGET)
        self.predictors, resolve = self._load_predictors(raw, config)
        self.objectives = [Objective(o.kind, resolve(o.device) if o.device else None, o.maximize_cost) for o in raw]
        if len({o.name for o in self.objectives}) != len(self.objectives):
            raise SearchError("an objective is given twice", "list each objective once")
        self.limits = config.limits.with_devices(resolve)
        devices = [o.device for o in self.objectives if o.device] + [d for d, _ in self.limits.max_latency]
        if config.target and self.predictors:
            devices.insert(0, resolve(config.target))
        self.devices = list(dict.fromkeys(devices))

    def _open_study(self, config: SearchConfig, first: DataBundle | None) -> None:
        """Open (or create) the study, check or write its configuration and data record, set the sampler,
        queue the presets and the interrupted trials."""
        self.storage = open_storage(config.storage, heartbeat_interval=config.heartbeat_interval,
                                    grace_period=config.grace_period, max_retry=config.max_retry)
        self.study_name = config.study or default_study_name(self.objectives, self.space)
        with storage_errors(config.storage):
            self.study = open_study(self.storage, self.study_name, self._stored_config(),
                                    [o.name for o in self.objectives], mask_url(config.storage))
            if first is not None and self.settings is not None and self.recipe is not None:
                record_data(self.study, self.settings, self.recipe, first)  # written once, checked on resume
            self.study.sampler = make_sampler(config.sampler, config.seed, config.trials,
                                              deterministic=not self.needs_accuracy)
            self.skipped = enqueue_presets(self.study, self.space, config.enqueue, self.num_classes)
            requeue_interrupted(self.study)

    @staticmethod
    def _load_predictors(raw: Sequence[Objective], config: SearchConfig) -> tuple[dict[str, Any], Callable]:
        needed = any(o.kind == "latency" for o in raw) or bool(config.limits.max_latency)
        try:
            from predictors import fitted
        except ImportError as exc:
            if needed:
                raise SearchError("latency objectives and limits need the predictors package",
                                  f"it failed to import: {exc}") from None
            return {}, lambda name: name
        fit = fitted(config.tables)  # the same cached fit as `nas export` and `nas hw` for these tables
        return dict(fit.predictors), fit.resolve

    def _extrapolation_warnings(self) -> list[str]:
        """One line per target whose predictor extrapolates over part of the space (said once, at start)."""
        if not self.predictors:
            return []
        from nas.hw import extrapolation_warnings

        return extrapolation_warnings(self.predictors, self.devices, self.space, self.num_classes)

    def data(self, resolution: int) -> DataBundle | None:
        """The data bundle at ``resolution`` with the recipe (loaded once; None with a custom evaluator and
        class count). The search reads its training and selection splits only."""
        if self.settings is None:
            return None
        if resolution not in self._data:
            self._data[resolution] = self.settings.load(resolution, self.recipe)
        return self._data[resolution]

    def _stored_config(self) -> dict[str, Any]:
        limits = self.limits.to_dict()
        limits.pop("min_acc")
        proxy = None
        if self.uses_proxy and self.proxy is not None:
            proxy = {"budget": asdict(self.proxy.budget), "repeats": self.config.repeats}
        return {"objectives": [o.name for o in self.objectives],
                "directions": [o.direction for o in self.objectives],
                "limits": limits, "devices": self.devices, "space": self.space.to_dict(),
                "num_classes": self.num_classes, "proxy": proxy,
                "fidelity": None if self.rungs is None else self.rungs.config.to_dict()}

    # -- running ---------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Trials by state (``complete``, ``running``, ``waiting``, ``fail``, ``pruned``), ``evaluated``: the
        complete trials that are not a duplicate (what ``trials=N`` counts), and ``duplicates``: the trials
        that repeated an evaluated spec (pruned; complete in studies of earlier versions). With rungs,
        ``evaluated`` counts rung 0 (a rung below the top is pruned with its values), ``promoted`` the
        higher rungs evaluated and ``promoting`` those running."""
        out = {s.name.lower(): 0 for s in TrialState}
        out["evaluated"] = out["duplicates"] = out["promoted"] = out["promoting"] = 0
        for t in self.study.get_trials(deepcopy=False):
            out[t.state.name.lower()] += 1
            if is_duplicate(t):
                out["duplicates"] += 1
            elif trial_values(t) is not None:
                out["promoted" if trial_rung(t) else "evaluated"] += 1
            out["promoting"] += t.state == TrialState.RUNNING and trial_rung(t) > 0
        return out

    def run(self, on_trial: Callable[[FrozenTrial, dict[str, int]], None] | None = None) -> SearchSummary:
        """Run trials until the study has evaluated ``config.trials`` distinct specs (or a stop condition).

        Stops early on the timeout, when every spec of the space is evaluated, or after
        :data:`MAX_DUPLICATE_STREAK` duplicates in a row. ``on_trial(trial, counts)`` is called after each
        trial this worker finishes. Ctrl-C propagates (the running trial is recorded as failed, reason
        ``interrupted``, and re-queued on resume).
        """
        cfg, start = self.config, time.monotonic()
        ran = failed = streak = dups = 0
        stopped = "done"
        target = min(cfg.trials, self.space.size)
        with storage_errors(cfg.storage):
            while True:
                if cfg.timeout is not None and time.monotonic() - start >= cfg.timeout:
                    stopped = "timeout"
                    break
                self.runner.fail_stale()
                if self.rungs is not None:
                    self.rungs.promote(self.study)  # a free worker first takes an owed promotion
                c = self.counts()
                if c["evaluated"] >= target and not (self.rungs and (c["waiting"] or c["running"])):
                    stopped = "done" if target == cfg.trials else "space exhausted"
                    break
                if c["evaluated"] + c["running"] - c["promoting"] >= target and not c["waiting"]:
                    time.sleep(0.2)  # the last trials run elsewhere: wait for them (or for their heartbeat to stop)
                    continue
                trial = self.runner.run_one()
                if trial is None:
                    continue
                ran += 1
                if trial.state == TrialState.FAIL:
                    failed += 1
                    streak += 1
                    if streak >= cfg.max_consecutive_failures:
                        raise SearchError(f"{streak} trials failed in a row; the last: "
                                          f"{trial.user_attrs.get('fail_reason', 'unknown')}",
                                          "fix the cause (see the fail_reason of the failed trials) and rerun")
                elif trial_values(trial) is not None or is_duplicate(trial):  # both may be pruned
                    streak = 0
                    dups = dups + 1 if is_duplicate(trial) else 0
                if on_trial is not None:
                    on_trial(trial, self.counts())
                if dups >= MAX_DUPLICATE_STREAK:
                    stopped = "duplicates"
                    break
        return SearchSummary(self.study, ran, failed, self.counts()["evaluated"], stopped)

    def objective(self, trial: optuna.Trial) -> list[float]:
        """The search's objective for ``study.optimize`` (this search's study, or your own one with the
        directions of :attr:`objectives`): samples a spec from the space, records its metrics, constraints
        and note, trains it when feasible and returns the objective values. A duplicate of an evaluated spec,
        and any spec beyond ``config.trials`` distinct ones, is pruned; a failure is recorded as
        ``fail_reason`` and raised."""
        return self.runner.objective(trial)


def run_search(config: SearchConfig, evaluate_accuracy: AccuracyFn | None = None,
               on_trial: Callable[[FrozenTrial, dict[str, int]], None] | None = None) -> SearchSummary:
    """Prepare and run a search (see :class:`SearchConfig`); returns when the study has its trials."""
    return Search(config, evaluate_accuracy).run(on_trial)
