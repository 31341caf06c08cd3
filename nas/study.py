"""Opening a search's study safely: samplers, the stored configuration check, enqueued presets and retries.

A study made by ``nas search`` carries its configuration (objectives, directions, limits, target
devices, space, class count) in the study attribute ``nas:config``. Reopening it with anything
different is refused before the study is touched: the samplers' parameter distributions, the
constraint keys and the meaning of the stored values would no longer match.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from nas.objectives import SearchError
from nas.space import SearchSpace, SpaceError
from search_space import get_preset

SAMPLERS = ("tpe", "nsga2", "nsga3", "gp", "random")
CONFIG_ATTR = "nas:config"
CONFIG_KEYS = ("objectives", "directions", "limits", "devices", "space", "num_classes")


def make_sampler(name: str, seed: int | None, trials: int, deterministic: bool) -> optuna.samplers.BaseSampler:
    """The Optuna sampler called ``name`` (tpe, nsga2, nsga3, gp, random).

    TPE is multivariate: on a discrete space it proposes far fewer repeats than Optuna's independent
    multi-objective default and finds a better front (bench/search_efficiency.py). NSGA-II/III use a
    population of ``trials // 10`` (10..50) so that short searches get several generations.
    """
    pop = max(10, min(50, trials // 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=pop)
        if name == "nsga3":
            return optuna.samplers.NSGAIIISampler(seed=seed, population_size=pop)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed, deterministic_objective=deterministic)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
    raise SearchError(f"unknown sampler {name!r}", f"choose from {', '.join(SAMPLERS)}")


def open_study(storage: BaseStorage, name: str, wanted: dict[str, Any], metric_names: Sequence[str],
               where: str) -> optuna.Study:
    """Create study ``name`` with ``wanted`` (its ``nas:config``) or load it and refuse any difference.

    ``where`` is the masked storage URL, for messages.
    """
    if name in {s.study_name for s in storage.get_all_studies()}:
        study = optuna.load_study(study_name=name, storage=storage)
    else:  # another worker may create it at the same moment: load_if_exists
        study = optuna.create_study(study_name=name, storage=storage, directions=wanted["directions"],
                                    load_if_exists=True)
    stored = study.user_attrs.get(CONFIG_ATTR)
    if stored is None:
        have = [d.name.lower() for d in study.directions]
        if study.get_trials(deepcopy=False):
            raise SearchError(f"study {name!r} in {where} was not created by nas search",
                              "choose another study name")
        if have != wanted["directions"]:
            raise SearchError(f"study {name!r} in {where} has directions {have}, this search needs "
                              f"{wanted['directions']}", "choose another study name")
        study.set_user_attr(CONFIG_ATTR, wanted)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            study.set_metric_names(list(metric_names))
        return study
    for key in CONFIG_KEYS:
        if stored.get(key) != wanted[key]:
            raise SearchError(
                f"study {name!r} in {where} was created with {key} {_short(stored.get(key))}, "
                f"this search asks for {_short(wanted[key])}",
                "resume with the original settings, or start a new study under another name")
    return study


def enqueue_presets(study: optuna.Study, space: SearchSpace, names: Sequence[str], num_classes: int) -> list[str]:
    """Queue the presets (mapped into ``space``) that the study has not evaluated; return why others were skipped."""
    skipped: list[str] = []
    trials = study.get_trials(deepcopy=False)
    for name in names:
        try:
            spec = space.preset_spec(name, num_classes)
        except SpaceError as exc:
            skipped.append(f"{exc.message}; skipped")
            continue
        if any(t.user_attrs.get("spec_hash") == spec.hash and t.state != TrialState.FAIL for t in trials):
            continue
        study.enqueue_trial(space.params_of(spec), user_attrs={"preset": get_preset(name).name},
                            skip_if_exists=True)
    return skipped


def requeue_interrupted(study: optuna.Study) -> int:
    """Queue again every trial cut short by Ctrl-C (``fail_reason`` ``interrupted``) not yet retried."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    n = 0
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get("fail_reason") == "interrupted" and t.number not in retried:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            n += 1
    return n


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 120 else text[:117] + "..."
