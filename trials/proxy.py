"""Proxy accuracy: the training recipe at a small, fixed budget, to rank architectures cheaply.

The proxy is full training with less of it. Same recipe (augmentation, loss, data sampler, label
smoothing and long tail: the data bundle's), same transforms (the bundle's augmented training dataset,
subset by indices — nothing is materialized), same resolution (the spec's: the bundle must be loaded at
it). Only the budget differs, :class:`ProxyBudget`: a training subset that keeps the class-count *shape*
(every class scaled by one factor, :func:`trials.longtail.shape_subset`), a fixed number of epochs with a
hard cap on optimizer steps, a fixed seed and one torch thread — so every spec is judged on identical
data, order and step count, and a big spec costs more per step but never more steps. The score is the
final-epoch accuracy on the **selection** split (capped per class, stratified); the test split is never read.
The result keeps every scored image's label and prediction, so that the caller can say how uncertain the
score is (``nas.uncertainty``); the scored images do not depend on the proxy's seed, so runs with several
seeds score the same images (paired).

The subset's indices are chosen once per (data bundle, budget) and reused by every later call with the
same bundle, which is what a search does dozens of times.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from search_space.spec import ArchSpec
from trials.checkpoint import Checkpoint, rng_state, set_rng_state
from trials.config import TrainConfig
from trials.distributed import dataset_labels, torch_threads
from trials.errors import TrainError
from trials.evaluate import result_from_predictions
from trials.longtail import cap_per_class, shape_subset
from trials.recipe import Recipe
from trials.repopt import within_budget
from trials.train import data_resolution, planned_steps, train

if TYPE_CHECKING:
    from trials.data import DataBundle


#: Seed of the choice of scored selection images (not the proxy's seed: repeated seeds score the same images).
SELECTION_SEED = 0


@dataclass(frozen=True)
class ProxyBudget:
    """How much training a proxy run gets; never more than ``max_steps`` optimizer steps of ``batch_size``.

    Measured on the embedded digits (568 training images, all kept; 102 steps) with one thread, for a
    d1-1-1-1 w0.25 spec at 32 px: 1.13 s CPU per run (median of 15 on a shared 2-core machine; docs/data.md).
    Short budgets favour shallow nets; 6 epochs at lr 0.1 separated them better than 4 at 0.05.

    epochs               passes over the subset …
    max_steps            … but never more optimizer steps than this (bounds the cost of big specs and big sets);
                         None: no cap (the epochs over ``train_images`` bound it: multi-fidelity rungs)
    train_images         about this many training images, the class-count shape kept (the smallest class
                         keeps at least 5 when it has them, so a long tail may add a few); None: all of them
    selection_per_class  selection images scored per class (a stratified choice with seed
                         :data:`SELECTION_SEED`, whatever ``seed`` is: every proxy seed scores the same images);
                         None: all
    batch_size, lr, warmup_epochs, weight_decay   as in TrainConfig
    seed                 fixes the training subset, the initialization, the batch order and the augmentation
                         draws
    threads              torch CPU threads during the run (1: results independent of the core count and
                         robust on a shared machine; None: the caller's setting)
    """

    epochs: int = 6
    max_steps: int | None = 120
    train_images: int | None = 1000
    selection_per_class: int | None = 50
    batch_size: int = 32
    lr: float = 0.1
    warmup_epochs: float = 0.5
    weight_decay: float = 4e-5
    seed: int = 0
    threads: int | None = 1

    def validate(self) -> None:
        """Raise :class:`TrainError` for an unusable budget."""
        for name in ("train_images", "selection_per_class"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TrainError(f"proxy {name} must be at least 1, got {value}", "or None to keep every image")
        if self.epochs < 1 or (self.max_steps is not None and self.max_steps < 1) or self.batch_size < 1:
            raise TrainError("proxy epochs, max_steps and batch_size must be at least 1")


@dataclass(frozen=True)
class ProxyConfig:
    """A proxy run: a :class:`~trials.recipe.Recipe` (None: the data bundle's) and a :class:`ProxyBudget`.

    A recipe given here must augment and long-tail like the bundle's (those parts are applied where the
    data is loaded); its loss, sampler and label smoothing are the proxy's.
    """

    recipe: Recipe | None = None
    budget: ProxyBudget = field(default_factory=ProxyBudget)

    def validate(self) -> None:
        """Raise a :class:`TrainError` (or DataError for a bad long tail) for an unusable config."""
        self.budget.validate()
        if self.recipe is not None:
            self.recipe.validate()

    def train_config(self, recipe: Recipe) -> TrainConfig:
        """The :class:`TrainConfig` a proxy run trains with: ``recipe`` at the budget (CPU, no checkpoints)."""
        b = self.budget
        return TrainConfig(epochs=b.epochs, batch_size=b.batch_size, lr=b.lr, warmup_epochs=b.warmup_epochs,
                           weight_decay=b.weight_decay, seed=b.seed, max_steps=b.max_steps, device="cpu",
                           num_workers=0, recipe=recipe)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (recorded beside proxy scores)."""
        return {"recipe": None if self.recipe is None else self.recipe.to_dict(), "budget": asdict(self.budget)}


@dataclass(frozen=True)
class ProxyResult:
    """Final-epoch selection accuracy of a proxy run, what the run cost, and every scored image's label and
    predicted class (in the same order for every proxy seed on the same data and budget).

    ``epochs`` and ``steps`` are where the run stands (counted from its start, continuations included);
    ``start_epoch`` and ``start_step`` where this call took it up (0 unless it continued a rung checkpoint,
    :mod:`trials.rungs`), so this call trained ``epochs - start_epoch`` epochs in ``wall_s`` seconds."""

    top1: float
    balanced_acc: float
    wall_s: float
    epochs: int
    train_images: int
    resolution: int
    steps: int = 0
    selection_images: int = 0
    selection_labels: tuple[int, ...] = field(default=(), repr=False)
    selection_predictions: tuple[int, ...] = field(default=(), repr=False)
    start_epoch: int = 0
    start_step: int = 0


@dataclass
class ProxyData:
    """The proxy's view of a data bundle (what :func:`trials.train.train` reads): index subsets of the
    bundle's augmented training set and of its selection split."""

    train: Dataset
    selection: Dataset
    classes: list[str]
    train_counts: list[int]
    resolution: int


_CACHE: dict[tuple[Any, ...], tuple[weakref.ref, weakref.ref, np.ndarray, np.ndarray]] = {}


def selection_set(data: DataBundle) -> Dataset:
    """The bundle's selection split (the only evaluation split a proxy run reads)."""
    return data.selection


def proxy_recipe(data: DataBundle, config: ProxyConfig) -> Recipe:
    """The recipe a proxy run uses: ``config.recipe``, else the bundle's; a mismatch with the bundle's
    augmentation or long tail is a :class:`TrainError`."""
    own: Recipe | None = getattr(data, "recipe", None)
    if config.recipe is None:
        return own if own is not None else Recipe()
    if own is not None and own.data_options() != config.recipe.data_options():
        raise TrainError(f"the proxy's recipe ({config.recipe.describe()}) augments or long-tails differently "
                         f"from the data's ({own.describe()})",
                         "load the data with the proxy's recipe: augmentation and long tail are applied there")
    return config.recipe


def _indices(train: Dataset, selection: Dataset, budget: ProxyBudget) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the training subset and of the scored selection images (cached: no pixels, no references)."""
    key = (id(train), id(selection), budget.train_images, budget.selection_per_class, budget.seed)  # (train subset)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is train and hit[1]() is selection:
        return hit[2], hit[3]
    sel_labels = np.asarray(dataset_labels(selection), dtype=np.int64)
    tr = shape_subset(np.asarray(dataset_labels(train), dtype=np.int64), budget.train_images, budget.seed)
    sel = np.arange(len(sel_labels))
    if budget.selection_per_class is not None and len(sel):
        sel = cap_per_class(sel, sel_labels, budget.selection_per_class, SELECTION_SEED)
    try:
        refs = (weakref.ref(train), weakref.ref(selection))
    except TypeError:  # datasets without weakref support are not cached
        return tr, sel
    for stale in [k for k, (a, b, _, _) in _CACHE.items() if a() is None or b() is None]:
        del _CACHE[stale]
    _CACHE[key] = (*refs, tr, sel)
    return tr, sel


def proxy_data(data: DataBundle, config: ProxyConfig) -> ProxyData:
    """The subsets of ``data`` that :func:`proxy_accuracy` trains and scores on (indices cached per bundle
    and budget): the bundle's own datasets, so the proxy sees exactly the pixels full training sees."""
    selection = selection_set(data)
    tr, sel = _indices(data.train, selection, config.budget)
    if len(tr) < 2 or len(sel) < 1:
        raise TrainError(f"the proxy subset has {len(tr)} training and {len(sel)} selection images",
                         "give data with more images per class")
    train_labels = np.asarray(dataset_labels(data.train), dtype=np.int64)
    return ProxyData(train=Subset(data.train, tr.tolist()), selection=Subset(selection, sel.tolist()),
                     classes=list(data.classes),
                     train_counts=np.bincount(train_labels[tr], minlength=len(data.classes)).tolist(),
                     resolution=data_resolution(data))


def embedded_data(resolution: int, seed: int = 0) -> DataBundle:
    """The embedded long-tailed digits at ``resolution`` with their default recipe (the proxy's default data)."""
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


_EMBEDDED: dict[int, DataBundle] = {}


def predictions(model: torch.nn.Module, dataset: Dataset, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predicted classes (int64, dataset order) of every item of ``dataset``; no gradients."""
    model.eval()
    labels, predicted = [], []
    with torch.inference_mode():
        for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            predicted.append(model(x).argmax(-1))
            labels.append(torch.as_tensor(y))
    return torch.cat(labels).numpy().astype(np.int64), torch.cat(predicted).numpy().astype(np.int64)


def proxy_accuracy(spec: ArchSpec, data: DataBundle | None = None, config: ProxyConfig | None = None) -> ProxyResult:
    """Train ``spec`` (with the data's class count) on the proxy budget and score it on the selection split.

    ``data`` is a DataBundle loaded at the spec's resolution (a different resolution is a
    :class:`TrainError`), or None for the embedded digits at that resolution (split seed 0, whatever the
    proxy's seed). Returns the final-epoch selection top-1 and balanced accuracy with every scored image's
    label and prediction, the wall time, and the budget actually spent. The caller's torch thread count
    and RNG states are restored afterwards.
    """
    config = config or ProxyConfig()
    config.validate()
    return proxy_run(spec, proxy_bundle(spec, data), config)


def proxy_bundle(spec: ArchSpec, data: DataBundle | None) -> DataBundle:
    """``data``, or the embedded digits at the spec's resolution for None (loaded once per resolution); a
    bundle at another resolution than the spec's is a :class:`TrainError`."""
    if data is None:
        if spec.resolution not in _EMBEDDED:
            _EMBEDDED[spec.resolution] = embedded_data(spec.resolution)
        data = _EMBEDDED[spec.resolution]
    resolution = data_resolution(data)
    if resolution != spec.resolution:
        raise TrainError(f"the data is loaded at {resolution} px but the spec runs at {spec.resolution} px",
                         "load the data at the spec's resolution: the proxy trains where the spec will run")
    return data


def proxy_run(spec: ArchSpec, data: DataBundle, config: ProxyConfig, *, stop_after_epoch: int | None = None,
              out_dir: Path | None = None, resume: Checkpoint | None = None) -> ProxyResult:
    """The one path of a proxy run (a validated ``config``, ``data`` from :func:`proxy_bundle`): train on the
    proxy subset, on the schedule of ``config.budget.epochs``, continuing ``resume`` (a checkpoint in
    ``out_dir``) if given and stopping after ``stop_after_epoch`` epochs if given, then score the selection
    split. With ``out_dir`` the run's checkpoint is written there every epoch (:func:`trials.train.train`)."""
    recipe = proxy_recipe(data, config)
    start = time.perf_counter()
    with torch_threads(config.budget.threads), kept_rng():
        subset = proxy_data(data, config)
        run_config = config.train_config(recipe)
        if spec.block == "repopt":  # its hyper-search stage comes out of the same step budget
            run_config = within_budget(run_config, planned_steps(subset, run_config))
        result = train(spec.replace(num_classes=len(subset.classes)), subset, run_config,
                       out_dir=out_dir, resume=resume if resume is not None else False,
                       stop_after_epoch=stop_after_epoch)
        labels, predicted = predictions(result.model, subset.selection)
    scores = result_from_predictions(labels, predicted, subset.classes)  # = the final epoch's selection figures
    m = result.metrics
    return ProxyResult(
        top1=scores.top1, balanced_acc=scores.balanced_acc, wall_s=time.perf_counter() - start,
        epochs=int(m["epochs"]), train_images=len(subset.train), resolution=subset.resolution,
        steps=int(m["steps"]), selection_images=len(subset.selection), selection_labels=tuple(labels.tolist()),
        selection_predictions=tuple(predicted.tolist()),
        start_epoch=resume.epoch if resume is not None else 0, start_step=resume.step if resume is not None else 0,
    )


# -- helpers shared with trials.zero_cost --------------------------------------------------------------

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


def plain_train_set(data: DataBundle) -> Dataset:
    """The training images without random augmentation (``train_eval`` of a DataBundle), else ``train``."""
    return getattr(data, "train_eval", None) or data.train
