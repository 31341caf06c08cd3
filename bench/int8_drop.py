"""Benchmark: how much accuracy int8 post-training quantization costs, RepVGG vs QARepVGG blocks.

    .venv/bin/python bench/int8_drop.py                 # the committed run: 3 specs × 2 blocks, ~20-25 min
    .venv/bin/python bench/int8_drop.py --epochs 1 --specs repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_g1_r32 \\
        --out /tmp/int8_drop_smoke.json                 # smoke run, a few minutes

For each spec the same training run (data, seed, schedule) is done with ``block=repvgg`` and
``block=qarepvgg``; each trained model is exported twice with the product's exporter
(:func:`trials.export.export_model`): int8 QDQ with per-tensor and with per-channel weight scales, both
calibrated on 256 training images. Every export re-checks fp32 parity, then reports fp32 and int8
top-1 and balanced accuracy on the balanced CIFAR-10 test split (10,000 images), and the top-1
agreement of int8 with fp32.

Data: CIFAR-10-LT (imbalance factor 100, 12,406 training images) at 32 px from
``/work/shared/data/cifar10-lt.tar.gz``, extracted to ``/tmp`` (never into the repository). Training
on 2 shared CPU cores is short (``--epochs``, default 6), so absolute accuracy is far below a full
schedule; the quantity measured is the *drop* from fp32 to int8 of the same weights. Torch runs one
thread: on a loaded 2-core machine two threads were up to 10× slower (each waits for the other).

Published context: plain RepVGG-A0 falls from 72.4 % to 52.2 % top-1 under standard int8 PTQ on
ImageNet; QARepVGG-A0 keeps 70.4 %. Results go to ``bench/results/int8_drop.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from search_space import resolve_arch
from search_space.io import atomic_write
from trials.config import TrainConfig
from trials.data import load_data
from trials.export import export_model
from trials.export_stages import QuantizeOptions
from trials.latency import cpu_model
from trials.onnx_export import default_reduce_range
from trials.train import train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "int8_drop.json"
ARCHIVE = Path("/work/shared/data/cifar10-lt.tar.gz")
EXTRACT_TO = Path(tempfile.gettempdir()) / "int8_drop_data"
#: N1 (the seed's deep, narrow model: 22 layers), a shallow wider variant and a 5-layer tiny one, at 32 px.
SPECS = ("repvgg_d2-4-14-1_w0.25-0.25-0.25-0.25_g1_r32", "repvgg_d1-2-4-1_w0.5-0.5-0.5-1_g1_r32",
         "repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_g1_r32")
MONITOR_VAL = 2000  # selection images validated after every epoch (the export reports the whole test split)


def log(text: str) -> None:
    """Progress on stderr."""
    print(text, file=sys.stderr, flush=True)


def dataset(path: str | None) -> Path:
    """The CIFAR-10-LT folder: ``path``, or the shared archive extracted once to /tmp."""
    if path:
        return Path(path)
    target = EXTRACT_TO / "cifar10-lt"
    if not target.is_dir():
        EXTRACT_TO.mkdir(parents=True, exist_ok=True)
        with tarfile.open(ARCHIVE) as tar:
            tar.extractall(EXTRACT_TO, filter="data")
    return target


def run_one(spec_text: str, block: str, bundle: Any, monitor: Any, config: TrainConfig, work: Path,
            calibration: int) -> dict[str, Any]:
    """Train one block variant, export it per-tensor and per-channel; one result row."""
    spec = resolve_arch(spec_text, 32, len(bundle.classes), block)
    log(f"[{time.strftime('%H:%M:%S')}] training {spec} ({config.epochs} epochs)")
    t0 = time.perf_counter()
    result = train(spec, monitor, config,
                   on_progress=lambda i: i.get("event") == "epoch" and log(
                       f"  epoch {i['epoch']}: loss {i['train_loss']:.3f}, monitor top-1 {i['selection_top1']:.3f}"))
    train_s = time.perf_counter() - t0
    row: dict[str, Any] = {"spec": spec.to_string(), "block": block, "train_s": round(train_s, 1),
                           "train_images_per_s": result.metrics["images_per_s"]}
    for mode, per_channel in (("per_tensor", False), ("per_channel", True)):
        card = export_model(result.model, spec, bundle, work / spec.hash / mode,
                            quantize=QuantizeOptions(per_channel=per_channel, calibration_images=calibration))
        d = card.data
        acc = d["accuracy"]
        row[mode] = {"int8_top1": acc["int8"]["top1"], "int8_balanced_acc": acc["int8"]["balanced_acc"],
                     "drop": acc["int8_drop"], "agreement": acc["int8_agreement"],
                     "int8_ms": d["latency"]["measured"]["int8"]["ms"]}
        row.update(fp32_top1=acc["fp32"]["top1"], fp32_balanced_acc=acc["fp32"]["balanced_acc"],
                   parity_max_diff=d["parity"]["max_abs_diff"], fp32_ms=d["latency"]["measured"]["fp32"]["ms"],
                   test_images=acc["images"])
        log(f"  {mode}: fp32 {acc['fp32']['top1']:.4f} → int8 {acc['int8']['top1']:.4f} "
            f"(drop {100 * acc['int8_drop']:+.2f} pt, agreement {acc['int8_agreement']:.4f})")
    return row


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="CIFAR-10-LT folder (default: extract the shared archive to /tmp)")
    p.add_argument("--specs", nargs="+", default=list(SPECS), help="spec strings (the block is set per run)")
    p.add_argument("--epochs", type=int, default=6, help="training epochs per model (default 6)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--calibration-images", type=int, default=256)
    p.add_argument("--out", default=str(RESULTS), help="result JSON (default bench/results/int8_drop.json)")
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    start = time.perf_counter()
    load_before = os.getloadavg()
    bundle = load_data(dataset(args.data), 32)
    log(f"data: {len(bundle.train)} train / {len(bundle.selection)} selection / {len(bundle.test)} test images, "
        f"{len(bundle.classes)} classes")
    step = max(1, len(bundle.selection) // MONITOR_VAL)  # training watches a slice of the selection split
    monitor = dataclasses.replace(bundle, selection=Subset(bundle.selection, range(0, len(bundle.selection), step)))
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup_epochs=0.5,
                         weight_decay=5e-4, seed=0, device="cpu", eval_batch_size=500,
                         recipe=bundle.recipe.replace(label_smoothing=0.1))
    rows = []
    with tempfile.TemporaryDirectory(prefix="int8_drop-") as work:
        for spec in args.specs:
            for block in ("repvgg", "qarepvgg"):
                rows.append(run_one(spec, block, bundle, monitor, config, Path(work), args.calibration_images))
    result = {
        "benchmark": "int8 post-training quantization drop, RepVGG vs QARepVGG",
        "data": {"name": "CIFAR-10-LT (imbalance 100) train, balanced CIFAR-10 test", "resolution": 32,
                 "train_images": len(bundle.train), "test_images": len(bundle.test)},
        "training": {**config.to_dict(), "torch_threads": 1},
        "quantization": {"format": "QDQ, onnxruntime quantize_static, MinMax", "activations": "uint8",
                         "weights": "int8", "reduce_range": default_reduce_range(),
                         "calibration_images": args.calibration_images},
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                    "load_before": load_before, "load_after": os.getloadavg(),
                    "note": "shared 2-core machine: wall times and latencies are noisy"},
        "wall_s": round(time.perf_counter() - start, 1),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")
    print(f"{'spec':<50} {'block':<9} {'fp32':>7} {'int8/t':>7} {'drop/t':>7} {'int8/c':>7} {'drop/c':>7}")
    for r in rows:
        t, c = r["per_tensor"], r["per_channel"]
        print(f"{r['spec']:<50} {r['block']:<9} {r['fp32_top1']:7.4f} {t['int8_top1']:7.4f} "
              f"{100 * t['drop']:+6.2f}  {c['int8_top1']:7.4f} {100 * c['drop']:+6.2f}")
    print(f"wall {result['wall_s']:.0f} s; written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
