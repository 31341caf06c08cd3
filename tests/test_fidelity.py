"""Multi-fidelity search (nas.fidelity): promotion bookkeeping, claims across workers, resume, refine, config.

The rung evaluator here is a fake whose accuracy is a closed-form function of the spec and the epochs, but
which writes and reads a real checkpoint file per spec folder, so continuation is exercised for real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from nas.fidelity import FidelityConfig, refine
from nas.objectives import Limits, SearchError
from nas.pareto import pareto_front
from nas.promotion import promotable
from nas.search import Search, SearchConfig, run_search
from nas.space import SearchSpace
from nas.storage import delete_study, load_study

TINY = SearchSpace(depths=((1, 2), (1, 1), (1, 2), (1, 1)), widths=((0.25, 0.5), (0.25,), (0.25, 0.5), (0.25, 1.0)),
                   resolutions=(32,))  # 16 specs
RUNGS = (1, 3, 9)
ETA = 3
HALF = 0.02  # the fake's interval: acc ± HALF, so one standard error is HALF / z(0.95)
SE = HALF / 1.6448536269514722


def fake_accuracy(spec_hash: str, epochs: int) -> float:
    """Rises with epochs; the spec's level is a fixed draw from its hash (so ranks are not MAC order)."""
    level = int(spec_hash[:6], 16) / 16**6
    return 0.3 + 0.6 * level * epochs / (epochs + 1)


class FakeRungs:
    """A rung evaluator: closed-form accuracy, a JSON checkpoint in the spec's folder, every call recorded."""

    def __init__(self, interrupt_above: int | None = None) -> None:
        self.calls: list[tuple[str, int, int]] = []  # (spec hash, epoch continued from, epochs reached)
        self.interrupt_above = interrupt_above

    def __call__(self, spec, data, epochs, folder):
        assert data is None
        if self.interrupt_above is not None and epochs > self.interrupt_above:
            self.interrupt_above = None
            raise KeyboardInterrupt
        start = 0
        if folder is not None:
            path = Path(folder) / "checkpoint.json"
            if path.exists():
                start = json.loads(path.read_text())["epochs"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"spec": spec.hash, "epochs": epochs}))
        self.calls.append((spec.hash, start, epochs))
        acc = fake_accuracy(spec.hash, epochs)
        return {"top1": acc, "balanced_acc": acc, "acc_low": acc - HALF, "acc_high": acc + HALF}


def config(tmp_path: Path, **kw) -> SearchConfig:
    base = dict(objectives="acc,macs", storage=f"sqlite:///{tmp_path / 'f.db'}", study="f", space=TINY,
                num_classes=10, trials=12, seed=0, heartbeat_interval=None, fidelity=FidelityConfig(RUNGS, ETA))
    base.update(kw)
    return SearchConfig(**base)


def measured(t) -> list[float] | None:
    """A trial's values read straight from the storage: COMPLETE values or PRUNED ``rung_values``."""
    if t.state == TrialState.COMPLETE:
        return list(t.values)
    return t.user_attrs.get("rung_values") if t.state == TrialState.PRUNED else None


def evaluations(study) -> dict[tuple[str, int], optuna.trial.FrozenTrial]:
    """(spec hash, rung) → the trial that evaluated it; asserts that none is evaluated twice."""
    out: dict = {}
    for t in study.get_trials():
        if measured(t) is None or "duplicate_of" in t.user_attrs:
            continue
        key = (t.user_attrs["spec_hash"], t.user_attrs.get("rung", 0))
        assert key not in out, f"{key} evaluated by trials {out[key].number} and {t.number}"
        out[key] = t
    return out


def picks(pool) -> set[str]:
    """The spec hashes that promotion picks from ``pool`` (trials of one rung): acc maximized (± one SE)."""
    if not pool:
        return set()
    points = np.array([[-measured(t)[0], measured(t)[1]] for t in pool])
    noise = np.array([[SE, 0.0]] * len(pool))
    return {pool[i].user_attrs["spec_hash"] for i in promotable(points, ETA, noise)}


def pool_of(evals, rung: int, before: int | None = None) -> list:
    return sorted((t for (h, r), t in evals.items() if r == rung and t.user_attrs["feasible"]
                   and (before is None or t.number < before)), key=lambda t: t.number)


