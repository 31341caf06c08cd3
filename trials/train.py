"""Training: SGD with warm-up + per-step cosine, long-tail losses, samplers, checkpoints, exact resume, DDP.

``train(spec, data, config)`` trains ``build_model(spec)`` (the multi-branch train form) on a
:class:`trials.data.DataBundle`, validates every epoch (top-1 and balanced accuracy), and with
``out_dir`` writes ``last.pt`` every epoch and ``best.pt`` at the best val balanced accuracy.
Resuming from ``last.pt`` restores model, optimizer, scheduler, scaler, loss statistics and RNG
states, and samplers are pure functions of ``(seed, epoch)``, so on the CPU a resumed run equals an
uninterrupted one. Under ``torchrun`` the same function trains data-parallel (see
:mod:`trials.distributed`).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from search_space.model import build_model
from search_space.spec import ArchSpec
from trials.checkpoint import check_resume, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from trials.config import RESUME_FREE, TrainConfig
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


@dataclass
class TrainResult:
    """The trained model (final epoch, unwrapped, eval mode), final metrics, and the best checkpoint."""

    model: nn.Module
    metrics: dict[str, Any]
    checkpoint: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)


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


def data_resolution(data: Any) -> int:
    """Input resolution of a data bundle: its ``resolution`` attribute, else the first image's width."""
    res = getattr(data, "resolution", None)
    if res is None:
        res = getattr(getattr(data, "report", None), "resolution", None)
    if res is None:
        res = int(data.train[0][0].shape[-1])
    return int(res)


def check_data(spec: ArchSpec, data: Any) -> None:
    """Raise :class:`TrainError` unless ``data`` fits ``spec`` (classes, resolution, non-empty splits)."""
    if len(data.train) == 0 or len(data.val) == 0:
        raise TrainError(f"empty split: {len(data.train)} training and {len(data.val)} validation images",
                         "give a data folder with images in every class")
    if len(data.classes) != spec.num_classes:
        raise TrainError(f"the spec has {spec.num_classes} classes but the data has {len(data.classes)}",
                         f"use spec.replace(num_classes={len(data.classes)}) or `nas train --classes-from-data`")
    res = data_resolution(data)
    if res != spec.resolution:
        raise TrainError(f"the data is {res} px but the spec expects {spec.resolution} px",
                         f"load the data at resolution {spec.resolution} or change the spec's resolution")


