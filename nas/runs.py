"""Training runs for the CLI and notebooks: arch text + data, recipe and config overrides → a run folder.

``run_training`` resolves the architecture (its class count follows the data), decides the data and the
recipe (:func:`plan_data`: what a checkpoint or a study recorded, else the defaults, then the overrides
given), loads the data, trains with :func:`trials.train.train`, and writes ``metrics.json`` beside
``last.pt`` / ``best.pt`` (and, for the repopt block, the ``scales.json`` it trained with). With
``resume=True`` every option that is not given is taken from the folder's ``last.pt``; :func:`train_trial`
trains a trial of a study on the data and recipe the study recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search_space import ArchSpec, parse_arch
from search_space.errors import NasError, SpecError
from search_space.io import atomic_write
from trials.config import DATA_SAMPLERS as DATA_SAMPLERS  # re-exported (torch-free) for the command line
from trials.config import LOSSES as LOSSES
from trials.errors import TrainError

if TYPE_CHECKING:
    import optuna

    from nas.study import RecordedData
    from trials.checkpoint import Checkpoint
    from trials.config import TrainConfig
    from trials.data import DataBundle, DataSettings
    from trials.recipe import Recipe
    from trials.train import TrainResult

#: The files a run writes into its folder (each atomically, through a temp file beside it).
RUN_FILES = ("last.pt", "best.pt", "metrics.json", "scales.json")
SCALES_NAME = RUN_FILES[3]
HISTORY_COLUMNS = ["epoch", "step", "train_loss", "selection_top1", "selection_balanced_acc", "lr", "images_per_s",
                   "wall_s"]
Note = Callable[[str], None]


# -- which data, which recipe ---------------------------------------------------------------------------

@dataclass
class DataPlan:
    """The data settings and recipe a command uses, why (``notes``), and the study record to check the
    loaded data against (``record``; None when there is none or flags replaced the recorded data)."""

    settings: DataSettings
    recipe: Recipe
    notes: list[str] = field(default_factory=list)
    record: RecordedData | None = None

    def load(self, resolution: int, note: Note | None = None) -> DataBundle:
        """Load the data at ``resolution`` with the recipe and check it against the study's record; the
        loader's warnings and report lines go to ``note``."""
        say = note or (lambda _text: None)
        if self.record is not None:
            self.record.check_source()  # a missing folder: one line naming the study's data
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            bundle = self.settings.load(resolution, self.recipe)
        if self.record is not None:
            self.record.check(bundle)
        for w in caught:
            say(f"data: {w.message}")
        for line in bundle.report.lines():
            say(line)
        return bundle


def _given(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (overrides or {}).items() if v is not None}


def plan_data(
    data: Mapping[str, Any] | None = None,
    recipe: Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    recorded: RecordedData | None = None,
    checkpoint: Checkpoint | None = None,
    source: str = "the study",
) -> DataPlan:
    """Decide the data settings and recipe: the ``checkpoint``'s or the ``recorded`` study's, else the
    defaults for the data (the split seed then is ``seed``), with the ``data`` and ``recipe`` overrides
    (keys whose value is None are not given) on top.

    Overriding recorded data settings is allowed and noted; the study's record is then not checked.
    A checkpoint that does not record its data needs at least a data path.
    """
    from trials.data import DataSettings
    from trials.recipe import Recipe

    given_data, given_recipe = _given(data), _given(recipe)
    if given_data.get("path") is not None:  # as load_data records it, so the same folder compares equal
        given_data["path"] = str(Path(given_data["path"]).expanduser().absolute())
    notes: list[str] = []
    if checkpoint is not None:
        base = checkpoint.data
        if base is None and "path" not in given_data:
            raise TrainError(f"{source} does not record the data it was trained on",
                             "give the data folder it was trained on")
        base = base or DataSettings(seed=checkpoint.config.seed)
        base_recipe = checkpoint.config.recipe
    elif recorded is not None:
        base, base_recipe = recorded.settings, recorded.recipe
    else:
        path = given_data.get("path")
        base, base_recipe = DataSettings(path=path, seed=seed), Recipe.for_data(path)
    settings = base.replace(**given_data)
    if (checkpoint is not None or recorded is not None) and settings != base:
        notes.append(f"data: {_changes(base.to_dict(), settings.to_dict())} as given, instead of {source}'s")
    plan_recipe = base_recipe.replace(**given_recipe)
    if recorded is not None and plan_recipe != base_recipe:
        notes.append(f"recipe: {_changes(base_recipe.to_dict(), plan_recipe.to_dict())} as given, instead of "
                     f"{source}'s")
    keep_record = recorded is not None and settings == base and plan_recipe.long_tail == base_recipe.long_tail
    return DataPlan(settings, plan_recipe, notes, recorded if keep_record else None)


