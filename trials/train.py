"""Training: SGD with warm-up + per-step cosine, long-tail losses, samplers, checkpoints, exact resume, DDP.

``train(spec, data, config)`` trains ``build_model(spec)`` (the multi-branch train form) on a
:class:`trials.data.DataBundle`, scores every epoch on the **selection** split (top-1 and balanced
accuracy), and with ``out_dir`` writes ``last.pt`` every epoch and ``best.pt`` at the best selection
balanced accuracy. The test split is never read: it is for the final report only.
Resuming from ``last.pt`` restores model, optimizer, scheduler, scaler, loss statistics and RNG
states, and samplers are pure functions of ``(seed, epoch)``, so on the CPU a resumed run equals an
uninterrupted one. Under ``torchrun`` the same function trains data-parallel (see
:mod:`trials.distributed`).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from search_space.model import build_model
from search_space.spec import ArchSpec
from trials.checkpoint import Checkpoint, TrainingState, rng_state, set_rng_state
from trials.config import TrainConfig
from trials.distributed import (
    DistContext,
    EpochSampler,
    all_reduce_sum,
    barrier,
    dataset_labels,
    evaluate_distributed,
    init_distributed,
    shutdown,
)
from trials.errors import TrainError
from trials.losses import build_loss
from trials.repopt import Scales, build_hs_model, hs_config, init_from_scales, masked_sgd, scales_for_config

if TYPE_CHECKING:
    from trials.data import DataBundle, DataSettings


@dataclass
class TrainResult:
    """The trained model (final epoch, unwrapped, eval mode), final metrics, and the best checkpoint's path."""

    model: nn.Module
    metrics: dict[str, Any]
    checkpoint: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    scales: Scales | None = None  # the repopt block's gradient-mask scales (None for the other blocks)


# -- pieces ------------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; derive numpy/random from that seed.
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two SGD groups: conv/linear weights with ``weight_decay``; BN parameters and biases without."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay, "group": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "group": "no_decay"},
    ]


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0-based): linear warm-up, then cosine to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def data_resolution(data: DataBundle) -> int:
    """Input resolution of a data bundle: its ``resolution`` attribute, else the first image's width."""
    res = getattr(data, "resolution", None)
    if res is None:
        res = getattr(getattr(data, "report", None), "resolution", None)
    if res is None:
        res = int(data.train[0][0].shape[-1])
    return int(res)


def check_data(spec: ArchSpec, data: DataBundle, config: TrainConfig) -> None:
    """Raise :class:`TrainError` unless ``data`` fits ``spec`` (classes, resolution, non-empty training and
    selection splits) and ``config`` (a bundle with a recipe must augment and long-tail as the config's)."""
    if len(data.train) == 0 or len(data.selection) == 0:
        raise TrainError(f"empty split: {len(data.train)} training and {len(data.selection)} selection images",
                         "give a data folder with images in every class")
    own = getattr(data, "recipe", None)  # a DataBundle has one; the proxy's subsets and hand-made bundles may not
    if own is not None and own.data_options() != config.recipe.data_options():
        raise TrainError(f"the data was loaded with another recipe ({own.describe()}) than the training config's "
                         f"({config.recipe.describe()})",
                         "train with the data's recipe (TrainConfig(recipe=data.recipe)), or load the data with "
                         "the config's: augmentation and long tail are applied where the data is loaded")
    if len(data.classes) != spec.num_classes:
        raise TrainError(f"the spec has {spec.num_classes} classes but the data has {len(data.classes)}",
                         f"give the spec the data's class count ({len(data.classes)})")
    res = data_resolution(data)
    if res != spec.resolution:
        raise TrainError(f"the data is {res} px but the spec expects {spec.resolution} px",
                         f"load the data at resolution {spec.resolution} or change the spec's resolution")


def _make_loader(data: DataBundle, config: TrainConfig, ctx: DistContext) -> tuple[DataLoader, EpochSampler, bool]:
    labels = dataset_labels(data.train)
    sampler = EpochSampler(labels, balanced=config.recipe.data_sampler == "class_balanced", seed=config.seed,
                           rank=ctx.rank, world_size=ctx.world_size)
    drop_last = len(sampler) >= config.batch_size  # never a 1-image batch (train-mode BN needs 2)
    loader = DataLoader(
        data.train, batch_size=config.batch_size, sampler=sampler, num_workers=config.num_workers,
        worker_init_fn=_seed_worker, generator=torch.Generator(), drop_last=drop_last,
        pin_memory=ctx.device.type == "cuda",
    )
    return loader, sampler, drop_last


