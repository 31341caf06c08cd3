"""Training runs for the CLI and notebooks: arch text + data options + config overrides → a run folder.

``run_training`` resolves the architecture (its class count follows the data), loads the data,
trains with :func:`trials.train.train`, and writes ``metrics.json`` beside ``last.pt`` / ``best.pt``.
With ``resume=True`` every option that is not given is taken from the folder's ``last.pt``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search_space import ArchSpec, parse_arch
from search_space.errors import SpecError
from search_space.io import atomic_write
from trials.config import DATA_SAMPLERS as DATA_SAMPLERS  # re-exported (torch-free) for the command line
from trials.config import LOSSES as LOSSES
from trials.errors import TrainError

if TYPE_CHECKING:
    from trials.checkpoint import Checkpoint, DataSettings
    from trials.config import TrainConfig
    from trials.data import DataBundle
    from trials.train import TrainResult

#: Data options of a new run (see :func:`trials.data.load_data`); a resumed run takes its checkpoint's.
DATA_DEFAULTS: dict[str, Any] = {"path": None, "val_ratio": 0.1, "long_tail": None, "augment": False,
                                 "max_per_class": None}
HISTORY_COLUMNS = ["epoch", "step", "train_loss", "val_top1", "val_balanced_acc", "lr", "images_per_s", "wall_s"]


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
) -> tuple[ArchSpec, list[str]]:
    """The spec to train for data with ``num_classes`` classes, and notes on what was changed.

    Presets (1000 classes, 224 px by default) take the data's class count. A spec string that names a
    class count (``_cN``) must match the data unless ``classes_from_data``; without one it follows the data.
    """
    notes: list[str] = []
    if isinstance(arch, ArchSpec):
        spec, explicit_classes = arch, True
    else:
        ref = parse_arch(arch)
        spec = ref.resolve(resolution)
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
    :class:`trials.config.TrainConfig` fields that differ from the defaults (or, when resuming, from the
    checkpoint's config). Keys whose value is None are ignored. When resuming, ``out_dir/last.pt`` is read
    once and handed to :func:`trials.train.train`.
    """
    from trials.checkpoint import DataSettings
    from trials.config import TrainConfig
    from trials.train import train

    note = on_note or (lambda _text: None)
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise TrainError(f"output folder {out} is a file", "give a folder for the checkpoints")
    given = {k: v for k, v in (config or {}).items() if v is not None}
    previous: Checkpoint | None = None
    if resume:
        previous = _previous_run(out)
        base, data_opts = previous.config, {**previous.data.split_options(), "augment": previous.data.augment}
        arch = arch or previous.spec.to_string()
        resolution = resolution or previous.spec.resolution
        note(f"resuming {out / 'last.pt'}: unset options come from the checkpoint")
    else:
        if (out / "last.pt").exists():
            raise TrainError(f"{out} already holds a checkpoint", "resume it, or train into a new output folder")
        if arch is None:
            raise TrainError("no architecture given", "name a preset (e.g. A0) or give a spec string")
        base, data_opts = TrainConfig(), dict(DATA_DEFAULTS)
    data_opts.update({k: v for k, v in (data or {}).items() if v is not None})
    cfg = TrainConfig.from_dict({**base.to_dict(), **given})
    cfg.validate()
    if previous is not None:  # refuse a changed config before spending time on the data (train() checks all again)
        previous.check_resume(previous.spec, cfg, previous.classes)
    probe = arch if isinstance(arch, ArchSpec) else parse_arch(arch).resolve(resolution)  # fails fast on a bad spec
    bundle = _load_data(data_opts, resolution if resolution is not None else probe.resolution, cfg.seed, note)
    spec, notes = training_spec(arch, len(bundle.classes), resolution, classes_from_data)
    for line in notes:
        note(line)
    out.mkdir(parents=True, exist_ok=True)
    settings = DataSettings(path=data_opts["path"], val_ratio=data_opts["val_ratio"], long_tail=data_opts["long_tail"],
                            seed=cfg.seed, max_per_class=data_opts["max_per_class"], augment=bool(data_opts["augment"]),
                            resolution=spec.resolution, report=bundle.report.to_dict())
    result = train(spec, bundle, cfg, out_dir=out, resume=previous if previous is not None else False,
                   on_progress=on_progress, data_settings=settings)
    run = TrainingRun(spec, cfg, result, out, settings, notes)
    if _is_main_process():
        with atomic_write(out / "metrics.json") as handle:
            json.dump({**run.summary(), "history": result.history}, handle, indent=2, default=str)
            handle.write("\n")
    return run


def _load_data(options: dict[str, Any], resolution: int, seed: int, note: Callable[[str], None]) -> DataBundle:
    """Load the data (the split seed is the training seed); its warnings and report become notes."""
    from trials.data import load_data

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = load_data(options["path"], resolution, val_ratio=options["val_ratio"], long_tail=options["long_tail"],
                           augment=options["augment"], seed=seed, max_per_class=options["max_per_class"])
    for w in caught:
        note(f"data: {w.message}")
    for line in bundle.report.lines():
        note(line)
    return bundle


def _previous_run(out: Path) -> Checkpoint:
    """The checkpoint to resume: ``out/last.pt``, read once."""
    from trials.checkpoint import Checkpoint

    if not (out / "last.pt").is_file():
        raise TrainError(f"nothing to resume: {out / 'last.pt'} does not exist",
                         "resume needs the output folder of an earlier run")
    return Checkpoint.read(out / "last.pt")


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def train_config(overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The default :class:`~trials.config.TrainConfig` with ``overrides`` applied (keys whose value is None
    are ignored; the choices are checked when training starts)."""
    from trials.config import TrainConfig

    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    return TrainConfig.from_dict({**TrainConfig().to_dict(), **given})


def set_torch_threads(threads: int | None) -> None:
    """Let torch use ``threads`` CPU threads in this process (None: leave torch's choice)."""
    if threads is None:
        return
    if threads < 1:
        raise TrainError(f"torch threads must be at least 1, got {threads}", "leave it unset for torch's choice")
    import torch

    torch.set_num_threads(threads)
