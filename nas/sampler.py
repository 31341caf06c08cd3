"""The sampler of a search: any Optuna sampler, shown duplicates and rungs as observations, reseeded per trial.

:class:`NasSampler` wraps an Optuna sampler (TPE, NSGA-II/III, GP, random, or one a user built) and
changes two things, nothing else:

* **What the sampler sees.** A trial whose spec the study already evaluated (a *duplicate*, user
  attribute ``duplicate_of``) is recorded PRUNED, so ``study.best_trials``, optuna-dashboard's Best
  Trials and ``nas pareto`` never list it twice. To the wrapped sampler, though, it is what it was
  before: a COMPLETE observation with its twin's values (:func:`observed`). Left PRUNED, TPE would file
  a proposal it made *because* the region is good among its bad trials, and NSGA-II would drop it from
  its generations. Likewise a multi-fidelity spec stopped below the top rung (PRUNED with
  ``rung_values``, :mod:`nas.fidelity`) is a COMPLETE observation with those values, each spec once, at the
  highest rung it was measured (a promoted spec's lower rungs, same parameters, are left out of the view).
  A promotion that lost its claim and a surplus spec measured nothing: they stay PRUNED. The wrapped
  sampler also sees each constraint once, by name (:mod:`nas.dashboard` writes a second, list copy for the
  dashboard).
* **Where its randomness comes from.** With a seed, every trial reseeds the sampler's random states from
  ``(seed, trial number)`` (:func:`trial_seed`). A trial number is unique in a study, so workers started
  together with the same seed draw different numbers and never propose in lockstep, while one worker's
  run stays reproducible. Without a seed the sampler keeps its own (random) state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.samplers._lazy_random_state import LazyRandomState
from optuna.trial import FrozenTrial, TrialState

from nas.dashboard import without_legacy_constraints
from nas.pareto import trial_rung, trial_values

#: The user attribute of a duplicate: the number of the trial that evaluated its spec.
DUPLICATE_OF = "duplicate_of"


def is_duplicate(trial: FrozenTrial) -> bool:
    """Whether ``trial`` repeated a spec evaluated by another trial."""
    return DUPLICATE_OF in trial.user_attrs


def observed(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """``trials`` as a sampler should learn from them: each spec once, at the highest rung it was measured
    (a PRUNED rung trial COMPLETE with its ``rung_values``, the lower rungs of a promoted spec left out); each
    duplicate COMPLETE with the values of its spec's highest rung, else its twin's (:func:`nas.pareto.trial_values`;
    a twin missing from ``trials`` or without values leaves it as it is), so that one set of parameters never
    shows two values; any other PRUNED trial as it is; constraints by name only."""
    by_number = {t.number: t for t in trials}
    highest = _highest_rungs(trials)
    out = []
    for trial in trials:
        top = highest.get(_spec_key(trial))
        if _measured(trial) and top is not None and trial_rung(trial) < trial_rung(top):
            continue  # a lower rung of a promoted spec: the higher rung stands for it
        view = without_legacy_constraints(trial)
        source = trial
        if is_duplicate(trial):
            source = top if top is not None else by_number.get(trial.user_attrs[DUPLICATE_OF])
        values = trial_values(source) if source is not None and trial.state == TrialState.PRUNED else None
        if values is not None:
            view = FrozenTrial(view.number, TrialState.COMPLETE, None, view.datetime_start, view.datetime_complete,
                               view.params, view.distributions, view.user_attrs, view.system_attrs,
                               view.intermediate_values, view._trial_id, values=values)
        out.append(view)
    return out


def _spec_key(trial: FrozenTrial) -> str:
    """The spec a trial evaluated (its hash; its number for a trial without one)."""
    return str(trial.user_attrs.get("spec_hash", f"#{trial.number}"))


def _measured(trial: FrozenTrial) -> bool:
    """Whether ``trial`` measured its own spec (values COMPLETE or at a rung; a duplicate measured nothing)."""
    return not is_duplicate(trial) and trial_values(trial) is not None


def _highest_rungs(trials: Sequence[FrozenTrial]) -> dict[str, FrozenTrial]:
    """Spec → the trial of ``trials`` that measured it at the highest rung."""
    highest: dict[str, FrozenTrial] = {}
    for trial in trials:
        if _measured(trial):
            key = _spec_key(trial)
            if key not in highest or trial_rung(trial) > trial_rung(highest[key]):
                highest[key] = trial
    return highest


class _StudyView(optuna.Study):
    """A study whose trials read as :func:`observed` gives them; everything else is the study's own."""

    def __init__(self, study: optuna.Study) -> None:  # no super().__init__: it would look the study up again
        self.__dict__.update(study.__dict__)
        self._study = study

    def _get_trials(self, deepcopy: bool = True, states: Any = None, use_cache: bool = False) -> list[FrozenTrial]:
        trials = observed(self._study._get_trials(deepcopy=deepcopy, states=None, use_cache=use_cache))
        return trials if states is None else [t for t in trials if t.state in states]


