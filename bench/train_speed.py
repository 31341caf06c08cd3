"""Training speed of our RepVGG-A0 (train form) against timm's ``repvgg_a0``, in the same process; with
``--repopt``, RepOpt-VGG-A0 (the plain model and its masked SGD) against our multi-branch RepVGG-A0.

    .venv/bin/python bench/train_speed.py              # 9 paired repeats of 2 steps each, 1-3 minutes
    .venv/bin/python bench/train_speed.py --quick      # smoke run
    .venv/bin/python bench/train_speed.py --channels-last --threads 2   # ours NHWC vs timm NCHW
    .venv/bin/python bench/train_speed.py --repopt     # RepOpt vs RepVGG → train_speed_repopt.json

One training step = forward, cross-entropy (label smoothing 0.1), backward, SGD (momentum 0.9, weight
decay 4e-5), on a fixed random batch of 32 images of 112 px with 89 classes (the seed's setting). Both
models are built in the same process with the same torch thread count; the repeats alternate the order
(ABBA…) so that a change of machine load hits both, each repeat gives images/s for both models measured
back to back, and the figure is the median over repeats of the paired ratio ours/timm with a bootstrap
90 % interval (goal ≥ 1.0×).
With ``--channels-last`` only our model runs NHWC: timm's ``repvgg_a0`` crashes (segfault) in the
channels_last backward of its strided 1×1 convs on CPU (torch 2.14), which our block avoids.
Wall-clock and process CPU time are both reported: CPU time is less sensitive to other processes on a
shared machine, wall time is what a user waits for.

With ``--repopt`` the pair is RepOpt-VGG-A0 (one 3×3 conv-BN per block, :class:`trials.repopt.RepOptSGD`
with the masks of the initial scales: their values do not change the cost) against RepVGG-A0's train form,
same step and batch; the ratio is RepOpt/RepVGG (goal ≥ 1.3×), and the training memory of one step is
counted exactly rather than sampled: the bytes autograd saves for the backward (distinct storages, through
``torch.autograd.graph.saved_tensors_hooks``) plus parameters, gradients and momentum buffers.

Progress goes to stderr, the figures are printed last, and everything goes to
``bench/results/train_speed.json`` (``train_speed_repopt.json`` with ``--repopt``) with the machine (CPU,
cores, threads, load before/after, versions).
``timm`` comes from the ``bench`` extra; ``pretrained=False`` downloads nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from search_space import get_preset
from search_space.io import atomic_write
from search_space.model import build_model
from trials.latency import cpu_name
from trials.repopt import Scales, build_hs_model, masked_sgd

RESULTS = Path(__file__).resolve().parent / "results" / "train_speed.json"
REPOPT_RESULTS = RESULTS.with_name("train_speed_repopt.json")


def log(text: str) -> None:
    """Progress on stderr."""
    print(text, file=sys.stderr, flush=True)


def timm_a0(num_classes: int) -> nn.Module:
    """timm's RepVGG-A0 (train form, random init, no download)."""
    try:
        import timm
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit("timm is missing: .venv/bin/pip install -e '.[bench]'") from exc
    return timm.create_model("repvgg_a0", pretrained=False, num_classes=num_classes)


class Stepper:
    """One model with its optimizer, ready to run timed training steps on a fixed batch."""

    def __init__(self, model: nn.Module, channels_last: bool, opt: torch.optim.Optimizer | None = None) -> None:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.train().to(memory_format=fmt)
        self.fmt = fmt
        self.opt = opt or torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=4e-5)

    def steps(self, x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[float, float]:
        """Run ``n`` training steps; return (wall s, process CPU s)."""
        x = x.contiguous(memory_format=self.fmt)
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            loss = F.cross_entropy(self.model(x), y, label_smoothing=0.1)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return time.perf_counter() - start, time.process_time() - start_cpu


def bootstrap_median(values: Sequence[float], n_boot: int = 2000, seed: int = 0) -> list[float]:
    """Bootstrap 5th and 95th percentiles of the median of ``values``."""
    rng = random.Random(seed)
    n = len(values)
    medians = sorted(statistics.median(values[rng.randrange(n)] for _ in range(n)) for _ in range(n_boot))
    return [medians[int(0.05 * n_boot)], medians[int(0.95 * n_boot) - 1]]


def machine_info(threads: int, with_timm: bool = True) -> dict[str, Any]:
    """What the figures ran on (and timm's version, when the comparison uses it)."""
    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": threads, "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}
    if with_timm:
        import timm

        info["timm"] = timm.__version__
    return info


