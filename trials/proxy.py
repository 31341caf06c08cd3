"""Proxy accuracy: a short, fixed-budget training run that ranks architectures cheaply.

The budget is :class:`ProxyConfig` — a per-class-capped training subset, images resized down to a small
resolution, a fixed number of epochs with a hard cap on optimizer steps, a fixed seed and one torch
thread — so every spec is judged on identical data, order and step count, and a big spec costs more per
step but never more steps. The default budget takes a few seconds per tiny spec on the embedded digits.
All fields are configurable so that a fidelity study (Kendall τ of proxy vs full training) can vary them.

The subset is materialized once per (data bundle, budget) as in-memory tensors and reused by every
later call with the same bundle, which is what a search does dozens of times.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from search_space.spec import MIN_RESOLUTION, ArchSpec
from trials.checkpoint import rng_state, set_rng_state
from trials.config import TrainConfig
from trials.distributed import dataset_labels, torch_threads
from trials.errors import TrainError
from trials.train import train


@dataclass(frozen=True)
class ProxyConfig:
    """The fixed proxy budget; never more than ``max_steps`` optimizer steps of ``batch_size`` images.

    Defaults, measured on the embedded digits (559 training images after the cap, 102 steps) on a shared
    2-core machine at load ~7: 3.3 s for a d1-1-1-1 w0.25 spec, 10 s for N1, 42 s for A0. Short budgets
    favour shallow nets; 6 epochs at lr 0.1 separated them better than 4 at 0.05 (A0: balanced accuracy 0.67 vs 0.39).

    resolution      images are resized (area-averaged) to this many px when the data is larger
    max_per_class   training images kept per class (a seeded random choice); None keeps all
    val_per_class   validation images kept per class; None keeps all
    epochs          passes over the subset …
    max_steps       … but never more optimizer steps than this (bounds the cost of big specs)
    batch_size, lr, warmup_epochs, weight_decay, label_smoothing, loss, data_sampler   as in TrainConfig
    seed            fixes the subset, the initialization and the batch order
    threads         torch CPU threads during the run (1: results independent of the core count and
                    robust on a shared machine; None: the caller's setting)
    """

    resolution: int = 32
    max_per_class: int | None = 100
    val_per_class: int | None = 50
    epochs: int = 6
    max_steps: int = 120
    batch_size: int = 32
    lr: float = 0.1
    warmup_epochs: float = 0.5
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    loss: str = "ce"
    data_sampler: str = "none"
    seed: int = 0
    threads: int | None = 1

    def validate(self) -> None:
        """Raise :class:`TrainError` for an unusable budget."""
        if self.resolution < MIN_RESOLUTION:
            raise TrainError(f"proxy resolution {self.resolution} px is below {MIN_RESOLUTION}",
                             f"use at least {MIN_RESOLUTION} px (five stride-2 stages)")
        for name in ("max_per_class", "val_per_class"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TrainError(f"proxy {name} must be at least 1, got {value}", "or None to keep every image")
        if self.epochs < 1 or self.max_steps < 1:
            raise TrainError("proxy epochs and max_steps must be at least 1")

    def train_config(self) -> TrainConfig:
        """The :class:`TrainConfig` a proxy run trains with (CPU, no workers, no checkpoints)."""
        return TrainConfig(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, warmup_epochs=self.warmup_epochs,
            weight_decay=self.weight_decay, label_smoothing=self.label_smoothing, loss=self.loss,
            data_sampler=self.data_sampler, seed=self.seed, max_steps=self.max_steps, device="cpu", num_workers=0,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (recorded beside proxy scores)."""
        return asdict(self)


@dataclass(frozen=True)
class ProxyResult:
    """Final-epoch validation accuracy of a proxy run and what the run cost."""

    top1: float
    balanced_acc: float
    wall_s: float
    epochs: int
    train_images: int
    resolution: int
    steps: int = 0


@dataclass
class _Subset:
    """A materialized proxy data bundle (the interface :func:`trials.train.train` reads)."""

    train: Dataset
    val: Dataset
    classes: list[str]
    train_counts: list[int]
    resolution: int


_CACHE: dict[tuple[Any, ...], tuple[weakref.ref, weakref.ref, _Subset]] = {}


def _pick(labels: list[int], cap: int | None, num_classes: int, seed: int) -> np.ndarray:
    """Indices of at most ``cap`` items per class: a seeded permutation, the first ``cap`` of each class."""
    order = np.random.default_rng(seed).permutation(len(labels))
    if cap is None:
        return np.sort(order)
    taken = np.zeros(num_classes, dtype=np.int64)
    keep = []
    for i in order:
        c = labels[i]
        if taken[c] < cap:
            taken[c] += 1
            keep.append(i)
    return np.sort(np.asarray(keep, dtype=np.int64))


def fetch_items(dataset: Dataset, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, R, R) float and labels (N,) of ``indices``, in one batched call where supported."""
    idx = [int(i) for i in indices]
    getitems = getattr(dataset, "__getitems__", None)
    items = getitems(idx) if getitems is not None else [dataset[i] for i in idx]
    images = torch.stack([x for x, _ in items]).float()
    return images, torch.tensor([int(y) for _, y in items], dtype=torch.long)


def resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Square images (N, 3, R0, R0) resized to ``resolution`` (antialiased when shrinking)."""
    if images.shape[-1] == resolution:
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", antialias=True,
                         align_corners=False)


