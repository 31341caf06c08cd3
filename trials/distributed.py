"""Single-process and DDP plumbing: the process group, samplers that shard by rank, all-reduce helpers.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) :func:`init_distributed` joins the process
group (``gloo`` on CPU, ``nccl`` on CUDA, one GPU per ``LOCAL_RANK``). Without it everything runs as
rank 0 of 1, through the same code path: the samplers below are deterministic functions of
``(seed, epoch, rank)``, so a resumed run draws the same batches as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler, Subset, TensorDataset

from trials.errors import TrainError
from trials.evaluate import evaluate


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size, its device, and whether it created the group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes files or reports progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise the named device (validated)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise TrainError(f"unknown device {name!r}", "use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"device {name} requested but CUDA is not available", "use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise TrainError(f"device type {device.type!r} is not supported", "use auto, cpu, cuda or cuda:N")
    return device


def init_distributed(device_name: str = "auto") -> DistContext:
    """Join the ``torchrun`` process group if the environment asks for one; else a 1-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return DistContext(device=device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        if not dist.is_available():
            raise TrainError("WORLD_SIZE > 1 but torch.distributed is unavailable", "run without torchrun")
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, owns)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group if :func:`init_distributed` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``values`` over ranks (float64 on CPU for gloo, on the device for nccl); identity on one rank."""
    if not ctx.distributed:
        return values
    device = ctx.device if dist.get_backend() == "nccl" else torch.device("cpu")
    buf = values.detach().to(device=device, dtype=torch.float64).clone()
    dist.all_reduce(buf)
    return buf.to(values.device)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)`` (None: leave as is), then restore.

    One thread makes small-model results independent of the machine's core count, and avoids the
    many-fold slowdown of OpenMP spin-waiting when a shared machine is oversubscribed.
    """
    if threads is None:
        yield
        return
    if threads < 1:
        raise TrainError(f"threads must be at least 1, got {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op on one)."""
    if ctx.distributed:
        dist.barrier()


def dataset_labels(dataset: Dataset) -> list[int]:
    """Integer labels of every item, read from ``targets`` / tensors where possible, else by iterating."""
    if isinstance(dataset, Subset):
        parent = dataset_labels(dataset.dataset)
        return [parent[i] for i in dataset.indices]
    if isinstance(dataset, TensorDataset):
        return [int(v) for v in dataset.tensors[1].tolist()]
    targets = getattr(dataset, "labels", None)
    if targets is None:
        targets = getattr(dataset, "targets", None)
    if targets is not None:
        return [int(t) for t in (targets.tolist() if torch.is_tensor(targets) else targets)]
    return [int(dataset[i][1]) for i in range(len(dataset))]  # type: ignore[arg-type]


class EpochSampler(Sampler[int]):
    """Indices for one rank in one epoch, a pure function of ``(seed, epoch, rank)``.

    ``balanced=False``: a seeded permutation, padded to a multiple of the world size and sharded by
    rank (as ``DistributedSampler``). ``balanced=True``: class-balanced sampling with replacement (each
    draw picks a class uniformly, then an image of it uniformly), the same global draw on every rank,
    sharded by rank. Call :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self,
        labels: Sequence[int],
        *,
        balanced: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not labels:
            raise TrainError("the training set is empty", "check the data folder and the split")
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.balanced, self.seed, self.rank, self.world_size = balanced, seed, rank, world_size
        self.epoch = 0
        self.per_rank = math.ceil(len(self.labels) / world_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order :meth:`__iter__` yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        total = self.per_rank * self.world_size
        if self.balanced:
            counts = torch.bincount(self.labels).to(torch.float64)
            weights = 1.0 / counts[self.labels]  # each class gets equal total weight
            order = torch.multinomial(weights, total, replacement=True, generator=gen)
        else:
            order = torch.randperm(len(self.labels), generator=gen)
            if total > len(order):
                order = torch.cat([order, order[: total - len(order)]])
        return iter(order[self.rank :: self.world_size].tolist())


def accuracy_from_confusion(confusion: torch.Tensor) -> tuple[float, float]:
    """(top-1, balanced accuracy) from a confusion matrix, defined as :func:`trials.evaluate.evaluate` does:
    balanced accuracy is the mean recall over the classes that have images."""
    total = float(confusion.sum())
    per_class = confusion.sum(1)
    present = per_class > 0
    top1 = float(confusion.diagonal().sum()) / total if total else 0.0
    recall = confusion.diagonal()[present] / per_class[present]
    return top1, float(recall.mean()) if present.any() else 0.0


def evaluate_distributed(
    model: torch.nn.Module,
    dataset: Dataset,
    classes: Sequence[str],
    batch_size: int,
    ctx: DistContext,
) -> tuple[float, float]:
    """Validation (top-1, balanced accuracy): :func:`trials.evaluate.evaluate` on this rank's shard of
    the data; under DDP the confusion matrices are summed over ranks before the accuracies are taken."""
    if not ctx.distributed:
        result = evaluate(model, dataset, list(classes), batch_size, device=str(ctx.device))
        return result.top1, result.balanced_acc
    shard = Subset(dataset, range(ctx.rank, len(dataset), ctx.world_size))
    k = len(classes)
    confusion = torch.zeros(k, k, dtype=torch.float64)
    if len(shard):
        confusion += torch.from_numpy(evaluate(model, shard, list(classes), batch_size,
                                               device=str(ctx.device)).confusion)
    return accuracy_from_confusion(all_reduce_sum(confusion, ctx))
