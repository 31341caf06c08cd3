"""Data-set statistics and checkpoint evaluation with their files, for the CLI and for notebooks.

``stats_outputs(path, out_dir)`` = :func:`trials.stats.dataset_stats` + the two PNGs, a JSON and a CSV;
``eval_checkpoint(checkpoint, data, splits, out_dir)`` = model + the data it records +
:func:`trials.evaluate.evaluate` per split (train, selection, test; test by default: the held-out figure)
+ a confusion PNG, a JSON and a per-class CSV per split (the checkpoint is read once, through
:class:`trials.checkpoint.Checkpoint`); ``split_report`` = the three splits' per-class counts. Every file
is written atomically.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.runs import plan_data
from search_space.io import atomic_write
from search_space.spec import ArchSpec
from trials.data import DataReport, DataSettings, DataWarning
from trials.errors import DataError
from trials.evaluate import EvalResult, evaluate, save_confusion_png
from trials.folders import find_layout, list_classes
from trials.recipe import Recipe
from trials.stats import SMALL_SIDE, DatasetStats, dataset_stats, save_class_histogram, save_resolution_scatter

#: The splits a checkpoint can be evaluated on, in report order.
SPLITS = ("train", "selection", "test")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: Path, body: Any) -> Path:
    """Write ``body`` as indented JSON (NaN/inf → null), atomically."""
    with atomic_write(path) as handle:
        json.dump(_json_safe(body), handle, indent=2)
        handle.write("\n")
    return path


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write dict rows as CSV (columns of the first row), atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    with atomic_write(path) as handle:
        handle.write(buf.getvalue())
    return path


def _out_dir(out_dir: str | os.PathLike[str]) -> Path:
    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create output folder {out}: {exc.strerror or exc}",
                        "give a writable output folder") from exc
    return out


def recipe_for(path: str | os.PathLike[str] | None, overrides: Mapping[str, Any] | None = None) -> Recipe:
    """The default recipe for the data at ``path`` (:meth:`trials.recipe.Recipe.for_data`) with ``overrides``
    (recipe fields; keys whose value is None are not given)."""
    return Recipe.for_data(path).replace(**{k: v for k, v in (overrides or {}).items() if v is not None})


def stats_outputs(
    path: str | os.PathLike[str] | None, out_dir: str | os.PathLike[str] | None = None, recipe: Recipe | None = None
) -> tuple[DatasetStats, dict[str, Path]]:
    """Statistics of a data folder (None: the embedded digits), with the training split's imbalance and the
    recipe's warnings (``stats.warnings``, lines for the caller to print; ``recipe`` None: the data's
    default); with ``out_dir`` also ``class_histogram.png``, ``resolutions.png``, ``stats.json`` and
    ``class_counts.csv`` there. Returns the stats and ``{name: path}`` of the files."""
    stats = dataset_stats(path, recipe)
    if out_dir is None:
        return stats, {}
    out = _out_dir(out_dir)
    return stats, {
        "class_histogram": save_class_histogram(stats, out / "class_histogram.png"),
        "resolutions": save_resolution_scatter(stats, out / "resolutions.png"),
        "stats": write_json(out / "stats.json", stats.to_dict()),
        "class_counts": write_csv(out / "class_counts.csv", stats.class_rows()),
    }


@dataclass
class EvalRun:
    """A checkpoint evaluated on one or more splits of a data set."""

    checkpoint: str
    spec: ArchSpec
    results: dict[str, EvalResult]
    data: DataReport
    settings: DataSettings
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per split: images, top-1, balanced accuracy, worst class and its recall."""
        rows = []
        for split, r in self.results.items():
            worst = r.per_class[0] if r.per_class else {}
            rows.append({"split": split, "images": r.images, "top1": r.top1, "balanced_acc": r.balanced_acc,
                         "worst_class": worst.get("name"), "worst_recall": worst.get("acc")})
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: checkpoint, spec, data settings and report, notes and each split's result."""
        return {"checkpoint": self.checkpoint, "spec": self.spec.to_string(), "settings": self.settings.to_dict(),
                "data": self.data.to_dict(), "notes": list(self.notes),
                **{split: r.to_dict() for split, r in self.results.items()}}


def _check_classes(expected: Sequence[str], found: Sequence[str]) -> None:
    if list(found) != list(expected):
        raise DataError(
            f"the checkpoint has {len(expected)} classes ({', '.join(expected[:3])}, …) but the data has "
            f"{len(found)} ({', '.join(found[:3])}, …)", "evaluate on the data the model was trained on")


