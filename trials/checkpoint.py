"""Training checkpoints: :class:`Checkpoint` is the one owner of the file format.

A checkpoint is one ``torch.save`` dict, written atomically and read back with ``weights_only=True``::

    format, version          "repvgg-hwnas-checkpoint", 2
    spec                     ArchSpec.to_dict()
    config                   TrainConfig.to_dict() (the full training configuration, recipe included)
    classes                  class names, in label order
    model_form               "train" (multi-branch) or "deploy" (re-parameterized 3×3 convs)
    epoch, step              completed epochs and optimizer steps
    model                    state_dict of the unwrapped model
    optimizer, scheduler     state_dicts (resume only)
    scaler, loss             GradScaler and loss state_dicts (EQLv2 keeps running gradient statistics)
    rng                      torch / CUDA / numpy / Python RNG states at the end of ``epoch``
    history, best, metrics   per-epoch records, the best epoch by selection balanced accuracy, final metrics
    data                     {"settings": DataSettings.to_dict() or null, "report": DataReport.to_dict()}
    scales                   repopt block only: the gradient-mask scales (trials.repopt.Scales.to_dict(), the
                             scales file's JSON body), so that resuming and exporting need no other file

Version 1 files still load: their flat ``data`` entry (report plus ``val_ratio``, ``long_tail``, ``augment``,
``seed``, …) becomes settings and recipe fields, their flat ``loss``/``data_sampler``/``label_smoothing``
join the recipe, ``val_*`` history keys become ``selection_*``. A version-1 run on a folder without a
``val/`` folder predates the held-out test split, so its test images may have been trained on; such a
checkpoint carries a note saying so (:attr:`Checkpoint.notes`).

Only plain containers, numbers, strings and tensors are stored, so ``torch.load(weights_only=True)``
reads it without executing pickled code; a file that holds anything else (pickled objects, code) is refused
as such, not called damaged. No other module spells these keys: training builds a :class:`Checkpoint` and
writes it; every reader calls :meth:`Checkpoint.read` once and passes the object on.

A process killed while writing leaves its temp file (``.last.pt.<random>.tmp``, made by
:func:`search_space.io.atomic_write`) beside the checkpoint. Its name does not say who wrote it, so its age
does: a live writer writes and renames its temp within seconds, so one unchanged for
:data:`STALE_TEMP_SECONDS` is an orphan, and :func:`remove_stale_temps` (called by :meth:`Checkpoint.write`
and at the start of ``nas train``) removes it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from search_space.errors import NasError
from search_space.io import atomic_write
from search_space.model import RepVGG, reparameterize
from search_space.model import build_model as build_repvgg
from search_space.spec import ArchSpec
from trials.config import RESUME_FREE, TrainConfig
from trials.data import DEFAULT_SELECTION_RATIO, DataSettings
from trials.errors import TrainError
from trials.folders import LAYOUT_FOLDERS
from trials.repopt import Scales

FORMAT = "repvgg-hwnas-checkpoint"
VERSION = 2
READABLE_VERSIONS = (1, 2)
REQUIRED_KEYS = ("format", "version", "spec", "config", "classes", "model")
MODEL_FORMS = ("train", "deploy")
#: History keys of version 1 and their current names.
RENAMED_HISTORY_KEYS = {"val_top1": "selection_top1", "val_balanced_acc": "selection_balanced_acc"}
#: A torch ``state_dict``: tensors in plain (possibly nested) containers.
StateDict = dict[str, Any]
#: A checkpoint temp file unchanged this long is an orphan of a killed writer (see the module notes).
STALE_TEMP_SECONDS = 600
#: ``.<name>.<8 random characters>.tmp``: the temp files :func:`search_space.io.atomic_write` makes.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")
LEGACY_TEST_NOTE = ("this checkpoint predates the held-out test split: its test images were carved later from "
                    "images it may have trained on, so its test figures are optimistic")


# -- version 1 ---------------------------------------------------------------------------------------

def _legacy_recipe_fields(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """The data-side recipe fields a version-1 ``data`` entry recorded (absent ones are left out)."""
    if isinstance(recorded.get("recipe"), Mapping):  # written after the recipe existed
        recipe = recorded["recipe"]
        return {k: recipe[k] for k in ("hflip", "crop_scale", "crop_ratio", "randaugment", "long_tail") if k in recipe}
    out: dict[str, Any] = {"long_tail": recorded.get("long_tail")}
    augment = recorded.get("augment")
    if isinstance(augment, Mapping):  # TrainAugment.to_dict(): scale, ratio, hflip (a bool then), randaugment
        flip = augment.get("hflip")
        out.update(crop_scale=augment.get("scale"), crop_ratio=augment.get("ratio"),
                   hflip=(0.5 if flip else 0.0) if isinstance(flip, bool) else flip,
                   randaugment=augment.get("randaugment"))
    elif isinstance(augment, bool):
        out["randaugment"] = augment
    return {k: v for k, v in out.items() if v is not None or k == "long_tail"}


def _legacy_data(recorded: Mapping[str, Any], seed: int) -> tuple[DataSettings, tuple[str, ...]]:
    """Settings of a version-1 ``data`` entry (the report plus the load options) and the notes it calls for.

    ``path``: the recorded one, else the report's source unless that is the embedded digits; the split seed
    falls back to ``seed`` (the training seed, which was the split seed of ``nas train``)."""
    if "path" in recorded:
        path = recorded.get("path")
    else:
        source = recorded.get("source")
        path = source if source and not str(source).startswith("embedded:") else None
    ratio = recorded.get("selection_ratio") or recorded.get("val_ratio") or DEFAULT_SELECTION_RATIO
    split_seed = recorded.get("seed", recorded.get("split_seed"))
    body = {"path": path, "selection_ratio": ratio, "seed": seed if split_seed is None else split_seed,
            "max_per_class": recorded.get("max_per_class")}
    if recorded.get("test_ratio") is not None:
        body["test_ratio"] = recorded["test_ratio"]
    settings = DataSettings.from_dict(body)
    two_splits = "test_images" not in recorded and recorded.get("layout") != LAYOUT_FOLDERS
    return settings, (LEGACY_TEST_NOTE,) if two_splits else ()


def _read_data(state: Mapping[str, Any], config: TrainConfig) -> tuple[DataSettings | None, dict[str, Any],
                                                                           TrainConfig, tuple[str, ...]]:
    """``(settings, report, config, notes)`` of a checkpoint's ``data`` entry, either version (a malformed
    entry raises a :class:`~search_space.errors.NasError`)."""
    recorded = state.get("data") or {}
    if not isinstance(recorded, Mapping):
        raise TrainError("the checkpoint's data entry is not a mapping", "the file is damaged")
    if state["version"] == 1:
        settings, notes = _legacy_data(recorded, config.seed)
        return settings, dict(recorded), config.replace(**_legacy_recipe_fields(recorded)), notes
    raw = recorded.get("settings")
    settings = DataSettings.from_dict(raw) if isinstance(raw, Mapping) else None
    return settings, dict(recorded.get("report") or {}), config, ()


# -- the checkpoint ----------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)  # eq=False: tensors have no single truth value, so field-wise == fails
class TrainingState:
    """What resuming restores besides the model: optimizer, scheduler, scaler, loss statistics, RNG states."""

    optimizer: StateDict
    scheduler: StateDict
    scaler: StateDict
    loss: StateDict
    rng: StateDict


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """One training checkpoint: the trained weights and everything needed to rebuild or resume them.

    Read a file with :meth:`read` (once per command; pass the object on), write one with :meth:`write`.
    ``data`` reloads the splits it was trained on (None: not recorded, e.g. trained on a hand-made bundle),
    ``data_report`` is the load's :class:`trials.data.DataReport` as a dict, and the recipe is
    ``config.recipe``. ``training`` is None in a model-only checkpoint (it can be evaluated and exported,
    not resumed). ``source`` and ``sha256`` describe the file it was read from (None when built in memory);
    ``notes`` are caveats found when reading it (an old format), for the user. ``scales`` are the repopt
    block's gradient-mask scales (None for the other blocks).
    """

    spec: ArchSpec
    config: TrainConfig
    classes: list[str]
    model: StateDict
    model_form: str = "train"
    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    data: DataSettings | None = None
    data_report: dict[str, Any] = field(default_factory=dict)
    training: TrainingState | None = None
    source: Path | None = None
    sha256: str | None = None
    notes: tuple[str, ...] = ()
    scales: Scales | None = None

    def __post_init__(self) -> None:
        if self.model_form not in MODEL_FORMS:
            raise TrainError(f"{self._name} has unknown model_form {self.model_form!r}",
                             f"expected one of {', '.join(MODEL_FORMS)}")
        if len(self.classes) != self.spec.num_classes:
            raise TrainError(f"{self._name} names {len(self.classes)} classes but its spec has "
                             f"{self.spec.num_classes}", "the class list must match the spec's class count")

    @property
    def _name(self) -> str:
        return f"checkpoint {self.source}" if self.source is not None else "the checkpoint"

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Checkpoint:
        """Read a checkpoint file (its bytes once; ``weights_only=True``: no pickled code runs).

        Missing, truncated, corrupt or foreign files raise :class:`TrainError` with one clear line.
        """
        source = Path(path)
        if not source.is_file():
            raise TrainError(f"checkpoint {source} does not exist", "give the last.pt or best.pt of a training run")
        try:
            raw = source.read_bytes()
        except OSError as exc:
            raise TrainError(f"cannot read checkpoint {source}: {exc.strerror or exc}",
                             "check that the file is readable") from exc
        try:
            state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            code = _unsafe_content(exc)
            if code is None:
                raise TrainError(f"checkpoint {source} is truncated or corrupt ({_load_error(exc, raw)})",
                                 "use another checkpoint (best.pt / last.pt) or train again") from exc
            raise TrainError(f"refused checkpoint {source}: not a plain-weights checkpoint (it contains code: "
                             f"{code})", "use a checkpoint written by nas train; a file that would run code is "
                                         "never loaded") from exc
        except Exception as exc:  # torch raises RuntimeError, EOFError, OSError, KeyError, … for damaged files
            raise TrainError(f"checkpoint {source} is truncated or corrupt ({_load_error(exc, raw)})",
                             "use another checkpoint (best.pt / last.pt) or train again") from exc
        return cls._from_state(state, source, hashlib.sha256(raw).hexdigest())

    @classmethod
    def _from_state(cls, state: object, source: Path, sha256: str) -> Checkpoint:
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise TrainError(f"{source} is not a repvgg-hwnas checkpoint", "give a checkpoint of a training run")
        if state.get("version") not in READABLE_VERSIONS:
            raise TrainError(f"checkpoint {source} has format version {state.get('version')}, expected {VERSION}",
                             "train again with this version of the tool")
        missing = [k for k in REQUIRED_KEYS if k not in state]
        if missing:
            raise TrainError(f"checkpoint {source} lacks {missing}", "the file is incomplete; train again")
        try:
            spec = ArchSpec.from_dict(dict(state["spec"]))
            config = TrainConfig.from_dict(dict(state["config"]))
            settings, report, config, notes = _read_data(state, config)
        except NasError as exc:
            raise TrainError(f"checkpoint {source} holds an invalid spec, config or data record: {exc.message}",
                             "the file is damaged") from exc
        resume_keys = [f.name for f in fields(TrainingState)]
        training = TrainingState(**{k: state[k] for k in resume_keys}) if all(k in state for k in resume_keys) else None
        history = [{RENAMED_HISTORY_KEYS.get(k, k): v for k, v in h.items()} for h in state.get("history") or []]
        scales = Scales.from_dict(state["scales"], f"{source}") if state.get("scales") is not None else None
        metrics = state.get("metrics")
        if isinstance(metrics, Mapping):
            metrics = {RENAMED_HISTORY_KEYS.get(k, k): v for k, v in metrics.items()}
        return cls(spec, config, [str(c) for c in state["classes"]], state["model"],
                   model_form=state.get("model_form", "train"), epoch=int(state.get("epoch", 0)),
                   step=int(state.get("step", 0)), history=history, best=state.get("best"), metrics=metrics,
                   data=settings, data_report=report, training=training, source=source, sha256=sha256, notes=notes,
                   scales=scales)

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the checkpoint to ``path`` atomically (a complete file or none); return the path.

        The parent folder is created if needed; orphaned temp files of ``path`` are removed first.
        """
        target = Path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(target.parent, [target.name])
            with atomic_write(target, "wb") as handle:
                torch.save(self._state(), handle)
        except OSError as exc:
            raise TrainError(f"cannot write checkpoint {target}: {exc.strerror or exc}",
                             "check that the output folder is writable and the disk is not full") from exc
        return target

    def _state(self) -> dict[str, object]:
        state: dict[str, object] = {
            "format": FORMAT, "version": VERSION, "spec": self.spec.to_dict(), "config": self.config.to_dict(),
            "classes": list(self.classes), "model_form": self.model_form, "epoch": self.epoch, "step": self.step,
            "model": self.model, "history": self.history, "best": self.best, "metrics": self.metrics,
            "data": {"settings": None if self.data is None else self.data.to_dict(),
                     "report": json.loads(json.dumps(self.data_report, default=str))},
        }
        if self.training is not None:
            state.update({f.name: getattr(self.training, f.name) for f in fields(TrainingState)})
        if self.scales is not None:
            state["scales"] = self.scales.to_dict()
        return state

    def build_model(self, deploy: bool = False) -> RepVGG:
        """The trained model, in eval mode, on the CPU; ``deploy=True`` re-parameterizes it into plain 3×3 convs.

        The state dict is loaded strictly: any missing or unexpected tensor is an error, never skipped.
        """
        model = build_repvgg(self.spec, deploy=self.model_form == "deploy")
        try:
            model.load_state_dict(self.model, strict=True)
        except (RuntimeError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0][:200]
            raise TrainError(f"{self._name} does not fit its own spec {self.spec}: {first}",
                             "the file is damaged or was edited; train again") from exc
        model.eval()
        if deploy:
            model = reparameterize(model, inplace=True)  # type: ignore[assignment]
        return model

    def check_resume(
        self, spec: ArchSpec, config: TrainConfig, classes: list[str], free: tuple[str, ...] = RESUME_FREE,
        *, data: DataSettings | None = None,
    ) -> None:
        """Refuse to resume with another spec, config (except the ``free`` fields), class list or data
        settings (``data``, when both it and the checkpoint's are known).

        The error names every differing field with its old and new value (recipe fields as ``recipe.NAME``).
        ``epochs`` may only grow.
        """
        if self.training is None:
            raise TrainError(f"cannot resume {self._name}: it holds the model only, no training state",
                             "resume from the last.pt of a training run")
        old_spec, new_spec = self.spec.to_dict(), spec.to_dict()
        spec_diff = [k for k, v in new_spec.items() if old_spec.get(k) != v]
        if spec_diff:
            raise TrainError(f"cannot resume {self._name}: the spec differs in {', '.join(spec_diff)} "
                             f"({self.spec} vs {spec})", "resume with the same architecture or use a new output folder")
        old, new = _flat_config(self.config), _flat_config(config)
        diff = [k for k in new if k not in free and old.get(k) != new[k]]
        if diff:
            detail = ", ".join(f"{k}: {old.get(k)!r} → {new[k]!r}" for k in diff)
            raise TrainError(f"cannot resume {self._name}: the training config differs ({detail})",
                             f"only {', '.join(free) or 'nothing'} may change when resuming; or use a new output "
                             "folder")
        if spec.block == "repopt" and self.scales is None:
            raise TrainError(f"cannot resume {self._name}: it trains the repopt block but records no scales",
                             "train it again from the start")
        if config.epochs < self.epoch:
            raise TrainError(f"cannot resume {self._name}: it has {self.epoch} epochs done, the config asks for "
                             f"{config.epochs}", "epochs may only be extended")
        if data is not None and self.data is not None and data != self.data:
            was, now = self.data.to_dict(), data.to_dict()
            detail = ", ".join(f"{k}: {was[k]!r} → {now[k]!r}" for k in now if was[k] != now[k])
            raise TrainError(f"cannot resume {self._name}: the data settings differ ({detail})",
                             "resume on the same data and splits, or use a new output folder")
        if list(classes) != list(self.classes):
            raise TrainError(f"cannot resume {self._name}: the data's classes differ from the checkpoint's",
                             "resume on the same data")


