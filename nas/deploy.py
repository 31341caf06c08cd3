"""Export what the search chose: train it fully (or load a checkpoint), then ONNX fp32 + int8, verified.

:func:`export_arch` exports one architecture (a preset, a spec string or a checkpoint),
:func:`export_trial` one trial of a study (its ``spec`` attribute), :func:`export_pareto` every chosen
trial of a study's Pareto front, each in its own folder named by the spec hash. The work per model is
:func:`trials.export.export_model`; this module adds data loading, full training
(:func:`trials.train.train`), the per-device latency predictions of the model card
(:mod:`predictors`) and the choice of trials (:mod:`nas.pareto`).

A failed export leaves no new file behind: training runs in a hidden folder inside the output folder,
and its checkpoint joins the exported files only when every check passed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from nas.objectives import Limits
from nas.pareto import PARETO_PICKS, pareto_front, pick
from nas.runs import DATA_DEFAULTS
from nas.storage import DEFAULT_STORAGE, load_study, mask_url, storage_errors
from search_space import ArchSpec, resolve_arch
from search_space.errors import NasError
from search_space.io import atomic_write
from trials.config import TrainConfig
from trials.errors import ExportError
from trials.export import Provenance, export_model
from trials.export_stages import LatencyOptions, QuantizeOptions
from trials.model_card import ModelCard

if TYPE_CHECKING:
    from torch import nn

    from trials.checkpoint import Checkpoint
    from trials.data import DataBundle

SUMMARY_NAME = "summary.json"


@dataclass
class ExportOptions:
    """How to export: quantization, calibration, latency measurement, hardware tables for predictions.

    ``ort_threads``: onnxruntime threads for the host latency; ``tables``: extra hardware-table CSVs
    (merged with the shipped seed table) for the model card's predicted latencies.
    """

    per_channel: bool = False
    calibration_images: int = 256
    ort_threads: int = 1
    tables: Sequence[str] = ()
    latency_protocol: Mapping[str, int] | None = None


@dataclass
class DataOptions:
    """Which data trains and checks the model (see :func:`trials.data.load_data`).

    ``None`` means "not given": training then uses :data:`nas.runs.DATA_DEFAULTS` and the training
    seed; a checkpoint export uses what the checkpoint recorded, so the validation split is the one the
    model was not trained on. ``path=None`` with nothing recorded is the embedded digits.
    """

    path: str | None = None
    val_ratio: float | None = None
    long_tail: str | None = None
    augment: bool | None = None
    seed: int | None = None
    max_per_class: int | None = None

    def settings(self, base: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults, then ``base`` (recorded or the training seed), then the options given here."""
        given = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return {**DATA_DEFAULTS, "seed": 0, **base, **given}


def _load_data(settings: Mapping[str, Any], resolution: int, augment: bool | None = None) -> DataBundle:
    from trials.data import load_data

    return load_data(settings["path"], resolution, val_ratio=settings["val_ratio"], long_tail=settings["long_tail"],
                     augment=settings["augment"] if augment is None else augment, seed=settings["seed"],
                     max_per_class=settings["max_per_class"])


def _data_info(settings: Mapping[str, Any], bundle: DataBundle) -> dict[str, Any]:
    """The card's ``data`` field: how the data was loaded and what it held."""
    return {**settings, "report": bundle.report.to_dict()}