def eval_checkpoint(
    checkpoint: str | os.PathLike[str],
    data: Mapping[str, Any] | None = None,
    splits: Sequence[str] = ("test",),
    out_dir: str | os.PathLike[str] | None = None,
    *,
    recipe: Mapping[str, Any] | None = None,
    batch_size: int = 256,
) -> EvalRun:
    """Evaluate a training checkpoint on ``splits`` (of :data:`SPLITS`) of the data it records.

    ``data`` (:class:`trials.data.DataSettings` fields) and ``recipe`` (its long tail decides the training
    split) override what the checkpoint recorded; keys whose value is None are not given. The data's
    classes must equal the checkpoint's. The training split is evaluated without augmentation.
    """
    from trials.checkpoint import Checkpoint

    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise DataError(f"unknown split {bad[0] if bad else '(none)'}", f"use {', '.join(SPLITS)}")
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {batch_size}", "the default is 256 images a pass")
    ckpt = Checkpoint.read(checkpoint)
    model = ckpt.build_model()  # a damaged file fails before the data is decoded
    plan = plan_data(data, recipe, checkpoint=ckpt, source=f"checkpoint {checkpoint}")
    if plan.settings.path is not None:  # cheap check before decoding a whole data set
        _check_classes(ckpt.classes, list_classes(find_layout(plan.settings.path)[1]))
    bundle = plan.load(ckpt.spec.resolution)
    _check_classes(ckpt.classes, bundle.classes)
    datasets = {"train": bundle.train_eval, "selection": bundle.selection, "test": bundle.test}
    ordered = [s for s in SPLITS if s in splits]
    results = {s: evaluate(model, datasets[s], bundle.classes, batch_size=batch_size) for s in ordered}
    run = EvalRun(str(checkpoint), ckpt.spec, results, bundle.report, plan.settings,
                  notes=[*ckpt.notes, *plan.notes])
    if out_dir is not None:
        out = _out_dir(out_dir)
        for s, r in results.items():
            run.files[f"confusion_{s}"] = out / f"confusion_{s}.png"
            save_confusion_png(r, out / f"confusion_{s}.png",
                               title=f"{s}: top-1 {r.top1:.2%}, balanced {r.balanced_acc:.2%}")
            run.files[f"per_class_{s}"] = write_csv(out / f"per_class_{s}.csv", r.per_class)
        run.files["eval"] = write_json(out / "eval.json", run.to_dict())
    return run


def stats_figures(stats: DatasetStats) -> dict[str, str | int | float]:
    """The headline figures of a data folder's statistics, labelled for people (images, classes, imbalance,
    resolutions, share of small images, median size, channel modes)."""
    summary = stats.summary()
    return {
        "images": stats.images, "classes": len(stats.classes),
        "imbalance factor": round(stats.imbalance_factor, 2),
        "distinct resolutions": stats.distinct_resolutions,
        f"under {SMALL_SIDE}×{SMALL_SIDE}": f"{stats.share_small:.1%}",
        "median size": f"{summary['median_width']:g}×{summary['median_height']:g}",
        "channel modes": ", ".join(f"{k} {v}" for k, v in sorted(stats.modes.items())),
    }


@contextlib.contextmanager
def data_warnings_silenced() -> Iterator[None]:
    """Silence :class:`trials.data.DataWarning` (skipped files) for callers that show the data report instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        yield


@dataclass
class SplitReport:
    """A data set loaded as training loads it: one row per class (``class, name, train, selection, test,
    in_both``) and the loader's report (layout, split rule, skipped files, long tail)."""

    rows: list[dict[str, int | str | bool]]
    report: DataReport


def split_report(settings: DataSettings, resolution: int, recipe: Recipe | None = None) -> SplitReport:
    """Load the data of ``settings`` as :func:`trials.data.load_data` does for training (``recipe`` None:
    the data's default; its long tail thins the training split) and count every class's images per split;
    ``in_both`` marks classes too small for a selection image, whose training images are also their selection."""
    with data_warnings_silenced():  # the report lists the skipped files
        bundle = settings.load(resolution, recipe)
    both = set(bundle.report.classes_in_both)
    rows: list[dict[str, int | str | bool]] = [
        {"class": i, "name": name, "train": bundle.train_counts[i], "selection": bundle.selection_counts[i],
         "test": bundle.test_counts[i], "in_both": name in both}
        for i, name in enumerate(bundle.classes)
    ]
    return SplitReport(rows, bundle.report)
