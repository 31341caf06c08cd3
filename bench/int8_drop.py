"""Benchmark: how much accuracy int8 post-training quantization costs, RepVGG vs QARepVGG vs RepOpt-VGG blocks.

    .venv/bin/python bench/int8_drop.py              # 3 specs × 2 blocks, seed 0: ~16 min (958 s)
    .venv/bin/python bench/int8_drop.py --specs repvgg_d2-4-14-1_w0.75-0.75-0.75-1_g1_r64 --seeds 0 1
                                                     # + seed 1 of the widest pair (resumes): ~11 min
    .venv/bin/python bench/int8_drop.py --epochs 1 --specs repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_g1_r64 \\
        --csv /tmp/int8_smoke.csv --out /tmp/int8_smoke.json            # smoke run, a few minutes
    .venv/bin/python bench/int8_drop.py --blocks repopt  # only the RepOpt rows (the others come from the JSON)

Data: the 10 largest classes of Caltech-101 (3,379 images, 107-800 per class: a natural long tail) from
``../shared/data/caltech101-128.tar.gz``, extracted to ``/tmp`` (never into the repository), at 64 px, split
by the product's loader (seed 0) into train / selection (10 %) / test (25 %, for tighter intervals).

For each spec the same training run (data, seed, schedule, one torch thread) is done with ``block=repvgg``,
``block=qarepvgg`` and ``block=repopt`` (the plain model with gradient masks; its scales are first found by
the hyper-search stage on the same training split at its default budget, a fifth of the epochs, on top:
``train_s`` includes it). Each trained model is re-parameterized, exported to fp32 ONNX and quantized twice
with the product's stage (:func:`trials.int8_stage.quantize`: int8 QDQ, MinMax, calibrated on 256
training images), per-tensor and per-channel weight scales. Reported per model and mode on the **test**
split: fp32 and int8 top-1 and balanced accuracy, the drop (fp32 − int8 top-1, points) with a paired
bootstrap 95 % interval over test images, and the int8/fp32 top-1 agreement; the selection split's drop
beside it (the split ``nas export --int8-budget`` judges on).

Resumable: one CSV row per finished model (``--csv``, default ``/tmp/int8_drop_rows.csv``); a rerun skips
the models already there and the JSON (``--out``) is rewritten from all rows at the end of every model.
Without the CSV, the rows of an existing ``--out`` JSON are the starting point (so a new block's rows join
the figures already measured).

Published context: plain RepVGG-A0 falls from 72.4 % to 52.2 % top-1 under standard int8 PTQ on
ImageNet; QARepVGG-A0 keeps 70.4 %.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from search_space import resolve_arch
from search_space.io import atomic_write
from search_space.model import reparameterize
from trials import export_stages as stages
from trials import int8_stage, onnx_export
from trials.config import TrainConfig
from trials.data import DataBundle, load_data
from trials.latency import cpu_model
from trials.recipe import Recipe
from trials.train import train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "int8_drop.json"
ARCHIVE = ROOT.parent / "shared" / "data" / "caltech101-128.tar.gz"
EXTRACT_TO = Path(tempfile.gettempdir()) / "int8_drop_data"
CLASSES = 10
RESOLUTION = 64
#: a shallow wider net, N1's deep narrow shape (22 layers) and the same depth at A0-like widths, at 64 px.
SPECS = ("repvgg_d1-2-4-1_w0.5-0.5-0.5-1_g1_r64", "repvgg_d2-4-14-1_w0.25-0.25-0.25-0.25_g1_r64",
         "repvgg_d2-4-14-1_w0.75-0.75-0.75-1_g1_r64")
BOOTSTRAP = 2000
MODES = (("per_tensor", False), ("per_channel", True))
BLOCKS = ("repvgg", "qarepvgg", "repopt")


def log(text: str) -> None:
    """Progress on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def dataset(path: str | None) -> Path:
    """The folder of the ``CLASSES`` largest Caltech-101 classes: ``path``, or extracted once to /tmp."""
    if path:
        return Path(path)
    target = EXTRACT_TO / f"caltech101-top{CLASSES}"
    if target.is_dir():
        return target
    with tarfile.open(ARCHIVE) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.count("/") == 2]
        counts: dict[str, int] = {}
        for m in members:
            counts[m.name.split("/")[1]] = counts.get(m.name.split("/")[1], 0) + 1
        keep = set(sorted(counts, key=lambda c: (-counts[c], c))[:CLASSES])
        EXTRACT_TO.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="caltech-", dir=EXTRACT_TO))
        tar.extractall(staging, members=[m for m in members if m.name.split("/")[1] in keep], filter="data")
    os.replace(staging / "caltech101", target)
    return target