# -- the loop ----------------------------------------------------------------------------------------

def train(
    spec: ArchSpec,
    data: DataBundle,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    resume: bool | Checkpoint = False,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    *,
    stop_after_epoch: int | None = None,
) -> TrainResult:
    """Train ``build_model(spec)`` on ``data`` (a DataBundle) with ``config``; see the module docstring.

    ``on_progress`` (rank 0 only) receives dicts with ``event`` = ``start`` | ``step`` | ``epoch``,
    and ``epoch``, ``step``, ``total_steps``, ``loss``, ``lr``, ``images_per_s`` (plus the selection
    metrics at ``epoch``). ``resume=True`` continues from ``out_dir/last.pt``; a :class:`Checkpoint` already
    read from there continues without reading the file again (the data settings must not have changed).
    Checkpoints record the bundle's ``settings`` and report, so that evaluation and export reload the
    same splits. ``stop_after_epoch`` stops once that many epochs are done, on the schedule of the full
    ``config.epochs`` (a later resume continues it exactly: how successive halving climbs a rung).
    """
    config = config or TrainConfig()
    config.validate()
    check_data(spec, data, config)
    settings: DataSettings | None = getattr(data, "settings", None)
    out = Path(out_dir) if out_dir is not None else None
    last_path = out / "last.pt" if out else None
    if resume is False:
        if last_path is not None and last_path.exists():
            raise TrainError(f"{out} already holds a checkpoint", "resume it, or train into a new output folder")
    elif last_path is None or not last_path.is_file():
        raise TrainError(f"nothing to resume: {last_path or 'no output folder given'}",
                         "resume needs the output folder of an earlier run (with last.pt)")
    ctx = init_distributed(config.device)
    try:
        if config.amp and ctx.device.type != "cuda":
            raise TrainError("amp (float16 autocast) needs a CUDA device", "train without amp on the CPU")
        previous = None
        if resume is not False and last_path is not None:
            previous = resume if isinstance(resume, Checkpoint) else Checkpoint.read(last_path)
            previous.check_resume(spec, config, list(data.classes), data=settings)
        return _train(spec, data, config, out, previous, on_progress, ctx, stop_after_epoch)
    finally:
        shutdown(ctx)


@dataclass
class _Run:
    """The objects one training run updates and each checkpoint saves, plus its progress."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    loader: DataLoader
    sampler: EpochSampler
    total_steps: int
    lr: float
    memory_format: torch.memory_format
    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": 0, "balanced_acc": -1.0, "top1": 0.0})
    scales: Scales | None = None  # the repopt block's gradient-mask scales (None for the other blocks)

    def restore(self, previous: Checkpoint) -> None:
        """Continue where ``previous`` stopped: weights, optimizer, schedule, scaler, loss, RNG, progress."""
        state = previous.training
        assert state is not None  # check_resume refused a model-only checkpoint
        self.model.load_state_dict(previous.model)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        self.scaler.load_state_dict(state.scaler)
        self.criterion.load_state_dict(state.loss)
        self.epoch, self.step = previous.epoch, previous.step
        self.history, self.best = list(previous.history), dict(previous.best or self.best)
        set_rng_state(state.rng)

    def checkpoint(self, spec: ArchSpec, config: TrainConfig, data: DataBundle) -> Checkpoint:
        """The checkpoint of the run as it stands after the last epoch (with the bundle's settings and report)."""
        training = TrainingState(self.optimizer.state_dict(), self.scheduler.state_dict(), self.scaler.state_dict(),
                                 self.criterion.state_dict(), rng_state())
        report = getattr(data, "report", None)  # hand-made bundles (tests, the proxy's subsets) have none
        return Checkpoint(spec, config, list(data.classes), self.model.state_dict(), epoch=self.epoch,
                          step=self.step, history=self.history, best=self.best, metrics=self.history[-1],
                          data=getattr(data, "settings", None), data_report=report.to_dict() if report else {},
                          training=training, scales=self.scales)


def _setup(spec: ArchSpec, data: DataBundle, config: TrainConfig, ctx: DistContext, scales: Scales | None = None,
           build: Callable[[ArchSpec], nn.Module] | None = None) -> _Run:
    """Seed, then build model, optimizer, loader, per-step schedule, scaler and loss (in this order); with
    ``scales`` (the repopt block) the model starts from them and the optimizer masks its gradients; ``build``
    replaces :func:`~search_space.model.build_model` (the hyper-search stage's model)."""
    seed_everything(config.seed)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = (build or build_model)(spec).to(ctx.device).to(memory_format=memory_format)
    lr = config.effective_lr(ctx.world_size)
    groups = param_groups(model, config.weight_decay)
    if scales is None:
        optimizer: torch.optim.Optimizer = torch.optim.SGD(groups, lr=lr, momentum=config.momentum,
                                                           nesterov=config.nesterov)
    else:
        init_from_scales(model, scales)
        optimizer = masked_sgd(model, scales, groups, lr, config.momentum, config.nesterov)
    loader, sampler, _ = _make_loader(data, config, ctx)
    steps_per_epoch = len(loader)
    total_steps = _total_steps(config, steps_per_epoch)
    warmup_steps = min(round(config.warmup_epochs * steps_per_epoch), total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup_steps))  # a plain function: not saved
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp)
    criterion = build_loss(config.recipe.loss, data.train_counts, config.recipe.label_smoothing,
                           tau=config.logit_adjust_tau).to(ctx.device)
    return _Run(model, optimizer, scheduler, scaler, criterion, loader, sampler, total_steps, lr, memory_format,
                scales=scales)


