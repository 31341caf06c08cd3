"""Do workers sharing a PostgreSQL study survive dropped database connections?

Four worker processes run one search (cost objectives ``macs,latency`` on T4, no training, the default
space and sampler) to ``--trials`` distinct specs on a fresh database of the local server. When a third
and two thirds of the specs are done, every backend of that database is terminated
(``pg_terminate_backend``), as a server restart or a network cut would. Reported: exit codes, tracebacks
in the workers' output, lost trials (numbers missing, trials left RUNNING or WAITING), failed trials,
duplicates (proposals of an evaluated spec, recorded pruned), specs evaluated twice, and each worker's
storage calls retried after a lost connection (``ReconnectingStorage.reconnects``).

    .venv/bin/python bench/storage_drops.py                  # 4 workers × 200 specs, two drops
    .venv/bin/python bench/storage_drops.py --workers 2 --trials 40

Needs PostgreSQL on 127.0.0.1:5432 (``NAS_TEST_POSTGRES`` to point elsewhere) and psycopg2. Writes
bench/results/storage_drops.json; prints the figures last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path

import psycopg2

from search_space.io import atomic_write

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("NAS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
TERMINATE = ("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
             "WHERE datname = current_database() AND pid <> pg_backend_pid()")
WORKER = textwrap.dedent("""
    import json, sys
    import optuna
    from nas.search import Search, SearchConfig

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    search = Search(SearchConfig(objectives="macs,latency", target="T4", storage=sys.argv[1], study="drops",
                                 trials=int(sys.argv[2])))
    summary = search.run()
    print(json.dumps({"ran": summary.ran, "failed": summary.failed, "stopped": summary.stopped,
                      "reconnects": search.storage.reconnects}))
""")


def _query(url: str, sql: str, *args: object) -> list[tuple]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        try:
            cur.execute(sql, args)
        except psycopg2.errors.UndefinedTable:
            return []
        return cur.fetchall()


def _complete(url: str) -> int:
    rows = _query(url, "SELECT count(*) FROM trials WHERE state = 'COMPLETE'")
    return rows[0][0] if rows else 0


def _tally(url: str) -> dict[str, object]:
    """The study's trials: states, numbers missing, duplicates, specs evaluated twice."""
    states = dict(_query(url, "SELECT state, count(*) FROM trials GROUP BY state"))
    numbers = sorted(n for (n,) in _query(url, "SELECT number FROM trials"))
    attrs = _query(url, "SELECT t.state, a.key, a.value_json FROM trials t JOIN trial_user_attributes a "
                        "USING (trial_id) WHERE a.key IN ('spec_hash', 'duplicate_of')")
    duplicates = sum(1 for state, key, _ in attrs if key == "duplicate_of")
    evaluated = Counter(value for state, key, value in attrs if key == "spec_hash" and state == "COMPLETE")
    return {"states": states, "trials_recorded": len(numbers),
            "numbers_missing": sorted(set(range(len(numbers))) - set(numbers)),
            "left_running_or_waiting": states.get("RUNNING", 0) + states.get("WAITING", 0),
            "failed": states.get("FAIL", 0), "duplicates": duplicates, "specs_evaluated": len(evaluated),
            "specs_evaluated_twice": sum(1 for n in evaluated.values() if n > 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--trials", type=int, default=200)
    args = parser.parse_args()
    admin = psycopg2.connect(PG_URL)
    admin.autocommit = True
    name = f"nas_bench_drops_{uuid.uuid4().hex[:8]}"
    admin.cursor().execute(f"CREATE DATABASE {name}")
    url = PG_URL.rsplit("/", 1)[0] + f"/{name}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    try:
        workers = [subprocess.Popen([sys.executable, "-c", WORKER, url, str(args.trials)], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for _ in range(args.workers)]
        drops = []
        for share in (1 / 3, 2 / 3):
            while _complete(url) < share * args.trials and any(w.poll() is None for w in workers):
                time.sleep(0.1)
            drops.append({"after_complete": _complete(url), "backends_terminated": _query(url, TERMINATE)[0][0]})
        outputs = [w.communicate() for w in workers]
        result = {
            "workers": args.workers, "trials": args.trials, "drops": drops,
            "exit_codes": [w.returncode for w in workers],
            "tracebacks": sum("Traceback" in err for _, err in outputs),
            "per_worker": [json.loads(out.strip().splitlines()[-1]) if out.strip() else None for out, _ in outputs],
            **_tally(url), "wall_s": round(time.monotonic() - start, 1),
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "load_1min": round(os.getloadavg()[0], 1)},
        }
        for (_, err), w in zip(outputs, workers):
            if w.returncode:
                print(err[-2000:], file=sys.stderr)
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    out = ROOT / "bench" / "results" / "storage_drops.json"
    with atomic_write(out) as handle:
        handle.write(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    lost = len(result["numbers_missing"]) + result["left_running_or_waiting"]
    print(f"{args.workers} workers × {args.trials} specs, {len(drops)} drops: exit codes {result['exit_codes']}, "
          f"{result['specs_evaluated']} specs evaluated, {lost} lost, {result['failed']} failed, "
          f"{result['duplicates']} duplicates, {result['specs_evaluated_twice']} evaluated twice, "
          f"{sum(w['reconnects'] for w in result['per_worker'] if w)} storage calls retried")


if __name__ == "__main__":
    main()
