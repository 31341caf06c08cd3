"""The multi-objective architecture search: one Optuna study, many trials, any number of workers.

:func:`run_search` (or :class:`Search` for step-by-step use) samples specs from a
:class:`~nas.space.SearchSpace`, computes their cheap metrics (MACs, params, memory, every hardware target's
predicted latency), sets the limits as Optuna constraints and, for feasible specs only, calls the
accuracy proxy. Semantics worth knowing:

* **Trials in total, counted as distinct specs.** ``trials=N`` means the study ends with N complete
  trials that evaluated a new spec, however many workers and restarts it took: the same command
  resumes an interrupted study and stops when N are done. Duplicates (below) are recorded on top.
* **Infeasible specs are never trained.** They are recorded as complete trials whose constraint values
  are positive (so every sampler and the front treat them as infeasible); their cost objectives carry
  the real values and their accuracy objectives :data:`~nas.objectives.UNTRAINED_ACCURACY` (0, the
  worst), with the reason in the ``infeasible_reason`` attribute.
* **No spec is evaluated twice.** A spec whose hash matches a complete trial reuses its values
  (attribute ``duplicate_of``); one matching a lower-numbered *running* trial waits for it.
* **Failures are recorded, not fatal.** A trial that raises, returns NaN or runs out of memory ends
  ``FAIL`` with ``fail_reason``; the search goes on (it stops after ``max_consecutive_failures`` in a row).
* **The study's data and recipe.** The proxy trains on the data loaded with the recipe at each spec's
  resolution and scores on its selection split, never the test split; the study records both
  (:func:`nas.study.record_data`), and each accuracy with its uncertainty (:mod:`nas.accuracy`).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from nas.accuracy import AccuracyFn, inherited, proxy_evaluator, search_inputs, trial_attrs
from nas.objectives import (
    Limits,
    Objective,
    SearchError,
    constraint_values,
    infeasibility,
    objective_values,
    parse_objectives,
    spec_metrics,
)
from nas.space import SearchSpace
from nas.storage import DEFAULT_STORAGE, HEARTBEAT_INTERVAL, MAX_RETRY, mask_url, open_storage, storage_errors
from nas.study import SAMPLERS, enqueue_presets, make_sampler, open_study, record_data, requeue_interrupted

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
    in it must equal ``recipe``), ``repeats`` how many proxy seeds score each spec.
    """

    objectives: str | Sequence[str] = "acc,latency"
    target: str | None = None
    limits: Limits = field(default_factory=Limits)
    space: SearchSpace = field(default_factory=SearchSpace)
    sampler: str = "tpe"
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


@dataclass
class SearchSummary:
    """What one call of :meth:`Search.run` did, and the study's state after it."""

    study: optuna.Study
    ran: int
    failed: int
    evaluated: int
    stopped: str  # "done", "timeout", "space exhausted", "duplicates"


class TrialFailureError(Exception):
    """A trial produced an unusable result (NaN accuracy, …); recorded as its ``fail_reason``."""


def default_study_name(objectives: Sequence[Objective]) -> str:
    """``acc-latency_T4``: one study per objective set in a shared storage file."""
    return "-".join(o.name for o in objectives)


