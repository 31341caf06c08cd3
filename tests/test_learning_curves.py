"""bench/learning_curves.py on a tiny fake (the embedded digits, two tiny specs, a 2-epoch horizon): the table
is resumable after a kill at any point, with no row written twice and the same figures as an uninterrupted run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from search_space.spec import ArchSpec
from trials.data import load_data

BENCH = Path(__file__).resolve().parents[1] / "bench" / "learning_curves.py"
SPECS = [ArchSpec((1, 1, 1, 1), (0.25, 0.25, 0.25, 0.25), resolution=32, num_classes=10),
         ArchSpec((1, 1, 1, 1), (0.5, 0.25, 0.25, 0.25), resolution=32, num_classes=10)]
HORIZON = 2
METRICS = ("selection_top1", "selection_bacc", "test_top1", "test_bacc", "cum_steps")

pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.fixture(scope="module")
def lc(bench_module: Callable[[str], ModuleType]) -> ModuleType:
    return bench_module("learning_curves")


@pytest.fixture(scope="module")
def digits():
    return load_data(None, 32)


def _small(lc: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """A budget the digits can afford: 100 training images (3 steps an epoch)."""
    real = lc.reference_config

    def small(seed: int, epochs: int):
        config = real(seed, epochs)
        return config.__class__(budget=config.budget.__class__(**{**vars(config.budget), "train_images": 100,
                                                                  "batch_size": 32}))

    monkeypatch.setattr(lc, "reference_config", small)


def _figures(rows: list[dict]) -> dict[tuple, tuple]:
    return {(r["spec"], r["seed"], r["epoch"]): tuple(r[k] for k in METRICS) for r in rows}


def test_a_killed_run_resumes_without_duplicates_and_with_the_same_figures(lc, digits, tmp_path, monkeypatch):
    _small(lc, monkeypatch)
    jobs = [lc.Job(SPECS[0], 0, 0), lc.Job(SPECS[1], 1, 1)]
    whole = lc.open_bench(digits, tmp_path / "work-a", tmp_path / "a.csv", HORIZON, test_per_class=5)
    assert lc.run_jobs(jobs, whole) == len(jobs) * HORIZON
    reference = lc.read_rows(tmp_path / "a.csv")
    assert sorted((r["spec"], r["seed"], r["epoch"]) for r in reference) == sorted(
        (j.spec.to_string(), j.seed, e) for j in jobs for e in range(1, HORIZON + 1))
    assert not any((tmp_path / "work-a").iterdir())  # finished jobs leave no checkpoint behind

    bench = lc.open_bench(digits, tmp_path / "work-b", tmp_path / "b.csv", HORIZON, test_per_class=5)
    real_append, calls = lc.append_row, []

    def killed_after_three(path, row):  # the 3rd row (job 2, epoch 1) is lost after its checkpoint was written
        calls.append(row)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_append(path, row)

    monkeypatch.setattr(lc, "append_row", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        lc.run_jobs(jobs, bench)
    monkeypatch.setattr(lc, "append_row", real_append)
    assert len(lc.read_rows(tmp_path / "b.csv")) == 2
    trained = lc.run_jobs(jobs, bench)
    assert trained == 1  # job 2's epoch 1 is scored from its checkpoint, only its epoch 2 trains
    resumed = lc.read_rows(tmp_path / "b.csv")
    assert len(resumed) == len(reference)  # no duplicate
    assert _figures(resumed) == _figures(reference)
    assert lc.run_jobs(jobs, bench) == 0 and len(lc.read_rows(tmp_path / "b.csv")) == len(reference)


def test_a_lost_work_folder_retrains_to_the_next_missing_epoch(lc, digits, tmp_path, monkeypatch):
    _small(lc, monkeypatch)
    jobs = [lc.Job(SPECS[0], 0, 0)]
    reference = lc.open_bench(digits, tmp_path / "work-a", tmp_path / "a.csv", HORIZON, test_per_class=5)
    lc.run_jobs(jobs, reference)
    lc.append_row(tmp_path / "b.csv", lc.read_rows(tmp_path / "a.csv")[0])  # epoch 1 done on another machine
    bench = lc.open_bench(digits, tmp_path / "work-b", tmp_path / "b.csv", HORIZON, test_per_class=5)
    assert lc.run_jobs(jobs, bench) == HORIZON  # epoch 2 from scratch: the two epochs train again
    assert _figures(lc.read_rows(tmp_path / "b.csv")) == _figures(lc.read_rows(tmp_path / "a.csv"))


def test_strata_cover_the_space_by_macs_and_seed_one_spreads(lc) -> None:
    from nas.space import SearchSpace
    from search_space.cost import analyze

    specs = lc.stratified_specs()
    all_macs = sorted(analyze(s).macs for s in SearchSpace().iter_specs(num_classes=10))
    macs = [analyze(s).macs for s in specs]
    assert len(specs) == lc.STRATA and macs == sorted(macs)
    # equal-count strata of the sorted space: the first len % 40 hold one spec more
    sizes = [len(all_macs) // lc.STRATA + (k < len(all_macs) % lc.STRATA) for k in range(lc.STRATA)]
    ends = np.cumsum(sizes)
    assert all(all_macs[end - size] <= m <= all_macs[end - 1] for size, end, m in zip(sizes, ends, macs, strict=True))
    jobs = lc.job_list(specs)
    seeds = [j.seed for j in jobs]
    assert seeds == sorted(seeds) and seeds.count(1) == lc.SEED1_SPECS
    first_half = sorted(j.stratum for j in jobs[: lc.STRATA // 2])
    assert first_half[0] < lc.STRATA // 4 and first_half[-1] >= 3 * lc.STRATA // 4  # a prefix spreads