def _materialize(dataset: Dataset, indices: np.ndarray, resolution: int) -> TensorDataset:
    images, labels = fetch_items(dataset, indices)
    return TensorDataset(resize(images, resolution).contiguous(), labels)


def plain_train_set(data: Any) -> Dataset:
    """The training images without random augmentation (``train_eval`` of a DataBundle), else ``train``."""
    return getattr(data, "train_eval", None) or data.train


def proxy_data(data: Any, config: ProxyConfig) -> _Subset:
    """The capped, resized, in-memory subset of ``data`` that :func:`proxy_accuracy` trains on (cached).

    Training images come without random augmentation (the evaluation crop), so the subset — and with
    it the proxy score — is a function of the data, the budget and the seed only.
    """
    train_set = plain_train_set(data)
    key = (id(train_set), id(data.val), config.resolution, config.max_per_class, config.val_per_class, config.seed)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is train_set and hit[1]() is data.val:
        return hit[2]
    n = len(data.classes)
    train_labels, val_labels = dataset_labels(train_set), dataset_labels(data.val)
    tr = _pick(train_labels, config.max_per_class, n, config.seed)
    va = _pick(val_labels, config.val_per_class, n, config.seed + 1)
    if len(tr) < 2 or len(va) < 1:
        raise TrainError(f"the proxy subset has {len(tr)} training and {len(va)} validation images",
                         "give data with more images per class")
    subset = _Subset(
        train=_materialize(train_set, tr, config.resolution),
        val=_materialize(data.val, va, config.resolution),
        classes=list(data.classes),
        train_counts=np.bincount(np.asarray(train_labels)[tr], minlength=n).tolist(),
        resolution=config.resolution,
    )
    try:
        refs = (weakref.ref(train_set), weakref.ref(data.val))
    except TypeError:  # datasets without weakref support are not cached
        return subset
    for stale in [k for k, (a, b, _) in _CACHE.items() if a() is None or b() is None]:
        del _CACHE[stale]
    _CACHE[key] = (*refs, subset)
    return subset


def embedded_data(resolution: int, seed: int = 0) -> Any:
    """The embedded long-tailed digits at ``resolution`` (the proxy's default data)."""
    from trials.data import load_data  # late: the data module is only needed when no data is given

    return load_data(None, resolution, seed=seed)


@contextlib.contextmanager
def kept_rng() -> Iterator[None]:
    """Run the block (which seeds the global RNGs) and restore the caller's torch/numpy/Python RNG states."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


_EMBEDDED: dict[tuple[int, int], Any] = {}


def proxy_accuracy(spec: ArchSpec, data: Any = None, config: ProxyConfig | None = None) -> ProxyResult:
    """Train ``spec`` (at the proxy resolution, with the data's class count) on the proxy budget.

    ``data`` is a DataBundle, or None for the embedded digits. Returns the final-epoch validation
    top-1 and balanced accuracy, the wall time, and the budget actually spent. The caller's torch
    thread count is used as is.
    """
    config = config or ProxyConfig()
    config.validate()
    if data is None:
        key = (config.resolution, config.seed)
        if key not in _EMBEDDED:
            _EMBEDDED[key] = embedded_data(config.resolution, config.seed)
        data = _EMBEDDED[key]
    start = time.perf_counter()
    with torch_threads(config.threads), kept_rng():
        subset = proxy_data(data, config)
        proxy_spec = spec.replace(resolution=config.resolution, num_classes=len(subset.classes))
        result = train(proxy_spec, subset, config.train_config())
    m = result.metrics
    return ProxyResult(
        top1=float(m["top1"]), balanced_acc=float(m["balanced_acc"]), wall_s=time.perf_counter() - start,
        epochs=int(m["epochs"]), train_images=len(subset.train), resolution=config.resolution,
        steps=int(m["steps"]),
    )
