"""Bad input, every command: one line naming the problem and the fix, exit != 0, no traceback, nothing
half-written, and ``docs/bad_input.md`` equal to what the commands print (cases: ``tests/bad_input_cases.py``).

Below the table, the smaller findings of issue 13 (point 5) that are not a refusal: stale temp files and staging
folders of killed runs, the all-infeasible warning, warnings as one line, the heartbeat retry's Optuna warning.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bad_input_cases import CASES, Case, Workspace
from render_bad_input import DOC, render, row

from nas.cli import main


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("bad-input-setups"))


def _doc_rows() -> dict[str, str]:
    """The doc's table rows by their command cell."""
    rows = {}
    for line in DOC.read_text().splitlines():
        match = re.match(r"^\| `(nas [^`]*)` \|", line)
        if match:
            rows[match[1]] = line
    return rows


def _param(case: Case) -> object:
    return pytest.param(case, id=f"{case.command}: {case.kind}", marks=[pytest.mark.slow] if case.slow else [])


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(case: Case, workspace: Workspace, tmp_path: Path) -> None:
    work = tmp_path / "work"
    result = workspace.run(case, work)
    lines = result.err.strip().splitlines()
    assert result.code == case.code, result.err
    assert "Traceback" not in result.err + result.out
    assert case.expect in result.message, result.message
    if case.code == 1:
        assert result.message.startswith("error: ") and sum(line.startswith("error:") for line in lines) == 1
        assert case.steps is None or len(lines) == 1 + case.steps, lines
    else:  # argparse: the usage synopsis, then its one error line; ours: one "usage error:" line
        assert re.match(r"^(nas [a-z ]+: error: |usage error: )", result.message), result.message
        assert all(line.startswith(("usage:", " ")) for line in lines[:-1]), lines
    for path in case.absent:
        assert not (work / path).exists(), f"{path} was left behind"
    leftovers = [p for p in work.rglob("*") if p.name.startswith((".export-", ".train-")) or p.suffix == ".tmp"]
    assert not leftovers
    assert _doc_rows().get(case.shell) == row(case, result, work), "docs/bad_input.md is out of date: run " \
                                                                    "tests/render_bad_input.py"


def test_the_doc_holds_every_case_once_and_nothing_else() -> None:
    shells = [c.shell for c in CASES]
    assert len(set(shells)) == len(shells) >= 100
    rows = _doc_rows()
    assert list(rows) == shells
    assert DOC.read_text() == render((c, rows[c.shell]) for c in CASES)  # the text around the rows, too


# -- issue 13, point 5: what is not a refusal -----------------------------------------------------------------