def predicted_latency(spec: ArchSpec, tables: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Predicted batch-1 latency of ``spec`` on every device of the seed table (+ ``tables`` CSVs), from the
    same cached fit as the search (:func:`predictors.fitted`), so the card shows the search's numbers."""
    from predictors import fitted

    rows = []
    for key, predictor in sorted(fitted(tables).predictors.items()):
        p = predictor.predict(spec)
        rows.append({"key": key, **dataclasses.asdict(p)})
    return rows


@contextlib.contextmanager
def _output_folder(out: Path) -> Iterator[Path]:
    """Create ``out`` if needed and prove it writable; on failure remove it again if this call made it."""
    made = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise ExportError(f"cannot write to output folder {out}: {exc.strerror or exc}",
                          "choose a folder you can write to with --out") from None
    try:
        yield out
    except BaseException:
        if made:
            with contextlib.suppress(OSError):
                out.rmdir()  # only when empty: never removes anything the export did not make
        raise


def _checkpoint_training(ckpt: Checkpoint) -> dict[str, Any]:
    """The card's ``training`` field for a model that a checkpoint holds."""
    return {"config": ckpt.config.to_dict(), "metrics": ckpt.metrics, "epochs": ckpt.epoch, "best": ckpt.best,
            "checkpoint": str(ckpt.source), "from": "checkpoint"}


def export_arch(
    arch: str | ArchSpec | None,
    out_dir: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    data: DataOptions | None = None,
    resolution: int | None = None,
    block: str | None = None,
    config: TrainConfig | None = None,
    options: ExportOptions | None = None,
    source: Mapping[str, Any] | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> ModelCard:
    """Train ``arch`` fully with ``config`` (a :class:`trials.config.TrainConfig`), or load ``checkpoint``,
    and export it into ``out_dir`` (see :func:`trials.export.export_model`); return the model card.

    ``arch`` is a preset name, spec string or :class:`ArchSpec`; its class count follows the data.
    With ``checkpoint``, ``arch`` may be omitted (the checkpoint holds the spec) or must match it.
    """
    data = data or DataOptions()
    options = options or ExportOptions()
    step = on_step or (lambda _text: None)
    out = Path(out_dir)
    notes: list[str] = []
    with _output_folder(out):
        if checkpoint is not None:
            from trials.checkpoint import Checkpoint

            step(f"loading checkpoint {checkpoint}")
            ckpt = Checkpoint.read(checkpoint)  # the only read of the file: everything below uses ckpt
            model, spec, classes = ckpt.build_model(), ckpt.spec, ckpt.classes
            if arch is not None:
                wanted = arch if isinstance(arch, ArchSpec) else resolve_arch(
                    arch, resolution or spec.resolution, spec.num_classes, block)
                if wanted.replace(num_classes=spec.num_classes) != spec:
                    raise ExportError(f"checkpoint {checkpoint} holds {spec}, not {wanted}",
                                      "leave out the architecture, or give the checkpoint of that architecture")
            settings = data.settings(ckpt.data.split_options())
            bundle = _load_data(settings, spec.resolution, augment=False)
            if list(bundle.classes) != list(classes):
                raise ExportError(f"the data's {len(bundle.classes)} classes are not the checkpoint's "
                                  f"{len(classes)} classes", "export with the data the model was trained on")
            source = {"kind": "checkpoint", "checkpoint": str(checkpoint), "sha256": ckpt.sha256, **(source or {})}
            return _export(model, spec, bundle, out, settings, options, _checkpoint_training(ckpt), source, notes,
                           {}, step)
        if arch is None:
            raise ExportError("nothing to export", "give an architecture, a trial of a study or a checkpoint")
        spec = arch if isinstance(arch, ArchSpec) else resolve_arch(arch, resolution, None, block)
        if resolution is not None and isinstance(arch, ArchSpec) and spec.resolution != resolution:
            spec = spec.replace(resolution=resolution)
        predicted = predicted_latency(spec, options.tables)  # fails fast on a bad hardware table
        from trials.checkpoint import DataSettings
        from trials.train import train

        config = config or TrainConfig()
        settings = data.settings({"seed": config.seed})  # the split seed is the training seed, as in nas train
        step(f"loading data at {spec.resolution} px")
        bundle = _load_data(settings, spec.resolution)
        if spec.num_classes != len(bundle.classes):
            notes.append(f"class count set from the data: {spec.num_classes} → {len(bundle.classes)}")
            spec = spec.replace(num_classes=len(bundle.classes))
            predicted = predicted_latency(spec, options.tables)
        train_dir = Path(tempfile.mkdtemp(prefix=".train-", dir=out))
        try:
            step(f"training {spec} ({config.epochs} epochs"
                 + (f", at most {config.max_steps} steps)" if config.max_steps else ")"))
            result = train(spec, bundle, config, out_dir=train_dir, on_progress=on_progress,
                           data_settings=DataSettings(**settings, resolution=spec.resolution))
            training = {"config": config.to_dict(), "metrics": result.metrics, "history": result.history,
                        "from": "trained by this export"}
            if settings["augment"]:  # calibrate and check on un-augmented images
                bundle = _load_data(settings, spec.resolution, augment=False)
            attach = {"checkpoint": train_dir / "last.pt"} if (train_dir / "last.pt").is_file() else {}
            return _export(result.model, spec, bundle, out, settings, options, training,
                           {"kind": "arch", "arch": str(arch), **(source or {})}, notes, attach, step,
                           predicted=predicted)
        finally:
            shutil.rmtree(train_dir, ignore_errors=True)


def _export(model: nn.Module, spec: ArchSpec, bundle: DataBundle, out: Path, settings: dict[str, Any],
            options: ExportOptions, training: dict[str, Any], source: Mapping[str, Any], notes: list[str],
            attach: Mapping[str, Path], step: Callable[[str], None],
            predicted: list[dict[str, Any]] | None = None) -> ModelCard:
    if predicted is None:
        predicted = predicted_latency(spec, options.tables)
    quantize = QuantizeOptions(options.per_channel, options.calibration_images, seed=settings["seed"])
    latency = LatencyOptions(options.ort_threads, **(options.latency_protocol or {}))
    provenance = Provenance(training, _data_info(settings, bundle), source, notes)
    return export_model(model, spec, bundle, out, quantize=quantize, latency=latency, provenance=provenance,
                        predicted=predicted, attach=attach, on_step=step)


def _trial_spec(study: optuna.Study, number: int) -> tuple[str, dict[str, Any]]:
    found = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if not found:
        numbers = [t.number for t in study.get_trials(deepcopy=False)]
        hint = f"its trials are {min(numbers)}..{max(numbers)}; see `nas pareto`" if numbers else "run nas search"
        raise ExportError(f"study {study.study_name!r} has no trial {number}", hint)
    trial = found[0]
    spec = trial.user_attrs.get("spec")
    if not isinstance(spec, str):
        raise ExportError(f"trial {number} of study {study.study_name!r} has no 'spec' attribute",
                          "export trials of a study made by nas search")
    values = list(trial.values) if trial.values is not None else None
    info = {"kind": "trial", "study": study.study_name, "trial": number, "state": trial.state.name,
            "values": values, "proxy_acc": trial.user_attrs.get("acc"), "proxy_bacc": trial.user_attrs.get("bacc")}
    return spec, info


def export_trial(
    trial: int,
    out_dir: str | os.PathLike[str],
    *,
    study: str | optuna.Study | None = None,
    storage: str | None = DEFAULT_STORAGE,
    **kwargs: Any,
) -> ModelCard:
    """Export trial ``trial`` of ``study`` (default: the storage's only study) like :func:`export_arch`.

    The trial's ``spec`` attribute is trained fully (its proxy accuracy came from a short budget), or
    ``checkpoint=`` gives a trained model of that spec. Other keyword arguments go to :func:`export_arch`.
    """
    st = study if isinstance(study, optuna.Study) else load_study(storage, study)
    with storage_errors(storage):
        spec, info = _trial_spec(st, trial)
    info["storage"] = mask_url(storage) if not isinstance(study, optuna.Study) else None
    return export_arch(spec, out_dir, source=info, **kwargs)


@dataclass
class ParetoExport:
    """What :func:`export_pareto` did: one summary row per chosen trial (failed ones with ``error``)."""

    study: str
    pick: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: Path | None = None

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Rows of the trials whose export failed."""
        return [r for r in self.rows if r.get("error")]


def export_pareto(
    out_dir: str | os.PathLike[str],
    *,
    study: str | None = None,
    storage: str | None = DEFAULT_STORAGE,
    pick_how: str = "all",
    limits: Limits | None = None,
    under: Limits | None = None,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
    **kwargs: Any,
) -> ParetoExport:
    """Export the chosen trials of a study's Pareto front into ``out_dir/<spec hash>/``, one by one.

    ``pick_how``: ``all`` (every front trial), ``knee`` or ``best-acc-under`` (with ``under``), as in
    ``nas pareto``; ``limits`` filter the front first. A failed trial is recorded and the others go on;
    ``out_dir/summary.json`` lists them all. Keyword arguments go to :func:`export_arch`.
    """
    if pick_how not in PARETO_PICKS:
        raise ExportError(f"unknown pick {pick_how!r}", f"choose from {', '.join(PARETO_PICKS)}")
    st = load_study(storage, study)
    with storage_errors(storage):
        front = pareto_front(st, limits)
    chosen = list(front.rows) if pick_how == "all" else [pick(front, pick_how, under)]
    if not chosen:
        raise ExportError(f"study {st.study_name!r} has no feasible complete trial on its front",
                          "run more trials or relax the limits")
    out = Path(out_dir)
    result = ParetoExport(st.study_name, pick_how)
    with _output_folder(out):
        for row in chosen:
            spec = ArchSpec.parse(row["spec"])
            folder = out / spec.hash
            entry: dict[str, Any] = {"trial": row["number"], "spec": row["spec"], "folder": str(folder)}
            try:
                card = export_trial(row["number"], folder, study=st, **kwargs)
                entry.update(card.summary(), trial=row["number"], spec=card.data["spec"], error=None)
            except NasError as exc:
                entry["error"] = str(exc)
            result.rows.append(entry)
            if on_trial is not None:
                on_trial(entry)
        result.summary = out / SUMMARY_NAME
        with atomic_write(result.summary) as handle:
            json.dump({"study": st.study_name, "pick": pick_how, "rows": result.rows}, handle, indent=2)
            handle.write("\n")
    return result
