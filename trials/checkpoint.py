"""Training checkpoints: :class:`Checkpoint` is the one owner of the file format.

A checkpoint is one ``torch.save`` dict, written atomically and read back with ``weights_only=True``::

    format, version          "repvgg-hwnas-checkpoint", 1
    spec                     ArchSpec.to_dict()
    config                   TrainConfig.to_dict() (the full training configuration)
    classes                  class names, in label order
    model_form               "train" (multi-branch) or "deploy" (re-parameterized 3×3 convs)
    epoch, step              completed epochs and optimizer steps
    model                    state_dict of the unwrapped model
    optimizer, scheduler     state_dicts (resume only)
    scaler, loss             GradScaler and loss state_dicts (EQLv2 keeps running gradient statistics)
    rng                      torch / CUDA / numpy / Python RNG states at the end of ``epoch``
    history, best, metrics   per-epoch records, the best epoch by val balanced accuracy, final metrics
    data                     the data report plus how the data was loaded (:class:`DataSettings`)

Only plain containers, numbers, strings and tensors are stored, so ``torch.load(weights_only=True)``
reads it without executing pickled code. No other module spells these keys: training builds a
:class:`Checkpoint` and writes it; every reader calls :meth:`Checkpoint.read` once and passes the object on.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
from collections.abc import Mapping
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
from trials.errors import TrainError

FORMAT = "repvgg-hwnas-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "spec", "config", "classes", "model")
MODEL_FORMS = ("train", "deploy")
#: A torch ``state_dict``: tensors in plain (possibly nested) containers.
StateDict = dict[str, Any]


# -- how the data was loaded -------------------------------------------------------------------------

def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class DataSettings:
    """How a run's data was loaded, recorded so that evaluation and export reload the very same split.

    The fields are :func:`trials.data.load_data`'s options (``path=None``: the embedded digits) plus the
    resolution; ``report`` is the load's :class:`trials.data.DataReport` as a dict.
    """

    path: str | None = None
    val_ratio: float = 0.1
    long_tail: str | None = None
    seed: int = 0
    max_per_class: int | None = None
    augment: bool = False
    resolution: int | None = None
    report: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def from_recorded(cls, recorded: Mapping[str, Any], default_seed: int = 0) -> DataSettings:
        """Read a checkpoint's ``data`` entry; what it lacks falls back as follows.

        ``path``: the report's source unless that is the embedded digits; ``val_ratio``: 0.1 when not
        recorded or not used (train/val folders ignore it); ``seed``: ``default_seed`` (the training seed,
        which is the split seed of ``nas train``); ``augment``: whether the report's augmentation has
        RandAugment. A value of the wrong type raises :class:`TrainError`.
        """
        get = recorded.get
        if "path" in recorded:
            path = get("path")
        else:
            source = get("source")
            path = source if source and not str(source).startswith("embedded:") else None
        augment = get("augment")
        if not isinstance(augment, bool):
            augment = bool(augment.get("randaugment")) if isinstance(augment, Mapping) else False
        try:
            return cls(
                path=None if path is None else str(path),
                val_ratio=float(get("val_ratio") or 0.1),
                long_tail=None if get("long_tail") is None else str(get("long_tail")),
                seed=int(get("seed") if get("seed") is not None else default_seed),
                max_per_class=_optional_int(get("max_per_class")),
                augment=augment,
                resolution=_optional_int(get("resolution")),
                report=dict(recorded),
            )
        except (TypeError, ValueError) as exc:
            raise TrainError(f"the checkpoint's data settings are malformed ({exc})", "the file is damaged") from exc

    def split_options(self) -> dict[str, object]:
        """The :func:`trials.data.load_data` options that decide which images each split holds.

        ``augment`` is left out: evaluation, calibration and checks never augment.
        """
        return {"path": self.path, "val_ratio": self.val_ratio, "long_tail": self.long_tail, "seed": self.seed,
                "max_per_class": self.max_per_class}

    def to_dict(self) -> dict[str, object]:
        """The checkpoint's ``data`` entry: the report, overridden by the settings (plain JSON types)."""
        body = {**self.report, **self.split_options(), "augment": self.augment, "resolution": self.resolution}
        plain: dict[str, object] = json.loads(json.dumps(body, default=str))
        return plain


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
    ``training`` is None in a model-only checkpoint (it can be evaluated and exported, not resumed).
    ``source`` and ``sha256`` describe the file it was read from (None when built in memory).
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
    data: DataSettings = field(default_factory=DataSettings)
    training: TrainingState | None = None
    source: Path | None = None
    sha256: str | None = None

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
        except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, … for damaged files
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise TrainError(f"checkpoint {source} is truncated or corrupt ({reason})",
                             "use another checkpoint (best.pt / last.pt) or train again") from exc
        return cls._from_state(state, source, hashlib.sha256(raw).hexdigest())

    @classmethod
    def _from_state(cls, state: object, source: Path, sha256: str) -> Checkpoint:
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise TrainError(f"{source} is not a repvgg-hwnas checkpoint", "give a checkpoint of a training run")
        if state.get("version") != VERSION:
            raise TrainError(f"checkpoint {source} has format version {state.get('version')}, expected {VERSION}",
                             "train again with this version of the tool")
        missing = [k for k in REQUIRED_KEYS if k not in state]
        if missing:
            raise TrainError(f"checkpoint {source} lacks {missing}", "the file is incomplete; train again")
        try:
            spec = ArchSpec.from_dict(dict(state["spec"]))
            config = TrainConfig.from_dict(dict(state["config"]))
        except NasError as exc:
            raise TrainError(f"checkpoint {source} holds an invalid spec or config: {exc.message}",
                             "the file is damaged") from exc
        resume_keys = [f.name for f in fields(TrainingState)]
        training = TrainingState(**{k: state[k] for k in resume_keys}) if all(k in state for k in resume_keys) else None
        return cls(spec, config, [str(c) for c in state["classes"]], state["model"],
                   model_form=state.get("model_form", "train"), epoch=int(state.get("epoch", 0)),
                   step=int(state.get("step", 0)), history=list(state.get("history") or []),
                   best=state.get("best"), metrics=state.get("metrics"),
                   data=DataSettings.from_recorded(dict(state.get("data") or {}), config.seed),
                   training=training, source=source, sha256=sha256)

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the checkpoint to ``path`` atomically (a complete file or none); return the path.

        The parent folder is created if needed.
        """
        target = Path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
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
            "data": self.data.to_dict(),
        }
        if self.training is not None:
            state.update({f.name: getattr(self.training, f.name) for f in fields(TrainingState)})
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
    ) -> None:
        """Refuse to resume with another spec, config (except the ``free`` fields) or class list.

        The error names every differing field with its old and new value. ``epochs`` may only grow.
        """
        if self.training is None:
            raise TrainError(f"cannot resume {self._name}: it holds the model only, no training state",
                             "resume from the last.pt of a training run")
        old_spec, new_spec = self.spec.to_dict(), spec.to_dict()
        spec_diff = [k for k, v in new_spec.items() if old_spec.get(k) != v]
        if spec_diff:
            raise TrainError(f"cannot resume {self._name}: the spec differs in {', '.join(spec_diff)} "
                             f"({self.spec} vs {spec})", "resume with the same architecture or use a new output folder")
        old, new = self.config.to_dict(), config.to_dict()
        diff = [k for k in new if k not in free and old.get(k) != new[k]]
        if diff:
            detail = ", ".join(f"{k}: {old.get(k)!r} → {new[k]!r}" for k in diff)
            raise TrainError(f"cannot resume {self._name}: the training config differs ({detail})",
                             f"only {', '.join(free) or 'nothing'} may change when resuming; or use a new output "
                             "folder")
        if config.epochs < self.epoch:
            raise TrainError(f"cannot resume {self._name}: it has {self.epoch} epochs done, the config asks for "
                             f"{config.epochs}", "epochs may only be extended")
        if list(classes) != list(self.classes):
            raise TrainError(f"cannot resume {self._name}: the data's classes differ from the checkpoint's",
                             "resume on the same data")


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
