"""What optuna-dashboard 0.21 and Optuna's own plot show of a search: infeasible trials flagged, no duplicate
among the best trials, a note per finished trial. Read through the dashboard's own REST API (its WSGI app)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from nas.dashboard import LEGACY_CONSTRAINTS, named_constraints, note_text
from nas.objectives import Limits
from nas.search import SearchConfig, run_search
from nas.space import SearchSpace
from search_space import ArchSpec, analyze

optuna_dashboard = pytest.importorskip("optuna_dashboard", reason="pip install '.[dashboard]'")

TINY = SearchSpace(depths=((1, 2), (1, 1), (1, 2), (1, 1)), widths=((0.25, 0.5), (0.25,), (0.25, 0.5), (0.25, 1.0)),
                   resolutions=(32,))  # 16 specs: 14 distinct ones make duplicates certain
LIMIT = 150.0  # KiB of peak memory: the wider specs exceed it


def accuracy(spec: ArchSpec, data: object) -> dict[str, float]:
    """Grows with MACs, so every distinct spec is on the front of (acc, macs): a duplicate would be too."""
    acc = 1 - 1 / (1 + analyze(spec).macs / 2e6)
    return {"top1": acc, "balanced_acc": acc, "acc_low": acc - 0.05, "acc_high": acc + 0.05}


@pytest.fixture(scope="module")
def searched(dashboard_get: Callable[[Any, str], dict[str, Any]]) -> tuple[optuna.Study, dict[str, Any]]:
    """One search with infeasible trials and duplicates, and the dashboard's view of its study."""
    study = run_search(SearchConfig(objectives="acc,macs", storage=None, study="d", space=TINY, num_classes=10,
                                    trials=14, seed=0, limits=Limits(max_memory_kib=LIMIT)), accuracy).study
    app = optuna_dashboard.wsgi(study._storage)  # the dashboard on the search's (in-memory) storage
    return study, dashboard_get(app, f"/api/studies/{study._study_id}")


def test_infeasible_trials_are_flagged_in_the_dashboard_and_in_optunas_plot(searched):
    study, detail = searched
    over = {t.number for t in study.trials if analyze(ArchSpec.parse(t.user_attrs["spec"])).peak_memory_kib > LIMIT}
    assert over and len(over) < len(study.trials)  # both kinds present
    flagged = {t["number"] for t in detail["trials"] if any(c > 0 for c in t["constraints"])}
    assert flagged == over  # the dashboard's own rule: infeasible when a constraint is > 0
    for t in study.trials:  # the list it reads holds the named constraints' values, nothing else
        assert t.system_attrs[LEGACY_CONSTRAINTS] == list(named_constraints(t).values())
    complete_over = {t.number for t in study.trials if t.number in over and t.state == TrialState.COMPLETE}
    figure = optuna.visualization.plot_pareto_front(study)
    infeasible = [tr for tr in figure.data if "Infeasible" in (tr.hovertemplate or "")]
    assert len(infeasible) == 1 and len(infeasible[0].x) == len(complete_over)


def test_duplicates_are_never_best_trials(searched):
    study, detail = searched
    duplicates = {t.number for t in study.trials if "duplicate_of" in t.user_attrs}
    assert duplicates  # 14 distinct specs of 16 with a sampler that repeats itself
    assert all(study.trials[n].state == TrialState.PRUNED for n in duplicates)
    best = {t.number for t in study.best_trials}
    dashboard_best = {t["number"] for t in detail["best_trials"]}
    assert best and dashboard_best
    assert not best & duplicates and not dashboard_best & duplicates
    # Each duplicate's twin is there instead: its spec's complete trial is best whenever it is feasible.
    feasible_twins = {study.trials[n].user_attrs["duplicate_of"] for n in duplicates
                      if study.trials[n].user_attrs["feasible"]}
    assert feasible_twins <= best


def test_every_finished_trial_has_a_note_in_the_dashboard(searched):
    study, detail = searched
    notes = {t["number"]: t["note"]["body"] for t in detail["trials"]}
    for t in study.trials:
        note, attrs = notes[t.number], t.user_attrs
        assert f"### Trial {t.number}" in note and f"`{attrs['spec']}`" in note
        assert f"macs: **{attrs['macs']:,}**" in note  # an objective, by value
        assert f"params {attrs['params']:,}" in note  # a cost that is not an objective
        if not attrs["feasible"]:
            assert f"**infeasible**: {attrs['infeasible_reason']} — not trained" in note
            assert "acc: **0**" in note  # the worst accuracy, never trained
        else:
            assert f"(90 % {attrs['acc_low']:.4g}–{attrs['acc_high']:.4g})" in note
        if "duplicate_of" in attrs:
            assert f"**duplicate** of trial {attrs['duplicate_of']}" in note
            assert _objective_lines(note) == _objective_lines(notes[attrs["duplicate_of"]])  # the twin's values


def _objective_lines(note: str) -> list[str]:
    return [line for line in note.splitlines() if line.startswith(("- acc:", "- macs:"))]


def test_the_note_shows_the_rung_and_the_seed_spread():
    attrs = {"spec": "repvgg_x", "preset": "N1", "feasible": True, "rung": 2, "acc_low": 0.915, "acc_high": 0.971,
             "acc_sd": 0.00832, "latency_T4_low": 0.0775, "latency_T4_high": 0.701,
             "latency_T4_extrapolated": True, "macs": 40439296, "params": 877113, "memory_kib": 328.5,
             "peak_layer": "stage4.0", "latency_T4": 0.2331, "latency_RV1126": 1.5}
    note = note_text(12, attrs, ["acc", "latency_T4"], [0.9412, 0.2331])
    assert note.splitlines()[:3] == ["### Trial 12 · preset N1", "", "`repvgg_x`"]
    for line in ("- feasible: every limit and target chip satisfied", "- fidelity rung: 2",
                 "- acc: **0.9412** (90 % 0.915–0.971, seed sd 0.00832)",
                 "- latency_T4: **0.2331** (90 % 0.0775–0.701, extrapolated)",
                 "- costs: macs 40,439,296, params 877,113, memory_kib 328.5 (peak layer stage4.0)",
                 "- latency_RV1126 (ms, not an objective): 1.5"):
        assert line in note.splitlines()
    assert "rung" not in note_text(1, {"spec": "s"}, ["macs"], [1.0])


def test_without_the_dashboard_package_the_search_writes_no_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import fails as if it were not installed
    study = run_search(SearchConfig(objectives="acc,macs", storage=None, space=TINY, num_classes=10, trials=4,
                                    seed=0), accuracy).study
    assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) == 4
    assert not [k for k in _study_attrs(study) if k.startswith("dashboard:")]
    monkeypatch.undo()
    with_notes = run_search(SearchConfig(objectives="acc,macs", storage=None, space=TINY, num_classes=10, trials=4,
                                         seed=0), accuracy).study
    assert len([k for k in _study_attrs(with_notes) if k.endswith(":note_ver")]) == len(with_notes.trials)


def _study_attrs(study: optuna.Study) -> dict[str, Any]:
    return study._storage.get_study_system_attrs(study._study_id)  # where optuna-dashboard keeps notes