def run(repeats: int, steps: int, warmup: int, batch: int, resolution: int, classes: int,
        channels_last: bool) -> dict[str, Any]:
    """Time both models; return per-repeat rates, medians and the ratio with its interval."""
    torch.manual_seed(0)
    ours = build_model(get_preset("A0").spec(resolution=resolution, num_classes=classes))
    theirs = timm_a0(classes)
    params = {"ours": sum(p.numel() for p in ours.parameters()),
              "timm": sum(p.numel() for p in theirs.parameters())}
    # timm stays contiguous: its strided 1×1 convs crash (segfault) in the channels_last backward on CPU,
    # the crash our block avoids by slicing before a stride-1 1×1 conv
    steppers = {"ours": Stepper(ours, channels_last), "timm": Stepper(theirs, False)}
    return {"params": params, **paired_rates(steppers, repeats, steps, warmup, batch, resolution, classes)}


def paired_rates(steppers: dict[str, Stepper], repeats: int, steps: int, warmup: int, batch: int, resolution: int,
                 classes: int) -> dict[str, Any]:
    """Time two steppers (first / second, ABBA order) on one random batch: per-repeat rates, medians, ratio."""
    a, b = steppers
    x = torch.randn(batch, 3, resolution, resolution)
    y = torch.randint(0, classes, (batch,))
    for name, s in steppers.items():
        log(f"warm-up {name}: {warmup} step(s)")
        s.steps(x, y, warmup)
    rates: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in steppers}
    for r in range(repeats):
        for name in ([a, b] if r % 2 == 0 else [b, a]):
            wall, cpu = steppers[name].steps(x, y, steps)
            rates[name]["wall"].append(batch * steps / wall)
            rates[name]["cpu"].append(batch * steps / cpu)
        log(f"repeat {r + 1}/{repeats}: {a} {rates[a]['wall'][-1]:.1f} img/s, {b} {rates[b]['wall'][-1]:.1f} img/s "
            "(wall)")
    out: dict[str, Any] = {"rates": rates}
    for clock in ("wall", "cpu"):
        first, second = rates[a][clock], rates[b][clock]
        paired = [p / q for p, q in zip(first, second)]  # back-to-back measurements share the machine's load
        out[f"ratio_{clock}"] = statistics.median(paired)
        out[f"ratio_{clock}_90ci"] = bootstrap_median(paired)
        out[f"{a}_{clock}_median"] = statistics.median(first)
        out[f"{b}_{clock}_median"] = statistics.median(second)
    return out


