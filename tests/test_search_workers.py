"""Several worker processes on one study (SQLite file, PostgreSQL), a worker killed mid-trial, the dashboard.

Workers run a small script (no torch: cost objectives plus a fake accuracy that sleeps a little), so
the trials of three processes overlap in time and the bookkeeping is exercised for real.
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

import optuna
import pytest
from optuna.trial import TrialState

from nas.search import SearchConfig, run_search
from nas.space import SearchSpace
from nas.storage import delete_study, load_study

GRACE = 4  # s without heartbeat before a trial counts as dead: short for the test, generous for a loaded CPU
SPACE = {"depths": [[1, 2], [1, 2], [1, 3], [1, 1]], "widths": [[0.25, 0.5], [0.25], [0.25, 0.5], [0.25, 1.0]]}

WORKER = textwrap.dedent("""
    import json, os, sys, time
    import optuna
    from nas.search import SearchConfig, run_search
    from nas.space import SearchSpace
    from search_space import analyze

    url, study, trials, log, slow_spec, heartbeat, grace, space = sys.argv[1:9]
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    def accuracy(spec, data):
        with open(log, "a") as f:
            f.write(spec.hash + "\\n")
        if spec.to_string() == slow_spec:
            open(log + ".slow", "w").close()
            time.sleep(120)  # killed here
        time.sleep(0.05)
        return {"top1": 1 - 1 / (1 + analyze(spec).macs / 2e6), "balanced_acc": 0.5}

    space = SearchSpace.from_dict(json.loads(space))
    run_search(SearchConfig(objectives="acc,macs,memory", storage=url, study=study, trials=int(trials),
                            space=space, num_classes=10, heartbeat_interval=int(heartbeat), grace_period=int(grace)),
               accuracy)
""")


def _start(tmp_path: Path, url: str, study: str, trials: int, log: Path, slow: str = "-", heartbeat: int = 2,
           grace: int = 20):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, str(script), url, study, str(trials), str(log), slow, str(heartbeat),
                             str(grace), json.dumps(SPACE)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _check_cooperation(url: str, study_name: str, trials: int, logs: list[Path]) -> None:
    study = load_study(url, study_name)  # nas.storage picks the installed PostgreSQL driver
    states = [t.state for t in study.trials]
    evaluated = [t for t in study.trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    assert len(evaluated) == trials  # every requested trial completed, no more
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states and TrialState.FAIL not in states
    assert sorted(t.number for t in study.trials) == list(range(len(study.trials)))  # none lost
    trained = [line for log in logs if log.exists() for line in log.read_text().split()]
    assert len(trained) == len(set(trained))  # no spec trained twice, across processes
    assert sorted(t.user_attrs["spec_hash"] for t in evaluated) == sorted(trained)


def _run_three(tmp_path: Path, url: str, study: str, trials: int) -> None:
    logs = [tmp_path / f"w{i}.log" for i in range(3)]
    procs = [_start(tmp_path, url, study, trials, log) for log in logs]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out.decode()[-2000:]
    _check_cooperation(url, study, trials, logs)


def test_three_workers_share_one_sqlite_file(tmp_path):
    _run_three(tmp_path, f"sqlite:///{tmp_path / 'shared.db'}", "shared", 24)


@pytest.mark.postgres
def test_three_workers_share_one_postgres_database(tmp_path, postgres_url):
    study = f"nas-test-{uuid.uuid4().hex[:10]}"
    try:
        _run_three(tmp_path, postgres_url, study, 24)
    finally:
        delete_study(postgres_url, study)


def test_a_killed_worker_trial_is_retried_and_the_study_completes(tmp_path):
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    space = SearchSpace.from_dict(SPACE)
    slow = next(iter(space.iter_specs(10)))
    log = tmp_path / "k.log"
    # Enqueue the slow spec first so that the worker starts with it.
    seed_cfg = SearchConfig(objectives="acc,macs,memory", storage=url, study="kill", trials=5, space=space,
                            num_classes=10, heartbeat_interval=1, grace_period=GRACE,
                            seed=0)  # seeded: trials 1-10 never draw the slow spec, whose retry would be a duplicate
    from nas.search import Search

    Search(seed_cfg, lambda s, d: {}).study.enqueue_trial(space.params_of(slow))
    proc = _start(tmp_path, url, "kill", 5, log, slow=slow.to_string(), heartbeat=1, grace=GRACE)
    deadline = time.monotonic() + 120
    while not Path(str(log) + ".slow").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()[-2000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    study = optuna.load_study(study_name="kill", storage=url)
    (killed,) = study.get_trials(states=(TrialState.RUNNING,))
    trained = []
    summary = run_search(seed_cfg, lambda spec, data: trained.append(spec) or {"top1": 0.5, "balanced_acc": 0.5})
    study = summary.study
    assert study.trials[killed.number].state == TrialState.FAIL  # its heartbeat stopped
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params and slow in trained
    assert summary.evaluated == 5


def test_the_dashboard_reads_the_study(tmp_path, dashboard_get):
    optuna_dashboard = pytest.importorskip("optuna_dashboard", reason="pip install '.[dashboard]'")
    url = f"sqlite:///{tmp_path / 'dash.db'}"
    run_search(SearchConfig(objectives="macs,memory", storage=url, study="dash", trials=4, num_classes=10,  # seeded:
                            space=SearchSpace.from_dict(SPACE), heartbeat_interval=None, seed=0))  # no duplicate
    app = optuna_dashboard.wsgi(url)
    (summary,) = dashboard_get(app, "/api/studies")["study_summaries"]
    assert summary["study_name"] == "dash"
    detail = dashboard_get(app, f"/api/studies/{summary['study_id']}")
    assert detail["objective_names"] == ["macs", "memory_kib"]
    assert len(detail["trials"]) == 4
    attrs = {a["key"] for a in detail["trials"][0]["user_attrs"]}
    assert {"spec", "macs", "params", "memory_kib", "feasible", "latency_T4", "latency_T4_low",
            "latency_T4_high"} <= attrs