def _make_loader(data: Any, config: TrainConfig, ctx: DistContext) -> tuple[DataLoader, EpochSampler, bool]:
    labels = dataset_labels(data.train)
    sampler = EpochSampler(labels, balanced=config.data_sampler == "class_balanced", seed=config.seed,
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
    data: Any,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    *,
    data_settings: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``build_model(spec)`` on ``data`` (a DataBundle) with ``config``; see the module docstring.

    ``on_progress`` (rank 0 only) receives dicts with ``event`` = ``start`` | ``step`` | ``epoch``,
    and ``epoch``, ``step``, ``total_steps``, ``loss``, ``lr``, ``images_per_s`` (plus val metrics at
    ``epoch``). With ``resume=True`` training continues from ``out_dir/last.pt``. Checkpoints record
    ``data``: the bundle's report (``data.report.to_dict()``) updated with ``data_settings`` (how the
    data was loaded: path, val_ratio, long_tail, seed, max_per_class, …) so that evaluation can reload it.
    """
    config = config or TrainConfig()
    config.validate()
    check_data(spec, data)
    out = Path(out_dir) if out_dir is not None else None
    last_path = out / "last.pt" if out else None
    if resume and (last_path is None or not last_path.is_file()):
        raise TrainError(f"nothing to resume: {last_path or 'no output folder given'}",
                         "resume needs the --out folder of an earlier run (with last.pt)")
    if not resume and last_path is not None and last_path.exists():
        raise TrainError(f"{out} already holds a checkpoint", "pass --resume to continue it, or use a new --out")
    ctx = init_distributed(config.device)
    try:
        if config.amp and ctx.device.type != "cuda":
            raise TrainError("amp (float16 autocast) needs a CUDA device", "drop --amp on the CPU")
        report = getattr(data, "report", None)
        recorded = dict(report.to_dict()) if hasattr(report, "to_dict") else {}
        recorded.update(data_settings or {})
        recorded = json.loads(json.dumps(recorded, default=str))  # plain types only (weights_only load)
        return _train(spec, data, config, out, resume, on_progress, ctx, recorded)
    finally:
        shutdown(ctx)


def _train(
    spec: ArchSpec,
    data: Any,
    config: TrainConfig,
    out: Path | None,
    resume: bool,
    on_progress: Callable[[dict[str, Any]], None] | None,
    ctx: DistContext,
    recorded: dict[str, Any],
) -> TrainResult:
    device, start = ctx.device, time.perf_counter()
    state = None
    if resume:
        state = load_checkpoint(out / "last.pt")
        check_resume(state, spec, config.to_dict(), list(data.classes), out / "last.pt", RESUME_FREE)
    seed_everything(config.seed)
    model = build_model(spec).to(device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    lr = config.effective_lr(ctx.world_size)
    optimizer = torch.optim.SGD(param_groups(model, config.weight_decay), lr=lr, momentum=config.momentum,
                                nesterov=config.nesterov)
    loader, sampler, _ = _make_loader(data, config, ctx)
    steps_per_epoch = len(loader)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    warmup_steps = min(round(config.warmup_epochs * steps_per_epoch), total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup_steps))  # a plain function: not saved
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp)
    criterion = build_loss(config.loss, data.train_counts, config.label_smoothing,
                           tau=config.logit_adjust_tau).to(device)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": 0, "balanced_acc": -1.0, "top1": 0.0}
    epoch = step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        criterion.load_state_dict(state["loss"])
        epoch, step = int(state["epoch"]), int(state["step"])
        history, best = list(state["history"]), dict(state["best"])
        set_rng_state(state["rng"])
    net: nn.Module = model
    if ctx.distributed:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    emit = on_progress if (on_progress is not None and ctx.is_main) else (lambda _info: None)
    emit({"event": "start", "epoch": epoch, "epochs": config.epochs, "step": step, "total_steps": total_steps,
          "effective_lr": lr, "world_size": ctx.world_size, "device": str(device)})
    best_path = out / "best.pt" if out else None
    while epoch < config.epochs and step < total_steps:
        sampler.set_epoch(epoch)
        loader.generator.manual_seed(config.seed * 7919 + epoch)  # worker seeds of this epoch
        net.train()
        criterion.train()
        sums = torch.zeros(2, dtype=torch.float64)  # (loss · images, images)
        t0, seen = time.perf_counter(), 0
        for images, labels in loader:
            if step >= total_steps:
                break
            images = images.to(device, non_blocking=True, memory_format=memory_format)
            labels = labels.to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=config.amp):
                loss = criterion(net(images), labels)
            if not ctx.distributed and not torch.isfinite(loss):
                raise TrainError(f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}",
                                 "lower --lr or enable warm-up (--warmup-epochs)")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            seen += len(labels)
            sums += torch.tensor([loss.item() * len(labels), len(labels)], dtype=torch.float64)
            rate = seen * ctx.world_size / max(time.perf_counter() - t0, 1e-9)
            emit({"event": "step", "epoch": epoch + 1, "epochs": config.epochs, "step": step,
                  "total_steps": total_steps, "loss": loss.item(), "lr": optimizer.param_groups[0]["lr"],
                  "images_per_s": rate})
        train_s = time.perf_counter() - t0
        sums = all_reduce_sum(sums, ctx)
        images_per_s = float(sums[1]) / max(train_s, 1e-9)
        train_loss = float(sums[0] / max(float(sums[1]), 1.0))
        if not math.isfinite(train_loss):
            raise TrainError(f"the training loss became {train_loss} in epoch {epoch + 1}",
                             "lower --lr or enable warm-up (--warmup-epochs)")
        top1, bal = evaluate_distributed(model, data.val, data.classes, config.eval_batch_size, ctx)
        epoch += 1
        record = {"epoch": epoch, "step": step, "train_loss": train_loss, "val_top1": top1,
                  "val_balanced_acc": bal, "lr": optimizer.param_groups[0]["lr"], "images_per_s": images_per_s,
                  "wall_s": time.perf_counter() - start}
        history.append(record)
        improved = bal > best["balanced_acc"]
        if improved:
            best = {"epoch": epoch, "balanced_acc": bal, "top1": top1}
        if out is not None and ctx.is_main:
            ckpt = {"spec": spec.to_dict(), "config": config.to_dict(), "classes": list(data.classes),
                    "epoch": epoch, "step": step, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(), "loss": criterion.state_dict(), "rng": rng_state(),
                    "history": history, "best": best, "metrics": record, "data": recorded}
            if improved:  # best first: a crash between the two writes never leaves last.pt ahead of best.pt
                save_checkpoint(best_path, ckpt)
            save_checkpoint(out / "last.pt", ckpt)
        barrier(ctx)
        emit({"event": "epoch", **record, "epochs": config.epochs, "total_steps": total_steps})
    model.eval()
    final = history[-1] if history else {}
    metrics = {
        "spec": spec.to_string(), "top1": final.get("val_top1"), "balanced_acc": final.get("val_balanced_acc"),
        "best_epoch": best["epoch"], "best_top1": best["top1"], "best_balanced_acc": best["balanced_acc"],
        "train_loss": final.get("train_loss"), "epochs": epoch, "steps": step, "total_steps": total_steps,
        "images_per_s": final.get("images_per_s"), "effective_lr": lr, "world_size": ctx.world_size,
        "train_images": len(data.train), "val_images": len(data.val), "wall_s": time.perf_counter() - start,
    }
    checkpoint = best_path if best_path is not None and best_path.exists() else None
    return TrainResult(model, metrics, checkpoint, history)
