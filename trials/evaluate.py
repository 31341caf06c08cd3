"""Evaluation: top-1, balanced accuracy, the per-class table the seed printed, a confusion matrix.

``per_class`` is sorted ascending by accuracy, then by image count (the seed's "accuracy of each class
with ascending trend"); classes without images in the evaluated split come last with ``acc = None`` and
do not count towards balanced accuracy (the mean of per-class recalls over classes that have images).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from search_space.io import atomic_path
from trials.errors import DataError
from trials.progress import task

MAX_LABELLED_CLASSES = 40  # the confusion plot names classes on its axes up to this many


@dataclass
class EvalResult:
    """Accuracy figures of one model on one dataset. ``confusion[t, p]`` counts true ``t`` predicted ``p``."""

    top1: float
    balanced_acc: float
    per_class: list[dict[str, Any]]
    confusion: np.ndarray
    classes: list[str] = field(default_factory=list)

    @property
    def images(self) -> int:
        """Number of evaluated images."""
        return int(self.confusion.sum())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (the confusion matrix as nested lists)."""
        return {"top1": self.top1, "balanced_acc": self.balanced_acc, "images": self.images,
                "classes": list(self.classes), "per_class": [dict(r) for r in self.per_class],
                "confusion": self.confusion.tolist()}


def per_class_rows(confusion: np.ndarray, classes: list[str]) -> list[dict[str, Any]]:
    """Rows ``{class, name, count, correct, acc}`` from a confusion matrix, sorted ascending (see module doc)."""
    counts = confusion.sum(1)
    correct = np.diag(confusion)
    rows = [{"class": c, "name": classes[c], "count": int(counts[c]), "correct": int(correct[c]),
             "acc": float(correct[c] / counts[c]) if counts[c] else None} for c in range(len(classes))]
    return sorted(rows, key=lambda r: (r["acc"] is None, r["acc"] or 0.0, r["count"], r["class"]))


def result_from_predictions(labels: np.ndarray, predictions: np.ndarray, classes: list[str]) -> EvalResult:
    """An :class:`EvalResult` from integer labels and predictions."""
    k = len(classes)
    confusion = np.bincount(labels * k + predictions, minlength=k * k).reshape(k, k).astype(np.int64)
    total = int(confusion.sum())
    present = confusion.sum(1) > 0
    recalls = np.diag(confusion)[present] / confusion.sum(1)[present]
    return EvalResult(
        top1=float(np.trace(confusion) / total) if total else 0.0,
        balanced_acc=float(recalls.mean()) if present.any() else 0.0,
        per_class=per_class_rows(confusion, classes),
        confusion=confusion,
        classes=list(classes),
    )


def evaluate(
    model: nn.Module, dataset: Dataset, classes: list[str], batch_size: int = 256, device: str = "cpu"
) -> EvalResult:
    """Run ``model`` (in eval mode, no gradients) over ``dataset`` of ``(image, label)`` items.

    The model's train/eval mode is restored afterwards. An empty dataset, or a label or a logit count
    that does not fit ``classes``, raises DataError.
    """
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise DataError("the dataset to evaluate is empty", "check the split and the data folder")
    was_training = model.training
    model.eval()
    labels, predictions = [], []
    try:
        with torch.inference_mode(), task(f"evaluating {len(dataset):,} images", len(dataset)) as advance:  # type: ignore[arg-type]
            for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
                logits = model(x.to(device))
                if logits.shape[-1] != len(classes):
                    raise DataError(f"the model predicts {logits.shape[-1]} classes but the data has "
                                    f"{len(classes)}", "evaluate on the data set the model was trained on")
                predictions.append(logits.argmax(-1).cpu())
                labels.append(torch.as_tensor(y))
                advance(len(y))
    finally:
        model.train(was_training)
    y_true = torch.cat(labels).numpy().astype(np.int64)
    if y_true.min() < 0 or y_true.max() >= len(classes):
        raise DataError(f"label {int(y_true.max())} is outside the {len(classes)} classes",
                        "pass the class list of the data set")
    return result_from_predictions(y_true, torch.cat(predictions).numpy().astype(np.int64), classes)


def save_confusion_png(result: EvalResult, path: str | os.PathLike[str], title: str | None = None) -> None:
    """Plot the row-normalized confusion matrix (recall per true class) to a PNG, atomically."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    k = len(result.classes) or result.confusion.shape[0]
    rows = result.confusion.sum(1, keepdims=True)
    share = np.divide(result.confusion, rows, out=np.zeros(result.confusion.shape), where=rows > 0)
    side = min(14.0, 4.0 + 0.18 * k)
    fig = Figure(figsize=(side + 1.2, side), dpi=100)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or f"confusion: top-1 {result.top1:.2%}, balanced {result.balanced_acc:.2%}")
    if result.classes and k <= MAX_LABELLED_CLASSES:
        ax.set_xticks(range(k), result.classes, rotation=90, fontsize=7)
        ax.set_yticks(range(k), result.classes, fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