def test_a_search_where_every_spec_is_infeasible_says_which_limit(tmp_path: Path, capsys) -> None:
    db = f"sqlite:///{tmp_path / 'nas.db'}"
    assert main(["search", "-o", "macs,params", "--classes", "10", "--trials", "3", "--max-macs", "1",
                 "--max-params", "1e9", "--storage", db, "-f", "csv"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    warning = [line for line in err if line.startswith("warning: all")]
    assert warning == [err[-1]]
    # every spec has more than one MAC, none has a billion parameters: only the MAC limit is named
    assert "all 3 evaluated specs are infeasible: 3 over the macs limit 1 (smallest macs" in warning[0]
    assert "params" not in warning[0] and "relax" in warning[0]


def test_a_killed_checkpoint_write_is_cleaned_by_the_next_write(tmp_path: Path) -> None:
    from search_space import ArchSpec
    from search_space.model import build_model
    from trials.checkpoint import STALE_TEMP_SECONDS, Checkpoint
    from trials.config import TrainConfig

    spec = ArchSpec.parse("repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_g1_r32_c10")
    orphan, fresh, other = (tmp_path / ".last.pt.abcd1234.tmp", tmp_path / ".last.pt.efgh5678.tmp",
                            tmp_path / ".notes.txt.abcd1234.tmp")
    for path in (orphan, fresh, other):
        path.write_bytes(b"half a checkpoint")
    old = time.time() - STALE_TEMP_SECONDS - 5
    for path in (orphan, other):
        os.utime(path, (old, old))
    Checkpoint(spec, TrainConfig(), [str(i) for i in range(10)], build_model(spec).state_dict()).write(
        tmp_path / "last.pt")
    # the orphan goes; a temp file still being written (recent) and another file's temp stay
    assert not orphan.exists() and fresh.exists() and other.exists()
    assert Checkpoint.read(tmp_path / "last.pt").spec == spec


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_staging_folders_of_dead_runs_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    from trials import export

    host = export._HOST
    dead = tmp_path / f".export-{host}-{_dead_pid()}-abcd1234"
    live = tmp_path / f".train-{host}-{os.getpid()}-abcd1234"
    foreign_old = tmp_path / ".train-otherhost-1-abcd1234"
    legacy_new = tmp_path / ".export-k2j4h5g6"
    for folder in (dead, live, foreign_old, legacy_new):
        folder.mkdir()
        (folder / "model_fp32.onnx").write_bytes(b"half")
    old = time.time() - export.STALE_STAGING_SECONDS - 5
    os.utime(foreign_old, (old, old))
    made = export.make_staging(tmp_path, "export")
    assert made.name.startswith(f".export-{host}-{os.getpid()}-") and made.is_dir()
    assert not dead.exists() and not foreign_old.exists()  # owner gone; owner unknown and old
    assert live.exists() and legacy_new.exists()  # owner running; owner unknown but recent


def test_a_training_run_that_fails_leaves_no_folder(tmp_path: Path, capsys, monkeypatch) -> None:
    """``--lr 1e6`` and friends: a run that fails before its first checkpoint leaves nothing behind, even
    folders it had to make for ``--out`` (here a failure inside training, after the data loaded)."""
    import trials.train
    from trials.errors import TrainError

    def diverge(*_args: object, **_kwargs: object) -> None:
        raise TrainError("the loss became nan at epoch 1, step 3")

    monkeypatch.setattr(trials.train, "train", diverge)
    (tmp_path / "runs").mkdir()
    out = tmp_path / "runs" / "a" / "b"
    assert main(["train", "--arch", "repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_g1_r32", "--out", str(out)]) == 1
    assert "loss became nan" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "a").exists() and (tmp_path / "runs").is_dir()  # the user's folder stays


def test_one_class_is_refused_before_the_study_exists(tmp_path: Path, monkeypatch) -> None:
    """It used to be caught only as a side effect of the extrapolation warnings (a study, then 5 failed trials
    when they were not computed)."""
    from nas.objectives import SearchError
    from nas.search import Search, SearchConfig

    monkeypatch.setattr(Search, "_extrapolation_warnings", lambda self: [])
    db = tmp_path / "nas.db"
    with pytest.raises(SearchError, match="cannot search for 1 classes"):
        Search(SearchConfig(objectives="macs,params", num_classes=1, storage=f"sqlite:///{db}"))
    assert not db.exists()


def test_warnings_are_one_clean_line(tmp_path: Path, capsys) -> None:
    """A skipped image file used to print as ``…/data.py:346: DataWarning: …`` plus the source line."""
    from PIL import Image

    for c in range(2):
        (tmp_path / f"c{c}").mkdir()
        for i in range(12):
            Image.new("RGB", (36, 36), (40 * i, 80 * c, 0)).save(tmp_path / f"c{c}" / f"{i}.png")
    (tmp_path / "c0" / "broken.png").write_bytes(b"not a png")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(["search", "--data", str(tmp_path), "-o", "acc,macs", "--trials", "1", "--proxy-steps", "2",
                     "--resolution", "32", "--depths", "1", "--widths", "0.25", "--storage", ":memory:"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "unreadable" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: skipped 1 unreadable image files"), err
    assert "DataWarning" not in err and ".py:" not in err


def test_a_retried_trial_does_not_warn_about_its_constraints(tmp_path: Path) -> None:
    """A trial retried after its worker's heartbeat stopped carries the dead trial's constraints; setting them
    again made Optuna warn on every retry."""
    from nas.objectives import Limits
    from nas.search import Search, SearchConfig

    config = SearchConfig(objectives="macs,params", num_classes=10, trials=2, storage=f"sqlite:///{tmp_path}/r.db",
                          study="r", heartbeat_interval=1, grace_period=2, limits=Limits.parse(max_macs="1e12"))
    search = Search(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ask() outside optimize() warns about heartbeats: the test's doing
        dying = search.study.ask()
    search.space.suggest(dying, 10)
    dying.set_constraint("macs<=1e+12", -0.5)
    search.storage.record_heartbeat(dying._trial_id)  # then the worker dies
    time.sleep(2.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        search.run()
    retried = [t for t in search.study.trials if t.system_attrs.get("failed_trial") == dying.number]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"  # the retry happened
    assert not [w for w in caught if "constraint value is ignored" in str(w.message)]

