"""trials.evaluate: figures against a direct numpy computation, ordering, mode restore, PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import TensorDataset

from search_space.model import build_model
from search_space.spec import ArchSpec
from trials.data import load_data
from trials.errors import DataError
from trials.evaluate import evaluate, save_confusion_png

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Oracle(nn.Module):
    """Predicts the class stored in pixel (0, 0, 0) of each input: known predictions for any labels."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(x[:, 0, 0, 0].long(), self.classes).float() * self.scale


def _case(seed: int = 0, k: int = 5, n: int = 300) -> tuple[TensorDataset, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    labels[labels == 4] = 3  # class 4 has no images
    preds = np.where(rng.random(n) < 0.6, labels, rng.integers(0, k, n))
    x = torch.zeros(n, 3, 2, 2)
    x[:, 0, 0, 0] = torch.from_numpy(preds).float()
    return TensorDataset(x, torch.from_numpy(labels)), labels, preds


def test_figures_match_numpy() -> None:
    data, labels, preds = _case()
    classes = ["a", "b", "c", "d", "e"]
    r = evaluate(Oracle(5), data, classes, batch_size=64)
    assert r.top1 == pytest.approx(np.mean(labels == preds))
    recalls = [np.mean(preds[labels == c] == c) for c in range(4)]
    assert r.balanced_acc == pytest.approx(np.mean(recalls))
    expected = np.zeros((5, 5), dtype=np.int64)
    np.add.at(expected, (labels, preds), 1)
    assert np.array_equal(r.confusion, expected)
    by_class = {row["class"]: row for row in r.per_class}
    for c in range(4):
        assert by_class[c]["count"] == int((labels == c).sum())
        assert by_class[c]["correct"] == int(((labels == c) & (preds == c)).sum())
        assert by_class[c]["acc"] == pytest.approx(recalls[c])
        assert by_class[c]["name"] == classes[c]
    accs = [row["acc"] for row in r.per_class[:-1]]
    assert accs == sorted(accs) and r.per_class[-1] == {"class": 4, "name": "e", "count": 0, "correct": 0,
                                                         "acc": None}
    d = r.to_dict()
    assert d["images"] == 300 and np.array_equal(np.array(d["confusion"]), expected)


def test_ties_are_sorted_by_count() -> None:
    labels = np.array([0, 0, 1, 1, 1, 1, 2])
    preds = np.array([0, 1, 1, 1, 0, 0, 2])
    x = torch.zeros(7, 1, 1, 1)
    x[:, 0, 0, 0] = torch.from_numpy(preds).float()
    r = evaluate(Oracle(3), TensorDataset(x, torch.from_numpy(labels)), ["x", "y", "z"])
    assert [(row["class"], row["acc"]) for row in r.per_class] == [(0, 0.5), (1, 0.5), (2, 1.0)]


def test_a_fresh_repvgg_on_digits_and_the_confusion_png(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = load_data(None, 32, max_per_class=30)
    model = build_model(ArchSpec((1, 1, 1, 1), (0.25, 0.25, 0.25, 0.25), resolution=32, num_classes=10))
    model.train()
    r = evaluate(model, data.test, data.classes, batch_size=16)
    assert model.training  # mode restored
    assert r.images == len(data.test) and r.confusion.sum(1).tolist() == data.test_counts
    assert r.top1 == pytest.approx(np.trace(r.confusion) / r.images)
    path = tmp_path / "confusion.png"
    save_confusion_png(r, path)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 100


def test_mismatched_classes_and_empty_data_raise() -> None:
    data, _, _ = _case()
    with pytest.raises(DataError, match="predicts 5 classes"):
        evaluate(Oracle(5), data, ["a", "b"])
    with pytest.raises(DataError, match="empty"):
        evaluate(Oracle(5), TensorDataset(torch.zeros(0, 1), torch.zeros(0)), ["a"])
