"""Export what the search chose: train it fully (or load a checkpoint), then ONNX fp32 + int8, verified.

:func:`export_arch` exports one architecture (a preset, a spec string or a checkpoint),
:func:`export_trial` one trial of a study (its ``spec`` attribute), :func:`export_pareto` every chosen
trial of a study's Pareto front, each in its own folder named by the spec hash. The work per model is
:func:`trials.export.export_model`; this module adds the choice of data and recipe
(:func:`nas.runs.plan_data`: a trial uses what its study recorded, a checkpoint what it recorded),
full training (:func:`trials.train.train`), the per-device latency predictions of the model card
(:mod:`predictors`) and the choice of trials (:mod:`nas.pareto`). The card's accuracy is the test
split's, with the selection split's beside it.

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
from nas.runs import DataPlan, plan_data, study_record, train_config, trial_spec
from nas.storage import DEFAULT_STORAGE, load_study, mask_url, storage_errors
from search_space import ArchSpec, resolve_arch
from search_space.errors import NasError
from search_space.io import atomic_write
from trials.errors import ExportError
from trials.export import Provenance, export_model, make_staging
from trials.export_stages import LatencyOptions
from trials.int8_stage import Int8Budget
from trials.model_card import ModelCard

if TYPE_CHECKING:
    from torch import nn

    from nas.study import RecordedData
    from trials.checkpoint import Checkpoint
    from trials.data import DataBundle

SUMMARY_NAME = "summary.json"


@dataclass
class ExportOptions:
    """How to export: quantization, calibration, latency measurement, hardware tables for predictions.

    ``int8_budget``: the largest int8 drop allowed, in points of ``int8_metric`` (``top1`` or ``bacc``) on
    the selection split; ``per_channel`` starts the int8 ladder at per-channel weight scales (see
    :class:`trials.int8_stage.Int8Budget`). ``ort_threads``: onnxruntime threads for the host latency;
    ``tables``: extra hardware-table CSVs (merged with the shipped seed table) for the model card's
    predicted latencies.
    """

    per_channel: bool = False
    calibration_images: int = 256
    int8_budget: float = 1.0
    int8_metric: str = "top1"
    ort_threads: int = 1
    tables: Sequence[str] = ()
    latency_protocol: Mapping[str, int] | None = None


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
                          "give an output folder you can write to") from None
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
            "checkpoint": str(ckpt.source), "from": "checkpoint",
            "scales": ckpt.scales.describe() if ckpt.scales is not None else None}


def export_arch(
    arch: str | ArchSpec | None,
    out_dir: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    data: Mapping[str, Any] | None = None,
    recipe: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    resolution: int | None = None,
    block: str | None = None,
    options: ExportOptions | None = None,
    source: Mapping[str, Any] | None = None,
    recorded: RecordedData | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> ModelCard:
    """Train ``arch`` fully, or load ``checkpoint``, and export it into ``out_dir`` (see
    :func:`trials.export.export_model`); return the model card.

    ``arch`` is a preset name, spec string or :class:`ArchSpec`; its class count follows the data. With
    ``checkpoint``, ``arch`` may be omitted (the checkpoint holds the spec) or must match it. ``data``
    (:class:`trials.data.DataSettings` fields), ``recipe`` (:class:`trials.recipe.Recipe` fields) and
    ``config`` (:class:`trials.config.TrainConfig` budget and runtime fields) override the defaults, or what
    the checkpoint or ``recorded`` (a study's record) holds; keys whose value is None are not given.
    """
    options = options or ExportOptions()
    step = on_step or (lambda _text: None)
    out = Path(out_dir)
    with _output_folder(out):
        if checkpoint is not None:
            return _export_checkpoint(arch, Path(checkpoint), out, data, recipe, resolution, block, options,
                                      source, step)
        if arch is None:
            raise ExportError("nothing to export", "give an architecture, a trial of a study or a checkpoint")
        spec = arch if isinstance(arch, ArchSpec) else resolve_arch(arch, resolution, None, block)
        if resolution is not None and isinstance(arch, ArchSpec) and spec.resolution != resolution:
            spec = spec.replace(resolution=resolution)
        predicted = predicted_latency(spec, options.tables)  # fails fast on a bad hardware table
        cfg = train_config(config)
        plan = plan_data(data, recipe, seed=cfg.seed, recorded=recorded)
        cfg = dataclasses.replace(cfg, recipe=plan.recipe)
        cfg.validate()
        notes = list(plan.notes)
        origin = ", as the study recorded" if plan.record is not None else ""
        step(f"loading data at {spec.resolution} px ({plan.settings.describe()}{origin})")
        bundle = plan.load(spec.resolution)
        if spec.num_classes != len(bundle.classes):
            notes.append(f"class count set from the data: {spec.num_classes} → {len(bundle.classes)}")
            spec = spec.replace(num_classes=len(bundle.classes))
            predicted = predicted_latency(spec, options.tables)
        from trials.train import train

        train_dir = make_staging(out, "train")  # stale staging folders of killed exports go first
        try:
            step(f"training {spec} ({cfg.epochs} epochs" + (f", at most {cfg.max_steps} steps)" if cfg.max_steps
                                                            else ")"))
            result = train(spec, bundle, cfg, out_dir=train_dir, on_progress=on_progress)
            training = {"config": cfg.to_dict(), "metrics": result.metrics, "history": result.history,
                        "from": "trained by this export",
                        "scales": result.scales.describe() if result.scales is not None else None}
            attach = {"checkpoint": train_dir / "last.pt"} if (train_dir / "last.pt").is_file() else {}
            return _export(result.model, spec, bundle, out, plan, options, training,
                           {"kind": "arch", "arch": str(arch), **(source or {})}, notes, attach, step,
                           predicted=predicted)
        finally:
            shutil.rmtree(train_dir, ignore_errors=True)


def _export_checkpoint(arch: str | ArchSpec | None, path: Path, out: Path, data: Mapping[str, Any] | None,
                       recipe: Mapping[str, Any] | None, resolution: int | None, block: str | None,
                       options: ExportOptions, source: Mapping[str, Any] | None,
                       step: Callable[[str], None]) -> ModelCard:
    """Export the model a checkpoint holds, on the data it records (overrides on top)."""
    from trials.checkpoint import Checkpoint

    step(f"loading checkpoint {path}")
    ckpt = Checkpoint.read(path)  # the only read of the file: everything below uses ckpt
    model, spec = ckpt.build_model(), ckpt.spec
    if arch is not None:
        wanted = arch if isinstance(arch, ArchSpec) else resolve_arch(arch, resolution or spec.resolution,
                                                                       spec.num_classes, block)
        if wanted.replace(num_classes=spec.num_classes) != spec:
            raise ExportError(f"checkpoint {path} holds {spec}, not {wanted}",
                              "leave out the architecture, or give the checkpoint of that architecture")
    plan = plan_data(data, recipe, checkpoint=ckpt, source=f"checkpoint {path}")
    bundle = plan.load(spec.resolution)
    if list(bundle.classes) != list(ckpt.classes):
        raise ExportError(f"the data's {len(bundle.classes)} classes are not the checkpoint's "
                          f"{len(ckpt.classes)} classes", "export with the data the model was trained on")
    info = {"kind": "checkpoint", "checkpoint": str(path), "sha256": ckpt.sha256, **(source or {})}
    return _export(model, spec, bundle, out, plan, options, _checkpoint_training(ckpt), info,
                   [*ckpt.notes, *plan.notes], {}, step)


def _export(model: nn.Module, spec: ArchSpec, bundle: DataBundle, out: Path, plan: DataPlan,
            options: ExportOptions, training: dict[str, Any], source: Mapping[str, Any], notes: list[str],
            attach: Mapping[str, Path], step: Callable[[str], None],
            predicted: list[dict[str, Any]] | None = None) -> ModelCard:
    if predicted is None:
        predicted = predicted_latency(spec, options.tables)
    budget = Int8Budget(options.int8_budget, options.int8_metric, per_channel_first=options.per_channel,
                        calibration_images=options.calibration_images, seed=plan.settings.seed)
    latency = LatencyOptions(options.ort_threads, **(options.latency_protocol or {}))
    provenance = Provenance(training, source, notes)
    return export_model(model, spec, bundle, out, budget=budget, latency=latency, provenance=provenance,
                        predicted=predicted, attach=attach, on_step=step)


def export_trial(
    trial: int,
    out_dir: str | os.PathLike[str],
    *,
    study: str | optuna.Study | None = None,
    storage: str | None = DEFAULT_STORAGE,
    **kwargs: Any,
) -> ModelCard:
    """Export trial ``trial`` of ``study`` (default: the storage's only study) like :func:`export_arch`.

    The trial's ``spec`` attribute is trained fully (its proxy accuracy came from a short budget) on the
    data and with the recipe the study recorded (``data``/``recipe`` overrides win, noted on the card; a
    missing or changed data folder is an error), or ``checkpoint=`` gives a trained model of that spec
    (then the checkpoint's record is used). Other keyword arguments go to :func:`export_arch`.
    """
    st = study if isinstance(study, optuna.Study) else load_study(storage, study)
    with storage_errors(storage):
        spec, info = trial_spec(st, trial)
        record = None if kwargs.get("checkpoint") is not None else study_record(st, kwargs.get("data"))
    info["storage"] = mask_url(storage) if not isinstance(study, optuna.Study) else None
    return export_arch(spec, out_dir, source=info, recorded=record, **kwargs)


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

    @property
    def over_budget(self) -> list[dict[str, Any]]:
        """Rows of the trials exported with an int8 drop over the budget."""
        return [r for r in self.rows if r.get("int8_within_budget") is False]


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
