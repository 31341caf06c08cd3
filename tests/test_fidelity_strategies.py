"""bench/fidelity_strategies.py: the replay's statistics on synthetic learning-curve tables with known answers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "fidelity_strategies.py"
E = 9  # rungs 1, 3, 9


@pytest.fixture(scope="module")
def fs(bench_module: Callable[[str], ModuleType]) -> ModuleType:
    return bench_module("fidelity_strategies")


def _table(fs: ModuleType, selection: np.ndarray, cost: np.ndarray):
    return fs.Table([f"s{i}" for i in range(len(cost))], selection, selection.copy(),
                    {"macs": np.asarray(cost, dtype=float)})


def _same_ranking_table(fs: ModuleType):
    """27 specs whose exact front is specs 0 (cost 1.5, acc 0.7) and 1 (cost 5, acc 0.9): everyone else has
    cost in [2, 10] and accuracy in [0.3, 0.6]. Every epoch is the reference minus 0.02 per missing epoch."""
    rng = np.random.default_rng(5)
    ref = np.concatenate([[0.7, 0.9], rng.uniform(0.3, 0.6, 25)])
    cost = np.concatenate([[1.5, 5.0], rng.uniform(2.0, 10.0, 25)])
    curves = ref[:, None] - 0.02 * (E - np.arange(1, E + 1))[None, :]
    return _table(fs, curves, cost)


def test_a_table_ranked_alike_at_every_epoch_gives_the_exact_front(fs) -> None:
    table = _same_ranking_table(fs)
    assert fs.rungs_of(E) == (1, 3, 9)
    space = np.arange(27)
    rng = np.random.default_rng(0)
    sh = fs.successive_halving(space, table, table.costs["macs"], 27 * E, rng, fs.rungs_of(E))
    assert sorted(sh.front.tolist()) == [0, 1]
    reached = dict(zip(sh.scored.tolist(), sh.values.tolist(), strict=True))
    assert reached[0] == table.selection[0, E - 1] and reached[1] == table.selection[1, E - 1]  # the top rung
    assert sh.compute == 27 * 1 + 9 * 2 + 3 * 6  # every spec at rung 1, 9 to rung 3, 3 to rung 9
    replayed = fs.replay(table, "macs", 0.3, seeds=8, share=1.0, resamples=200)
    res = replayed["strategies"]
    name = next(k for k in res if k.startswith("SH"))
    assert res[name]["hv_selection"] == {"mean": 1.0, "lo": 1.0, "hi": 1.0, "n": 8}
    assert res[name]["compute"]["mean"] == pytest.approx(63 / (27 * E))
    assert res["proxy 1"]["hv_selection"]["mean"] == 1.0  # 27 specs at 1 epoch fit in 30 %, and rank right
    assert res["proxy 1"]["tau_selection"]["mean"] == pytest.approx(1.0)
    assert set(replayed["sh_minus_best_proxy"]) == {"SH 1/3/9", "SH top", "SH common", "SH+refine"}
    assert {d["proxy"] for d in replayed["sh_minus_equal_compute_proxy"].values()} == {"proxy 2"}  # 2 ≤ 0.3 × 9
    for both in [*replayed["sh_minus_best_proxy"].values(), *replayed["sh_minus_equal_compute_proxy"].values()]:
        assert (both["mean"], both["lo"], both["hi"]) == (0.0, 0.0, 0.0)  # all find the exact front every time


def test_early_epochs_that_reverse_the_ranking_cut_the_true_front(fs) -> None:
    """9 specs of equal cost, reference accuracy 0.9 − 0.1 i; before epoch 9 the accuracy is 1 − reference.
    Rung 1 promotes specs 8, 7, 6 (highest early accuracy), rung 3 promotes 8; the front of highest-rung values
    is spec 7 (0.8 at epoch 3 beats 8's 0.1 at epoch 9 and the rest's ≤ 0.6 at epoch 1), whose reference is 0.2.
    Normalized (bounds 0.1–0.9, reference point 1.1): its point is 0.875, the exact front's (spec 0) 0; the cost
    column spans nothing (0). HV ratio = (1.1 − 0.875) · 1.1 / (1.1 · 1.1) = 0.225 / 1.1."""
    ref = 0.9 - 0.1 * np.arange(9)
    curves = np.repeat((1 - ref)[:, None], E, axis=1)
    curves[:, E - 1] = ref
    table = _table(fs, curves, np.ones(9))
    sh = fs.successive_halving(np.arange(9), table, table.costs["macs"], 81, np.random.default_rng(0),
                               fs.rungs_of(E))
    assert sh.front.tolist() == [7] and sh.compute == 9 + 3 * 2 + 1 * 6
    res = fs.replay(table, "macs", 0.3, seeds=10, share=1.0, resamples=200)
    name = next(k for k in res["strategies"] if k.startswith("SH"))
    assert res["strategies"][name]["hv_selection"]["mean"] == pytest.approx(0.225 / 1.1)
    # the proxy at 1 epoch picks spec 8 (early 0.9), reference 0.1: normalized 1.0, ratio 0.1 / 1.1
    assert res["strategies"]["proxy 1"]["hv_selection"]["mean"] == pytest.approx(0.1 / 1.1)
    # compared at the common rung, spec 8 beats 7 and 6 at epoch 3 (0.9 > 0.8, 0.7) and the rest at epoch 1:
    # the front is spec 8, as the proxy's; refining has nothing to do (8 is at the top rung)
    common = fs.successive_halving(np.arange(9), table, table.costs["macs"], 81, np.random.default_rng(0),
                                   fs.rungs_of(E), judged="common")
    assert common.front.tolist() == [8] and common.compute == 21
    for name in ("SH top", "SH common", "SH+refine"):  # spec 8 is also the only spec at the top rung
        assert res["strategies"][name]["hv_selection"]["mean"] == pytest.approx(0.1 / 1.1)
        assert res["strategies"][name]["compute"]["mean"] == pytest.approx(21 / 81)


def test_random_with_all_the_compute_finds_the_exact_front(fs) -> None:
    table = _same_ranking_table(fs)
    res = fs.replay(table, "macs", 1.0, seeds=5, share=0.5, resamples=100)["strategies"]["random"]
    assert res["hv_selection"]["mean"] == 1.0 and res["compute"]["mean"] == 1.0


def test_the_bootstrap_interval_of_a_constant_is_that_constant(fs) -> None:
    assert fs.mean_ci(np.full(50, 0.5), resamples=300) == {"mean": 0.5, "lo": 0.5, "hi": 0.5, "n": 50}
    spread = fs.mean_ci(np.arange(100.0), resamples=300)
    assert spread["lo"] < 49.5 < spread["hi"]


def test_refining_climbs_the_front_one_rung_at_a_time_within_the_budget(fs) -> None:
    table = _same_ranking_table(fs)  # front: specs 0 and 1 at every epoch
    rungs, cost = fs.rungs_of(E), table.costs["macs"]
    reached = {0: 0, 1: 0, 2: 0}
    assert fs.refine_front(reached, table, cost, rungs, budget=3) == 2  # one step 1 → 3 epochs fits, not two
    assert reached == {0: 1, 1: 0, 2: 0}
    assert fs.refine_front(reached, table, cost, rungs, budget=100) == 2 + 6 + 6  # 1 to rung 1, both to 9
    assert reached == {0: 2, 1: 2, 2: 0}  # spec 2 was never on the front
    assert fs.refine_front(reached, table, cost, rungs, budget=100) == 0