class Search:
    """A prepared search: objectives resolved, predictors fitted, data loaded, study opened and checked.

    Every configuration error is raised here, before any trial runs and before the study is changed.
    """

    def __init__(self, config: SearchConfig, evaluate_accuracy: AccuracyFn | None = None) -> None:
        self.config = config
        if config.trials < 1:
            raise SearchError(f"trials must be at least 1, got {config.trials}")
        if config.sampler not in SAMPLERS:
            raise SearchError(f"unknown sampler {config.sampler!r}", f"choose from {', '.join(SAMPLERS)}")
        if config.repeats < 1:
            raise SearchError(f"repeats must be at least 1, got {config.repeats}", "use 1 for one proxy seed")
        self._resolve_objectives(config)
        self.space = config.space
        self.needs_accuracy = any(o.needs_accuracy for o in self.objectives)
        # The data decides the class count, except with a custom evaluator (or none) and an explicit count.
        self.uses_data = config.num_classes is None or (self.needs_accuracy and evaluate_accuracy is None)
        self.uses_proxy = self.needs_accuracy and evaluate_accuracy is None
        inputs = search_inputs(config.data, config.recipe, config.proxy) if self.uses_data else (None, None, None)
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
            self.evaluate = proxy_evaluator(self.proxy, repeats=config.repeats, zero_cost=config.zero_cost)
        self._open_study(config, first)
        self._poll = 0.02

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
        self.study_name = config.study or default_study_name(self.objectives)
        with storage_errors(config.storage):
            self.study = open_study(self.storage, self.study_name, self._stored_config(),
                                    [o.name for o in self.objectives], mask_url(config.storage))
            if first is not None and self.settings is not None and self.recipe is not None:
                record_data(self.study, self.settings, self.recipe, first)  # written once, checked on resume
            self.study.sampler = make_sampler(config.sampler, self._seed(self.study), config.trials,
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
                "num_classes": self.num_classes, "proxy": proxy}

    def _seed(self, study: optuna.Study) -> int | None:
        seed = self.config.seed
        if seed is not None and study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            seed += os.getpid()  # another worker is active: the same seed would propose the same specs
        return seed

    # -- running ---------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Trials by state (``complete``, ``running``, ``waiting``, ``fail``, ``pruned``) and ``evaluated``:
        the complete trials that are not a ``duplicate_of`` another (what ``trials=N`` counts)."""
        out = {s.name.lower(): 0 for s in TrialState}
        out["evaluated"] = 0
        for t in self.study.get_trials(deepcopy=False):
            out[t.state.name.lower()] += 1
            if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs:
                out["evaluated"] += 1
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
                self._fail_stale()
                c = self.counts()
                if c["evaluated"] >= target:
                    stopped = "done" if target == cfg.trials else "space exhausted"
                    break
                if c["evaluated"] + c["running"] >= target and not c["waiting"]:
                    time.sleep(0.2)  # the last trials run elsewhere: wait for them (or for their heartbeat to stop)
                    continue
                trial = self._one_trial()
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
                elif trial.state == TrialState.COMPLETE:
                    streak = 0
                    dups = dups + 1 if "duplicate_of" in trial.user_attrs else 0
                if on_trial is not None:
                    on_trial(trial, self.counts())
                if dups >= MAX_DUPLICATE_STREAK:
                    stopped = "duplicates"
                    break
        return SearchSummary(self.study, ran, failed, self.counts()["evaluated"], stopped)

    def _one_trial(self) -> FrozenTrial | None:
        """Run one trial; ``None`` if another worker declared it dead meanwhile (it is retried there)."""
        finished: list[FrozenTrial] = []
        self._current: int | None = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                self.study.optimize(self._objective, n_trials=1, catch=(Exception,),
                                    callbacks=[lambda _study, t: finished.append(t)])
        except ValueError:
            # Heartbeats arrived too late (an overloaded machine): another worker failed this trial as
            # stale and re-queued it, so Optuna refuses our result. Nothing is lost; go on.
            if self._current is None or self.storage.get_trial(self._current).state != TrialState.FAIL:
                raise
            return None
        return finished[0] if finished else None

    def _fail_stale(self) -> None:
        if self.config.heartbeat_interval is not None and self.config.storage not in (None, ":memory:"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)

    def _objective(self, trial: optuna.Trial) -> list[float]:
        self._current = trial._trial_id
        try:
            return self._evaluate_trial(trial)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted")
            raise
        except Exception as exc:
            if type(exc).__module__.startswith(("sqlalchemy", "psycopg2")):
                raise  # the storage itself failed: stop, do not record
            text = f"{type(exc).__name__}: {exc}".rstrip(": ")
            if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or any(
                    w in str(exc).lower() for w in ("out of memory", "can't allocate memory")):
                text = f"out of memory ({text})"
            trial.set_user_attr("fail_reason", text[:500])
            raise

    def _evaluate_trial(self, trial: optuna.Trial) -> list[float]:
        spec = self.space.suggest(trial, self.num_classes)
        metrics = spec_metrics(spec, self.predictors)
        for key, value in metrics.attrs.items():
            trial.set_user_attr(key, value)
        for key, value in constraint_values(metrics, self.limits, self.devices).items():
            trial.set_constraint(key, value)
        reason = infeasibility(metrics, self.limits, self.devices)
        trial.set_user_attr("feasible", reason is None)
        if reason is not None:
            trial.set_user_attr("infeasible_reason", reason)
        twin = self._twin(trial, spec.hash)
        if twin is not None:
            trial.set_user_attr("duplicate_of", twin.number)
            for key, value in inherited(twin.user_attrs).items():
                trial.set_user_attr(key, value)
            return list(twin.values)
        accuracy = None
        if self.needs_accuracy and reason is None:
            assert self.evaluate is not None
            accuracy = dict(self.evaluate(spec, self.data(spec.resolution)))
            for key in ("top1", "balanced_acc"):
                if not math.isfinite(float(accuracy.get(key, math.nan))):
                    raise TrialFailureError(f"the accuracy proxy returned {key}={accuracy.get(key)}")
            for key, value in trial_attrs(accuracy).items():
                trial.set_user_attr(key, value)
        values = objective_values(self.objectives, metrics, accuracy)
        bad = [o.name for o, v in zip(self.objectives, values) if not math.isfinite(v)]
        if bad:
            raise TrialFailureError(f"objective {', '.join(bad)} is not finite")
        return values

    def _twin(self, trial: optuna.Trial, spec_hash: str) -> FrozenTrial | None:
        """A complete trial of the same spec to reuse; waits for a lower-numbered running one.

        A trial that would evaluate a new spec although the study already has its ``trials`` (another
        worker got there first) is pruned, attribute ``surplus``.
        """
        wait = self._poll
        while True:
            original: FrozenTrial | None = None
            evaluated = running_before = 0
            twin_running = False
            for t in self.study.get_trials(deepcopy=False):
                if t.number == trial.number:
                    continue
                same = t.user_attrs.get("spec_hash") == spec_hash
                if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs:
                    evaluated += 1
                    if same and (original is None or t.number < original.number):
                        original = t
                elif t.state == TrialState.RUNNING and t.number < trial.number:
                    running_before += 1
                    twin_running = twin_running or same
            if original is not None:
                return original
            if evaluated + running_before >= self.config.trials:
                trial.set_user_attr("surplus", True)
                raise optuna.TrialPruned("the study already has its trials")
            if not twin_running:
                return None
            time.sleep(wait)
            wait = min(0.5, wait * 2)
            self._fail_stale()


def run_search(config: SearchConfig, evaluate_accuracy: AccuracyFn | None = None,
               on_trial: Callable[[FrozenTrial, dict[str, int]], None] | None = None) -> SearchSummary:
    """Prepare and run a search (see :class:`SearchConfig`); returns when the study has its trials."""
    return Search(config, evaluate_accuracy).run(on_trial)