def bootstrap_drop(fp32_ok: np.ndarray, int8_ok: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Paired bootstrap 95 % interval of (fp32 − int8) top-1 over images, in points."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(fp32_ok), size=(BOOTSTRAP, len(fp32_ok)))
    diffs = 100 * (fp32_ok[idx].mean(1) - int8_ok[idx].mean(1))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return round(float(low), 3), round(float(high), 3)


def run_one(spec_text: str, block: str, bundle: DataBundle, config: TrainConfig, work: Path,
            calibration: int) -> dict[str, object]:
    """Train one block variant (seed ``config.seed``), quantize it per-tensor and per-channel; one flat row."""
    spec = resolve_arch(spec_text, RESOLUTION, len(bundle.classes), block)
    log(f"training {spec} ({config.epochs} epochs, seed {config.seed})")
    t0 = time.perf_counter()
    result = train(spec, bundle, config, on_progress=lambda i: i.get("event") == "epoch" and log(
        f"  epoch {i['epoch']}: loss {i['train_loss']:.3f}, selection top-1 {i['selection_top1']:.3f}"))
    row: dict[str, object] = {"spec": spec.to_string(), "block": block, "seed": config.seed,
                              "train_s": round(time.perf_counter() - t0, 1)}
    if result.scales is not None:  # repopt: the hyper-search stage's steps (included in train_s)
        row["hs_steps"] = result.scales.found_by.get("steps")
    deploy = reparameterize(result.model.cpu().float().eval())
    fp32 = onnx_export.export_onnx(deploy, work / f"{spec.hash}.onnx", spec.resolution)
    logits = {}
    for split in ("test", "selection"):
        x, y = stages.load_images(getattr(bundle, split), range(len(getattr(bundle, split))))
        logits[split] = (y, stages.run_onnx(fp32, x, 1), x)
    y, fp32_logits, _ = logits["test"]
    fp32_ok = fp32_logits.argmax(1) == y
    fp = stages.scores(fp32_logits, y, bundle.classes)
    row.update(test_images=len(y), fp32_top1=round(fp.top1, 4), fp32_bacc=round(fp.balanced_acc, 4))
    for mode, per_channel in MODES:
        int8 = work / f"{spec.hash}.{mode}.onnx"
        int8_stage.quantize(fp32, int8, bundle.train_eval,
                            int8_stage.QuantizeOptions(per_channel=per_channel, calibration_images=calibration))
        int8_logits = stages.run_onnx(int8, logits["test"][2], 1)
        q = stages.scores(int8_logits, y, bundle.classes)
        low, high = bootstrap_drop(fp32_ok, int8_logits.argmax(1) == y)
        sy, sel_fp32, sx = logits["selection"]
        sel_int8 = stages.run_onnx(int8, sx, 1)
        row.update({f"{mode}_int8_top1": round(q.top1, 4), f"{mode}_int8_bacc": round(q.balanced_acc, 4),
                    f"{mode}_drop_pt": round(100 * (fp.top1 - q.top1), 3), f"{mode}_drop_low": low,
                    f"{mode}_drop_high": high,
                    f"{mode}_agreement": round(float((int8_logits.argmax(1) == fp32_logits.argmax(1)).mean()), 4),
                    f"{mode}_selection_drop_pt": round(
                        100 * float((sel_fp32.argmax(1) == sy).mean() - (sel_int8.argmax(1) == sy).mean()), 3)})
        log(f"  {mode}: fp32 {fp.top1:.4f} → int8 {q.top1:.4f} (drop {row[f'{mode}_drop_pt']:+.2f} pt, "
            f"95 % [{low:+.2f}, {high:+.2f}], agreement {row[f'{mode}_agreement']:.4f})")
    return row


def read_rows(path: Path) -> list[dict[str, object]]:
    """The finished rows of an earlier run (numbers parsed back)."""
    if not path.is_file():
        return []
    rows = []
    for raw in csv.DictReader(path.open(encoding="utf-8")):
        row: dict[str, object] = {}
        for key, value in raw.items():
            try:
                row[key] = int(value) if value.isdigit() else float(value)
            except ValueError:
                row[key] = value
        if row.get("seed", "") == "":  # rows written before the seed was recorded: seed 0
            row["seed"] = 0
        rows.append(row)
    return rows


def earlier_rows(path: Path) -> list[dict[str, object]]:
    """The rows of an earlier result JSON (none when it does not exist)."""
    if not path.is_file():
        return []
    rows = json.loads(path.read_text(encoding="utf-8")).get("rows", [])
    log(f"starting from the {len(rows)} rows of {path}")
    return rows


def write_rows(path: Path, rows: list[dict[str, object]]) -> None:
    """All rows as CSV, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (resuming from the CSV) and write its JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="image folder (default: the 10 largest Caltech-101 classes, extracted to /tmp)")
    p.add_argument("--specs", nargs="+", default=list(SPECS), help="spec strings (the block is set per run)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (the splits stay seed 0)")
    p.add_argument("--blocks", nargs="+", default=list(BLOCKS), choices=BLOCKS, help="block types (default all)")
    p.add_argument("--epochs", type=int, default=15, help="training epochs per model (default 15)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--calibration-images", type=int, default=256)
    p.add_argument("--csv", default=str(Path(tempfile.gettempdir()) / "int8_drop_rows.csv"),
                   help="resumable rows, one per finished model")
    p.add_argument("--out", default=str(RESULTS), help="result JSON (default bench/results/int8_drop.json)")
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    start, load_before = time.perf_counter(), os.getloadavg()
    bundle = load_data(dataset(args.data), RESOLUTION, recipe=Recipe(), selection_ratio=0.1, test_ratio=0.25)
    log(f"data: {len(bundle.train)} train / {len(bundle.selection)} selection / {len(bundle.test)} test images, "
        f"{len(bundle.classes)} classes")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup_epochs=0.5,
                         weight_decay=5e-5, seed=0, device="cpu", eval_batch_size=256, recipe=bundle.recipe)
    rows_path = Path(args.csv)
    rows = read_rows(rows_path) or earlier_rows(Path(args.out))
    done = {(r["spec"], r["block"], r["seed"]) for r in rows}
    with tempfile.TemporaryDirectory(prefix="int8_drop-") as work:
        for seed, text, block in ((s, t, b) for s in args.seeds for t in args.specs for b in args.blocks):
            spec = resolve_arch(text, RESOLUTION, len(bundle.classes), block).to_string()
            if (spec, block, seed) not in done:
                rows.append(run_one(text, block, bundle, dataclasses.replace(config, seed=seed), Path(work),
                                    args.calibration_images))
                write_rows(rows_path, rows)
                write_json(Path(args.out), args, bundle, config, rows, start, load_before)
    write_json(Path(args.out), args, bundle, config, rows, start, load_before)
    print(f"{'spec':<48} {'block':<9} {'seed':>4} {'fp32':>6} {'drop/tensor (95 %)':>22} {'agree':>6} "
          f"{'drop/channel (95 %)':>22} {'agree':>6}")
    for r in rows:
        cells = [f"{r[f'{m}_drop_pt']:+5.2f} [{r[f'{m}_drop_low']:+5.2f},{r[f'{m}_drop_high']:+5.2f}]"
                 f" {r[f'{m}_agreement']:6.3f}" for m, _ in MODES]
        print(f"{r['spec']:<48} {r['block']:<9} {r['seed']:>4} {r['fp32_top1']:6.3f} {cells[0]:>29} {cells[1]:>29}")
    print(f"wall {time.perf_counter() - start:.0f} s this run; rows in {rows_path}; written to {args.out}")
    return 0


def write_json(out: Path, args: argparse.Namespace, bundle: DataBundle, config: TrainConfig,
               rows: list[dict[str, object]], start: float, load_before: tuple[float, float, float]) -> None:
    """The result JSON from all rows so far."""
    result = {
        "benchmark": "int8 post-training quantization drop, RepVGG vs QARepVGG vs RepOpt-VGG",
        "data": {"name": f"Caltech-101, the {CLASSES} largest classes", "resolution": RESOLUTION,
                 "classes": list(bundle.classes), "train_images": len(bundle.train),
                 "selection_images": len(bundle.selection), "test_images": len(bundle.test)},
        "training": {**config.to_dict(), "torch_threads": 1},
        "quantization": {"format": "QDQ, onnxruntime quantize_static, MinMax", "activations": "uint8",
                         "weights": "int8", "reduce_range": onnx_export.default_reduce_range(),
                         "calibration_images": args.calibration_images},
        "intervals": f"paired bootstrap over test images, {BOOTSTRAP} resamples, 95 %",
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_before": load_before,
                    "load_after": os.getloadavg(), "note": "shared 2-core machine: wall times are noisy"},
        "wall_s_this_run": round(time.perf_counter() - start, 1),
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")


if __name__ == "__main__":
    sys.exit(main())
