"""The accuracy a search records for each trained spec: the proxy, over one or more seeds, with its uncertainty.

:func:`proxy_evaluator` runs :func:`trials.proxy.proxy_accuracy` with ``repeats`` consecutive proxy seeds
(``budget.seed``, ``budget.seed + 1``, …) on the same scored selection images, and returns the mean
top-1 and balanced accuracy with the bootstrap intervals and the seed spread of
:func:`nas.uncertainty.accuracy_estimate`. :func:`trial_attrs` names those figures as a trial stores them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.objectives import SearchError
from nas.uncertainty import ACCURACY_ATTRS, accuracy_estimate
from search_space import ArchSpec

if TYPE_CHECKING:
    from trials.data import DataBundle, DataSettings
    from trials.proxy import ProxyConfig, ProxyResult
    from trials.recipe import Recipe

#: What an accuracy function returns: at least ``top1`` and ``balanced_acc`` (fractions); optionally the
#: :data:`~nas.uncertainty.ACCURACY_ATTRS` (intervals, per-seed values), ``zc_*`` scores and other figures.
Accuracy = Mapping[str, float | list[float]]
#: ``evaluate_accuracy(spec, data)``: ``data`` is the bundle at the spec's resolution (None without data).
AccuracyFn = Callable[[ArchSpec, "DataBundle | None"], Accuracy]
#: ``evaluate_rung(spec, data, epochs, folder)``: the accuracy after ``epochs`` epochs of the proxy's schedule,
#: continuing from the checkpoint a lower rung left in ``folder`` (None: no checkpoints), :mod:`nas.fidelity`.
RungAccuracyFn = Callable[[ArchSpec, "DataBundle | None", int, "Path | None"], Accuracy]
#: Budget fields that ``nas search`` exposes (see :class:`trials.proxy.ProxyBudget`).
BUDGET_FIELDS = ("epochs", "max_steps", "train_images", "selection_per_class")


def proxy_config(budget: Mapping[str, int | None] | None = None) -> ProxyConfig:
    """The default :class:`~trials.proxy.ProxyConfig` with the budget fields given (None: not given)."""
    from trials.proxy import ProxyBudget, ProxyConfig

    given = {k: v for k, v in (budget or {}).items() if v is not None}
    unknown = sorted(set(given) - {f.name for f in dataclasses.fields(ProxyBudget)})
    if unknown:
        raise SearchError(f"unknown proxy budget field(s) {unknown}", f"known: {', '.join(BUDGET_FIELDS)}")
    config = ProxyConfig(budget=ProxyBudget(**given))
    config.validate()
    return config


def search_inputs(data: DataSettings | str | os.PathLike[str] | None = None, recipe: Recipe | None = None,
                  proxy: ProxyConfig | None = None) -> tuple[DataSettings, Recipe, ProxyConfig]:
    """What a search trains and scores on: the data settings (default: the embedded digits; a bare path
    means its default splits; a folder's path is made absolute, so that the study's record reads from
    anywhere), the recipe (default: the data's, ``Recipe.for_data``) and the proxy config (default budget)
    carrying that recipe."""
    from trials.data import DataSettings
    from trials.recipe import Recipe

    if isinstance(data, (str, os.PathLike)):
        data = DataSettings(path=os.fspath(data))
    settings = data or DataSettings()
    if settings.path is not None:
        settings = settings.replace(path=str(Path(settings.path).expanduser().resolve()))
    chosen = recipe or Recipe.for_data(settings.path)
    chosen.validate()
    budget = proxy or proxy_config()
    if budget.recipe is not None and budget.recipe != chosen:
        raise SearchError(f"the proxy's recipe ({budget.recipe.describe()}) is not the search's "
                          f"({chosen.describe()})", "give the recipe once: the proxy trains with it")
    return settings, chosen, dataclasses.replace(budget, recipe=chosen)


def proxy_evaluator(config: ProxyConfig | None = None, *, repeats: int = 1, zero_cost: bool = False) -> AccuracyFn:
    """The default accuracy of a search: the proxy with ``repeats`` seeds (plus zero-cost scores if asked).

    Returns ``top1`` and ``balanced_acc`` (means over the seeds), ``acc_low/high`` and ``bacc_low/high``
    (bootstrap intervals), with 2+ seeds ``acc_seeds``, ``bacc_seeds``, ``acc_sd``, ``bacc_sd``, and the
    runs' ``wall_s`` (total), ``epochs``, ``steps``, ``train_images``, ``selection_images``, ``resolution``.
    """
    from trials.proxy import proxy_accuracy

    configs = seed_configs(config, repeats)

    def evaluate(spec: ArchSpec, data: DataBundle | None) -> dict[str, float | list[float]]:
        out = summarize([proxy_accuracy(spec, data, c) for c in configs])
        return out | (_zero_cost(spec, data) if zero_cost else {})

    return evaluate


def rung_evaluator(config: ProxyConfig | None = None, *, repeats: int = 1, zero_cost: bool = False) -> RungAccuracyFn:
    """The accuracy of a multi-fidelity search (:mod:`nas.fidelity`): :func:`trials.rungs.rung_accuracy` with
    ``repeats`` seeds, each continuing in its own subfolder ``seed<S>`` of the spec's rung folder.

    Returns what :func:`proxy_evaluator` does, with ``epochs``/``steps`` where the runs stand, and
    ``continued_from`` (the epoch this call took them up at; 0: from scratch).
    """
    from trials.rungs import rung_accuracy

    configs = seed_configs(config, repeats)

    def evaluate(spec: ArchSpec, data: DataBundle | None, epochs: int,
                 folder: Path | None) -> dict[str, float | list[float]]:
        runs = [rung_accuracy(spec, data, c, epochs, None if folder is None else folder / f"seed{c.budget.seed}")
                for c in configs]
        out = summarize(runs) | {"continued_from": runs[0].start_epoch}
        return out | (_zero_cost(spec, data) if zero_cost else {})

    return evaluate


def seed_configs(config: ProxyConfig | None, repeats: int) -> list[ProxyConfig]:
    """``config`` (default: the default proxy) with ``repeats`` consecutive seeds: ``seed``, ``seed + 1``, …"""
    from trials.proxy import ProxyConfig

    base = config or ProxyConfig()
    if repeats < 1:
        raise SearchError(f"repeats must be at least 1, got {repeats}", "use 1 for one proxy seed per spec")
    return [dataclasses.replace(base, budget=dataclasses.replace(base.budget, seed=base.budget.seed + i))
            for i in range(repeats)]


def _zero_cost(spec: ArchSpec, data: DataBundle | None) -> dict[str, float]:
    from trials.zero_cost import zero_cost_scores

    return {f"zc_{k}": v for k, v in zero_cost_scores(spec, data).items() if k not in ("params", "macs")}


def summarize(runs: list[ProxyResult]) -> dict[str, float | list[float]]:
    """Mean accuracy of proxy runs (one per seed, same scored images) with its uncertainty and the cost."""
    labels = np.asarray(runs[0].selection_labels, dtype=np.int64)
    if any(r.selection_labels != runs[0].selection_labels for r in runs):
        raise SearchError("the proxy runs of one spec scored different selection images",
                          "keep the data and the proxy's selection budget fixed across seeds")
    correct = np.vstack([np.asarray(r.selection_predictions) == labels for r in runs])
    estimate = accuracy_estimate(labels, correct)
    first = runs[0]
    return {"top1": estimate.top1, "balanced_acc": estimate.balanced_acc, **estimate.attrs(),
            "wall_s": float(sum(r.wall_s for r in runs)), "epochs": first.epochs, "steps": first.steps,
            "train_images": first.train_images, "selection_images": first.selection_images,
            "resolution": first.resolution}


def trial_attrs(accuracy: Accuracy) -> dict[str, float | list[float]]:
    """The trial attributes of an accuracy result: ``acc``, ``bacc``, the uncertainty attributes and ``zc_*``
    under their own names, every other figure as ``proxy_<name>``."""
    out: dict[str, float | list[float]] = {"acc": float(accuracy["top1"]),  # type: ignore[arg-type]
                                           "bacc": float(accuracy["balanced_acc"])}  # type: ignore[arg-type]
    for key, value in accuracy.items():
        if key in ("top1", "balanced_acc"):
            continue
        out[key if key in ACCURACY_ATTRS or key.startswith("zc_") else f"proxy_{key}"] = value
    return out


def inherited(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes a duplicate trial copies from the trial that evaluated its spec (accuracy and proxy)."""
    return {k: v for k, v in attrs.items()
            if k in ("acc", "bacc", *ACCURACY_ATTRS) or k.startswith(("proxy_", "zc_"))}