def check_rungs(study, fake_calls=None) -> dict:
    """What every multi-fidelity study must satisfy; returns the evaluations."""
    evals = evaluations(study)
    top = len(RUNGS) - 1
    for (h, rung), t in evals.items():
        if rung:
            below = evals[(h, rung - 1)]  # every spec at rung r > 0 has a rung r - 1 record
            assert t.user_attrs["promoted_from"] == below.number and t.user_attrs["promotion"] == f"{h}@{rung}"
        if t.user_attrs["feasible"]:
            assert measured(t) == pytest.approx([fake_accuracy(h, RUNGS[rung]), t.user_attrs["macs"]])
            assert t.state == (TrialState.COMPLETE if rung == top else TrialState.PRUNED)
        else:
            assert rung == 0 and t.state == TrialState.COMPLETE and "rung_values" not in t.user_attrs
    for rung in range(top):  # nothing owed at the end
        for h in picks(pool_of(evals, rung)):
            assert (h, rung + 1) in evals, f"{h} owed a promotion to rung {rung + 1}"
    if fake_calls is not None:
        for _, start, epochs in fake_calls:  # each rung continued from the checkpoint of the one below
            i = RUNGS.index(epochs)
            assert start == (RUNGS[i - 1] if i else 0)
    assert {t.number for t in study.best_trials} <= {t.number for (h, r), t in evals.items() if r == top}
    return evals


def test_sequential_promotions_are_what_promotable_picks_and_the_front_uses_highest_rungs(tmp_path):
    fake = FakeRungs()
    fidelity = FidelityConfig(RUNGS, ETA, str(tmp_path / "rungs"))  # in memory, with real checkpoint files
    summary = run_search(config(tmp_path, storage=None, fidelity=fidelity, limits=Limits(max_memory_kib=150.0)), fake)
    study = summary.study
    assert summary.evaluated == 12 and summary.stopped == "done"
    evals = check_rungs(study, fake.calls)
    assert len(fake.calls) == len(set(fake.calls))  # nothing trained twice
    assert {(h, RUNGS[r]) for (h, r), t in evals.items() if t.user_attrs["feasible"]} == \
        {(h, e) for h, _, e in fake.calls}  # exactly the feasible records were trained, infeasible never
    promotions = [t for t in study.get_trials() if "promotion" in t.user_attrs]
    assert any(t.user_attrs["rung"] == 2 for t in promotions)  # the test reaches the top rung
    for p in promotions:  # each was among the picks of its rung when it was queued (one worker: all earlier done)
        h, rung = p.user_attrs["spec_hash"], p.user_attrs["rung"]
        assert h in picks(pool_of(evals, rung - 1, before=p.number)), p.number
    assert len(list((tmp_path / "rungs" / "f").iterdir())) == len({h for h, _, _ in fake.calls})
    front = pareto_front(study)
    highest = {}
    for h, r in evals:
        highest[h] = max(highest.get(h, 0), r)
    assert front.rows
    for row in front.rows:
        assert row["rung"] == highest[row["spec_hash"]] and row["rung_epochs"] == RUNGS[row["rung"]]
        assert row["acc"] == pytest.approx(fake_accuracy(row["spec_hash"], RUNGS[row["rung"]]))
    assert len({r["spec_hash"] for r in front.rows + front.dominated}) == len(front.rows + front.dominated)


def test_ctrl_c_then_resume_completes_the_same_rungs(tmp_path):
    specs = list(TINY.iter_specs(10))[:9]
    rungs = FidelityConfig((1, 3), ETA)  # two rungs: the promotions depend on rung 0 alone, so both runs agree

    def start(name: str, fake: FakeRungs) -> Search:
        search = Search(config(tmp_path, study=name, trials=9, fidelity=rungs), fake)
        for spec in specs:
            search.study.enqueue_trial(TINY.params_of(spec))
        return search

    start("plain", FakeRungs()).run()
    broken = FakeRungs(interrupt_above=1)
    with pytest.raises(KeyboardInterrupt):
        start("cut", broken).run()
    resumed = FakeRungs()
    search = Search(config(tmp_path, study="cut", trials=9, fidelity=rungs), resumed)
    (cut,) = [t for t in search.study.get_trials() if t.user_attrs.get("fail_reason") == "interrupted"]
    assert cut.user_attrs["rung"] == 1
    search.run()

    def outcome(study) -> dict:
        return {key: measured(t) for key, t in evaluations(study).items()}

    plain = load_study(config(tmp_path).storage, "plain")
    assert outcome(search.study) == outcome(plain)
    assert max(r for _, r in outcome(plain)) == 1
    (retry,) = [t for t in search.study.get_trials() if t.user_attrs.get("retry_of") == cut.number]
    assert retry.user_attrs["promotion"] == cut.user_attrs["promotion"] and retry.state == TrialState.COMPLETE
    assert (cut.user_attrs["spec_hash"], 1, 3) in resumed.calls  # continued from its rung-0 checkpoint


