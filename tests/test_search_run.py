"""run_search in one process: totals, duplicates, infeasible trials, failures, resume, mismatches, samplers."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from nas.dashboard import named_constraints
from nas.objectives import Limits, SearchError
from nas.pareto import pareto_front
from nas.sampler import is_duplicate, observed
from nas.search import SAMPLERS, Search, SearchConfig, run_search
from nas.space import SearchSpace
from search_space import ArchSpec, analyze

TINY = SearchSpace(depths=((1, 2), (1, 1), (1, 2), (1, 1)), widths=((0.25, 0.5), (0.25,), (0.25, 0.5), (0.25, 1.0)),
                   resolutions=(32,))  # 16 specs: duplicates are certain


class FakeAccuracy:
    """Deterministic accuracy from the spec's MACs; records every spec it is asked about."""

    def __init__(self, fail: dict[str, BaseException | float] | None = None) -> None:
        self.calls: list[ArchSpec] = []
        self.fail = fail or {}

    def __call__(self, spec: ArchSpec, data: object) -> dict[str, float]:
        assert data is None  # a custom evaluator with an explicit class count loads no data
        self.calls.append(spec)
        action = self.fail.get(spec.to_string())
        if isinstance(action, BaseException):
            raise action
        acc = 1 - 1 / (1 + analyze(spec).macs / 2e6)
        if isinstance(action, float):
            acc = action
        return {"top1": acc, "balanced_acc": acc * 0.9, "wall_s": 0.01, "acc_low": acc - 0.05, "acc_high": acc + 0.05}


def config(**kw) -> SearchConfig:
    base = dict(objectives="acc,macs", storage=None, space=TINY, num_classes=10, trials=12, seed=0)
    base.update(kw)
    return SearchConfig(**base)


def test_total_duplicates_and_infeasible_trials_are_never_trained():
    fake = FakeAccuracy()
    limit = 150.0  # KiB: the wider specs exceed it
    summary = run_search(config(trials=12, limits=Limits(max_memory_kib=limit)), fake)
    study = summary.study
    assert all(t.state == TrialState.PRUNED for t in study.trials if is_duplicate(t))
    trials = [t for t in observed(study.trials) if t.state == TrialState.COMPLETE]  # duplicates with their values
    assert summary.evaluated == 12 == len([t for t in trials if "duplicate_of" not in t.user_attrs]) < len(trials)
    assert summary.stopped == "done"
    by_hash: dict[str, list] = {}
    for t in trials:
        by_hash.setdefault(t.user_attrs["spec_hash"], []).append(t)
        assert set(named_constraints(t)) == {"memory_kib<=150"}
        infeasible = t.user_attrs["memory_kib"] > limit
        assert t.user_attrs["feasible"] is (not infeasible)
        assert (t.constraints["memory_kib<=150"] > 0) is infeasible
        if infeasible:
            assert t.values[0] == 0.0 and "memory_kib" in t.user_attrs["infeasible_reason"]
    trained = [s.hash for s in fake.calls]
    assert len(trained) == len(set(trained))  # no spec trained twice
    for h, group in by_hash.items():
        originals = [t for t in group if "duplicate_of" not in t.user_attrs]
        assert len(originals) == 1
        for t in group:
            assert t.values == originals[0].values
            assert t.user_attrs.get("duplicate_of", originals[0].number) == originals[0].number
            for key in ("acc", "acc_low", "acc_high", "proxy_wall_s"):  # a duplicate carries its twin's figures
                assert t.user_attrs.get(key) == originals[0].user_attrs.get(key)
            if originals[0].user_attrs["feasible"]:
                assert t.user_attrs["acc_low"] == pytest.approx(t.values[0] - 0.05)
        feasible = originals[0].user_attrs["feasible"]
        assert (h in trained) == feasible  # exactly the feasible specs were trained
    assert study.metric_names == ["acc", "macs"]


def test_a_small_space_is_exhausted_not_looped_over():
    summary = run_search(config(objectives="macs,memory", trials=40), None)
    assert (summary.evaluated, summary.stopped) == (TINY.size, "space exhausted")


