"""Benchmark the Foundation: cost-model throughput, and deploy- vs train-form inference speed of RepVGG-A0.

    .venv/bin/python bench/cost_model.py            # full run, about a minute
    .venv/bin/python bench/cost_model.py --quick    # smoke run, a few seconds

1. ``analyze()`` throughput in architectures per second over random specs (goal ≥ 20,000/s), several repeats
   (median and spread), with the garbage collector paused during each timed loop.
2. Inference time of A0 at 112 px (89 classes) in the train form (three branches + BN, eval mode) and the
   re-parameterized deploy form, batch 1 and batch 32, with a fixed torch thread count. The two forms are
   timed in alternating order (ABBA…), each repeat gives one median per form, and the speed-up is the ratio of
   the medians over repeats with a paired bootstrap 90 % interval (goal: deploy ≥ 1.8× faster).

Progress goes to stderr, the figures are printed last, and everything is written to
``bench/results/cost_model.json`` with the machine (CPU model, cores, threads, load, torch version).
Timing on a shared machine is noisy: the load average before and after is recorded beside the figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from search_space import ArchSpec, analyze, get_preset
from search_space.io import atomic_write
from trials.latency import cpu_name

RESULTS = Path(__file__).resolve().parent / "results" / "cost_model.json"
#: Per-stage depth ranges and width choices of the random specs (a RepVGG-A/B-like space).
DEPTH_RANGES = ((1, 4), (1, 6), (1, 16), (1, 2))
WIDTHS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5)  # every stage width divides by 4: groups 1, 2, 4 all valid


def log(text: str) -> None:
    """Progress on stderr."""
    print(text, file=sys.stderr, flush=True)


def random_spec_fields(n: int, seed: int = 0) -> list[tuple[Any, ...]]:
    """``n`` random (depths, widths, block, groups) tuples at the seed's 112 px / 89 classes."""
    rng = random.Random(seed)
    return [
        (
            tuple(rng.randint(lo, hi) for lo, hi in DEPTH_RANGES),
            tuple(rng.choice(WIDTHS) for _ in range(4)),
            rng.choice(("repvgg", "qarepvgg")),
            rng.choice((1, 2, 4)),
        )
        for _ in range(n)
    ]