def _unsafe_content(exc: pickle.UnpicklingError) -> str | None:
    """The global ``weights_only`` refused to call (``posix.system``, ``__main__.Model``): the file holds
    code, not plain weights; None when the unpickling error is damage instead."""
    found = re.search(r"\bGLOBAL ([\w.]+)", str(exc))
    return found[1] if found else None


def _load_error(exc: BaseException, raw: bytes) -> str:
    """Why ``torch.load`` failed, in whole words: the first sentence of torch's (or its unpickler's) message,
    or what the bytes are when that names nothing (``KeyError: '101'`` for a file that is not a torch file)."""
    if not raw:
        return "the file is empty"
    if not raw.startswith((b"PK\x03\x04", b"\x80")):  # a zip archive (torch.save) or a legacy pickle
        return "not a PyTorch file"
    text = str(exc).split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or isinstance(exc, KeyError):
        return type(exc).__name__
    return lines[0].split(". ")[0].rstrip(".")


def remove_stale_temps(folder: str | os.PathLike[str], names: Iterable[str],
                       max_age: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Remove the orphaned temp files of ``names`` in ``folder`` (``.last.pt.<random>.tmp`` for ``last.pt``):
    those unchanged for ``max_age`` seconds. Returns what was removed; a file that vanishes meanwhile is
    skipped."""
    wanted, removed = set(names), []
    now = time.time()
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None or match["name"] not in wanted:
            continue
        try:
            if entry.is_file() and now - entry.stat().st_mtime >= max_age:
                entry.unlink()
                removed.append(entry)
        except OSError:
            continue
    return removed


def _flat_config(config: TrainConfig) -> dict[str, Any]:
    """The config's fields with the recipe's spelled ``recipe.NAME`` (for naming differences)."""
    body = config.to_dict()
    recipe = body.pop("recipe")
    return {**body, **{f"recipe.{k}": v for k, v in recipe.items()}}


# -- RNG state ---------------------------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """Every global RNG state that training touches, in a ``weights_only``-loadable form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the states captured by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
