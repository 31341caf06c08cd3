"""bench/proxy_fidelity.py: its statistics on the committed per-spec CSV (fast), and a tiny re-training run (slow)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "proxy_fidelity.py"
CSV = ROOT / "bench" / "results" / "proxy_fidelity_specs.csv"
JSON = ROOT / "bench" / "results" / "proxy_fidelity.json"
CIFAR = ROOT.parent / "shared" / "data" / "cifar10-lt.tar.gz"



@pytest.fixture(scope="module")
def pf(bench_module: Callable[[str], ModuleType]) -> ModuleType:
    return bench_module("proxy_fidelity")


def test_correlation_and_bootstrap_on_known_data(pf: ModuleType) -> None:
    x = np.arange(12.0)
    perfect = pf.correlation(x, 2 * x + 1, resamples=100)
    assert perfect["tau"] == pytest.approx(1.0) and perfect["rho"] == pytest.approx(1.0)
    assert perfect["tau_ci"] == pytest.approx((1.0, 1.0))
    reverse = pf.correlation(x, -x, resamples=100)
    assert reverse["tau"] == pytest.approx(-1.0)
    noisy = pf.correlation(x, x + np.random.default_rng(0).normal(0, 3, 12), resamples=300)
    assert noisy["tau_ci"][0] <= noisy["tau"] <= noisy["tau_ci"][1]


def test_csv_round_trip(pf: ModuleType, tmp_path: Path) -> None:
    row = {"spec": "repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_g1_r32_c10", "stratum": "small", "seed": 1,
           "macs": 5e5, "params": 1e5, "ref_bal": 0.5, "ref_top1": 0.5, "ref_val_bal_by_epoch": "0.1;0.2"}
    pf.write_rows(tmp_path / "rows.csv", [row])
    back = pf.read_rows(tmp_path / "rows.csv")
    assert back[0]["seed"] == 1 and back[0]["ref_bal"] == 0.5 and back[0]["proxy_bal"] is None
    assert back[0]["ref_val_bal_by_epoch"] == "0.1;0.2"


def test_spec_sample_is_stratified_and_below_the_cap(pf: ModuleType) -> None:
    specs = pf.sample_specs(9)
    assert len({s["spec"] for s in specs}) == 9
    assert [sum(s["stratum"] == k for s in specs) for k in pf.STRATA] == [3, 3, 3]
    assert max(s["macs"] for s in specs) <= pf.MACS_CAP
    jobs = pf.job_order(specs, 3)
    assert sum(seed == 1 for _, seed in jobs) == 3
    for k, (spec, seed) in enumerate(jobs):  # a seed-1 job never comes before its seed-0 twin
        if seed == 1:
            assert (spec, 0) in jobs[:k]


@pytest.mark.skipif(not CSV.is_file() or not JSON.is_file(), reason="no committed proxy-fidelity results")
def test_committed_csv_reproduces_the_committed_figures(pf: ModuleType) -> None:
    rows = pf.read_rows(CSV)
    stats = pf.compute_stats(rows, resamples=200)  # point estimates do not depend on the resample count
    committed = json.loads(JSON.read_text())["stats"]
    assert stats["specs"] == committed["specs"] >= 3
    assert stats["seed_noise"]["n"] == committed["seed_noise"]["n"]
    assert set(stats["signals"]) == set(committed["signals"])
    for name, entry in stats["signals"].items():
        mine, theirs = entry["vs_balanced"], committed["signals"][name]["vs_balanced"]
        assert mine["tau"] == pytest.approx(theirs["tau"]) and mine["rho"] == pytest.approx(theirs["rho"])
        lo, hi = theirs["tau_ci"]
        assert -1 <= lo <= hi <= 1 and math.isfinite(mine["tau"])
    long_csv = CSV.parent / "proxy_fidelity_long_reference.csv"
    if long_csv.is_file() and committed.get("long_reference"):
        longer = pf.long_reference_stats(rows, pf.read_rows(long_csv), resamples=50)
        assert longer is not None and longer["n"] == committed["long_reference"]["n"]
        assert longer["short_vs_long"]["tau"] == pytest.approx(committed["long_reference"]["short_vs_long"]["tau"])
        stats["long_reference"] = longer
    assert "τ vs bal" in pf.format_table(stats)


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR.is_file(), reason="needs ../shared/data/cifar10-lt.tar.gz")
def test_tiny_retraining_run(pf: ModuleType, tmp_path: Path) -> None:
    with tarfile.open(CIFAR) as tar:
        tar.extractall(tmp_path, filter="data")
    out_csv, out_json = tmp_path / "rows.csv", tmp_path / "fig.json"
    args = ["--data", str(tmp_path / "cifar10-lt"), "--specs", "3", "--second-seed", "3", "--ref-epochs", "1",
            "--macs-cap", "1.5e6", "--workers", "1", "--resamples", "50", "--csv", str(out_csv),
            "--json", str(out_json)]
    run = [sys.executable, str(BENCH), *args]  # a subprocess: the worker pool re-imports the script by path
    assert subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=1200).returncode == 0
    rows = pf.read_rows(out_csv)
    assert len(rows) == 6 and {r["seed"] for r in rows} == {0, 1}
    assert all(0 <= r["ref_bal"] <= 1 for r in rows)
    again = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0 and "0 jobs to run, 6 done" in again.stderr  # resumed: nothing left to train
    assert len(pf.read_rows(out_csv)) == 6
    assert json.loads(out_json.read_text())["stats"]["specs"] == 3