def crossing(spec, data, epochs, folder):
    """Learning curves that cross: each spec learns at its own speed, so the order of two specs at rung 0 is
    not their order at rung 2, and a value at a higher rung is inflated against another's at a lower one."""
    level, speed = int(spec.hash[:6], 16) / 16**6, 1 + 2 * int(spec.hash[6:12], 16) / 16**6
    return {"top1": 0.2 + 0.7 * level * (epochs / RUNGS[-1]) ** speed, "balanced_acc": 0.5}


def test_the_front_compares_specs_at_the_rung_both_reached_and_refine_promotes_it(tmp_path):
    cfg = config(tmp_path, trials=14)
    study = run_search(cfg, crossing).study
    evals = evaluations(study)
    top = {h: max(r for g, r in evals if g == h) for h, _ in evals}
    trial_of = {h: evals[(h, r)] for h, r in top.items()}

    def point(h: str, rung: int) -> np.ndarray:
        return np.array([-measured(evals[(h, rung)])[0], measured(evals[(h, rung)])[1]])

    def dominates(m: str, n: str, rung: int) -> bool:
        return bool(np.all(point(m, rung) <= point(n, rung)) and np.any(point(m, rung) < point(n, rung)))

    def layer(specs, common=True):  # brute force: compared at the lower of the two rungs (rungs are contiguous)
        return {n for n in specs if not any(dominates(m, n, min(top[m], top[n])) if common else
                                            np.all(point(m, top[m]) <= point(n, top[n]))
                                            and np.any(point(m, top[m]) < point(n, top[n]))
                                            for m in specs if m != n)}

    front = layer(set(top))
    assert front != layer(set(top), common=False)  # the curves cross here: highest-rung values would mislead
    assert {r["spec_hash"] for r in pareto_front(study).rows} == front
    from nas.pareto_plot import static_figure  # every member labelled with its rung, on the staircase or below it

    labels = {t.get_text() for t in static_figure(pareto_front(study)).axes[0].texts}
    assert labels == {f"{trial_of[h].number} r{top[h]}" for h in front}
    second = layer(set(top) - front)
    assert second
    first = refine(study, 0)  # the front alone
    assert not first.held and {n for n, _ in first.queued} | set(first.at_top) == {trial_of[h].number for h in front}
    more = refine(study, len(second))  # and the next layer at the common rung: the nearest dominated specs
    chosen = {n for n, _ in more.queued} | set(more.at_top) | set(more.held)
    assert chosen == {trial_of[h].number for h in front | second} and set(more.held) == {n for n, _ in first.queued}
    queued = first.queued + more.queued
    assert all(rung == study.trials[n].user_attrs["rung"] + 1 for n, rung in queued)
    assert refine(study, len(second)).queued == []  # held now: never queued twice
    summary = Search(cfg, crossing).run()  # any worker of the search trains what was queued
    after = evaluations(summary.study)
    for number, rung in queued:
        assert (study.trials[number].user_attrs["spec_hash"], rung) in after


def test_a_promotion_queued_three_times_trains_once_and_a_failed_holder_gives_way(tmp_path):
    from nas.fidelity import enqueue_promotion

    fake = FakeRungs()
    cfg = config(tmp_path, trials=3)
    search = Search(cfg, fake)
    search.run()
    study = search.study
    evals = evaluations(study)
    base = next(t for (h, r), t in evals.items() if r == 0 and (h, 1) not in evals)
    for _ in range(3):
        enqueue_promotion(study, base, 1, cfg.fidelity)
    first, second, third = sorted((t for t in study.get_trials(states=(TrialState.WAITING,))
                                   if t.user_attrs["promoted_from"] == base.number), key=lambda t: t.number)
    popped = study.ask()  # a worker takes the first and dies: its trial fails
    assert popped.number == first.number
    study.tell(popped, state=TrialState.FAIL)
    fake.calls.clear()
    search.run()
    trials = {t.number: t for t in study.get_trials()}
    assert trials[second.number].state == TrialState.PRUNED and "rung_values" in trials[second.number].user_attrs
    assert trials[third.number].user_attrs["claim_lost"] == second.number
    assert [c for c in fake.calls if c[0] == base.user_attrs["spec_hash"]] == [(base.user_attrs["spec_hash"], 1, 3)]
    check_rungs(study)