def training_memory(stepper: Stepper, batch: int, resolution: int, classes: int) -> dict[str, int]:
    """Bytes of one training step: what autograd saves for the backward (distinct storages) and the
    parameters, gradients and optimizer state after the step."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    x = torch.randn(batch, 3, resolution, resolution).contiguous(memory_format=stepper.fmt)
    y = torch.randint(0, classes, (batch,))
    stepper.opt.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(stepper.model(x), y, label_smoothing=0.1)
    loss.backward()
    stepper.opt.step()
    params = [p for p in stepper.model.parameters()]
    state = [t for s in stepper.opt.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    return {"saved_for_backward": sum(seen.values()),
            "parameters": sum(p.numel() * p.element_size() for p in params),
            "gradients": sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None),
            "optimizer_state": sum(t.numel() * t.element_size() for t in state)}


def run_repopt(repeats: int, steps: int, warmup: int, batch: int, resolution: int, classes: int) -> dict[str, Any]:
    """RepOpt-VGG-A0 (plain, masked SGD) against RepVGG-A0 (multi-branch), same step; speed and memory."""
    torch.manual_seed(0)
    spec = get_preset("A0").spec(resolution=resolution, num_classes=classes)
    plain = build_model(spec.replace(block="repopt"))
    scales = Scales.from_model(build_hs_model(spec), spec, {"kind": "initial values"})
    opt = masked_sgd(plain, scales, [{"params": list(plain.parameters()), "weight_decay": 4e-5}], 0.01, 0.9, False)
    steppers = {"repopt": Stepper(plain, False, opt), "repvgg": Stepper(build_model(spec), False)}
    memory = {name: training_memory(s, batch, resolution, classes) for name, s in steppers.items()}
    out = paired_rates(steppers, repeats, steps, warmup, batch, resolution, classes)
    total = {name: sum(m.values()) for name, m in memory.items()}
    return {"spec": spec.to_string(), "params_train_form": {k: sum(p.numel() for p in s.model.parameters())
                                                            for k, s in steppers.items()},
            "memory_bytes": memory, "memory_total_bytes": total,
            "memory_ratio": total["repopt"] / total["repvgg"], **out}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, write the JSON, print the figure last."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=9, help="paired repeats (default 9)")
    p.add_argument("--steps", type=int, default=2, help="training steps per model and repeat (default 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per model first (default 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared 2-core machine 2 threads varied 10x between repeats)")
    p.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--resolution", type=int, default=112, help="input px (default 112, the seed's)")
    p.add_argument("--classes", type=int, default=89, help="classes (default 89, the seed's)")
    p.add_argument("--channels-last", action="store_true",
                   help="NHWC for our model (timm's segfaults in the channels_last backward on CPU, so it stays NCHW)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 repeats of 1 step at batch 8")
    p.add_argument("--repopt", action="store_true",
                   help="RepOpt-VGG-A0 (plain, masked SGD) vs our RepVGG-A0: speed and training memory")
    p.add_argument("--out", type=Path, help="result JSON (default bench/results/train_speed.json, "
                                             "train_speed_repopt.json with --repopt)")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.steps, args.warmup, args.batch = 2, 1, 1, 8
    torch.set_num_threads(args.threads)
    if args.repopt:
        return main_repopt(args)
    args.out = args.out or RESULTS
    load_before = os.getloadavg()
    start = time.perf_counter()
    result = run(args.repeats, args.steps, args.warmup, args.batch, args.resolution, args.classes,
                 args.channels_last)
    body = {
        "benchmark": "training images/s, our RepVGG-A0 train form vs timm repvgg_a0",
        "settings": {"repeats": args.repeats, "steps": args.steps, "warmup": args.warmup, "batch": args.batch,
                     "resolution": args.resolution, "classes": args.classes, "channels_last_ours": args.channels_last,
                     "channels_last_timm": False,
                     "quick": args.quick},
        "machine": machine_info(torch.get_num_threads()),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "wall_s": time.perf_counter() - start, "goal": ">= 1.0x", **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out) as handle:
        json.dump(body, handle, indent=2)
        handle.write("\n")
    lo, hi = body["ratio_wall_90ci"]
    print(f"params: ours {result['params']['ours']:,}, timm {result['params']['timm']:,}")
    print(f"images/s (median, wall): ours {body['ours_wall_median']:.1f}, timm {body['timm_wall_median']:.1f}; "
          f"CPU-time ratio {body['ratio_cpu']:.3f}x [{body['ratio_cpu_90ci'][0]:.3f}, {body['ratio_cpu_90ci'][1]:.3f}]")
    print(f"load average {load_before[0]:.1f} before, {body['load_average_after'][0]:.1f} after; "
          f"{torch.get_num_threads()} threads; wrote {args.out}")
    print(f"train speed ours/timm (A0, {args.resolution} px, batch {args.batch}): {body['ratio_wall']:.3f}x "
          f"[90% CI {lo:.3f}, {hi:.3f}] (goal >= 1.0x)")
    return 0


def main_repopt(args: argparse.Namespace) -> int:
    """The ``--repopt`` benchmark: write its JSON and print the figures last."""
    load_before, start = os.getloadavg(), time.perf_counter()
    result = run_repopt(args.repeats, args.steps, args.warmup, args.batch, args.resolution, args.classes)
    body = {"benchmark": "training images/s and memory, RepOpt-VGG-A0 (plain, masked SGD) vs RepVGG-A0 train form",
            "settings": {"repeats": args.repeats, "steps": args.steps, "warmup": args.warmup, "batch": args.batch,
                         "resolution": args.resolution, "classes": args.classes, "quick": args.quick},
            "machine": machine_info(torch.get_num_threads(), with_timm=False),
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "wall_s": time.perf_counter() - start, "goal": "repopt/repvgg >= 1.3x images/s, less memory", **result}
    low, high = body["ratio_wall_90ci"]
    verdict = ("not reached" if high < 1.3 or result["memory_ratio"] >= 1 else "reached" if low >= 1.3
               else "within noise of 1.3x")
    body["verdict"] = verdict
    out = args.out or REPOPT_RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as handle:
        json.dump(body, handle, indent=2)
        handle.write("\n")
    mib = {k: v / 2**20 for k, v in result["memory_total_bytes"].items()}
    for clock in ("wall", "cpu"):
        lo, hi = body[f"ratio_{clock}_90ci"]
        print(f"images/s ({clock}, median): repopt {body[f'repopt_{clock}_median']:.1f}, repvgg "
              f"{body[f'repvgg_{clock}_median']:.1f}; ratio {body[f'ratio_{clock}']:.3f}x [90% CI {lo:.3f}, {hi:.3f}]")
    print(f"training memory of one step: repopt {mib['repopt']:.1f} MiB, repvgg {mib['repvgg']:.1f} MiB "
          f"(ratio {result['memory_ratio']:.3f}); load {load_before[0]:.1f} before, "
          f"{body['load_average_after'][0]:.1f} after; wrote {out}")
    print(f"goal RepOpt >= 1.3x faster and less memory (A0, {args.resolution} px, batch {args.batch}): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