def timed_rates(setup: Callable[[], Any], fn: Callable[[Any], int], repeats: int) -> dict[str, list[float]]:
    """Items per wall second and per CPU second of ``fn(setup())`` (``fn`` returns its item count).

    ``setup`` runs untimed before every repeat; the garbage collector is paused while timing. CPU time is the
    fairer figure on a shared machine: it does not count the time slices other processes take.
    """
    wall, cpu = [], []
    for _ in range(repeats):
        data = setup()
        gc.collect()
        gc.disable()
        try:
            start, start_cpu = time.perf_counter(), time.process_time()
            count = fn(data)
            elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
        finally:
            gc.enable()
        wall.append(count / elapsed)
        cpu.append(count / elapsed_cpu)
    return {"wall": wall, "cpu": cpu}


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and (max − min) / median of repeated measurements."""
    med = statistics.median(values)
    return {"median": med, "min": min(values), "max": max(values), "spread": (max(values) - min(values)) / med}


def bench_cost_model(n_specs: int, repeats: int) -> dict[str, Any]:
    """Throughput of ``analyze`` on prebuilt specs, and of building the spec plus ``analyze``.

    Specs are rebuilt before every repeat, so no repeat profits from values an earlier one cached on them.
    """
    fields = random_spec_fields(n_specs)

    def build() -> list[ArchSpec]:
        return [ArchSpec(d, w, b, g, 112, 89) for d, w, b, g in fields]

    def analyze_all(specs: list[ArchSpec]) -> int:
        for spec in specs:
            analyze(spec)
        return len(specs)

    def build_and_analyze(_: None) -> int:
        for d, w, b, g in fields:
            analyze(ArchSpec(d, w, b, g, 112, 89))
        return len(fields)

    analyze_all(build())  # warm-up
    analyze_rates = timed_rates(build, analyze_all, repeats)
    both_rates = timed_rates(lambda: None, build_and_analyze, repeats)
    return {
        "specs": n_specs,
        "repeats": repeats,
        "depth_ranges": DEPTH_RANGES,
        "widths": WIDTHS,
        "mean_conv_layers": statistics.fmean(s.num_layers for s in build()),
        "analyze_archs_per_cpu_s": summarize(analyze_rates["cpu"]),
        "analyze_archs_per_wall_s": summarize(analyze_rates["wall"]),
        "spec_and_analyze_archs_per_cpu_s": summarize(both_rates["cpu"]),
        "spec_and_analyze_archs_per_wall_s": summarize(both_rates["wall"]),
        "goal_archs_per_s": 20_000,
    }


def bootstrap_ratio(num: Sequence[float], den: Sequence[float], n_boot: int = 2000, seed: int = 0) -> list[float]:
    """Paired bootstrap 5th and 95th percentiles of median(num) / median(den) over repeats."""
    rng = random.Random(seed)
    idx = range(len(num))
    ratios = []
    for _ in range(n_boot):
        pick = [rng.choice(idx) for _ in idx]
        ratios.append(statistics.median(num[i] for i in pick) / statistics.median(den[i] for i in pick))
    ratios.sort()
    return [ratios[int(0.05 * n_boot)], ratios[int(0.95 * n_boot) - 1]]


def bench_inference(
    batches: Sequence[int], repeats: int, iters: dict[int, int], threads: int, channels_last: bool = False
) -> dict[str, Any]:
    """Train- vs deploy-form forward time of A0 at 112 px, interleaved, per batch size (wall and CPU time)."""
    import torch

    from search_space.model import build_model, reparameterize

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = get_preset("A0").spec(112, 89)
    train = build_model(spec).eval()
    deploy = reparameterize(train)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    forms = {"train": train.to(memory_format=fmt), "deploy": deploy.to(memory_format=fmt)}
    out: dict[str, Any] = {"spec": spec.to_string(), "threads": torch.get_num_threads(),
                           "channels_last": channels_last, "batches": {}}
    for batch in batches:
        x = torch.randn(batch, 3, spec.resolution, spec.resolution).to(memory_format=fmt)
        times = {(form, clock): [] for form in forms for clock in ("wall", "cpu")}
        with torch.inference_mode():
            for model in forms.values():  # warm-up: allocator, oneDNN primitives
                for _ in range(2):
                    model(x)
            for r in range(repeats):
                for form in ("train", "deploy") if r % 2 == 0 else ("deploy", "train"):
                    wall, cpu = [], []
                    for _ in range(iters[batch]):
                        start, start_cpu = time.perf_counter(), time.process_time()
                        forms[form](x)
                        wall.append(time.perf_counter() - start)
                        cpu.append(time.process_time() - start_cpu)
                    times[form, "wall"].append(statistics.median(wall) * 1e3)
                    times[form, "cpu"].append(statistics.median(cpu) * 1e3)
                log(f"  batch {batch}, repeat {r + 1}/{repeats}: train {times['train', 'wall'][-1]:.1f} ms, "
                    f"deploy {times['deploy', 'wall'][-1]:.1f} ms (wall)")
        row: dict[str, Any] = {"iters_per_repeat": iters[batch], "repeats": repeats}
        for clock in ("cpu", "wall"):
            train_ms, deploy_ms = times["train", clock], times["deploy", clock]
            row[clock] = {
                "train_ms": summarize(train_ms),
                "deploy_ms": summarize(deploy_ms),
                "speedup": statistics.median(train_ms) / statistics.median(deploy_ms),
                "speedup_90ci": bootstrap_ratio(train_ms, deploy_ms),
                "per_repeat_speedup": [t / d for t, d in zip(train_ms, deploy_ms)],
            }
        out["batches"][str(batch)] = row
    out["goal_speedup"] = 1.8
    return out


def machine_info() -> dict[str, Any]:
    """CPU model, core count, Python and torch versions."""
    import torch

    cpu = cpu_name()
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run both benchmarks, write the JSON, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--specs", type=int, default=20_000, help="random specs per throughput repeat")
    parser.add_argument("--repeats", type=int, default=7, help="repeats of each measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for the inference part")
    parser.add_argument("--channels-last", action="store_true", help="run both forms in channels_last memory format")
    parser.add_argument("--quick", action="store_true", help="a small smoke run (not for reporting)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON results")
    args = parser.parse_args(argv)
    n_specs, repeats = (2_000, 3) if args.quick else (args.specs, args.repeats)
    iters = {1: 3, 32: 1} if args.quick else {1: 10, 32: 2}

    load_before = os.getloadavg()
    log(f"cost model: {repeats} × {n_specs} random specs")
    cost = bench_cost_model(n_specs, repeats)
    log(f"inference: A0 at 112 px, {args.threads} thread(s), {repeats} interleaved repeats")
    infer = bench_inference((1, 32), repeats, iters, args.threads, args.channels_last)
    result = {
        "machine": machine_info(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "quick": args.quick,
        "cost_model": cost,
        "inference": infer,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out) as f:
        json.dump(result, f, indent=2)
        f.write("\n")

    m = result["machine"]
    layout = "channels_last" if args.channels_last else "NCHW"
    print(f"machine: {m['cpu']}, {m['cpu_count']} cores, torch {m['torch']}, {infer['threads']} torch thread(s), "
          f"{layout}, load average {load_before[0]:.1f} before, {result['load_average_after'][0]:.1f} after")
    for key, label in (("analyze", "analyze()"), ("spec_and_analyze", "ArchSpec(...) + analyze()")):
        c, w = cost[f"{key}_archs_per_cpu_s"], cost[f"{key}_archs_per_wall_s"]
        print(f"{label}: {c['median']:,.0f} archs per CPU-s median (min {c['min']:,.0f}, max {c['max']:,.0f}); "
              f"{w['median']:,.0f} per wall-s (min {w['min']:,.0f}, max {w['max']:,.0f})")
    print(f"  ({repeats} repeats × {n_specs} random specs, {cost['mean_conv_layers']:.1f} convs on average; "
          "goal ≥ 20,000 archs/s)")
    for batch, row in infer["batches"].items():
        for clock in ("cpu", "wall"):
            r = row[clock]
            lo, hi = r["speedup_90ci"]
            print(f"A0 112 px batch {batch} ({clock} time): train {r['train_ms']['median']:.1f} ms, deploy "
                  f"{r['deploy_ms']['median']:.1f} ms → deploy {r['speedup']:.2f}× faster "
                  f"(90 % CI {lo:.2f}–{hi:.2f}; goal ≥ 1.8)")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
