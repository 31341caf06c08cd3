"""Rungs: a proxy run stopped early and continued from its checkpoint equals one uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from search_space.spec import ArchSpec
from trials.checkpoint import Checkpoint
from trials.data import load_data
from trials.errors import TrainError
from trials.proxy import ProxyBudget, ProxyConfig, proxy_accuracy
from trials.rungs import CHECKPOINT, rung_accuracy

TINY = ArchSpec((1, 1, 1, 1), (0.25, 0.25, 0.25, 0.25), resolution=32, num_classes=10)
#: 3 epochs of ≈ 7 steps on a 240-image subset: cosine over 21 steps, so stopping at 1 changes everything.
CONFIG = ProxyConfig(budget=ProxyBudget(epochs=3, max_steps=1000, train_images=240, selection_per_class=10))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    return load_data(None, 32)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return Checkpoint.read(folder / CHECKPOINT).model


def test_rung_one_then_three_equals_one_run_to_three(digits, tmp_path: Path) -> None:
    low = rung_accuracy(TINY, digits, CONFIG, 1, tmp_path / "rungs")
    high = rung_accuracy(TINY, digits, CONFIG, 3, tmp_path / "rungs")
    whole = rung_accuracy(TINY, digits, CONFIG, 3, tmp_path / "whole")
    assert (low.start_epoch, low.epochs, high.start_epoch, high.epochs) == (0, 1, 1, 3)
    assert high.start_step == low.steps and high.steps == whole.steps == 3 * low.steps
    continued, uninterrupted = _weights(tmp_path / "rungs"), _weights(tmp_path / "whole")
    assert continued.keys() == uninterrupted.keys()
    assert all(torch.equal(continued[k], uninterrupted[k]) for k in continued)
    assert high.selection_predictions == whole.selection_predictions
    no_folder = rung_accuracy(TINY, digits, CONFIG, 3, None)
    assert no_folder.selection_predictions == whole.selection_predictions
    assert proxy_accuracy(TINY, digits, CONFIG).selection_predictions == whole.selection_predictions
    assert not (tmp_path / "rungs" / "best.pt").exists()


def test_a_low_rung_is_the_top_runs_schedule_stopped_early(digits, tmp_path: Path) -> None:
    """Rung 1 of a 3-epoch budget is not a 1-epoch proxy: the learning rate has not decayed yet."""
    rung = rung_accuracy(TINY, digits, CONFIG, 1, tmp_path / "rung")
    short = ProxyConfig(budget=ProxyBudget(epochs=1, max_steps=1000, train_images=240, selection_per_class=10))
    alone = rung_accuracy(TINY, digits, short, 1, tmp_path / "alone")
    assert rung.steps == alone.steps
    lr = Checkpoint.read(tmp_path / "rung" / CHECKPOINT).history[-1]["lr"]
    assert lr > 0.5 * CONFIG.budget.lr  # cosine over 3 epochs: after the first third, still above half
    assert Checkpoint.read(tmp_path / "alone" / CHECKPOINT).history[-1]["lr"] < 1e-6 * CONFIG.budget.lr
    differ = [k for k, v in _weights(tmp_path / "rung").items() if not torch.equal(v, _weights(tmp_path / "alone")[k])]
    assert differ


def test_a_checkpoint_of_another_spec_or_budget_is_refused(digits, tmp_path: Path) -> None:
    rung_accuracy(TINY, digits, CONFIG, 1, tmp_path)
    wider = TINY.replace(widths=(0.5, 0.5, 0.5, 0.5))
    with pytest.raises(TrainError, match="spec differ"):
        rung_accuracy(wider, digits, CONFIG, 3, tmp_path)
    fewer = ProxyConfig(budget=ProxyBudget(epochs=3, max_steps=1000, train_images=120, selection_per_class=10))
    with pytest.raises(TrainError, match="proxy differ"):
        rung_accuracy(TINY, digits, fewer, 3, tmp_path)
    reseeded = ProxyConfig(budget=ProxyBudget(epochs=3, max_steps=1000, train_images=240, selection_per_class=10,
                                              seed=1))
    with pytest.raises(TrainError, match="proxy differ"):
        rung_accuracy(TINY, digits, reseeded, 3, tmp_path)
    assert Checkpoint.read(tmp_path / CHECKPOINT).epoch == 1  # left as it was


def test_a_missing_checkpoint_retrains_and_a_lower_rung_is_refused(digits, tmp_path: Path) -> None:
    first = rung_accuracy(TINY, digits, CONFIG, 2, tmp_path / "a")
    (tmp_path / "a" / CHECKPOINT).unlink()
    again = rung_accuracy(TINY, digits, CONFIG, 2, tmp_path / "a")
    assert again.start_epoch == 0 and again.epochs == 2
    assert again.selection_predictions == first.selection_predictions
    with pytest.raises(TrainError, match="past the rung"):
        rung_accuracy(TINY, digits, CONFIG, 1, tmp_path / "a")
    with pytest.raises(TrainError, match="outside"):
        rung_accuracy(TINY, digits, CONFIG, 4, tmp_path / "b")
