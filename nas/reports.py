"""Data-set statistics and checkpoint evaluation with their files, for the CLI and for notebooks.

``stats_outputs(path, out_dir)`` = :func:`trials.stats.dataset_stats` + the two PNGs, a JSON and a CSV;
``eval_checkpoint(checkpoint, data, splits, out_dir)`` = model + data + :func:`trials.evaluate.evaluate`
per split + a confusion PNG, a JSON and a per-class CSV per split (the checkpoint is read once, through
:class:`trials.checkpoint.Checkpoint`). Every file is written atomically.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search_space.io import atomic_write
from search_space.spec import ArchSpec
from trials.data import DataReport, DataWarning, load_data
from trials.errors import DataError
from trials.evaluate import EvalResult, evaluate, save_confusion_png
from trials.folders import find_layout, list_classes
from trials.recipe import Recipe
from trials.stats import SMALL_SIDE, DatasetStats, dataset_stats, save_class_histogram, save_resolution_scatter

SPLITS = ("val", "train")


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
    files: dict[str, Path] = field(default_factory=dict)

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per split: images, top-1, balanced accuracy, worst class."""
        rows = []
        for split, r in self.results.items():
            worst = r.per_class[0] if r.per_class else {}
            rows.append({"split": split, "images": r.images, "top1": r.top1, "balanced_acc": r.balanced_acc,
                         "worst_class": worst.get("name"), "worst_acc": worst.get("acc")})
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: checkpoint, spec, data report and each split's result."""
        return {"checkpoint": self.checkpoint, "spec": self.spec.to_string(), "data": self.data.to_dict(),
                **{split: r.to_dict() for split, r in self.results.items()}}


def _check_classes(expected: Sequence[str], found: Sequence[str]) -> None:
    if list(found) != list(expected):
        raise DataError(
            f"the checkpoint has {len(expected)} classes ({', '.join(expected[:3])}, …) but the data has "
            f"{len(found)} ({', '.join(found[:3])}, …)", "evaluate on the data the model was trained on")


def eval_checkpoint(
    checkpoint: str | os.PathLike[str],
    data: str | os.PathLike[str] | None = None,
    splits: Sequence[str] = ("val",),
    out_dir: str | os.PathLike[str] | None = None,
    *,
    val_ratio: float | None = None,
    long_tail: str | None = None,
    seed: int | None = None,
    batch_size: int = 256,
) -> EvalRun:
    """Evaluate a training checkpoint on ``splits`` of ``data`` (None: the checkpoint's recorded data, else
    the embedded digits). Unset split settings come from the checkpoint's
    :class:`trials.checkpoint.DataSettings`. The data's classes must equal the checkpoint's."""
    from trials.checkpoint import Checkpoint

    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise DataError(f"unknown split {bad[0] if bad else '(none)'}", "use val, train or both")
    ckpt = Checkpoint.read(checkpoint)
    model = ckpt.build_model()  # a damaged file fails before the data is decoded
    recorded = ckpt.data
    path = data if data is not None else recorded.path
    if path is not None:  # cheap check before decoding a whole data set
        _check_classes(ckpt.classes, list_classes(find_layout(path)[1]))
    bundle = load_data(
        path, ckpt.spec.resolution,
        val_ratio=val_ratio if val_ratio is not None else recorded.val_ratio,
        long_tail=long_tail if long_tail is not None else recorded.long_tail,
        seed=seed if seed is not None else recorded.seed,
        max_per_class=recorded.max_per_class,
    )
    _check_classes(ckpt.classes, bundle.classes)
    datasets = {"val": bundle.val, "train": bundle.train_eval}
    results = {s: evaluate(model, datasets[s], bundle.classes, batch_size=batch_size) for s in splits}
    run = EvalRun(str(checkpoint), ckpt.spec, results, bundle.report)
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
    """A data set loaded as training loads it: one row per class (``class, name, train, val, in_both``)
    and the loader's report (layout, split rule, skipped files, long tail)."""

    rows: list[dict[str, int | str | bool]]
    report: DataReport


def split_report(
    path: str | os.PathLike[str] | None,
    resolution: int,
    *,
    val_ratio: float = 0.1,
    long_tail: str | None = None,
    seed: int = 0,
    max_per_class: int | None = None,
) -> SplitReport:
    """Load ``path`` (None: the embedded digits) as :func:`trials.data.load_data` does for training and count
    every class's images per split; ``in_both`` marks classes that have images in both splits."""
    with data_warnings_silenced():  # the report lists the skipped files
        bundle = load_data(path, resolution, val_ratio=val_ratio, long_tail=long_tail, seed=seed,
                           max_per_class=max_per_class)
    both = set(bundle.report.classes_in_both)
    rows: list[dict[str, int | str | bool]] = [
        {"class": i, "name": name, "train": bundle.train_counts[i], "val": bundle.val_counts[i],
         "in_both": name in both}
        for i, name in enumerate(bundle.classes)
    ]
    return SplitReport(rows, bundle.report)
