"""The training configuration: one JSON-able dataclass, stored whole in every checkpoint.

A :class:`TrainConfig` is a :class:`~trials.recipe.Recipe` (how to train: augmentation, loss, sampler, label
smoothing, long tail) plus a budget (epochs, steps, batch, learning rate) and where to run. Torch-free, so
the command line can name the choices (losses, data samplers) without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from trials.errors import TrainError
from trials.recipe import DATA_SAMPLERS as DATA_SAMPLERS  # re-exported: the choices of the recipe's fields
from trials.recipe import LOSSES as LOSSES
from trials.recipe import TRAIN_FIELDS, Recipe

LR_SCALINGS = ("none", "linear")
#: ``TrainConfig.scales`` value that runs the RepOpt hyper-search stage instead of reading a scales file.
SEARCH_SCALES = "search"
#: Config fields that may differ when resuming: more epochs/steps, and where/how fast it runs.
RESUME_FREE = ("epochs", "max_steps", "num_workers", "device")
#: Field names of earlier versions, read from old checkpoints: old name -> current name.
RENAMED_FIELDS = {"sampler": "data_sampler"}
#: Earlier versions kept these recipe fields at the top level of the config.
FLAT_RECIPE_FIELDS = TRAIN_FIELDS


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
    recipe           augmentation, loss, data sampler, label smoothing, long tail (:class:`~trials.recipe.Recipe`);
                     the trainer applies the loss, sampler and smoothing, the data bundle the rest (and must
                     have been loaded with the same augmentation and long tail)
    logit_adjust_tau τ of the logit-adjusted loss
    amp              float16 autocast + GradScaler; CUDA only
    channels_last    NHWC memory format for model and inputs
    seed             seeds torch/numpy/random, model init, batch order and data-loader workers
    num_workers      data-loader worker processes (0: load in the training process)
    device           auto | cpu | cuda | cuda:N (under torchrun: one GPU per LOCAL_RANK)
    max_steps        optional cap on optimizer steps (the schedule then spans the capped length)
    eval_batch_size  batch size for validation
    scales           repopt block only: where the gradient-mask scales come from, ``search`` (the hyper-search
                     stage on the training split, :mod:`trials.repopt`) or the path of a scales JSON file
    hs_steps         repopt block only: optimizer steps of the hyper-search stage (None: a fifth of the run's
                     epochs, step cap and warm-up; docs/repopt.md)
    """

    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.05
    lr_scaling: str = "none"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 4e-5
    warmup_epochs: float = 1.0
    recipe: Recipe = field(default_factory=Recipe)
    logit_adjust_tau: float = 1.0
    amp: bool = False
    channels_last: bool = False
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    max_steps: int | None = None
    eval_batch_size: int = 256
    scales: str = SEARCH_SCALES
    hs_steps: int | None = None

    def validate(self) -> None:
        """Raise :class:`TrainError` naming the first invalid field and what is allowed."""
        self.recipe.validate()
        if self.lr_scaling not in LR_SCALINGS:
            raise TrainError(f"unknown lr scaling {self.lr_scaling!r}", f"allowed: {', '.join(LR_SCALINGS)}")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                    "eval_batch_size": self.eval_batch_size}
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise TrainError(f"{name} must be positive, got {value}")
        if self.max_steps is not None and self.max_steps < 1:
            raise TrainError(f"max_steps must be at least 1, got {self.max_steps}", "omit it for no cap")
        if self.hs_steps is not None and self.hs_steps < 1:
            raise TrainError(f"hs_steps must be at least 1, got {self.hs_steps}", "omit it for the default share")
        if not isinstance(self.scales, str) or not self.scales.strip():
            raise TrainError(f"scales must be {SEARCH_SCALES!r} or a file path, got {self.scales!r}",
                             "let the hyper-search stage find the scales, or name a scales file")
        for name in ("momentum", "weight_decay", "warmup_epochs", "num_workers", "logit_adjust_tau"):
            if getattr(self, name) < 0:
                raise TrainError(f"{name} must not be negative, got {getattr(self, name)}")

    def effective_lr(self, world_size: int = 1) -> float:
        """The lr the optimizer uses: ``lr``, or ``lr × batch_size × world_size / 256`` when linear."""
        if self.lr_scaling == "linear":
            return self.lr * self.batch_size * world_size / 256
        return self.lr

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``: config fields, or recipe fields (applied to :attr:`recipe`). Keys whose
        value is None are ignored ("not given"). The recipe is checked here, the rest by :meth:`validate`."""
        given = {k: v for k, v in changes.items() if v is not None}
        recipe_names = {f.name for f in fields(Recipe)}
        body = self.to_dict()
        body["recipe"].update({k: v for k, v in given.items() if k in recipe_names})
        body.update({k: v for k, v in given.items() if k not in recipe_names})
        return TrainConfig.from_dict(body)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (the recipe as a nested dict)."""
        body = asdict(self)
        body["recipe"] = self.recipe.to_dict()
        return body

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`. Earlier forms are read: renamed fields (``sampler``), and ``loss``,
        ``data_sampler``, ``label_smoothing`` at the top level (they join the recipe). Unknown keys raise
        :class:`TrainError`."""
        data = {RENAMED_FIELDS.get(k, k): v for k, v in data.items()}
        flat = {k: data.pop(k) for k in FLAT_RECIPE_FIELDS if k in data}
        recipe = data.get("recipe")
        if recipe is not None and not isinstance(recipe, (dict, Recipe)):
            raise TrainError(f"the training config's recipe is {type(recipe).__name__}, not a mapping")
        recipe_body = recipe.to_dict() if isinstance(recipe, Recipe) else dict(recipe or {})
        data["recipe"] = Recipe.from_dict({**recipe_body, **flat})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainError(f"unknown training config field(s) {unknown}", f"known: {', '.join(sorted(known))}")
        return cls(**data)
