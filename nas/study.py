"""Opening a search's study safely: samplers, the stored configuration check, the data record, enqueued
presets and retries.

A study made by ``nas search`` carries its configuration (objectives, directions, limits, target
devices, space, class count, the accuracy proxy's budget and seed repeats, and with multi-fidelity the rungs
and eta of :mod:`nas.fidelity`) in the study attribute ``nas:config``,
and the data it searched on in ``nas:data`` (:class:`RecordedData`: the data settings, the recipe, the
class names and every split's per-class counts). Reopening it with anything different is refused before
the study is touched: the samplers' parameter distributions, the constraint keys and the meaning of the
stored values would no longer match. ``nas train --trial`` and ``nas export --trial/--pareto`` read the
data record to train on what the search ranked on.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from nas.objectives import SearchError
from nas.sampler import NasSampler
from nas.space import SearchSpace, SpaceError
from search_space import get_preset
from search_space.errors import NasError

if TYPE_CHECKING:
    from trials.data import DataBundle, DataSettings
    from trials.recipe import Recipe

SAMPLERS = ("tpe", "nsga2", "nsga3", "gp", "random")
CONFIG_ATTR = "nas:config"
CONFIG_KEYS = ("objectives", "directions", "limits", "devices", "space", "num_classes", "fidelity", "proxy")
DATA_ATTR = "nas:data"
#: What a promotion trial of a multi-fidelity search is for (:mod:`nas.fidelity`); a retry keeps them.
PROMOTION_ATTRS = ("rung", "rung_epochs", "promoted_from", "promotion")
SPLITS = ("train", "selection", "test")


def make_sampler(sampler: str | optuna.samplers.BaseSampler, seed: int | None, trials: int,
                 deterministic: bool) -> NasSampler:
    """The search's sampler: the Optuna sampler called ``sampler`` (tpe, nsga2, nsga3, gp, random), or the
    sampler object given, wrapped in :class:`~nas.sampler.NasSampler` (duplicates seen as observations; with
    a ``seed``, reseeded from the seed and the trial number before each trial, so workers never lockstep).

    TPE is multivariate: on a discrete space it proposes far fewer repeats than Optuna's independent
    multi-objective default and finds a better front (bench/search_efficiency.py). NSGA-II/III use a
    population of ``trials // 10`` (10..50) so that short searches get several generations.
    """
    if isinstance(sampler, optuna.samplers.BaseSampler):
        return NasSampler(sampler, seed)
    pop = max(10, min(50, trials // 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        named = {"tpe": lambda: optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True),
                 "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed, population_size=pop),
                 "nsga3": lambda: optuna.samplers.NSGAIIISampler(seed=seed, population_size=pop),
                 "gp": lambda: optuna.samplers.GPSampler(seed=seed, deterministic_objective=deterministic),
                 "random": lambda: optuna.samplers.RandomSampler(seed=seed)}
        if not isinstance(sampler, str) or sampler not in named:
            raise SearchError(f"unknown sampler {sampler!r}",
                              f"choose from {', '.join(SAMPLERS)}, or give an Optuna sampler object")
        return NasSampler(named[sampler](), seed)


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
        if key not in stored and wanted.get(key) is not None:
            raise SearchError(f"study {name!r} in {where} was made by an earlier version of nas search (it does "
                              f"not record its {key})", "start a new study under another name")
        if stored.get(key) != wanted.get(key):
            was, asked = _setting_change(key, stored.get(key), wanted.get(key))
            raise SearchError(f"study {name!r} in {where} was created {was}, this search asks for {asked}",
                              "resume with the original settings, or start a new study under another name")
    return study


# -- the data a study searched on ------------------------------------------------------------------

@dataclass(frozen=True)
class RecordedData:
    """What a study searched on (study attribute ``nas:data``): the data settings (source and split rule),
    the recipe, the class names and every split's per-class image counts (which reveal a changed folder)."""

    settings: DataSettings
    recipe: Recipe
    classes: tuple[str, ...]
    counts: Mapping[str, tuple[int, ...]]  # "train", "selection", "test" → images per class

    @classmethod
    def of(cls, settings: DataSettings, recipe: Recipe, bundle: DataBundle) -> RecordedData:
        """The record of ``bundle``, loaded with ``settings`` and ``recipe``."""
        counts = {"train": bundle.train_counts, "selection": bundle.selection_counts, "test": bundle.test_counts}
        return cls(settings, recipe, tuple(bundle.classes), {k: tuple(int(n) for n in v) for k, v in counts.items()})

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (the ``nas:data`` attribute)."""
        return {"settings": self.settings.to_dict(), "recipe": self.recipe.to_dict(), "classes": list(self.classes),
                "counts": {k: list(self.counts[k]) for k in SPLITS}}

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> RecordedData:
        """Inverse of :meth:`to_dict`; a damaged record is a :class:`SearchError`."""
        from trials.data import DataSettings
        from trials.recipe import Recipe

        try:
            counts = body["counts"]
            return cls(DataSettings.from_dict(body["settings"]), Recipe.from_dict(body["recipe"]),
                       tuple(str(c) for c in body["classes"]),
                       {k: tuple(int(n) for n in counts[k]) for k in SPLITS})
        except (KeyError, TypeError, ValueError, NasError) as exc:
            raise SearchError(f"the study's data record is damaged ({exc})",
                              "the study attribute was changed by hand; search again into a new study") from None

    @property
    def source(self) -> str:
        """The data folder, or ``the embedded digits``."""
        return self.settings.path or "the embedded digits"

    def differences(self, bundle: DataBundle) -> list[str]:
        """How ``bundle`` differs from the recorded data: classes, then per-class counts of each split."""
        now = RecordedData.of(self.settings, self.recipe, bundle)
        if now.classes != self.classes:
            added = [c for c in now.classes if c not in self.classes]
            removed = [c for c in self.classes if c not in now.classes]
            parts = [f"{len(added)} classes added (e.g. {added[0]!r})"] if added else []
            parts += [f"{len(removed)} classes removed (e.g. {removed[0]!r})"] if removed else []
            return parts or ["the classes are in another order"]
        out = []
        for split in SPLITS:
            changed = [i for i, (a, b) in enumerate(zip(self.counts[split], now.counts[split])) if a != b]
            if changed:
                i = changed[0]
                out.append(f"{split} images of {len(changed)} classes differ (e.g. {self.classes[i]!r}: "
                           f"{self.counts[split][i]} then, {now.counts[split][i]} now)")
        return out

    def check_source(self) -> None:
        """Raise one :class:`SearchError` line when the recorded data folder is missing."""
        if self.settings.path is not None and not Path(self.settings.path).expanduser().is_dir():
            raise SearchError(f"the data folder {self.source} of the search is missing",
                              "restore the data the study searched on, or give other data explicitly")

    def check(self, bundle: DataBundle) -> None:
        """Raise one :class:`SearchError` line when ``bundle`` (loaded with the recorded settings and recipe)
        holds other classes or other per-class counts than the data the study searched on."""
        diffs = self.differences(bundle)
        if diffs:
            raise SearchError(f"the data folder {self.source} changed since the search: {'; '.join(diffs)}",
                              "restore the data the study searched on, or give other data explicitly")

    def load(self, resolution: int) -> DataBundle:
        """The recorded data at ``resolution`` with the recorded recipe, checked (folder, classes, counts)."""
        self.check_source()
        bundle = self.settings.load(resolution, self.recipe)
        self.check(bundle)
        return bundle


def recorded_data(study: optuna.Study) -> RecordedData | None:
    """The data record of ``study`` (None for a study without one: cost-only, or made by an older version)."""
    body = study.user_attrs.get(DATA_ATTR)
    return None if body is None else RecordedData.from_dict(body)


def record_data(study: optuna.Study, settings: DataSettings, recipe: Recipe, bundle: DataBundle) -> RecordedData:
    """Record what ``study`` searches on; a study that has a record must match it (settings, recipe, classes
    and counts), else one :class:`SearchError` line and nothing is written."""
    new = RecordedData.of(settings, recipe, bundle)
    old = recorded_data(study)
    if old is None:
        study.set_user_attr(DATA_ATTR, new.to_dict())
        return new
    for what, before, now in (("data", old.settings, settings), ("recipe", old.recipe, recipe)):
        if before != now:
            was, asked = _differences(before.to_dict(), now.to_dict())
            raise SearchError(f"study {study.study_name!r} searched with {what} {was}; this search asks for {asked}",
                              "resume with the original data and recipe, or start a new study under another name")
    old.check(bundle)
    return old


def enqueue_presets(study: optuna.Study, space: SearchSpace, names: Sequence[str], num_classes: int) -> list[str]:
    """Queue the presets (mapped into ``space``) that the study has not evaluated.

    Returns one line naming every skipped preset and why (e.g. outside the space), or nothing when none was.
    """
    skipped: list[tuple[str, str]] = []
    trials = study.get_trials(deepcopy=False)
    for name in names:
        try:
            spec = space.preset_spec(name, num_classes)
        except SpaceError as exc:
            skipped.append((name, re.sub(r"^preset \S+ is ", "", exc.message)))
            continue
        if any(t.user_attrs.get("spec_hash") == spec.hash and t.state != TrialState.FAIL for t in trials):
            continue
        study.enqueue_trial(space.params_of(spec), user_attrs={"preset": get_preset(name).name},
                            skip_if_exists=True)
    if not skipped:
        return []
    queued = len(names) - len(skipped)
    reasons = "; ".join(f"{name}: {why}" for name, why in skipped)
    return [f"skipped preset{'s' if len(skipped) > 1 else ''} {', '.join(n for n, _ in skipped)} ({reasons}); "
            f"{queued} of {len(names)} presets queued as reference points"]


def requeue_interrupted(study: optuna.Study) -> int:
    """Queue again every trial cut short by Ctrl-C (``fail_reason`` ``interrupted``) not yet retried, with
    what it was for (:data:`PROMOTION_ATTRS`: a promotion's rung and claim)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    n = 0
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get("fail_reason") == "interrupted" and t.number not in retried:
            kept = {k: t.user_attrs[k] for k in PROMOTION_ATTRS if k in t.user_attrs}
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number, **kept})
            n += 1
    return n


def _short(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _setting_change(key: str, was: Any, asked: Any) -> tuple[str, str]:
    """``("with fidelity rungs [1, 3, 9]", "rungs [1, 3]")``, or ``("with fidelity …", "no fidelity")`` when
    one side has no such setting."""
    if was is None or asked is None:
        return (f"with {key} {_short(was)}" if was is not None else f"without {key}",
                f"{key} {_short(asked)}" if asked is not None else f"no {key}")
    before, now = _differences(was, asked)
    return f"with {key} {before}", now


def _differences(was: Any, asked: Any, path: str = "") -> tuple[str, str]:
    """``("repeats 2", "repeats 3")``: the parts of two values that differ (nested mappings by key path)."""
    if not (isinstance(was, Mapping) and isinstance(asked, Mapping)):
        return (f"{path} " if path else "") + _short(was), (f"{path} " if path else "") + _short(asked)
    pairs = [_differences(was.get(k), asked.get(k), f"{path} {k}".strip())
             for k in sorted(set(was) | set(asked), key=str) if was.get(k) != asked.get(k)]
    return ", ".join(a for a, _ in pairs), ", ".join(b for _, b in pairs)