def _total_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """Optimizer steps of a run: epochs × batches per epoch, capped at ``max_steps``."""
    total = config.epochs * steps_per_epoch
    return total if config.max_steps is None else min(total, config.max_steps)


def planned_steps(data: DataBundle, config: TrainConfig) -> int:
    """Optimizer steps a single-process run of ``config`` on ``data`` takes (how the proxy sizes a budget)."""
    loader, _, _ = _make_loader(data, config, DistContext())
    return _total_steps(config, len(loader))


def _wrap(model: nn.Module, ctx: DistContext) -> nn.Module:
    """``model`` as the training step calls it: itself, or data-parallel under torchrun."""
    if not ctx.distributed:
        return model
    return DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def _scales(spec: ArchSpec, data: DataBundle, config: TrainConfig, ctx: DistContext,
            previous: Checkpoint | None) -> Scales | None:
    """The repopt block's scales (None for the other blocks): the checkpoint's when resuming, else the scales
    file's, else found by the hyper-search stage on the training split."""
    if spec.block != "repopt":
        scales_for_config(config, spec)  # a scales file for another block is an error
        return None
    if previous is not None:  # the scales file need not exist any more
        return previous.scales
    return scales_for_config(config, spec) or _hyper_search(spec, data, config, ctx)


def _hyper_search(spec: ArchSpec, data: DataBundle, config: TrainConfig, ctx: DistContext) -> Scales:
    """Train the hyper-search model at its budget (:func:`trials.repopt.hs_config`; no evaluation, no
    checkpoint) and keep its scales."""
    start = time.perf_counter()
    hs = hs_config(config)
    run = _setup(spec, data, hs, ctx, build=build_hs_model)
    net = _wrap(run.model, ctx)
    while run.epoch < hs.epochs and run.step < run.total_steps:
        _train_epoch(run, net, hs, ctx, lambda _info: None)
        run.epoch += 1
    found_by = {"kind": "search", "steps": run.step, "epochs": run.epoch, "batch_size": hs.batch_size,
                "world_size": ctx.world_size, "train_images": len(data.train), "seed": hs.seed,
                "wall_s": round(time.perf_counter() - start, 3)}
    return Scales.from_model(run.model, spec, found_by)


