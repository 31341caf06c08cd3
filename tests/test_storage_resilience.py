"""A dropped database connection: storage calls retried with backoff, the trial in progress carried on
or queued again, one line (never a traceback) when the database stays away, nothing left running.

The fast tests cut a SQLite storage's connection by failing its SQL statements from an engine event (as
a terminated PostgreSQL backend fails them); the ``postgres`` test terminates the backends of a real
``nas search`` twice.
"""

from __future__ import annotations

import inspect
import math
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.trial import TrialState

import nas.storage
from nas.search import Search, SearchConfig
from nas.space import SearchSpace
from nas.storage import ReconnectingStorage, StorageError, StorageLostError, open_storage

PG_URL = os.environ.get("NAS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
SPACE = {"depths": [[1, 2], [1, 2], [1, 3], [1, 1]], "widths": [[0.25, 0.5], [0.25], [0.25, 0.5], [0.25, 1.0]]}
DELAYS = (0.01, 0.02, 0.04)


class Outage:
    """Fails the next ``left`` SQL statements on ``storage``'s engine as a dropped connection does."""

    def __init__(self, storage: RDBStorage) -> None:
        self.left: float = 0
        self.fired = 0
        sqlalchemy.event.listen(storage.engine, "before_cursor_execute", self)

    def __call__(self, conn, cursor, statement, params, context, executemany) -> None:
        if self.left > 0:
            self.left -= 1
            self.fired += 1
            raise sqlalchemy.exc.OperationalError(statement, params, sqlite3.OperationalError(
                "server closed the connection unexpectedly"))


@pytest.fixture
def short_waits(monkeypatch):
    monkeypatch.setattr(nas.storage, "RECONNECT_DELAYS", DELAYS)


def test_every_rdb_call_that_opens_a_session_is_retried():
    opens = {name for name, fn in inspect.getmembers(RDBStorage, inspect.isfunction)
             if "_create_scoped_session(" in inspect.getsource(fn)}
    wrapped = {name for name in opens if getattr(ReconnectingStorage, name) is not getattr(RDBStorage, name)}
    assert opens and wrapped == opens  # a new Optuna call that talks to the database must join the list


def test_a_lost_connection_is_retried_once_per_outer_call(tmp_path, short_waits):
    storage = open_storage(f"sqlite:///{tmp_path / 'r.db'}", heartbeat_interval=None)
    outage = Outage(storage)
    study_id = storage.create_new_study([], "s")
    trial_id = storage.create_new_trial(study_id)
    outage.left = len(DELAYS)  # one failure per wait: the last attempt succeeds
    assert [t._trial_id for t in storage.get_all_trials(study_id)] == [trial_id]  # nested: _get_trials
    assert storage.reconnects == len(DELAYS) == outage.fired

    outage.left, outage.fired = math.inf, 0
    with pytest.raises(StorageLostError) as info:
        storage.get_all_trials(study_id)
    assert outage.fired == len(DELAYS) + 1  # the outer call's attempts only, not attempts × nested attempts
    assert "lost the connection" in info.value.message and "\n" not in info.value.message
    outage.fired = 0
    with pytest.raises(StorageLostError):
        storage.get_trial(trial_id)
    assert outage.fired == 1  # once lost, one attempt per call until one succeeds
    storage.record_heartbeat(trial_id)  # Optuna's heartbeat thread: skipped, never raised
    outage.left = 0
    assert storage.get_trial(trial_id).state == TrialState.RUNNING

def _config(url: str, trials: int, **kw) -> SearchConfig:
    return SearchConfig(objectives="acc,macs", storage=url, study="s", trials=trials, num_classes=10,
                        space=SearchSpace.from_dict(SPACE), sampler="random", seed=0, **kw)


def test_a_trial_cut_by_a_long_outage_is_queued_again_not_failed(tmp_path, short_waits):
    calls: list[str] = []
    search: Search

    def accuracy(spec, data):
        calls.append(spec.to_string())
        if len(calls) == 2:  # the database goes away for longer than the retries, and comes back
            outage.left = len(DELAYS) + 1
        return {"top1": 0.5, "balanced_acc": 0.5}

    search = Search(_config(f"sqlite:///{tmp_path / 'q.db'}", 3, heartbeat_interval=None), accuracy)
    outage = Outage(search.storage)
    summary = search.run()
    assert outage.fired == len(DELAYS) + 1 and summary.failed == 0 and summary.evaluated == 3
    (cut,) = [t for t in summary.study.trials if t.state == TrialState.FAIL]
    assert cut.user_attrs["fail_reason"] == "interrupted"
    (retry,) = [t for t in summary.study.trials if t.user_attrs.get("retry_of") == cut.number]
    assert retry.state == TrialState.COMPLETE and retry.params == cut.params
    assert calls.count(calls[1]) == 2  # the cut spec was trained again, to completion
    assert not summary.study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


def test_a_database_that_stays_away_stops_the_search_with_one_line_and_the_trial_is_retried(tmp_path,
                                                                                            short_waits):
    url = f"sqlite:///{tmp_path / 'd.db'}"

    def accuracy(spec, data):
        if outage.fired == 0:
            outage.left = math.inf
        return {"top1": 0.5, "balanced_acc": 0.5}

    search = Search(_config(url, 3, heartbeat_interval=1, grace_period=2), accuracy)
    outage = Outage(search.storage)
    with pytest.raises(StorageError, match="lost the connection to storage") as info:
        search.run()
    assert "\n" not in info.value.message
    outage.left = 0
    (cut,) = search.study.get_trials(states=(TrialState.RUNNING,))  # the database could not be told
    time.sleep(3.5)  # its heartbeat has stopped: the next worker fails it as stale and retries it
    summary = Search(_config(url, 3, heartbeat_interval=1, grace_period=2), accuracy).run()
    assert summary.evaluated == 3 and not summary.study.get_trials(states=(TrialState.RUNNING,))
    assert any(t.params == cut.params and t.state == TrialState.COMPLETE for t in summary.study.trials
               if t.number != cut.number)


# -- the real thing: PostgreSQL backends terminated under a running `nas search` ---------------------------

TERMINATE = ("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
             "WHERE datname = current_database() AND pid <> pg_backend_pid()")


@pytest.fixture
def pg_database():
    """A fresh database on the local server (terminating its backends touches no other test), dropped after."""
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install '.[postgres]')")
    try:
        admin = psycopg2.connect(PG_URL, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL answers at {PG_URL}: {str(exc).strip().splitlines()[0]}")
    admin.autocommit = True
    name = f"nas_drop_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def _sql(url: str, query: str, *args) -> list[tuple]:
    import psycopg2

    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        try:
            cur.execute(query, args)
        except psycopg2.errors.UndefinedTable:  # the search has not made its tables yet
            return []
        return cur.fetchall()


@pytest.mark.postgres
def test_nas_search_survives_two_terminated_connections(pg_database):
    trials = 12
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nas", "search", "-o", "macs,latency", "--target", "T4", "--storage", pg_database,
         "--study", "drop", "--trials", str(trials), "--heartbeat", "2", "--sampler", "random", "--seed", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    terminated = []
    deadline = time.monotonic() + 240
    for after in (3, 7):  # two drops, each while the search is mid-way
        while not _sql(pg_database, "SELECT 1 FROM trials WHERE state = 'COMPLETE' OFFSET %s", after - 1):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.05)
        assert proc.poll() is None  # still searching: the drop lands mid-search
        terminated.append(_sql(pg_database, TERMINATE)[0][0])
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    assert all(n >= 1 for n in terminated)  # each drop cut the search's own connections
    assert "Traceback" not in err and "error:" not in err
    states = dict(_sql(pg_database, "SELECT state, count(*) FROM trials GROUP BY state"))
    assert "RUNNING" not in states and "WAITING" not in states and "FAIL" not in states
    hashes = _sql(pg_database, "SELECT a.value_json FROM trials t JOIN trial_user_attributes a USING (trial_id) "
                               "WHERE t.state = 'COMPLETE' AND a.key = 'spec_hash'")
    assert len(hashes) == states["COMPLETE"] and len(set(hashes)) == trials  # N distinct specs complete