def _changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """``name new (was old), …`` for the fields that differ."""
    return ", ".join(f"{k} {new[k]} (was {old.get(k)})" for k in new if new[k] != old.get(k))


# -- the run --------------------------------------------------------------------------------------------

@dataclass
class TrainingRun:
    """What :func:`run_training` did: the spec, the config, the result and the files it wrote."""

    spec: ArchSpec
    config: TrainConfig
    result: TrainResult
    out_dir: Path
    data: DataSettings
    notes: list[str]

    def summary(self) -> dict[str, Any]:
        """Final metrics plus where the checkpoints are (one flat JSON-able dict)."""
        m = dict(self.result.metrics)
        return {**m, "config": self.config.to_dict(), "data": self.data.to_dict(),
                "checkpoint_best": str(self.out_dir / "best.pt"), "checkpoint_last": str(self.out_dir / "last.pt")}


def training_spec(
    arch: str | ArchSpec, num_classes: int, resolution: int | None = None, classes_from_data: bool = False,
    block: str | None = None,
) -> tuple[ArchSpec, list[str]]:
    """The spec to train for data with ``num_classes`` classes, and notes on what was changed.

    Presets (1000 classes, 224 px by default) take the data's class count. A spec string that names a
    class count (``_cN``) must match the data unless ``classes_from_data``; without one it follows the data.
    ``block`` (when given) replaces the architecture's block type.
    """
    notes: list[str] = []
    if isinstance(arch, ArchSpec):
        spec, explicit_classes = (arch if block is None else arch.replace(block=block)), True
    else:
        ref = parse_arch(arch)
        spec = ref.resolve(resolution, block=block)
        explicit_classes = ref.fixes("num_classes")
        if ref.is_preset:
            if resolution is None:
                notes.append(f"preset {ref.text} trains at its default {spec.resolution} px "
                             "(give a resolution to change it)")
            notes.append(f"preset {ref.text} defaults to 1000 classes; using the data's {num_classes}")
    if resolution is not None and spec.resolution != resolution:
        spec = spec.replace(resolution=resolution)
    if spec.num_classes != num_classes:
        if explicit_classes and not classes_from_data:
            raise SpecError(f"the spec has {spec.num_classes} classes but the data has {num_classes}",
                            "let the class count follow the data, or give a spec with the data's class count")
        spec = spec.replace(num_classes=num_classes)
    return spec, notes


