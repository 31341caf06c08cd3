"""The training configuration: one JSON-able dataclass, stored whole in every checkpoint.

Torch-free, so the command line can name the choices (losses, data samplers) without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from trials.errors import TrainError

#: Loss names (implemented in :mod:`trials.losses`).
LOSSES = ("ce", "eqlv2", "balanced_softmax", "logit_adjust")
#: How training batches are drawn from the training split.
DATA_SAMPLERS = ("none", "class_balanced")
LR_SCALINGS = ("none", "linear")
#: Config fields that may differ when resuming: more epochs/steps, and where/how fast it runs.
RESUME_FREE = ("epochs", "max_steps", "num_workers", "device")
#: Field names of earlier versions, read from old checkpoints: old name -> current name.
RENAMED_FIELDS = {"sampler": "data_sampler"}


@dataclass
class TrainConfig:
    """Everything that defines a training run (JSON-able; stored whole in every checkpoint).

    epochs           passes over the training set
    batch_size       images per step per process
    lr               base learning rate, used as given unless ``lr_scaling="linear"``
    lr_scaling       ``none`` or ``linear``: lr × global batch / 256, as the official RepVGG scripts did
                     silently (their "lr 0.1, batch 32" trained at 0.0125); see :meth:`effective_lr`
    momentum, nesterov  SGD momentum (0.9) and Nesterov flag
    weight_decay     L2 on conv and linear weights only; BN parameters and biases get none (seed: 4e-5)
    warmup_epochs    linear warm-up length, then cosine decay to 0, both updated every step
    label_smoothing  for the softmax losses (ce, balanced_softmax, logit_adjust)
    loss             ce | eqlv2 | balanced_softmax | logit_adjust (see :mod:`trials.losses`)
    logit_adjust_tau τ of the logit-adjusted loss
    data_sampler     none (shuffle) | class_balanced (uniform over classes, with replacement)
    amp              float16 autocast + GradScaler; CUDA only
    channels_last    NHWC memory format for model and inputs
    seed             seeds torch/numpy/random, model init, batch order and data-loader workers
    num_workers      data-loader worker processes (0: load in the training process)
    device           auto | cpu | cuda | cuda:N (under torchrun: one GPU per LOCAL_RANK)
    max_steps        optional cap on optimizer steps (the schedule then spans the capped length)
    eval_batch_size  batch size for validation
    """

    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.05
    lr_scaling: str = "none"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 4e-5
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    loss: str = "ce"
    logit_adjust_tau: float = 1.0
    data_sampler: str = "none"
    amp: bool = False
    channels_last: bool = False
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    max_steps: int | None = None
    eval_batch_size: int = 256

    def validate(self) -> None:
        """Raise :class:`TrainError` naming the first invalid field and what is allowed."""
        if self.loss not in LOSSES:
            raise TrainError(f"unknown loss {self.loss!r}", f"allowed: {', '.join(LOSSES)}")
        if self.data_sampler not in DATA_SAMPLERS:
            raise TrainError(f"unknown data sampler {self.data_sampler!r}", f"allowed: {', '.join(DATA_SAMPLERS)}")
        if self.lr_scaling not in LR_SCALINGS:
            raise TrainError(f"unknown lr scaling {self.lr_scaling!r}", f"allowed: {', '.join(LR_SCALINGS)}")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                    "eval_batch_size": self.eval_batch_size}
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise TrainError(f"{name} must be positive, got {value}")
        if self.max_steps is not None and self.max_steps < 1:
            raise TrainError(f"max_steps must be at least 1, got {self.max_steps}", "omit it for no cap")
        for name in ("momentum", "weight_decay", "warmup_epochs", "num_workers", "logit_adjust_tau"):
            if getattr(self, name) < 0:
                raise TrainError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 0 <= self.label_smoothing < 1:
            raise TrainError(f"label_smoothing {self.label_smoothing} is out of range", "use a value in [0, 1)")

    def effective_lr(self, world_size: int = 1) -> float:
        """The lr the optimizer uses: ``lr``, or ``lr × batch_size × world_size / 256`` when linear."""
        if self.lr_scaling == "linear":
            return self.lr * self.batch_size * world_size / 256
        return self.lr

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict` (earlier field names accepted); unknown keys raise :class:`TrainError`."""
        data = {RENAMED_FIELDS.get(k, k): v for k, v in data.items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainError(f"unknown training config field(s) {unknown}", f"known: {', '.join(sorted(known))}")
        return cls(**data)
