"""Training checkpoints: one ``torch.save`` dict, written atomically, read back with ``weights_only=True``.

A checkpoint holds everything needed to rebuild the model and to resume training exactly::

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

Only plain containers, numbers, strings and tensors are stored, so ``torch.load(weights_only=True)``
reads it without executing pickled code.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from search_space.errors import NasError
from search_space.io import atomic_write
from search_space.model import RepVGG, build_model, reparameterize
from search_space.spec import ArchSpec
from trials.config import TrainConfig
from trials.errors import TrainError

FORMAT = "repvgg-hwnas-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "spec", "config", "classes", "model")
MODEL_FORMS = ("train", "deploy")


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (complete file or none); return the path.

    ``format`` and ``version`` are filled in when absent. The parent folder is created if needed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    body = {"format": FORMAT, "version": VERSION, "model_form": "train", **state}
    missing = [k for k in REQUIRED_KEYS if k not in body]
    if missing:
        raise TrainError(f"checkpoint state lacks {missing}", "give spec, config, classes and model")
    try:
        with atomic_write(target, "wb") as handle:
            torch.save(body, handle)
    except OSError as exc:
        raise TrainError(f"cannot write checkpoint {target}: {exc.strerror or exc}",
                         "check that the output folder is writable and the disk is not full") from exc
    return target


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code runs).

    Missing, truncated, corrupt or foreign files raise :class:`TrainError` with one clear line.
    """
    source = Path(path)
    if not source.is_file():
        raise TrainError(f"checkpoint {source} does not exist",
                         "pass the last.pt or best.pt that `nas train --out DIR` wrote")
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, … for damaged files
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise TrainError(f"checkpoint {source} is truncated or corrupt ({reason})",
                         "use another checkpoint (best.pt / last.pt) or train again") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TrainError(f"{source} is not a repvgg-hwnas checkpoint",
                         "checkpoints come from `nas train` or trials.train.train")
    if state.get("version") != VERSION:
        raise TrainError(f"checkpoint {source} has format version {state.get('version')}, expected {VERSION}",
                         "re-train with this version of the tool")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise TrainError(f"checkpoint {source} lacks {missing}", "the file is incomplete; train again")
    return state


def spec_from_checkpoint(state: dict[str, Any], source: str | os.PathLike[str] = "checkpoint") -> ArchSpec:
    """The :class:`ArchSpec` stored in a loaded checkpoint (bad spec → :class:`TrainError`)."""
    try:
        return ArchSpec.from_dict(dict(state["spec"]))
    except NasError as exc:
        raise TrainError(f"{source} holds an invalid spec: {exc.message}", "the file is damaged") from exc


def model_from_checkpoint(
    path: str | os.PathLike[str], deploy: bool = False
) -> tuple[RepVGG, ArchSpec, list[str], TrainConfig]:
    """Rebuild the trained model of a checkpoint, in eval mode, on the CPU.

    Returns ``(model, spec, classes, config)``. With ``deploy=True`` the model is re-parameterized into
    plain 3×3 convs (equal outputs in eval mode). The state dict is loaded strictly: any missing or
    unexpected tensor is an error, never silently skipped.
    """
    state = load_checkpoint(path)
    spec = spec_from_checkpoint(state, path)
    form = state.get("model_form", "train")
    if form not in MODEL_FORMS:
        raise TrainError(f"checkpoint {path} has unknown model_form {form!r}", f"expected one of {MODEL_FORMS}")
    model = build_model(spec, deploy=form == "deploy")
    try:
        model.load_state_dict(state["model"], strict=True)
    except (RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise TrainError(f"checkpoint {path} does not fit its own spec {spec}: {first}",
                         "the file is damaged or was edited; train again") from exc
    model.eval()
    if deploy:
        model = reparameterize(model, inplace=True)  # type: ignore[assignment]
    config = TrainConfig.from_dict(dict(state["config"]))
    return model, spec, [str(c) for c in state["classes"]], config


def check_resume(
    state: dict[str, Any],
    spec: ArchSpec,
    config: dict[str, Any],
    classes: list[str],
    path: str | os.PathLike[str],
    free: tuple[str, ...] = (),
) -> None:
    """Refuse to resume ``state`` with another spec, config (except the ``free`` fields) or class list.

    The error names every differing field with its old and new value. ``epochs`` may only grow.
    """
    old_spec = spec_from_checkpoint(state, path)
    spec_diff = [k for k, v in spec.to_dict().items() if old_spec.to_dict().get(k) != v]
    if spec_diff:
        raise TrainError(f"cannot resume {path}: the spec differs in {', '.join(spec_diff)} "
                         f"({old_spec} vs {spec})", "resume with the same architecture or use a new --out")
    old = dict(state["config"])
    diff = [k for k in config if k not in free and old.get(k) != config[k]]
    if diff:
        detail = ", ".join(f"{k}: {old.get(k)!r} → {config[k]!r}" for k in diff)
        raise TrainError(f"cannot resume {path}: the training config differs ({detail})",
                         f"only {', '.join(free) or 'nothing'} may change when resuming; or use a new --out")
    if int(config.get("epochs", 0)) < int(state.get("epoch", 0)):
        raise TrainError(f"cannot resume {path}: it has {state['epoch']} epochs done, the config asks for "
                         f"{config['epochs']}", "epochs may only be extended")
    if list(state["classes"]) != list(classes):
        raise TrainError(f"cannot resume {path}: the data's classes differ from the checkpoint's",
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


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states captured by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