def test_failures_are_recorded_and_the_search_goes_on():
    specs = list(TINY.iter_specs(10))
    fail = {specs[0].to_string(): RuntimeError("boom"), specs[1].to_string(): math.nan,
            specs[2].to_string(): MemoryError(),
            specs[3].to_string(): RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate")}
    search = Search(config(trials=9), FakeAccuracy(fail))
    for spec in specs[:4]:  # the failing specs run first
        search.study.enqueue_trial(TINY.params_of(spec))
    search.run()
    study = search.study
    failed = {t.user_attrs["spec"]: t.user_attrs["fail_reason"] for t in study.get_trials(states=(TrialState.FAIL,))}
    assert "RuntimeError: boom" in failed[specs[0].to_string()]
    assert "top1=nan" in failed[specs[1].to_string()]
    assert failed[specs[2].to_string()] == "out of memory (MemoryError)"
    assert failed[specs[3].to_string()].startswith("out of memory (RuntimeError: DefaultCPUAllocator")
    assert search.counts()["evaluated"] == 9


def test_every_trial_failing_stops_with_one_message():
    def broken(spec, data):
        raise ValueError("no GPU here")

    with pytest.raises(SearchError, match="5 trials failed in a row; the last: ValueError: no GPU here"):
        run_search(config(), broken)


def test_resume_counts_trials_in_total_and_refuses_changes(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    first = run_search(config(storage=url, study="s", trials=4, heartbeat_interval=None), FakeAccuracy())
    assert first.evaluated == 4
    again = run_search(config(storage=url, study="s", trials=4), FakeAccuracy())
    assert again.ran == 0
    more = run_search(config(storage=url, study="s", trials=7), FakeAccuracy())
    assert more.evaluated == 7 and more.ran >= 3
    n_trials = len(more.study.trials)
    for change, words in [
        (dict(objectives="macs,acc"), "created with objectives"),
        (dict(objectives="acc,params"), "created with objectives"),
        (dict(limits=Limits(max_macs=1e6)), "created with limits"),
        (dict(space=SearchSpace()), "created with space"),
        (dict(num_classes=3), "created with num_classes"),
    ]:
        with pytest.raises(SearchError, match=words):
            Search(config(storage=url, study="s", trials=9, **change), FakeAccuracy())
    study = optuna.load_study(study_name="s", storage=url)
    assert len(study.trials) == n_trials  # intact
    assert study.metric_names == ["acc", "macs"] and study.user_attrs["nas:config"]["objectives"] == ["acc", "macs"]


def test_a_study_made_elsewhere_with_other_directions_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    optuna.create_study(study_name="x", storage=url, directions=["minimize", "minimize"])
    with pytest.raises(SearchError, match="directions"):
        Search(config(storage=url, study="x"), FakeAccuracy())


def test_enqueued_presets_run_first_and_outsiders_are_skipped():
    space = SearchSpace(depths=((1, 2), (1, 4), (1, 14), (1, 2)), widths=((0.25, 0.75), (0.25, 0.75),
                                                                          (0.25, 0.75), (0.25, 2.5)))
    search = Search(config(space=space, trials=3, enqueue=["A0", "N1", "B1", "N0"]), FakeAccuracy())
    assert len(search.skipped) == 1  # one line names every skipped preset, why, and how many were queued
    line = search.skipped[0]
    assert "B1: outside the search space: stage 1 depth" in line and "N0: outside the search space" in line
    assert "A0" not in line.split("(")[0] and "2 of 4 presets queued" in line
    search.run()
    first = sorted(search.study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.number)[:2]
    assert [t.user_attrs["preset"] for t in first] == ["A0", "N1"]
    assert first[0].user_attrs["spec"] == "repvgg_d2-4-14-1_w0.75-0.75-0.75-2.5_g1_r32_c10"


def test_ctrl_c_fails_the_trial_and_the_same_command_retries_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'i.db'}"
    target = list(TINY.iter_specs(10))[5]

    class Interrupting(FakeAccuracy):
        def __call__(self, spec, data):
            if spec == target and not getattr(self, "done", False):
                self.done = True
                raise KeyboardInterrupt
            return super().__call__(spec, data)

    search = Search(config(storage=url, study="i", trials=5, heartbeat_interval=None), Interrupting())
    search.study.enqueue_trial(TINY.params_of(target))
    with pytest.raises(KeyboardInterrupt):
        search.run()
    study = optuna.load_study(study_name="i", storage=url)
    (cut,) = study.get_trials(states=(TrialState.FAIL,))
    assert cut.user_attrs["fail_reason"] == "interrupted"
    resumed = run_search(config(storage=url, study="i", trials=5, heartbeat_interval=None), FakeAccuracy())
    retry = [t for t in resumed.study.trials if t.user_attrs.get("retry_of") == cut.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].user_attrs["spec"] == target.to_string()
    assert resumed.evaluated == 5


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_honours_the_contract(sampler):
    """Each sampler: N complete trials, specs inside the space, the same constraint keys, a non-empty front."""
    space = SearchSpace(depths=((1, 2), (1, 2), (1, 4), (1, 1)))
    n = 11 if sampler == "gp" else 14  # GP starts after 10 random trials; each GP step costs seconds
    summary = run_search(config(objectives="macs,memory,params", space=space, sampler=sampler, trials=n,
                                limits=Limits(max_memory_kib=1000)))
    trials = summary.study.get_trials(states=(TrialState.COMPLETE,))
    assert summary.evaluated == n == len([t for t in trials if "duplicate_of" not in t.user_attrs])
    for t in trials:
        assert space.why_outside(ArchSpec.parse(t.user_attrs["spec"])) is None
        assert set(named_constraints(t)) == {"memory_kib<=1000"}
    front = pareto_front(summary.study)
    assert front.rows and all(r["memory_kib"] <= 1000 for r in front.rows)


def test_a_spec_that_does_not_fit_the_chip_is_recorded_not_trained():
    """Real predictors: M1 (14.2 MiB peak layer) fails on the Hexagon 698 DSP in the seed's table; M0 runs."""
    space = SearchSpace(depths=((2, 2),) * 4, widths=((0.75, 1.0),) * 3 + ((1.0, 2.5),), resolutions=(112,))
    fake = FakeAccuracy()
    summary = run_search(config(objectives="acc,latency:hexagon698", space=space, trials=2, num_classes=89,
                                enqueue=["M1", "M0"]), fake)
    rows = {t.user_attrs["preset"]: t for t in summary.study.get_trials(states=(TrialState.COMPLETE,))}
    m1, m0 = rows["M1"], rows["M0"]
    assert named_constraints(m1) == {"feasible:Hexagon698": 1.0} and m1.user_attrs["feasible"] is False
    assert "Hexagon698" in m1.user_attrs["infeasible_reason"] and m1.values[0] == 0.0 and "acc" not in m1.user_attrs
    assert named_constraints(m0) == {"feasible:Hexagon698": 0.0} and m0.user_attrs["acc"] == m0.values[0] > 0
    assert [s.to_string() for s in fake.calls] == [m0.user_attrs["spec"]]
    assert m1.user_attrs["latency_Hexagon698_low"] <= m1.values[1] <= m1.user_attrs["latency_Hexagon698_high"]
    assert summary.study.metric_names == ["acc", "latency_Hexagon698"]
