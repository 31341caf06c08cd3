"""The learning-curve table of the search space: selection and test accuracy after every epoch, per spec and seed.

    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python bench/learning_curves.py --shard 0/2   # and --shard 1/2
    .venv/bin/python bench/learning_curves.py --report                                     # figures only

Specs: the default space (``nas.space.SearchSpace()``, 1,296 specs at 32 px) sorted by MACs (the cost model),
cut into :data:`STRATA` equal-count strata, one seeded pick per stratum. Every spec trains with seed 0; the
:data:`SEED1_SPECS` picks spread evenly over MACs train again with seed 1 (the seed noise of the reference).

Training: CIFAR-10-LT at 32 px with the data's default recipe (``Recipe.for_data``), through the rung API
(:func:`trials.rungs.rung_accuracy`) on a budget that is full training, not a proxy: every training image,
every selection image scored, batch 64, lr 0.1 (the proxy's lr: the default recipe's SGD with warm-up and
cosine), one torch thread, and a schedule whose horizon is the reference budget :data:`REFERENCE_EPOCHS` = 18.
Why 18: the issue asks for a reference long enough that the ranking is stable, and successive halving with
eta 3 needs rungs E/9, E/3, E in whole epochs (2, 6, 18); 18 epochs of the whole set is ~3 core-hours for the
50 jobs on this machine (one epoch ≈ 13 s for a mid-size spec, 28 s for the largest, 1 thread), which fits
in a few sessions; longer horizons would not. Because one cosine schedule spans all 18 epochs, the snapshot at
epoch b is a b-epoch prefix of the reference run, not a b-epoch training (its learning rate has not decayed);
the replay (``bench/fidelity_strategies.py``) says so where it uses snapshots as proxies.

After every epoch: the selection top-1 and balanced accuracy (from the rung result) and the test top-1 and
balanced accuracy (the ``test/`` folder, :data:`TEST_PER_CLASS` images per class, a seeded stratified choice;
only this bench reads it). One CSV row per (spec, seed, epoch) is appended to
``bench/results/learning_curves.csv`` (one ``write`` under a file lock, so two shards share the file and a
kill never leaves half a row). A job continues from its rung checkpoint in ``--work`` after a kill; a job
whose checkpoint is gone (a new machine) retrains from scratch to its next missing epoch. No row is ever
written twice. ``train_s`` is the CPU seconds of one epoch (training plus selection scoring, one torch
thread: core-seconds, which a busy machine does not inflate as it does wall time; for an epoch trained before
a kill and scored after it, the wall seconds its checkpoint recorded); ``cum_train_s`` and ``cum_steps`` add
up the job's epochs.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import io
import os
import shutil
import sys
import tarfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proxy_fidelity import correlation  # the benches' one Kendall τ with a bootstrap interval

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "cifar10-lt.tar.gz"
DEFAULT_DATA = Path("/tmp/data/cifar10-lt")
DEFAULT_WORK = Path("/tmp/nas-learning-curves")
CSV_PATH = REPO / "bench" / "results" / "learning_curves.csv"

RESOLUTION = 32
REFERENCE_EPOCHS = 18
STRATA = 40
SEED1_SPECS = 10
PICK_SEED = 0
TEST_PER_CLASS = 500
BATCH_SIZE = 64
LR = 0.1
FIELDS = ("spec", "stratum", "seed", "epoch", "horizon", "macs", "params", "selection_top1", "selection_bacc",
          "test_top1", "test_bacc", "train_s", "cum_train_s", "cum_steps", "selection_images", "test_images")
INT_FIELDS = {"stratum", "seed", "epoch", "horizon", "macs", "params", "cum_steps", "selection_images", "test_images"}


@dataclass(frozen=True)
class Job:
    """One learning curve: a spec trained with one seed."""

    spec: Any  # ArchSpec (imported late: the report needs no torch)
    stratum: int
    seed: int

    @property
    def key(self) -> tuple[str, int]:
        """(spec string, seed): the job's identity in the CSV."""
        return self.spec.to_string(), self.seed


