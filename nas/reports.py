"""Data-set statistics and checkpoint evaluation with their files, for the CLI and for notebooks.

``stats_outputs(path, out_dir)`` = :func:`trials.stats.dataset_stats` + the two PNGs, a JSON and a CSV;
``eval_checkpoint(checkpoint, data, splits, out_dir)`` = model + data + :func:`trials.evaluate.evaluate`
per split + a confusion PNG, a JSON and a per-class CSV per split. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search_space.io import atomic_write
from search_space.spec import ArchSpec
from trials.data import DataReport, load_data
from trials.errors import DataError
from trials.evaluate import EvalResult, evaluate, save_confusion_png
from trials.folders import find_layout, list_classes
from trials.stats import DatasetStats, dataset_stats, save_class_histogram, save_resolution_scatter

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
                        "pass a writable --out-dir") from exc
    return out


def stats_outputs(
    path: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None
) -> tuple[DatasetStats, dict[str, Path]]:
    """Statistics of a data folder; with ``out_dir`` also ``class_histogram.png``, ``resolutions.png``,
    ``stats.json`` and ``class_counts.csv`` there. Returns the stats and ``{name: path}`` of the files."""
    stats = dataset_stats(path)
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


def checkpoint_data_settings(checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    """Data settings recorded in a checkpoint's ``data`` entry (``trials.train`` stores the data report
    updated with path, val_ratio, long_tail, seed, max_per_class); the seed falls back to the config's."""
    from trials.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    recorded = state.get("data") if isinstance(state.get("data"), dict) else {}
    settings = {k: recorded[k] for k in ("val_ratio", "long_tail", "seed", "max_per_class")
                if recorded.get(k) is not None}  # None: not recorded, or not used (val_ratio of train/val folders)
    if "path" in recorded:
        settings["path"] = recorded["path"]
    elif recorded.get("source") and not str(recorded["source"]).startswith("embedded:"):
        settings["path"] = recorded["source"]
    settings.setdefault("seed", dict(state.get("config") or {}).get("seed", 0))
    return settings


def _check_classes(expected: Sequence[str], found: Sequence[str]) -> None:
    if list(found) != list(expected):
        raise DataError(
            f"the checkpoint has {len(expected)} classes ({', '.join(expected[:3])}, …) but the data has "
            f"{len(found)} ({', '.join(found[:3])}, …)", "pass the --data folder the model was trained on")


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
    the embedded digits). Unset split settings come from the checkpoint (see
    :func:`checkpoint_data_settings`). The data's classes must equal the checkpoint's."""
    from trials.checkpoint import model_from_checkpoint

    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise DataError(f"unknown split {bad[0] if bad else '(none)'}", "use val, train or both")
    model, spec, classes, _ = model_from_checkpoint(checkpoint)
    recorded = checkpoint_data_settings(checkpoint)
    path = data if data is not None else recorded.get("path")
    if path is not None:  # cheap check before decoding a whole data set
        _check_classes(classes, list_classes(find_layout(path)[1]))
    bundle = load_data(
        path, spec.resolution,
        val_ratio=val_ratio if val_ratio is not None else recorded.get("val_ratio", 0.1),
        long_tail=long_tail if long_tail is not None else recorded.get("long_tail"),
        seed=seed if seed is not None else int(recorded.get("seed", 0)),
        max_per_class=recorded.get("max_per_class"),
    )
    _check_classes(classes, bundle.classes)
    datasets = {"val": bundle.val, "train": bundle.train_eval}
    results = {s: evaluate(model, datasets[s], bundle.classes, batch_size=batch_size) for s in splits}
    run = EvalRun(str(checkpoint), spec, results, bundle.report)
    if out_dir is not None:
        out = _out_dir(out_dir)
        for s, r in results.items():
            run.files[f"confusion_{s}"] = out / f"confusion_{s}.png"
            save_confusion_png(r, out / f"confusion_{s}.png",
                               title=f"{s}: top-1 {r.top1:.2%}, balanced {r.balanced_acc:.2%}")
            run.files[f"per_class_{s}"] = write_csv(out / f"per_class_{s}.csv", r.per_class)
        run.files["eval"] = write_json(out / "eval.json", run.to_dict())
    return run
