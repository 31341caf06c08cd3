"""nas.sampler: the sampler sees duplicates as observations, workers with one seed never lockstep; and the Python
API for Optuna users (a sampler object, the objective as a callable, the front as a DataFrame)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.fidelity import FidelityConfig, enqueue_promotion
from nas.objectives import SearchError
from nas.pareto import pareto_front
from nas.sampler import NasSampler, sampler_view
from nas.search import Search, SearchConfig, run_search
from nas.space import SearchSpace
from nas.study import SAMPLERS, make_sampler
from search_space import ArchSpec, analyze

TINY = SearchSpace(depths=((1, 2), (1, 1), (1, 2), (1, 1)), widths=((0.25, 0.5), (0.25,), (0.25, 0.5), (0.25, 1.0)),
                   resolutions=(32,))  # 16 specs: duplicates are certain
DOCS = Path(__file__).resolve().parents[1] / "docs" / "search.md"


def accuracy(spec: ArchSpec, data: object) -> dict[str, float]:
    acc = 1 - 1 / (1 + analyze(spec).macs / 2e6)
    return {"top1": acc, "balanced_acc": acc}


def config(**kw) -> SearchConfig:
    base = dict(objectives="acc,macs", storage=None, space=TINY, num_classes=10, trials=14, seed=0)
    base.update(kw)
    return SearchConfig(**base)


class Spy(optuna.samplers.RandomSampler):
    """A random sampler that records, before each trial, the complete trials it is shown: number → values."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed)
        self.seen: dict[int, dict[int, list[float]]] = {}

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.seen[trial.number] = {t.number: t.values for t in study.get_trials(states=(TrialState.COMPLETE,))}


def test_the_sampler_sees_each_duplicate_as_its_twins_values():
    spy = Spy(seed=0)
    study = run_search(config(sampler=spy), accuracy).study
    trials = study.get_trials()
    duplicates = [t for t in trials if t.state == TrialState.PRUNED and "duplicate_of" in t.user_attrs]
    assert duplicates and not any("duplicate_of" in t.user_attrs for t in study.best_trials)
    first_of = {}  # spec hash → the first complete trial of that spec, found by hash (not by duplicate_of)
    for t in sorted(trials, key=lambda t: t.number):
        if t.state == TrialState.COMPLETE:
            first_of.setdefault(t.user_attrs["spec_hash"], t)
    for number, seen in spy.seen.items():  # one worker: everything finished before a trial was shown to it
        finished = [t for t in trials if t.number < number and t.state != TrialState.FAIL]
        assert set(seen) == {t.number for t in finished}
        for t in finished:
            assert seen[t.number] == first_of[t.user_attrs["spec_hash"]].values
    assert max(spy.seen) == trials[-1].number  # it was asked about every trial


RUNGS = (1, 3, 9)


class ViewSpy(optuna.samplers.RandomSampler):
    """A random sampler that records, before each trial, every earlier trial it is shown: number → (state,
    values)."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed)
        self.seen: dict[int, dict[int, tuple[TrialState, list[float] | None]]] = {}

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.seen[trial.number] = {t.number: (t.state, t.values) for t in study.get_trials(deepcopy=False)
                                   if t.number < trial.number}


def rung_accuracy(spec: ArchSpec, data: object, epochs: int, folder: object) -> dict[str, float]:
    """A rung evaluator in closed form: accuracy rises with the epochs, at a level drawn from the spec's hash."""
    acc = 0.3 + 0.6 * (int(spec.hash[:6], 16) / 16**6) * epochs / (epochs + 1)
    return {"top1": acc, "balanced_acc": acc}


def at_rung(spec_text: str, rung: int) -> list[float]:
    """The objective values (acc, macs) of a spec measured at ``rung``, from the closed forms."""
    spec = ArchSpec.parse(spec_text)
    return [rung_accuracy(spec, None, RUNGS[rung], None)["top1"], analyze(spec).macs]


def check_view(seen: dict[int, tuple[TrialState, list[float] | None]], stored: list[optuna.trial.FrozenTrial]) -> None:
    """``seen`` (the sampler's view of ``stored``) holds each spec measured in ``stored`` once, COMPLETE at the
    highest rung its stored attributes name, each duplicate COMPLETE at its spec's highest rung, and the trials that
    measured nothing (a lost claim, a surplus spec) PRUNED."""
    highest: dict[str, int] = {}
    for t in stored:
        if "duplicate_of" not in t.user_attrs and (t.state == TrialState.COMPLETE or "rung_values" in t.user_attrs):
            highest[t.user_attrs["spec_hash"]] = max(highest.get(t.user_attrs["spec_hash"], 0), t.user_attrs["rung"])
    shown: dict[str, list[int]] = {h: [] for h in highest}
    for t in stored:
        state, values = seen.get(t.number, (None, None))
        if "duplicate_of" in t.user_attrs:
            top = highest[t.user_attrs["spec_hash"]]  # one set of parameters never shows two values
            assert state == TrialState.COMPLETE and values == pytest.approx(at_rung(t.user_attrs["spec"], top))
        elif "claim_lost" in t.user_attrs or "surplus" in t.user_attrs:
            assert state == TrialState.PRUNED, t.number
        elif state is not None:
            assert state == TrialState.COMPLETE and t.user_attrs["rung"] == highest[t.user_attrs["spec_hash"]]
            assert values == pytest.approx(at_rung(t.user_attrs["spec"], t.user_attrs["rung"]))
            shown[t.user_attrs["spec_hash"]].append(t.number)
    assert all(len(numbers) == 1 for numbers in shown.values()), shown
    assert set(seen) <= {t.number for t in stored}