def run_training(
    arch: str | ArchSpec | None,
    out_dir: str | os.PathLike[str],
    *,
    data: Mapping[str, Any] | None = None,
    recipe: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    resolution: int | None = None,
    block: str | None = None,
    classes_from_data: bool = False,
    resume: bool = False,
    recorded: RecordedData | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    on_note: Note | None = None,
) -> TrainingRun:
    """Train ``arch`` into ``out_dir`` and write ``metrics.json`` there; return the :class:`TrainingRun`.

    ``data``: :class:`trials.data.DataSettings` fields (``path`` None = embedded digits, ``selection_ratio``,
    ``test_ratio``, ``max_per_class``; a new run's split seed is the training seed); ``recipe``:
    :class:`trials.recipe.Recipe` fields; ``config``: :class:`trials.config.TrainConfig` budget and runtime
    fields. Each overrides the defaults, or what ``recorded`` (a study's record) or, when resuming,
    ``out_dir/last.pt`` holds; keys whose value is None are ignored; ``block`` replaces the architecture's
    block type. When resuming, ``last.pt`` is read once and handed to :func:`trials.train.train`. A run that
    fails before its first checkpoint leaves no folder it made; the orphaned temp files of a killed run in
    ``out_dir`` are removed.
    """
    from trials.checkpoint import remove_stale_temps
    from trials.config import TrainConfig
    from trials.train import train

    note = on_note or (lambda _text: None)
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise TrainError(f"output folder {out} is a file", "give a folder for the checkpoints")
    if out.is_dir():
        remove_stale_temps(out, RUN_FILES)
    previous: Checkpoint | None = None
    if resume:
        previous = _previous_run(out)
        base = previous.config
        arch = arch or previous.spec.to_string()
        resolution = resolution or previous.spec.resolution
        note(f"resuming {out / 'last.pt'}: unset options come from the checkpoint")
    else:
        if (out / "last.pt").exists():
            raise TrainError(f"{out} already holds a checkpoint", "resume it, or train into a new output folder")
        if arch is None:
            raise TrainError("no architecture given", "name a preset (e.g. A0) or give a spec string")
        base = TrainConfig()
    config = _scales_path(config)
    seed = _given(config).get("seed", base.seed)
    plan = plan_data(data, recipe, seed=seed, recorded=recorded, checkpoint=previous,
                     source=f"checkpoint {out / 'last.pt'}" if previous is not None else "the study")
    cfg = TrainConfig.from_dict({**base.to_dict(), **_given(config), "recipe": plan.recipe.to_dict()})
    cfg.validate()
    _check_runtime(cfg)
    if previous is not None:  # refuse a changed config before spending time on the data (train() checks all again)
        previous.check_resume(previous.spec, cfg, previous.classes, data=plan.settings)
    probe = arch if isinstance(arch, ArchSpec) else parse_arch(arch).resolve(resolution, block=block)  # fails fast
    for line in plan.notes:
        note(line)
    loaded: list[str] = []  # the data report is shown once the data is known to fit the spec
    bundle = plan.load(resolution if resolution is not None else probe.resolution, loaded.append)
    spec, notes = training_spec(arch, len(bundle.classes), resolution, classes_from_data, block)
    for line in [*loaded, *notes]:
        note(line)
    with _removed_if_empty_on_failure(out):
        result = train(spec, bundle, cfg, out_dir=out, resume=previous if previous is not None else False,
                       on_progress=on_progress)
    run = TrainingRun(spec, cfg, result, out, plan.settings, [*plan.notes, *notes])
    if _is_main_process():
        with atomic_write(out / "metrics.json") as handle:
            json.dump({**run.summary(), "history": result.history}, handle, indent=2, default=str)
            handle.write("\n")
        if result.scales is not None:  # reusable: another run of the same architecture can train with them
            result.scales.write(out / SCALES_NAME)
    return run