def stratified_specs(strata: int = STRATA, seed: int = PICK_SEED) -> list[Any]:
    """One spec per equal-count MACs stratum of the default space (sorted by MACs, one seeded pick each)."""
    from nas.space import SearchSpace
    from search_space.cost import analyze

    specs = sorted(SearchSpace().iter_specs(num_classes=10), key=lambda s: (analyze(s).macs, s.to_string()))
    rng = np.random.default_rng(seed)
    return [specs[int(rng.choice(chunk))] for chunk in np.array_split(np.arange(len(specs)), strata)]


def job_list(specs: Sequence[Any], seed1_specs: int = SEED1_SPECS) -> list[Job]:
    """Seed-0 jobs first, in golden-ratio order of the strata (every prefix spreads over MACs), then seed 1 for
    ``seed1_specs`` strata spread evenly over MACs (in the same order)."""
    order = sorted(range(len(specs)), key=lambda i: (i * 0.6180339887498949) % 1.0)
    twice = set(np.linspace(0, len(specs) - 1, seed1_specs).round().astype(int).tolist()) if seed1_specs else set()
    first = [Job(specs[i], i, 0) for i in order]
    return first + [Job(specs[i], i, 1) for i in order if i in twice]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` → (i, n) with 0 ≤ i < n."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"shard {text!r} is not i/n") from exc
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"shard {text!r} needs 0 <= i < n")
    return i, n


def reference_config(seed: int, epochs: int = REFERENCE_EPOCHS) -> Any:
    """The reference budget: all training and selection images, batch 64, lr 0.1, ``epochs`` (no step cap)."""
    from trials.proxy import ProxyBudget, ProxyConfig

    return ProxyConfig(budget=ProxyBudget(epochs=epochs, max_steps=10**9, train_images=None,
                                          selection_per_class=None, batch_size=BATCH_SIZE, lr=LR, seed=seed))


# -- the CSV -----------------------------------------------------------------------------------------

def read_rows(path: Path) -> list[dict[str, Any]]:
    """The table's rows with numbers parsed (empty list for a missing file)."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        raise SystemExit(f"{path} ends in half a row: remove its last line and run again")
    rows = []
    for raw in csv.DictReader(io.StringIO(text)):
        row: dict[str, Any] = dict(raw)
        for key in FIELDS[1:]:
            row[key] = int(raw[key]) if key in INT_FIELDS else float(raw[key])
        rows.append(row)
    return rows


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one row (and the header to an empty file) in one ``write`` under an exclusive lock, then fsync."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
    writer.writerow(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        header = ",".join(FIELDS) + "\n" if os.fstat(fd).st_size == 0 else ""
        os.write(fd, (header + buffer.getvalue()).encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def progress(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """The last row of every job."""
    last: dict[tuple[str, int], dict[str, Any]] = {}
    for row in rows:
        key = (row["spec"], row["seed"])
        if key not in last or row["epoch"] > last[key]["epoch"]:
            last[key] = row
    return last


# -- training ----------------------------------------------------------------------------------------

@dataclass
class Bench:
    """What every job shares: the data, the scored test images, where checkpoints and rows go, the horizon."""

    data: Any  # DataBundle
    test: Any  # Dataset: the scored test images
    work: Path
    out: Path
    horizon: int = REFERENCE_EPOCHS


def open_bench(data: Any, work: Path, out: Path, horizon: int, test_per_class: int | None) -> Bench:
    """The bench's shared state; the scored test images are a seeded stratified choice of ``data.test``."""
    from torch.utils.data import Subset

    from trials.distributed import dataset_labels
    from trials.longtail import cap_per_class

    labels = np.asarray(dataset_labels(data.test), dtype=np.int64)
    keep = np.arange(len(labels))
    if test_per_class is not None:
        keep = cap_per_class(keep, labels, test_per_class, PICK_SEED)
    return Bench(data, Subset(data.test, keep.tolist()), work, out, horizon)


def run_job(job: Job, bench: Bench, last: dict[str, Any] | None) -> int:
    """Train ``job`` epoch by epoch from where the table stands (``last``: its last row), one row per epoch;
    returns the epochs trained (more than the rows written when a lost checkpoint is retrained, fewer when a
    checkpoint is ahead of the table). The job's checkpoint folder is removed once the horizon is reached."""
    from search_space.cost import analyze
    from trials.checkpoint import Checkpoint
    from trials.evaluate import result_from_predictions
    from trials.proxy import predictions
    from trials.rungs import CHECKPOINT, rung_accuracy

    folder = bench.work / f"{job.spec.to_string()}_seed{job.seed}"
    done = int(last["epoch"]) if last else 0
    cum_s = float(last["cum_train_s"]) if last else 0.0
    config = reference_config(job.seed, bench.horizon)
    cost = analyze(job.spec)
    trained_total = 0
    for epoch in range(done + 1, bench.horizon + 1):
        cpu = time.process_time()
        result = rung_accuracy(job.spec, bench.data, config, epoch, folder)
        cpu = time.process_time() - cpu
        checkpoint = Checkpoint.read(folder / CHECKPOINT)
        trained = result.epochs - result.start_epoch  # 0 after a kill between the checkpoint and its row
        trained_total += trained
        epoch_s = cpu / trained if trained else float(checkpoint.history[-1]["wall_s"])
        labels, predicted = predictions(checkpoint.build_model(), bench.test)
        test = result_from_predictions(labels, predicted, list(bench.data.classes))
        cum_s += epoch_s
        append_row(bench.out, {
            "spec": job.spec.to_string(), "stratum": job.stratum, "seed": job.seed, "epoch": result.epochs,
            "horizon": bench.horizon, "macs": cost.macs, "params": cost.params,
            "selection_top1": round(result.top1, 6), "selection_bacc": round(result.balanced_acc, 6),
            "test_top1": round(test.top1, 6), "test_bacc": round(test.balanced_acc, 6),
            "train_s": round(epoch_s, 3), "cum_train_s": round(cum_s, 3), "cum_steps": result.steps,
            "selection_images": result.selection_images, "test_images": len(labels)})
        print(f"{job.spec} seed {job.seed} epoch {result.epochs}/{bench.horizon}: selection bacc "
              f"{result.balanced_acc:.3f}, test bacc {test.balanced_acc:.3f}, {epoch_s:.0f} CPU s", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    return trained_total


def run_jobs(jobs: Sequence[Job], bench: Bench) -> int:
    """Run every unfinished job of ``jobs`` in order; returns the epochs trained."""
    import torch

    torch.set_num_threads(1)
    trained = 0
    for job in jobs:
        rows = read_rows(bench.out)
        if any(r["horizon"] != bench.horizon for r in rows):
            raise SystemExit(f"{bench.out} holds rows of another horizon than {bench.horizon} epochs")
        last = progress(rows).get(job.key)
        if last is None or last["epoch"] < bench.horizon:
            trained += run_job(job, bench, last)
    return trained


# -- the report --------------------------------------------------------------------------------------

def curves(rows: Sequence[dict[str, Any]], seed: int, column: str) -> dict[str, dict[int, float]]:
    """``{spec: {epoch: value}}`` of one seed."""
    out: dict[str, dict[int, float]] = {}
    for row in rows:
        if row["seed"] == seed:
            out.setdefault(row["spec"], {})[int(row["epoch"])] = float(row[column])
    return out


def summary(rows: Sequence[dict[str, Any]], jobs: Sequence[Job], horizon: int) -> dict[str, Any]:
    """Jobs and epochs done, compute spent, and Kendall τ (bootstrap 90 % interval) of finished seed-0 specs
    between epochs E−1 and E, E/2 and E, and between the two seeds at E."""
    last = progress(rows)
    finished = [j for j in jobs if last.get(j.key, {}).get("epoch", 0) >= horizon]
    out: dict[str, Any] = {"jobs": len(jobs), "jobs_done": len(finished), "epochs_done": len(rows),
                           "epochs_total": len(jobs) * horizon,
                           "train_hours": sum(r["train_s"] for r in rows) / 3600, "tau": {}}
    for column in ("selection_bacc", "test_bacc"):
        seed0, seed1 = curves(rows, 0, column), curves(rows, 1, column)
        done = sorted(s for s, c in seed0.items() if horizon in c)
        pairs = {f"epoch {horizon - 1} vs {horizon}": (horizon - 1, horizon),
                 f"epoch {horizon // 2} vs {horizon}": (horizon // 2, horizon)}
        taus = {}
        for name, (a, b) in pairs.items():
            if len(done) >= 4:
                taus[name] = correlation([seed0[s][a] for s in done], [seed0[s][b] for s in done])
        twice = [s for s in done if horizon in seed1.get(s, {})]
        if len(twice) >= 4:
            taus[f"seed 0 vs seed 1 at {horizon}"] = correlation([seed0[s][horizon] for s in twice],
                                                                 [seed1[s][horizon] for s in twice])
        out["tau"][column] = taus
    return out


def format_summary(stats: dict[str, Any]) -> str:
    """The summary as text (printed last)."""
    lines = [f"learning curves: {stats['jobs_done']}/{stats['jobs']} jobs done, {stats['epochs_done']}/"
             f"{stats['epochs_total']} epochs, {stats['train_hours']:.2f} core-hours of training (CPU time)"]
    for column, taus in stats["tau"].items():
        for name, c in taus.items():
            lines.append(f"  τ {column} {name}: {c['tau']:.2f} [{c['tau_ci'][0]:.2f}, {c['tau_ci'][1]:.2f}] "
                         f"(n={c['n']})")
        if not taus:
            lines.append(f"  τ {column}: fewer than 4 finished specs")
    return "\n".join(lines)


def data_folder(given: str | None, work: Path) -> Path:
    """``--data``, else /tmp/data/cifar10-lt, else ../shared/data's archive extracted under ``work``."""
    if given:
        return Path(given)
    if DEFAULT_DATA.is_dir():
        return DEFAULT_DATA
    target = work / "data" / "cifar10-lt"
    if not target.is_dir():
        with tarfile.open(SHARED) as tar:
            tar.extractall(work / "data", filter="data")
    return target


def main(argv: Sequence[str] | None = None) -> None:
    """Run this shard's jobs (unless ``--report``), then print the summary of the whole table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="CIFAR-10-LT folder (train/ + test/); default /tmp/data/cifar10-lt or "
                                       "../shared/data's archive extracted under --work")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="rung checkpoints of unfinished jobs")
    parser.add_argument("--out", type=Path, default=CSV_PATH, help="the table (rows are appended)")
    parser.add_argument("--shard", type=parse_shard, default=(0, 1), help="i/n: run every n-th job from the i-th")
    parser.add_argument("--epochs", type=int, default=REFERENCE_EPOCHS, help="the reference budget E")
    parser.add_argument("--test-per-class", type=int, default=TEST_PER_CLASS, help="test images scored per class")
    parser.add_argument("--report", action="store_true", help="print the summary of the table; train nothing")
    args = parser.parse_args(argv)
    jobs = job_list(stratified_specs())
    if not args.report:
        from trials.data import load_data

        i, n = args.shard
        start = time.perf_counter()
        data = load_data(str(data_folder(args.data, args.work)), RESOLUTION)
        bench = open_bench(data, args.work, args.out, args.epochs, args.test_per_class)
        trained = run_jobs(jobs[i::n], bench)
        print(f"shard {i}/{n}: {trained} epochs trained in {(time.perf_counter() - start) / 3600:.2f} h", flush=True)
    stats = summary(read_rows(args.out), jobs, args.epochs)
    print(format_summary(stats))


if __name__ == "__main__":
    main()