def test_fidelity_settings_are_recorded_and_checked(tmp_path):
    run_search(config(tmp_path, trials=3), FakeRungs())
    with pytest.raises(SearchError, match=r"created with fidelity rungs \[1, 3, 9\].*asks for rungs \[1, 3\]"):
        Search(config(tmp_path, trials=3, fidelity=FidelityConfig((1, 3), ETA)), FakeRungs())
    with pytest.raises(SearchError, match=r"created with fidelity \{'rungs': \[1, 3, 9\].*asks for no fidelity \("):
        Search(config(tmp_path, trials=3, fidelity=None), lambda spec, data: {"top1": 0.5, "balanced_acc": 0.5})
    with pytest.raises(SearchError, match="needs an accuracy objective"):
        Search(config(tmp_path, objectives="macs,memory", study="cost"), None)
    with pytest.raises(SearchError, match="needs a rung folder"):
        Search(config(tmp_path, storage="postgresql://nobody@127.0.0.1:9/none"), FakeRungs())
    with pytest.raises(SearchError, match="increasing"):
        FidelityConfig((3, 1))
    with pytest.raises(SearchError, match="eta must be greater than 1"):
        FidelityConfig(RUNGS, 1)


def test_the_proxy_budget_is_the_top_rung(tmp_path):
    from nas.accuracy import proxy_config

    with pytest.raises(SearchError, match="the proxy trains 6 epochs but the top rung is 9"):
        Search(config(tmp_path, num_classes=None, proxy=proxy_config({"epochs": 6})))


# -- several workers, one killed mid-promotion ---------------------------------------------------------

WORKER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    import optuna
    from nas.fidelity import FidelityConfig
    from nas.search import SearchConfig, run_search
    from nas.space import SearchSpace

    url, study, trials, log, marker, rung_dir, space = sys.argv[1:8]
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    def accuracy(spec, data, epochs, folder):
        path = Path(folder) / "checkpoint.json"
        start = json.loads(path.read_text())["epochs"] if path.exists() else 0
        with open(log, "a") as f:
            f.write(f"{spec.hash} {start} {epochs}\\n")
        if epochs > 1:
            try:  # the first promotion of any worker stalls here, and the test kills its worker
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, f"{os.getpid()} {spec.hash}".encode())
                os.close(fd)
                time.sleep(120)
            except FileExistsError:
                pass
        time.sleep(0.05)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"epochs": epochs}))
        level = int(spec.hash[:6], 16) / 16**6
        acc = 0.3 + 0.6 * level * epochs / (epochs + 1)
        return {"top1": acc, "balanced_acc": acc, "acc_low": acc - 0.02, "acc_high": acc + 0.02}

    run_search(SearchConfig(objectives="acc,macs", storage=url, study=study, trials=int(trials),
                            space=SearchSpace.from_dict(json.loads(space)), num_classes=10,
                            heartbeat_interval=1, grace_period=6,
                            fidelity=FidelityConfig((1, 3, 9), 3, rung_dir)), accuracy)
