"""Losses against hand computations (pure Python math), and a contract every loss meets."""

from __future__ import annotations

import math

import pytest
import torch

from trials.errors import TrainError
from trials.losses import LOSSES, EQLv2, build_loss

COUNTS = [30, 10, 5]


def _log_softmax(row: list[float]) -> list[float]:
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def _smoothed_ce(rows: list[list[float]], labels: list[int], eps: float) -> float:
    total = 0.0
    for row, y in zip(rows, labels):
        logp = _log_softmax(row)
        total += (1 - eps) * -logp[y] + eps * sum(-v for v in logp) / len(row)
    return total / len(rows)


def _bce(z: float, t: float) -> float:
    return math.log1p(math.exp(z)) - t * z


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


LOGITS = [[2.0, 0.0, -1.0], [0.5, 1.5, -0.5], [-1.0, 0.2, 0.7]]
LABELS = [0, 1, 2]


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_ce_with_label_smoothing_matches_hand_computation() -> None:
    loss = build_loss("ce", COUNTS, label_smoothing=0.1)
    got = float(loss(_t(LOGITS), torch.tensor(LABELS)))
    assert got == pytest.approx(_smoothed_ce(LOGITS, LABELS, 0.1), rel=1e-12)


def test_balanced_softmax_adds_the_log_prior() -> None:
    total = sum(COUNTS)
    shifted = [[z + math.log(n / total) for z, n in zip(row, COUNTS)] for row in LOGITS]
    loss = build_loss("balanced_softmax", COUNTS, label_smoothing=0.0)
    assert float(loss(_t(LOGITS), torch.tensor(LABELS))) == pytest.approx(_smoothed_ce(shifted, LABELS, 0.0), rel=1e-6)


def test_logit_adjustment_scales_the_log_prior_by_tau() -> None:
    total, tau = sum(COUNTS), 2.0
    shifted = [[z + tau * math.log(n / total) for z, n in zip(row, COUNTS)] for row in LOGITS]
    loss = build_loss("logit_adjust", COUNTS, label_smoothing=0.1, tau=tau)
    assert float(loss(_t(LOGITS), torch.tensor(LABELS))) == pytest.approx(_smoothed_ce(shifted, LABELS, 0.1), rel=1e-6)


def test_logit_adjustment_with_tau_one_is_balanced_softmax() -> None:
    a = build_loss("logit_adjust", COUNTS, 0.1, tau=1.0)(_t(LOGITS), torch.tensor(LABELS))
    b = build_loss("balanced_softmax", COUNTS, 0.1)(_t(LOGITS), torch.tensor(LABELS))
    torch.testing.assert_close(a, b)


def _eqlv2_by_hand(steps: list[tuple[list[list[float]], list[int]]], c: int) -> list[float]:
    """EQLv2 over C sigmoid logits, step by step, in plain Python (gamma 12, mu 0.8, alpha 4)."""
    pos, neg, losses = [0.0] * c, [0.0] * c, []
    for n_step, (rows, labels) in enumerate(steps):
        if n_step == 0:
            wpos, wneg = [1.0] * c, [1.0] * c
        else:
            wneg = [_sigmoid(12 * (p / (q + 1e-10) - 0.8)) for p, q in zip(pos, neg)]
            wpos = [1 + 4 * (1 - w) for w in wneg]
        total = 0.0
        for row, y in zip(rows, labels):
            for j, z in enumerate(row):
                t = 1.0 if j == y else 0.0
                w = wpos[j] if t else wneg[j]
                total += w * _bce(z, t)
                grad = abs(_sigmoid(z) - t) * w
                if t:
                    pos[j] += grad
                else:
                    neg[j] += grad
        losses.append(total / len(rows))
    return losses


def test_eqlv2_matches_hand_computation_over_three_steps() -> None:
    steps = [
        ([[1.0, -1.0, 0.0], [0.0, 2.0, -1.0]], [0, 1]),
        ([[0.5, 0.0, -0.5], [-1.0, 0.3, 0.2]], [2, 0]),
        ([[0.1, 0.4, -0.2], [0.3, -0.6, 0.9]], [1, 0]),
    ]
    loss = build_loss("eqlv2", COUNTS)
    loss.train()
    got = [float(loss(_t(rows), torch.tensor(labels))) for rows, labels in steps]
    assert got == pytest.approx(_eqlv2_by_hand(steps, 3), rel=1e-9)


def test_eqlv2_has_no_objectness_channel_and_weights_start_at_one() -> None:
    loss = EQLv2(3)
    pos_w, neg_w = loss.class_weights()
    assert pos_w.tolist() == [1.0, 1.0, 1.0] and neg_w.tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(TrainError, match="3 classes got 4 logits"):
        loss(torch.zeros(2, 4), torch.tensor([0, 1]))


def test_eqlv2_down_weights_negatives_of_rare_classes() -> None:
    torch.manual_seed(0)
    loss = EQLv2(3).train()
    for _ in range(20):  # class 0 frequent, class 2 never positive
        loss(torch.randn(8, 3), torch.tensor([0, 0, 0, 0, 0, 0, 1, 1]))
    _, neg_w = loss.class_weights()
    assert neg_w[2] < 0.01 < neg_w[0]


def test_eqlv2_statistics_only_update_in_training_mode_and_round_trip() -> None:
    loss = EQLv2(3).eval()
    loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    assert int(loss.steps) == 0
    loss.train()(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    fresh = EQLv2(3)
    fresh.load_state_dict(loss.state_dict())
    torch.testing.assert_close(fresh.pos_grad, loss.pos_grad)
    assert int(fresh.steps) == 1


def test_unknown_loss_lists_the_allowed_ones() -> None:
    with pytest.raises(TrainError) as err:
        build_loss("focal", COUNTS)
    assert all(name in str(err.value) for name in LOSSES)


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_is_a_finite_scalar_that_prefers_correct_logits(name: str) -> None:
    """Contract: scalar, finite, differentiable, lower for confident right answers than wrong ones."""
    labels = torch.tensor([0, 1, 2, 0])
    right = torch.nn.functional.one_hot(labels, 3).double() * 6 - 3
    wrong = right.roll(1, dims=1)
    loss = build_loss(name, COUNTS, 0.1)
    logits = wrong.clone().requires_grad_(True)
    value = loss(logits, labels)
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value) and logits.grad.abs().sum() > 0
    assert float(build_loss(name, COUNTS, 0.1)(right, labels)) < float(build_loss(name, COUNTS, 0.1)(wrong, labels))


def test_empty_classes_keep_the_prior_finite() -> None:
    loss = build_loss("balanced_softmax", [10, 0, 5])
    assert torch.isfinite(loss(torch.zeros(2, 3), torch.tensor([1, 2])))
