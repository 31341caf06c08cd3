"""Classification losses for long-tailed data: CE, EQLv2, balanced softmax, logit adjustment.

Notation: logits ``z`` of shape (N, C), integer labels ``y``, training class counts ``n_j`` and the
class prior ``π_j = n_j / Σ n`` (a class with no training image counts as 1, so ``log π`` stays finite).

- ``ce``: cross-entropy with label smoothing ``ε``: ``(1-ε)·CE(z, y) + ε·mean_j(-log softmax(z)_j)``.
- ``balanced_softmax`` (Ren et al. 2020): ``CE(z + log π, y)`` with the same smoothing. At test time
  the raw logits ``z`` are used, which removes the training prior.
- ``logit_adjust`` (Menon et al. 2021, logit-adjusted loss): ``CE(z + τ·log π, y)``; ``τ = 1`` equals
  balanced softmax, a larger ``τ`` favours rare classes more.
- ``eqlv2`` (Tan et al. 2021, "Equalization Loss v2"), the gradient-balanced sigmoid loss over exactly
  the C class logits. The public port reserves the last logit as a detector's objectness channel; a
  classifier has none, so every one of the C logits is a class here. With ``p = σ(z)`` and one-hot ``t``::

      loss      = (1/N) Σ_i Σ_j w_ij · BCE(z_ij, t_ij)
      w_ij      = t_ij · w⁺_j + (1 - t_ij) · w⁻_j
      w⁻_j      = f(g_j) = 1 / (1 + exp(-γ (g_j - μ)))     g_j = P_j / (N_j + 1e-10)
      w⁺_j      = 1 + α (1 - w⁻_j)

  ``P_j`` and ``N_j`` are the positive and negative gradient magnitudes ``|p_ij - t_ij|·w_ij``
  accumulated over all previous training steps (summed over ranks under DDP). Before the first step
  both weights are 1. Published hyper-parameters: ``γ = 12, μ = 0.8, α = 4``. Label smoothing does not
  apply (sigmoid targets stay one-hot). The accumulators are buffers, so checkpoints resume them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from trials.config import LOSSES
from trials.errors import TrainError


def log_prior(class_counts: Sequence[int]) -> torch.Tensor:
    """``log π_j`` from training class counts (empty classes count as 1)."""
    counts = torch.tensor([max(int(c), 1) for c in class_counts], dtype=torch.float64)
    return torch.log(counts / counts.sum()).to(torch.float32)


class SmoothedCE(nn.Module):
    """Cross-entropy with label smoothing on ``logits + shift``; ``shift`` is 0, ``log π`` or ``τ·log π``."""

    def __init__(self, label_smoothing: float = 0.0, shift: torch.Tensor | None = None) -> None:
        super().__init__()
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("shift", shift if shift is not None else torch.zeros(0), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # (N, C), (N,) -> ()
        if self.shift.numel():
            logits = logits + self.shift.to(logits.dtype)
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)


class EQLv2(nn.Module):
    """Equalization loss v2 for single-label classification over C sigmoid logits (see module docstring)."""

    def __init__(self, num_classes: int, gamma: float = 12.0, mu: float = 0.8, alpha: float = 4.0) -> None:
        super().__init__()
        self.num_classes, self.gamma, self.mu, self.alpha = num_classes, gamma, mu, alpha
        self.register_buffer("pos_grad", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("neg_grad", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def class_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Current ``(w⁺, w⁻)`` per class, each (C,) float64; all ones before the first step."""
        if int(self.steps) == 0:
            ones = torch.ones(self.num_classes, dtype=torch.float64, device=self.pos_grad.device)
            return ones, ones
        ratio = self.pos_grad / (self.neg_grad + 1e-10)
        neg_w = torch.sigmoid(self.gamma * (ratio - self.mu))
        return 1 + self.alpha * (1 - neg_w), neg_w

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # (N, C), (N,) -> ()
        if logits.shape[1] != self.num_classes:
            raise TrainError(f"EQLv2 built for {self.num_classes} classes got {logits.shape[1]} logits",
                             "build the loss from the same data as the model")
        onehot = F.one_hot(target, self.num_classes).to(logits.dtype)  # (N, C)
        pos_w, neg_w = (w.to(logits.dtype) for w in self.class_weights())
        weight = onehot * pos_w + (1 - onehot) * neg_w  # (N, C)
        bce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
        loss = (bce * weight).sum() / logits.shape[0]
        if self.training:
            self._collect(logits.detach(), onehot, weight)
        return loss

    @torch.no_grad()
    def _collect(self, logits: torch.Tensor, onehot: torch.Tensor, weight: torch.Tensor) -> None:
        grad = (torch.sigmoid(logits) - onehot).abs() * weight  # |∂BCE/∂z|, weighted as in the loss
        pos = (grad * onehot).sum(0).to(torch.float64)
        neg = (grad * (1 - onehot)).sum(0).to(torch.float64)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            both = torch.stack([pos, neg])
            dist.all_reduce(both)
            pos, neg = both[0], both[1]
        self.pos_grad += pos
        self.neg_grad += neg
        self.steps += 1


def build_loss(
    name: str,
    class_counts: Sequence[int],
    label_smoothing: float = 0.0,
    *,
    tau: float = 1.0,
    gamma: float = 12.0,
    mu: float = 0.8,
    alpha: float = 4.0,
) -> nn.Module:
    """The loss module called ``name`` (one of :data:`LOSSES`) for data with ``class_counts``.

    Every loss maps ``(logits (N, C), labels (N,))`` to a scalar mean over the batch.
    """
    if name not in LOSSES:
        raise TrainError(f"unknown loss {name!r}", f"allowed: {', '.join(LOSSES)}")
    if not 0.0 <= label_smoothing < 1.0:
        raise TrainError(f"label smoothing {label_smoothing} is out of range", "use a value in [0, 1)")
    if len(class_counts) < 2:
        raise TrainError(f"a loss needs at least 2 classes, got {len(class_counts)}")
    if name == "ce":
        return SmoothedCE(label_smoothing)
    if name == "balanced_softmax":
        return SmoothedCE(label_smoothing, log_prior(class_counts))
    if name == "logit_adjust":
        if not math.isfinite(tau) or tau < 0:
            raise TrainError(f"logit-adjustment tau {tau} is invalid", "use tau >= 0 (1 is the usual value)")
        return SmoothedCE(label_smoothing, tau * log_prior(class_counts))
    return EQLv2(len(class_counts), gamma=gamma, mu=mu, alpha=alpha)
