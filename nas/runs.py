"""Training runs for the CLI and notebooks: arch text + data options + config overrides → a run folder.

``run_training`` resolves the architecture (its class count follows the data), loads the data,
trains with :func:`trials.train.train`, and writes ``metrics.json`` beside ``last.pt`` / ``best.pt``.
With ``resume=True`` every option that is not given is taken from the folder's ``last.pt``.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_space import ArchSpec, get_preset, resolve_arch
from search_space.errors import SpecError
from search_space.io import atomic_write
from trials.errors import TrainError

#: How the data was loaded; recorded in every checkpoint as ``data`` (``nas eval`` reads it back).
DATA_DEFAULTS: dict[str, Any] = {"path": None, "val_ratio": 0.1, "long_tail": None, "augment": False,
                                 "max_per_class": None}
HISTORY_COLUMNS = ["epoch", "step", "train_loss", "val_top1", "val_balanced_acc", "lr", "images_per_s", "wall_s"]


@dataclass
class TrainingRun:
    """What :func:`run_training` did: the spec, the config, the result and the files it wrote."""

    spec: ArchSpec
    config: Any  # trials.train.TrainConfig
    result: Any  # trials.train.TrainResult
    out_dir: Path
    data: dict[str, Any]
    notes: list[str]

    def summary(self) -> dict[str, Any]:
        """Final metrics plus where the checkpoints are (one flat JSON-able dict)."""
        m = dict(self.result.metrics)
        return {**m, "config": self.config.to_dict(), "data": self.data,
                "checkpoint_best": str(self.out_dir / "best.pt"), "checkpoint_last": str(self.out_dir / "last.pt")}


def training_spec(
    arch: str | ArchSpec, num_classes: int, resolution: int | None = None, classes_from_data: bool = False,
) -> tuple[ArchSpec, list[str]]:
    """The spec to train for data with ``num_classes`` classes, and notes on what was changed.

    Presets (1000 classes, 224 px by default) take the data's class count. A spec string that names a
    class count (``_cN``) must match the data unless ``classes_from_data``; without one it follows the data.
    """
    notes: list[str] = []
    if isinstance(arch, ArchSpec):
        spec, explicit_classes = arch, True
    else:
        text = arch.strip()
        spec = resolve_arch(text, resolution)
        is_preset = "_" not in text
        explicit_classes = not is_preset and re.search(r"_c\d+(_|$)", text) is not None
        if is_preset:
            get_preset(text)  # validated by resolve_arch; kept explicit for the note
            if resolution is None:
                notes.append(f"preset {text} trains at its default {spec.resolution} px (set --resolution)")
            notes.append(f"preset {text} defaults to 1000 classes; using the data's {num_classes}")
    if resolution is not None and spec.resolution != resolution:
        spec = spec.replace(resolution=resolution)
    if spec.num_classes != num_classes:
        if explicit_classes and not classes_from_data:
            raise SpecError(f"the spec has {spec.num_classes} classes but the data has {num_classes}",
                            "pass --classes-from-data to use the data's class count")
        spec = spec.replace(num_classes=num_classes)
    return spec, notes


def _recorded(out: Path) -> dict[str, Any]:
    from trials.checkpoint import load_checkpoint

    state = load_checkpoint(out / "last.pt")
    return {"spec": dict(state["spec"]), "config": dict(state["config"]), "data": dict(state.get("data") or {}),
            "state": state}


def run_training(
    arch: str | ArchSpec | None,
    out_dir: str | os.PathLike[str],
    *,
    data: dict[str, Any] | None = None,
    resolution: int | None = None,
    classes_from_data: bool = False,
    config: dict[str, Any] | None = None,
    resume: bool = False,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> TrainingRun:
    """Train ``arch`` into ``out_dir`` and write ``metrics.json`` there; return the :class:`TrainingRun`.

    ``data``: options of :func:`trials.data.load_data` (``path`` None = embedded digits, ``val_ratio``,
    ``long_tail``, ``augment``, ``max_per_class``; the split seed is the training seed). ``config``:
    :class:`trials.train.TrainConfig` fields that differ from the defaults (or, when resuming, from the
    checkpoint's config). Keys whose value is None are ignored.
    """
    from trials.config import TrainConfig
    from trials.data import load_data
    from trials.train import train

    note = on_note or (lambda _text: None)
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out} is a file", "give a folder for the checkpoints")
    given = {k: v for k, v in (config or {}).items() if v is not None}
    data_given = {k: v for k, v in (data or {}).items() if v is not None}
    if resume:
        if not (out / "last.pt").is_file():
            raise TrainError(f"nothing to resume: {out / 'last.pt'} does not exist",
                             "resume needs the --out folder of an earlier run")
        recorded = _recorded(out)
        base = TrainConfig.from_dict(recorded["config"])
        data_opts = {**DATA_DEFAULTS, **{k: recorded["data"][k] for k in DATA_DEFAULTS if k in recorded["data"]}}
        old_spec = ArchSpec.from_dict(recorded["spec"])
        arch = arch or old_spec.to_string()
        resolution = resolution or old_spec.resolution
        note(f"resuming {out / 'last.pt'}: unset options come from the checkpoint")
    else:
        if (out / "last.pt").exists():
            raise TrainError(f"{out} already holds a checkpoint", "pass --resume to continue it, or use a new --out")
        if arch is None:
            raise TrainError("no architecture given", "pass --arch A0 or a spec string")
        base, data_opts = TrainConfig(), dict(DATA_DEFAULTS)
    data_opts.update(data_given)
    cfg = TrainConfig.from_dict({**base.to_dict(), **given})
    cfg.validate()
    if resume:  # refuse a changed config before spending time on the data (train() checks all again)
        from trials.checkpoint import check_resume
        from trials.config import RESUME_FREE

        state = recorded["state"]
        check_resume(state, old_spec, cfg.to_dict(), list(state["classes"]), out / "last.pt", RESUME_FREE)
    probe = arch if isinstance(arch, ArchSpec) else resolve_arch(arch, resolution)  # fails fast on a bad spec
    spec_res = resolution if resolution is not None else probe.resolution
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = load_data(data_opts["path"], spec_res, val_ratio=data_opts["val_ratio"],
                           long_tail=data_opts["long_tail"], augment=data_opts["augment"], seed=cfg.seed,
                           max_per_class=data_opts["max_per_class"])
    for w in caught:
        note(f"data: {w.message}")
    for line in bundle.report.lines():
        note(line)
    spec, notes = training_spec(arch, len(bundle.classes), resolution, classes_from_data)
    for line in notes:
        note(line)
    out.mkdir(parents=True, exist_ok=True)
    settings = {**data_opts, "seed": cfg.seed, "resolution": spec.resolution}
    result = train(spec, bundle, cfg, out_dir=out, resume=resume, on_progress=on_progress, data_settings=settings)
    run = TrainingRun(spec, cfg, result, out, {**bundle.report.to_dict(), **settings}, notes)
    if _is_main_process():
        with atomic_write(out / "metrics.json") as handle:
            json.dump({**run.summary(), "history": result.history}, handle, indent=2, default=str)
            handle.write("\n")
    return run


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