def _train(
    spec: ArchSpec,
    data: DataBundle,
    config: TrainConfig,
    out: Path | None,
    previous: Checkpoint | None,
    on_progress: Callable[[dict[str, Any]], None] | None,
    ctx: DistContext,
    stop_after_epoch: int | None = None,
) -> TrainResult:
    start = time.perf_counter()
    run = _setup(spec, data, config, ctx, _scales(spec, data, config, ctx, previous))
    if previous is not None:
        run.restore(previous)
    net = _wrap(run.model, ctx)
    emit = on_progress if (on_progress is not None and ctx.is_main) else (lambda _info: None)
    if run.scales is not None:
        emit({"event": "scales", **run.scales.describe()})
    emit({"event": "start", "epoch": run.epoch, "epochs": config.epochs, "step": run.step,
          "total_steps": run.total_steps, "effective_lr": run.lr, "world_size": ctx.world_size,
          "device": str(ctx.device)})
    best_path = out / "best.pt" if out else None
    stop = config.epochs if stop_after_epoch is None else min(stop_after_epoch, config.epochs)
    while run.epoch < stop and run.step < run.total_steps:
        train_loss, images_per_s = _train_epoch(run, net, config, ctx, emit)
        top1, bal = evaluate_distributed(run.model, data.selection, data.classes, config.eval_batch_size, ctx)
        run.epoch += 1
        record = {"epoch": run.epoch, "step": run.step, "train_loss": train_loss, "selection_top1": top1,
                  "selection_balanced_acc": bal, "lr": run.optimizer.param_groups[0]["lr"],
                  "images_per_s": images_per_s, "wall_s": time.perf_counter() - start}
        run.history.append(record)
        improved = bal > run.best["balanced_acc"]
        if improved:
            run.best = {"epoch": run.epoch, "balanced_acc": bal, "top1": top1}
        if out is not None and ctx.is_main:
            ckpt = run.checkpoint(spec, config, data)
            if improved:  # best first: a crash between the two writes never leaves last.pt ahead of best.pt
                ckpt.write(out / "best.pt")
            ckpt.write(out / "last.pt")
        barrier(ctx)
        emit({"event": "epoch", **record, "epochs": config.epochs, "total_steps": run.total_steps})
    run.model.eval()
    checkpoint = best_path if best_path is not None and best_path.exists() else None
    return TrainResult(run.model, _final_metrics(run, spec, data, ctx, start), checkpoint, run.history, run.scales)


def _train_epoch(
    run: _Run, net: nn.Module, config: TrainConfig, ctx: DistContext, emit: Callable[[dict[str, Any]], None],
) -> tuple[float, float]:
    """One pass over the training loader (stopping at the step cap); returns (train loss, images/s)."""
    device = ctx.device
    run.sampler.set_epoch(run.epoch)
    run.loader.generator.manual_seed(config.seed * 7919 + run.epoch)  # worker seeds of this epoch
    net.train()
    run.criterion.train()
    sums = torch.zeros(2, dtype=torch.float64)  # (loss · images, images)
    t0, seen = time.perf_counter(), 0
    for images, labels in run.loader:
        if run.step >= run.total_steps:
            break
        images = images.to(device, non_blocking=True, memory_format=run.memory_format)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=config.amp):
            loss = run.criterion(net(images), labels)
        if not ctx.distributed and not torch.isfinite(loss):
            raise TrainError(f"the loss became {loss.item()} at epoch {run.epoch + 1}, step {run.step + 1}",
                             "lower the learning rate or add warm-up epochs")
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        run.step += 1
        seen += len(labels)
        sums += torch.tensor([loss.item() * len(labels), len(labels)], dtype=torch.float64)
        rate = seen * ctx.world_size / max(time.perf_counter() - t0, 1e-9)
        emit({"event": "step", "epoch": run.epoch + 1, "epochs": config.epochs, "step": run.step,
              "total_steps": run.total_steps, "loss": loss.item(), "lr": run.optimizer.param_groups[0]["lr"],
              "images_per_s": rate})
    train_s = time.perf_counter() - t0
    sums = all_reduce_sum(sums, ctx)
    train_loss = float(sums[0] / max(float(sums[1]), 1.0))
    if not math.isfinite(train_loss):
        raise TrainError(f"the training loss became {train_loss} in epoch {run.epoch + 1}",
                         "lower the learning rate or add warm-up epochs")
    return train_loss, float(sums[1]) / max(train_s, 1e-9)


def _final_metrics(run: _Run, spec: ArchSpec, data: DataBundle, ctx: DistContext, start: float) -> dict[str, Any]:
    final = run.history[-1] if run.history else {}
    return {
        "spec": spec.to_string(), "top1": final.get("selection_top1"),
        "balanced_acc": final.get("selection_balanced_acc"),
        "best_epoch": run.best["epoch"], "best_top1": run.best["top1"], "best_balanced_acc": run.best["balanced_acc"],
        "train_loss": final.get("train_loss"), "epochs": run.epoch, "steps": run.step,
        "total_steps": run.total_steps, "images_per_s": final.get("images_per_s"), "effective_lr": run.lr,
        "world_size": ctx.world_size, "train_images": len(data.train),
        "selection_images": len(data.selection),
        "wall_s": time.perf_counter() - start,
        **({"scales": run.scales.describe()} if run.scales is not None else {}),
    }
