"""A search and an export on real long-tailed folders, as a user runs them: is the proxy's pick honest on test data?

    .venv/bin/python bench/real_data.py                       # CIFAR-10-LT and Caltech-101 from ../shared/data
    .venv/bin/python bench/real_data.py --datasets cifar10-lt --trials 8 --epochs 2   # a quick check

For each data set the script runs the product's own commands in a fresh folder (subprocesses, one torch thread
each, so the figures are what a user gets):

1. ``nas search --data DIR -o bacc,latency --target TARGET --resolution R --trials N`` — the proxy (the recipe
   at a small budget) ranks specs on the **selection** split; the study records the data and the recipe;
2. ``nas pareto --pick knee -f json`` — the knee, with its accuracy interval and tie marks;
3. ``nas export --pareto --pick knee --epochs E`` — full training with the study's recorded data and recipe
   (no data flags given: the study supplies them), re-parameterization, ONNX fp32 + int8, and the model card's
   **test**-split figures (the test split is read by nothing before this step).

Reported per data set: the knee's proxy balanced accuracy (with its bootstrap interval) against the exported
model's selection and test balanced accuracy, top-1 and worst-class recall, and the wall time of each step.
Everything goes to ``--out`` (JSON, written atomically); the summary is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "bench" / "results" / "real_data.json"
NAS = [sys.executable, "-m", "nas"]

#: name -> (archive, folder inside it, resolution, recipe flags); the recipe flags say what the data needs.
DATASETS = {
    "cifar10-lt": ("cifar10-lt.tar.gz", "cifar10-lt", 32, ["--hflip", "0.5", "--crop-scale", "0.6,1"]),
    "caltech101": ("caltech101-128.tar.gz", "caltech101", 64, ["--hflip", "0.5", "--crop-scale", "0.6,1"]),
}


def extract(archive: str, folder: str, into: Path) -> Path:
    """The data folder, extracted once from ../shared/data into ``into`` (never into the repository)."""
    target = into / folder
    if not target.is_dir():
        with tarfile.open(SHARED / archive) as tar:
            tar.extractall(into, filter="data")
    return target


def run(argv: list[str], cwd: Path, log: Path) -> tuple[str, float]:
    """Run one ``nas`` command; stdout is returned, stderr goes to ``log``; a failure stops the benchmark."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    with log.open("a", encoding="utf-8") as err:
        err.write(f"$ nas {' '.join(argv)}\n")
        err.flush()
        proc = subprocess.run([*NAS, *argv], cwd=cwd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"nas {' '.join(argv)} failed (exit {proc.returncode}); see {log}")
    return proc.stdout, time.perf_counter() - start


def one(name: str, args: argparse.Namespace, data_root: Path) -> dict[str, object]:
    """Search, pick the knee, export it; the figures of one data set."""
    archive, folder, resolution, recipe = DATASETS[name]
    data = extract(archive, folder, data_root)
    work = Path(tempfile.mkdtemp(prefix=f"real-{name}-", dir=args.work))
    log = work / "stderr.log"
    storage = f"sqlite:///{work / 'study.db'}"
    search = ["search", "--data", str(data), "-o", "bacc,latency", "--target", args.target, "--resolution",
              str(resolution), "--trials", str(args.trials), "--seed", "0", "--storage", storage, "--study", name,
              "--proxy-images", str(args.proxy_images), *recipe, "-f", "json"]
    _, search_s = run(search, work, log)
    front_text, _ = run(["pareto", "--storage", storage, "--study", name, "--pick", "knee", "-f", "json"], work, log)
    front = json.loads(front_text)
    export = ["export", "--pareto", "--pick", "knee", "--storage", storage, "--study", name, "--out",
              str(work / "export"), "--epochs", str(args.epochs), "--batch-size", "64", "--lr", "0.1",
              "--torch-threads", "1", "-f", "json"]
    export_text, export_s = run(export, work, log)
    exported = json.loads(export_text)
    row = exported["rows"][0]
    card = json.loads((Path(row["folder"]) / "model_card.json").read_text(encoding="utf-8"))
    acc = card["accuracy"]
    figures = {
        "test": {k: acc["fp32"][k] for k in ("top1", "balanced_acc", "worst_class_recall")},
        "test_int8": {k: acc["int8"][k] for k in ("top1", "balanced_acc", "worst_class_recall")},
        "selection": {k: acc["selection"]["fp32"][k] for k in ("top1", "balanced_acc", "worst_class_recall")},
        "test_images": acc["images"], "selection_images": acc["selection"]["images"],
    }
    return {"dataset": name, "resolution": resolution, "recipe_flags": recipe, "work": str(work),
            "commands": [" ".join(["nas", *search]), " ".join(["nas", *export])],
            "search_s": round(search_s, 1), "export_s": round(export_s, 1), "knee": front.get("pick"),
            "spec": card["spec"], "exported": figures, "lowest_recall_classes": acc["per_class"][:5],
            "data": card.get("data", {}).get("settings"), "recipe": card.get("data", {}).get("recipe")}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma list of " + ", ".join(DATASETS))
    p.add_argument("--trials", type=int, default=20, help="distinct specs per search (default 20)")
    p.add_argument("--proxy-images", type=int, default=2000, help="proxy training images (default 2000)")
    p.add_argument("--epochs", type=int, default=15, help="full-training epochs of the exported knee (default 15)")
    p.add_argument("--target", default="Hexagon698", help="hardware target of the latency objective")
    p.add_argument("--work", default=tempfile.gettempdir(), help="where the runs' folders go")
    p.add_argument("--out", default=str(RESULTS), help="result JSON (default bench/results/real_data.json)")
    args = p.parse_args(argv)
    data_root = Path(args.work) / "nas-real-data"
    data_root.mkdir(parents=True, exist_ok=True)
    results = [one(name.strip(), args, data_root) for name in args.datasets.split(",") if name.strip()]
    body = {"benchmark": "search + export of the knee on real long-tailed folders", "trials": args.trials,
            "proxy_images": args.proxy_images, "epochs": args.epochs, "target": args.target, "runs": results}
    sys.path.insert(0, str(REPO))
    from search_space.io import atomic_write

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as handle:
        json.dump(body, handle, indent=2)
        handle.write("\n")
    for r in results:
        print(summary_line(r))
    print(f"written to {out}")
    return 0


def summary_line(r: dict[str, object]) -> str:
    """One line: the knee's proxy balanced accuracy against the exported model's selection and test figures."""
    knee, fig = r["knee"] or {}, r["exported"]

    def f(x: object) -> str:
        return f"{x:.3f}" if isinstance(x, float) else str(x)

    proxy = f"proxy bacc {f(knee.get('bacc'))} [{f(knee.get('bacc_low'))}, {f(knee.get('bacc_high'))}]"
    sel, test = fig["selection"], fig["test"]
    return (f"{r['dataset']}: knee {r['spec']}: {proxy} → exported: selection bacc {f(sel['balanced_acc'])}, "
            f"test bacc {f(test['balanced_acc'])} (top-1 {f(test['top1'])}, worst-class recall "
            f"{f(test['worst_class_recall'])}; int8 test bacc {f(fig['test_int8']['balanced_acc'])}); "
            f"search {r['search_s']} s, export {r['export_s']} s")


if __name__ == "__main__":
    raise SystemExit(main())