def sampler_view(study: optuna.Study) -> optuna.Study:
    """The study as :class:`NasSampler` shows it to the sampler it wraps (see :func:`observed`)."""
    return study if isinstance(study, _StudyView) else _StudyView(study)


def trial_seed(seed: int, number: int, index: int = 0) -> int:
    """The seed of random state ``index`` of a sampler for trial ``number`` of a search seeded ``seed``."""
    digest = hashlib.blake2b(f"nas-sampler/{seed}/{number}/{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def random_states(sampler: BaseSampler) -> list[LazyRandomState | np.random.RandomState]:
    """Every random state of ``sampler`` and of the samplers and strategies inside it, in a fixed order."""
    return list(_walk(sampler, set(), depth=3))


def _walk(obj: Any, seen: set[int], depth: int) -> Iterator[LazyRandomState | np.random.RandomState]:
    for _, value in sorted(vars(obj).items()):
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, LazyRandomState | np.random.RandomState):
            yield value
        elif depth > 0 and hasattr(value, "__dict__") and (
                isinstance(value, BaseSampler) or type(value).__module__.startswith("optuna.samplers")):
            yield from _walk(value, seen, depth - 1)


class NasSampler(BaseSampler):
    """``sampler`` shown duplicates and rung trials as observations (:func:`observed`) and, with a ``seed``,
    reseeded from ``(seed, trial number)`` before each trial (see the module notes). Use it around your own
    sampler in your own study."""

    def __init__(self, sampler: BaseSampler, seed: int | None = None) -> None:
        self.sampler = sampler
        self.seed = seed

    def __str__(self) -> str:
        return f"NasSampler({type(self.sampler).__name__}, seed={self.seed})"

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        """The wrapped sampler's relative search space, on the sampler's view of the study."""
        return self.sampler.infer_relative_search_space(sampler_view(study), trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """The wrapped sampler's relative sample, on the sampler's view of the study."""
        return self.sampler.sample_relative(sampler_view(study), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        """The wrapped sampler's independent sample, on the sampler's view of the study."""
        return self.sampler.sample_independent(sampler_view(study), trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Reseed the wrapped sampler for this trial (with a seed), then let it prepare."""
        if self.seed is not None:
            for index, state in enumerate(random_states(self.sampler)):
                rng = state.rng if isinstance(state, LazyRandomState) else state
                rng.seed(trial_seed(self.seed, trial.number, index))
        self.sampler.before_trial(sampler_view(study), trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        """The wrapped sampler's end-of-trial hook, on the sampler's view of the study."""
        self.sampler.after_trial(sampler_view(study), trial, state, values)

    def reseed_rng(self) -> None:
        """Reseed the wrapped sampler at random (Optuna does so for parallel threads)."""
        self.sampler.reseed_rng()