""")
SPACE = {"depths": [[1, 2], [1, 2], [1, 3], [1, 1]], "widths": [[0.25, 0.5], [0.25], [0.25, 0.5], [0.25, 1.0]]}
DIAGNOSE = ("spec_hash", "rung", "promotion", "promoted_from", "claim_lost", "retry_of", "fail_reason")


def _three_workers_one_killed(tmp_path: Path, url: str, study: str, trials: int = 9) -> None:
    script, marker = tmp_path / "worker.py", tmp_path / "stalled"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    logs = [tmp_path / f"w{i}.log" for i in range(3)]
    procs = [subprocess.Popen([sys.executable, str(script), url, study, str(trials), str(log), str(marker),
                               str(tmp_path / "rungs"), json.dumps(SPACE)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for log in logs]
    deadline = time.monotonic() + 120
    while not (marker.exists() and marker.read_text()):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
            [p.stdout.read().decode()[-2000:] for p in procs if p.poll() is not None]
        time.sleep(0.1)
    pid, stalled = marker.read_text().split()
    victim = next(p for p in procs if p.pid == int(pid))
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    for p in procs:
        if p is not victim:
            out, _ = p.communicate(timeout=240)
            assert p.returncode == 0, out.decode()[-2000:]
    result = load_study(url, study)
    states = [t.state for t in result.trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    evals = check_rungs(result)  # none evaluated twice, nothing owed, every rung above one below
    assert sum(1 for (_, r) in evals if r == 0) == trials
    failed = [t for t in result.trials if t.state == TrialState.FAIL
              and t.user_attrs.get("promotion", "").startswith(stalled)]
    assert failed, (stalled, [(t.number, t.state.name, {k: v for k, v in t.user_attrs.items() if k in DIAGNOSE},
                               t.system_attrs.get("failed_trial")) for t in result.trials])  # seen once: say why
    killed = min(failed, key=lambda t: t.number)
    spec_hash, rung = killed.user_attrs["promotion"].split("@")
    assert evals[(spec_hash, int(rung))].number > killed.number  # the dead worker's promotion was trained again
    trained = [tuple(line.split()) for log in logs if log.exists() for line in log.read_text().splitlines()]
    repeated = {x for x in trained if trained.count(x) > 1}
    assert repeated <= {x for x in trained if x[0] == stalled}  # only the killed one ran twice


def test_three_workers_on_sqlite_with_a_worker_killed_mid_promotion(tmp_path):
    _three_workers_one_killed(tmp_path, f"sqlite:///{tmp_path / 'w.db'}", "w")


@pytest.mark.postgres
def test_three_workers_on_postgres_with_a_worker_killed_mid_promotion(tmp_path, postgres_url):
    study = f"nas-fid-{uuid.uuid4().hex[:10]}"
    try:
        _three_workers_one_killed(tmp_path, postgres_url, study)
    finally:
        delete_study(postgres_url, study)


def test_real_rung_evaluator_continues_per_seed_and_ends_where_one_run_ends(tmp_path):
    from nas.accuracy import proxy_config, proxy_evaluator, rung_evaluator

    spec = next(iter(TINY.iter_specs(10)))
    proxy = proxy_config({"epochs": 2, "max_steps": 12, "train_images": 120, "selection_per_class": 5})
    rungs = rung_evaluator(proxy, repeats=2)
    low = rungs(spec, None, 1, tmp_path / "spec")
    top = rungs(spec, None, 2, tmp_path / "spec")
    assert (low["continued_from"], top["continued_from"], top["epochs"]) == (0, 1, 2)
    assert sorted(p.name for p in (tmp_path / "spec").iterdir()) == ["seed0", "seed1"]
    whole = proxy_evaluator(proxy, repeats=2)(spec, None)
    assert top["acc_seeds"] == whole["acc_seeds"] and top["top1"] == whole["top1"]


# -- the command line ---------------------------------------------------------------------------------------

def test_pareto_shows_each_value_s_rung_and_refine_queues_promotions(tmp_path, capsys):
    import csv
    import io

    from nas.cli import main

    cfg = config(tmp_path, trials=6)
    study = run_search(cfg, FakeRungs()).study
    assert (tmp_path / "f.rungs" / "f").is_dir()  # the default rung folder: next to the SQLite file
    highest: dict[str, int] = {}
    for h, r in evaluations(study):
        highest[h] = max(highest.get(h, 0), r)
    assert main(["pareto", "--storage", cfg.storage, "--study", "f", "-f", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows and all(int(r["rung"]) == highest[study.trials[int(r["number"])].user_attrs["spec_hash"]]
                        and int(r["rung_epochs"]) == RUNGS[int(r["rung"])] for r in rows)
    assert main(["pareto", "--storage", cfg.storage, "--study", "f", "--refine", "1"]) == 0
    out, err = capsys.readouterr()
    assert "rung (epochs)" in out
    queued = [t for t in load_study(cfg.storage, "f").trials if t.state == TrialState.WAITING]
    assert queued and all(t.user_attrs["refine"] for t in queued)
    assert f"queued {len(queued)} promotion" in err and "run the same nas search command again" in err


def test_fidelity_flags_make_the_config_and_a_conflict_is_one_line(tmp_path, capsys):
    from nas.cli import build_parser, main
    from nas.cli.search import search_config

    args = build_parser().parse_args(["search", "--rungs", "2,4", "--eta", "2", "--rung-dir", str(tmp_path)])
    made = search_config(args)
    assert made.fidelity == FidelityConfig((2, 4), 2.0, str(tmp_path)) and made.proxy.budget.epochs == 4
    # no step cap unless one is given: a cap would stop the top rung before its epochs
    assert made.proxy.budget.max_steps is None
    capped = search_config(build_parser().parse_args(["search", "--rungs", "2,4", "--proxy-steps", "50"]))
    assert capped.proxy.budget.max_steps == 50 and capped.proxy.budget.epochs == 4
    assert search_config(build_parser().parse_args(["search"])).fidelity is None
    assert search_config(build_parser().parse_args(["search", "--fidelity"])).fidelity == FidelityConfig()
    code = main(["search", "--fidelity", "--rungs", "1,3", "--proxy-epochs", "5", "--storage",
                 f"sqlite:///{tmp_path / 'x.db'}"])
    err = capsys.readouterr().err
    assert code == 1 and "the proxy trains 5 epochs but the top rung is 3" in err and len(err.strip().splitlines()) == 1
    assert main(["search", "--rungs", "3,x"]) == 1 and "rungs '3,x' are not whole numbers" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()