def test_the_sampler_sees_each_rung_spec_once_at_its_highest_rung_and_lost_claims_pruned():
    spy = ViewSpy(seed=0)
    search = Search(config(sampler=spy, trials=10, fidelity=FidelityConfig(RUNGS, 3.0)), rung_accuracy)
    search.run()
    study = search.study
    base = next(t for t in study.get_trials() if t.user_attrs.get("rung") == 0 and "rung_values" in t.user_attrs
                and not any(p.user_attrs.get("promoted_from") == t.number for p in study.get_trials()))
    for _ in range(2):  # the second of two queued promotions loses its claim
        enqueue_promotion(study, base, 1, search.rungs.config)
    search.run()
    evaluated = {t.user_attrs["spec_hash"] for t in study.get_trials()}
    new = next(s for s in TINY.iter_specs(10) if s.hash not in evaluated)
    study.enqueue_trial(TINY.params_of(new))  # a new spec beyond the study's trials: surplus
    study.optimize(search.objective, n_trials=1)

    stored = study.get_trials()
    assert any("claim_lost" in t.user_attrs for t in stored) and any("surplus" in t.user_attrs for t in stored)
    assert any(t.user_attrs.get("rung") == 2 for t in stored)  # some spec reached the top rung
    assert any("duplicate_of" in t.user_attrs for t in stored)
    for number, seen in spy.seen.items():  # one worker: every earlier trial had finished
        check_view(seen, [t for t in stored if t.number < number])
    assert max(spy.seen) == stored[-1].number
    check_view({t.number: (t.state, t.values) for t in sampler_view(study).get_trials()}, stored)


def test_the_sampler_view_leaves_the_study_alone():
    study = run_search(config(), accuracy).study
    view = sampler_view(study)
    pruned = [t.number for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and all(view.trials[n].state == TrialState.COMPLETE for n in pruned)
    assert all(study.trials[n].state == TrialState.PRUNED for n in pruned)  # the real study is unchanged
    assert [t.number for t in view.best_trials] != [t.number for t in study.best_trials]  # the view would list them


def test_one_worker_with_a_seed_is_reproducible():
    def specs(seed: int) -> list[str]:
        study = run_search(config(objectives="macs,memory", sampler="tpe", space=SearchSpace(), seed=seed,
                                  trials=14)).study
        return [t.user_attrs["spec"] for t in study.trials]

    first = specs(3)
    assert specs(3) == first and specs(4) != first


@pytest.mark.parametrize("name", SAMPLERS)
def test_workers_started_together_with_one_seed_never_lockstep(name):
    """Two workers on one study, the same seed, taking turns: each trial's seed comes from its number."""
    storage = optuna.storages.InMemoryStorage()
    space = SearchSpace()  # 1,296 specs
    optuna.create_study(study_name="w", storage=storage, directions=["minimize", "maximize"])
    rounds = 5 if name == "gp" else 12  # past TPE's 10 random start-up trials; GP's model steps cost seconds
    workers = [optuna.load_study(study_name="w", storage=storage, sampler=make_sampler(name, 7, 100, True))
               for _ in range(2)]
    proposals: list[list[str]] = [[], []]
    for _ in range(rounds):
        for i, study in enumerate(workers):
            trial = study.ask()
            spec = space.suggest(trial, 10)
            proposals[i].append(spec.to_string())
            study.tell(trial, [analyze(spec).peak_memory_kib, analyze(spec).macs])
    same = [a == b for a, b in zip(*proposals)]
    assert not any(same[:5]), proposals  # random start-up: a plainly seeded pair proposes the same spec each time
    assert sum(same) <= 2, proposals  # later both may find one good spec now and then, never step by step


def test_a_sampler_object_or_a_name_and_nothing_else():
    with pytest.raises(SearchError, match="unknown sampler 42"):
        Search(config(sampler=42), accuracy)
    with pytest.raises(SearchError, match="unknown sampler 'tpee'"):
        Search(config(sampler="tpee"), accuracy)
    search = Search(config(sampler=optuna.samplers.NSGAIISampler(seed=1, population_size=4)), accuracy)
    assert isinstance(search.study.sampler, NasSampler)
    assert isinstance(search.study.sampler.sampler, optuna.samplers.NSGAIISampler)


def test_the_objective_runs_in_your_own_study():
    search = Search(config(objectives="macs,memory", trials=6), None)
    study = optuna.create_study(directions=[o.direction for o in search.objectives],
                                sampler=NasSampler(optuna.samplers.RandomSampler(), seed=5))
    study.optimize(search.objective, n_trials=15)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 6  # the search's trials: distinct specs, the rest pruned (duplicates, surplus)
    assert len({t.user_attrs["spec_hash"] for t in complete}) == 6
    for t in complete:
        report = analyze(ArchSpec.parse(t.user_attrs["spec"]))
        assert t.values == [report.macs, report.peak_memory_kib]
    assert not search.study.trials  # the search's own study was not touched


def test_the_front_as_a_dataframe(monkeypatch):
    pandas = pytest.importorskip("pandas")
    front = pareto_front(run_search(config(), accuracy).study)
    df = front.to_dataframe()
    assert list(df.columns[:3]) == ["number", "acc", "macs"]
    assert df["number"].tolist() == [r["number"] for r in front.rows]
    assert df["macs"].tolist() == [analyze(ArchSpec.parse(r["spec"])).macs for r in front.rows]
    both = front.to_dataframe(dominated=True)
    assert len(both) == len(front.rows) + len(front.dominated) and isinstance(both, pandas.DataFrame)
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(SearchError, match="needs pandas"):
        front.to_dataframe()


def test_the_documented_optuna_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    (code,) = [b for b in blocks if "search.objective" in b]
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(code, str(DOCS), "exec"), scope)  # the docs' own example, as written
    assert isinstance(scope["df"], pytest.importorskip("pandas").DataFrame) and len(scope["df"]) >= 1