def _scales_path(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """``config`` with a scales file given as an absolute path (as checkpoints then record it)."""
    from trials.config import SEARCH_SCALES

    body = dict(config or {})
    scales = body.get("scales")
    if scales is not None and scales != SEARCH_SCALES:
        body["scales"] = str(Path(scales).expanduser().absolute())
    return body


def _check_runtime(config: TrainConfig) -> None:
    """Refuse an unknown or absent device, and float16 without CUDA, before the data is loaded
    (:func:`trials.train.train` checks both again)."""
    from trials.distributed import resolve_device

    if resolve_device(config.device).type != "cuda" and config.amp:
        raise TrainError("amp (float16 autocast) needs a CUDA device", "train without amp on the CPU")


@contextlib.contextmanager
def _removed_if_empty_on_failure(out: Path) -> Iterator[None]:
    """Create ``out`` (and its missing parents) for a run; if the run fails, remove the folders made here
    that are still empty (a run that fails before its first checkpoint leaves nothing behind)."""
    made = [p for p in (out, *out.parents) if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for folder in made:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: never removes a file
        raise


def _previous_run(out: Path) -> Checkpoint:
    """The checkpoint to resume: ``out/last.pt``, read once."""
    from trials.checkpoint import Checkpoint

    if not (out / "last.pt").is_file():
        raise TrainError(f"nothing to resume: {out / 'last.pt'} does not exist",
                         "resume needs the output folder of an earlier run")
    return Checkpoint.read(out / "last.pt")


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


# -- trials of a study ----------------------------------------------------------------------------------

class TrialError(NasError):
    """A trial that does not exist or carries no spec."""


def trial_spec(study: optuna.Study, number: int) -> tuple[str, dict[str, Any]]:
    """The spec string of trial ``number`` of ``study`` and what the trial says about itself (for records)."""
    found = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if not found:
        numbers = [t.number for t in study.get_trials(deepcopy=False)]
        hint = f"its trials are {min(numbers)}..{max(numbers)}; see `nas pareto`" if numbers else "run nas search"
        raise TrialError(f"study {study.study_name!r} has no trial {number}", hint)
    trial = found[0]
    spec = trial.user_attrs.get("spec")
    if not isinstance(spec, str):
        raise TrialError(f"trial {number} of study {study.study_name!r} has no 'spec' attribute",
                         "use trials of a study made by nas search")
    _check_usable(trial, study.study_name, spec)
    values = list(trial.values) if trial.values is not None else None
    info = {"kind": "trial", "study": study.study_name, "trial": number, "state": trial.state.name,
            "values": values, "proxy_acc": trial.user_attrs.get("acc"), "proxy_bacc": trial.user_attrs.get("bacc")}
    return spec, info


def _check_usable(trial: optuna.trial.FrozenTrial, study_name: str, spec: str) -> None:
    """Refuse a trial that did not evaluate a feasible spec (failed, pruned, unfinished, a duplicate, or over
    the study's limits): training or exporting it would silently ignore what the search found."""
    name = f"trial {trial.number} of study {study_name!r}"
    anyway = f"to use its spec regardless, give it as the architecture: {spec}"
    twin = trial.user_attrs.get("duplicate_of")
    if twin is not None:
        raise TrialError(f"{name} is a duplicate of trial {twin}", f"use trial {twin}, which evaluated the spec")
    state, choose = trial.state.name, "choose a complete trial (the Pareto front lists them)"
    if state == "FAIL":
        problem = f"failed ({trial.user_attrs.get('fail_reason', 'no reason recorded')})"
    elif state != "COMPLETE":
        problem = {"PRUNED": "was pruned before it was evaluated", "RUNNING": "is still running",
                   "WAITING": "is queued, not evaluated yet"}.get(state, f"is {state.lower()}")
    elif any(v > 0 for v in trial.constraints.values()) or trial.user_attrs.get("feasible") is False:
        problem = f"is infeasible: {trial.user_attrs.get('infeasible_reason', 'it breaks the study limits')}"
        choose = "choose a feasible trial (the Pareto front lists them)"
    else:
        return
    raise TrialError(f"{name} {problem}", f"{choose}; {anyway}")


def study_record(study: optuna.Study, data: Mapping[str, Any] | None) -> RecordedData | None:
    """The data and recipe ``study`` recorded; a study without the record is a :class:`TrialError` unless
    ``data`` names a path (then None: the given data is used)."""
    from nas.study import recorded_data

    record = recorded_data(study)
    if record is None and _given(data).get("path") is None:
        raise TrialError(f"study {study.study_name!r} does not record the data and recipe it searched with",
                         "it was made by an older version: give the data folder (and the recipe) it used")
    return record


def train_trial(
    trial: int,
    out_dir: str | os.PathLike[str],
    *,
    study: str | None = None,
    storage: str | None = None,
    data: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> TrainingRun:
    """Train trial ``trial``'s spec of ``study`` (default: the storage's only study) fully, on the data and
    with the recipe the study recorded (``data`` and ``recipe`` overrides win, with a note). Other keyword
    arguments go to :func:`run_training`; the spec's class count must match the data."""
    from nas.storage import DEFAULT_STORAGE, load_study, storage_errors

    url = storage or DEFAULT_STORAGE
    st = load_study(url, study)
    with storage_errors(url):
        spec, _ = trial_spec(st, trial)
        record = study_record(st, data)
    note: Note = kwargs.get("on_note") or (lambda _text: None)
    note(f"trial {trial} of study {st.study_name!r}: {spec}, on "
         + ("the data and recipe the study recorded" if record is not None else "the data given"))
    return run_training(spec, out_dir, data=data, recorded=record, **kwargs)


def train_config(overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """The default :class:`~trials.config.TrainConfig` with ``overrides`` (config or recipe fields) applied;
    keys whose value is None are ignored; the budget is checked when training starts."""
    from trials.config import TrainConfig

    return TrainConfig().replace(**_given(overrides))


def set_torch_threads(threads: int | None) -> None:
    """Let torch use ``threads`` CPU threads in this process (None: leave torch's choice)."""
    if threads is None:
        return
    if threads < 1:
        raise TrainError(f"torch threads must be at least 1, got {threads}", "leave it unset for torch's choice")
    import torch

    torch.set_num_threads(threads)
