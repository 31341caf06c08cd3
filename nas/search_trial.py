"""One trial of a search: a sampled spec measured, checked against the limits, deduplicated, trained when
feasible, and its values or its failure recorded.

:class:`TrialRunner` is what :class:`nas.search.Search` runs once per trial (and what ``Search.objective``
hands to a study of your own). Semantics worth knowing:

* **Infeasible specs are never trained.** They are recorded as complete trials whose constraint values
  are positive (so every sampler and the front treat them as infeasible); their cost objectives carry
  the real values and their accuracy objectives :data:`~nas.objectives.UNTRAINED_ACCURACY` (0, the
  worst), with the reason in the ``infeasible_reason`` attribute.
* **No spec is evaluated twice.** A spec whose hash matches a complete trial is recorded PRUNED with
  attribute ``duplicate_of`` (so ``study.best_trials`` and the dashboard never list it); the sampler still
  sees it as an observation of its twin's values (:mod:`nas.sampler`). One matching a lower-numbered
  *running* trial waits for it. A new spec beyond the study's ``trials`` is pruned, attribute ``surplus``.
* **Failures are recorded, not fatal.** A trial that raises, returns NaN or runs out of memory ends
  ``FAIL`` with ``fail_reason``; the search decides when too many failed in a row.
* **The storage's failures are not the spec's.** A storage that stays away through its retries is
  raised (:class:`~nas.storage.StorageError`), the trial marked ``interrupted`` where the database still
  answers, so it is queued again (:func:`nas.study.requeue_interrupted`).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from nas.accuracy import AccuracyFn, inherited, trial_attrs
from nas.dashboard import save_trial_note, set_constraints
from nas.objectives import (
    Limits,
    Objective,
    constraint_values,
    infeasibility,
    objective_values,
    spec_metrics,
)
from nas.pareto import trial_rung, trial_values
from nas.sampler import DUPLICATE_OF, is_duplicate
from nas.storage import connection_lost, storage_failed
from nas.study import requeue_interrupted

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

    from nas.fidelity import Rungs
    from nas.space import SearchSpace
    from trials.data import DataBundle


class TrialFailureError(Exception):
    """A trial produced an unusable result (NaN accuracy, …); recorded as its ``fail_reason``."""


def failure_text(exc: BaseException) -> str:
    """The ``fail_reason`` of a trial that raised ``exc``: ``Type: message`` (``out of memory (…)`` around
    it for any out-of-memory error), at most 500 characters."""
    text = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or any(
            w in str(exc).lower() for w in ("out of memory", "can't allocate memory")):
        text = f"out of memory ({text})"
    return text[:500]


@dataclass
class TrialRunner:
    """A prepared search's trials, one at a time: what a trial computes (``space`` sampled for
    ``num_classes`` classes, ``predictors`` for ``devices``, ``limits``, ``objectives``, ``evaluate`` on
    ``data(resolution)`` when an objective needs accuracy, ``rungs`` with multi-fidelity), how many distinct
    specs the study ends with (``trials``), and where it is recorded (``study`` on ``storage``; with
    ``check_stale``, dead workers' trials are failed there before each trial)."""

    study: optuna.Study
    storage: BaseStorage
    space: SearchSpace
    num_classes: int
    objectives: Sequence[Objective]
    limits: Limits
    devices: Sequence[str]
    predictors: dict[str, Any]
    trials: int
    evaluate: AccuracyFn | None  # None: no objective needs accuracy
    data: Callable[[int], DataBundle | None]
    rungs: Rungs | None = None
    check_stale: bool = False
    poll: float = 0.02
    _current: int | None = field(default=None, init=False)
    _storage_failure: BaseException | None = field(default=None, init=False)

    def run_one(self) -> FrozenTrial | None:
        """Run one trial; ``None`` if it did not finish here: another worker declared it dead meanwhile (it
        is retried there), or the storage stayed unreachable through its retries and came back (it is
        queued again, not counted as a failure). A storage that stays away raises :class:`StorageError`,
        the trial marked ``interrupted`` where the database still answers (queued again on resume)."""
        finished: list[FrozenTrial] = []
        self._current = None
        self._storage_failure = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                self.study.optimize(self.objective, n_trials=1, catch=(Exception,),
                                    callbacks=[lambda _study, t: finished.append(t)])
        except ValueError:
            # Heartbeats arrived too late (an overloaded machine): another worker failed this trial as
            # stale and re-queued it, so Optuna refuses our result. Nothing is lost; go on.
            if self._current is None or self.storage.get_trial(self._current).state != TrialState.FAIL:
                raise
            return None
        except Exception as exc:
            if self._current is not None and storage_failed(exc):
                # Optuna could not record the trial's end. One try to mark it interrupted (queued again on
                # resume); with the database still away, its heartbeat stops and it is retried as stale.
                with contextlib.suppress(Exception):
                    self.storage.set_trial_user_attr(self._current, "fail_reason", "interrupted")
                    self.storage.set_trial_state_values(self._current, TrialState.FAIL)
            raise
        if self._storage_failure is not None:
            if not connection_lost(self._storage_failure):
                raise self._storage_failure
            requeue_interrupted(self.study)
            return None
        return finished[0] if finished else None

    def fail_stale(self) -> None:
        """Fail the running trials of dead workers (their heartbeat stopped), so they are retried."""
        if self.check_stale:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)

    def objective(self, trial: optuna.Trial) -> list[float]:
        """The objective of one trial (of this study or any other with the objectives' directions): see
        :meth:`nas.search.Search.objective`. Records the ``fail_reason`` of a failure and raises it."""
        self._current = trial._trial_id
        try:
            return self._evaluate(trial)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted")
            raise
        except Exception as exc:
            if storage_failed(exc):  # the storage itself failed, through its retries: not the spec's failure
                self._storage_failure = exc
                if connection_lost(exc):
                    with contextlib.suppress(Exception):  # recorded if the database is back: queued again
                        trial.set_user_attr("fail_reason", "interrupted")
                raise
            trial.set_user_attr("fail_reason", failure_text(exc))
            raise

    def _evaluate(self, trial: optuna.Trial) -> list[float]:
        spec = self.space.suggest(trial, self.num_classes)
        metrics = spec_metrics(spec, self.predictors)
        for key, value in metrics.attrs.items():
            trial.set_user_attr(key, value)
        with warnings.catch_warnings():  # a trial retried after a lost heartbeat already has its constraints
            warnings.filterwarnings("ignore", "The constraint value is ignored", UserWarning)
            set_constraints(trial, constraint_values(metrics, self.limits, self.devices))
        reason = infeasibility(metrics, self.limits, self.devices)
        trial.set_user_attr("feasible", reason is None)
        if reason is not None:
            trial.set_user_attr("infeasible_reason", reason)
        names = [o.name for o in self.objectives]
        if self.rungs is not None:
            self.rungs.begin(trial)  # records the rung; a promotion another trial holds ends here
        twin = self._twin(trial, spec.hash) if trial_rung(trial) == 0 else None  # promotions are claimed
        if twin is not None:  # pruned, so never a best trial; the sampler sees it as the twin's values
            trial.set_user_attr(DUPLICATE_OF, twin.number)
            for key, value in inherited(twin.user_attrs).items():
                trial.set_user_attr(key, value)
            save_trial_note(trial, names, trial_values(twin))
            raise optuna.TrialPruned(f"duplicate of trial {twin.number}")
        accuracy = None
        if self.evaluate is not None and reason is None:
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
        save_trial_note(trial, names, values)
        return values if self.rungs is None else self.rungs.finish(trial, values, trained=accuracy is not None)

    def _twin(self, trial: optuna.Trial, spec_hash: str) -> FrozenTrial | None:
        """A complete trial of the same spec to reuse; waits for a lower-numbered running one.

        A trial that would evaluate a new spec although the study already has its ``trials`` (another
        worker got there first) is pruned, attribute ``surplus``.
        """
        wait = self.poll
        while True:
            original: FrozenTrial | None = None
            evaluated = running_before = 0
            twin_running = False
            for t in trial.study.get_trials(deepcopy=False):  # this search's study, or the caller's own
                if t.number == trial.number or trial_rung(t):  # keyed on (spec, rung 0)
                    continue
                same = t.user_attrs.get("spec_hash") == spec_hash
                if trial_values(t) is not None and not is_duplicate(t):  # rung 0 may be pruned with values
                    evaluated += 1
                    if same and (original is None or t.number < original.number):
                        original = t
                elif t.state == TrialState.RUNNING and t.number < trial.number:
                    running_before += 1
                    twin_running = twin_running or same
            if original is not None:
                return original
            if evaluated + running_before >= self.trials:
                trial.set_user_attr("surplus", True)
                raise optuna.TrialPruned("the study already has its trials")
            if not twin_running:
                return None
            time.sleep(wait)
            wait = min(0.5, wait * 2)
            self.fail_stale()
