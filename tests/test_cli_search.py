"""``nas search``, ``nas pareto``, ``nas dashboard`` in-process: outputs, one-line errors, the main job."""

from __future__ import annotations

import json
import re

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from nas.cli import main

CHEAP = ["search", "-o", "macs,memory,latency:T4", "--classes", "10", "--depths", "1-2,1-2,1-3,1",
         "--widths", "0.25/0.5,0.25/0.5,0.25/0.5,0.5/1"]


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path / 'nas.db'}"


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code, err, *words):
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for w in words:
        assert w in lines[0], lines[0]


def _front_by_brute_force(study):
    """Non-dominated complete feasible trials, one per spec, by direct pairwise comparison."""
    sign = np.array([-1.0 if d == optuna.study.StudyDirection.MAXIMIZE else 1.0 for d in study.directions])
    cands, seen = [], set()
    for t in sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.number):
        if any(v > 0 for v in t.constraints.values()) or t.user_attrs["spec_hash"] in seen:
            continue
        seen.add(t.user_attrs["spec_hash"])
        cands.append((t.number, np.array(t.values) * sign))
    return {n for n, v in cands
            if not any(np.all(w <= v) and np.any(w < v) for m, w in cands if m != n)}


def test_search_then_pareto_json_is_exactly_the_front(capsys, db, tmp_path):
    code, out, err = _run(capsys, *CHEAP, "--trials", "12", "--storage", db, "--study", "s", "--seed", "3",
                          "--max-memory", "300", "-f", "json")
    assert code == 0, err
    assert "12/12 specs evaluated" in err
    body = json.loads(out)
    assert body["evaluated"] == 12 and body["storage"] == db
    code, out, err = _run(capsys, "pareto", "--storage", db, "-f", "json")  # the only study
    assert code == 0, err
    body = json.loads(out)
    study = optuna.load_study(study_name="s", storage=db)
    assert {r["number"] for r in body["rows"]} == _front_by_brute_force(study)
    assert body["metric_names"] == ["macs", "memory_kib", "latency_T4"]
    assert all(r["memory_kib"] <= 300 and r["feasible"] for r in body["rows"])
    assert {"spec", "params", "latency_T4_low", "latency_T4_high", "latency_RV1126"} <= set(body["rows"][0])
    assert 0 < body["hypervolume"] <= 1.1 ** 3

    # Resume: --trials is the total, so the same command runs nothing more; a larger one runs the rest.
    code, _, err = _run(capsys, *CHEAP, "--trials", "12", "--storage", db, "--study", "s", "--max-memory", "300")
    assert code == 0 and "; 0 trials run now" in err
    code, out, err = _run(capsys, "pareto", "--storage", db, "--study", "s", "-f", "csv", "--max-latency", "t4=10")
    assert code == 0 and out.splitlines()[0].startswith("number,")

    png, html = tmp_path / "front.png", tmp_path / "front.html"
    code, out, err = _run(capsys, "pareto", "--storage", db, "--plot", str(png), "--pick", "knee")
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "pick:" in out
    code, out, err = _run(capsys, "pareto", "--storage", db, "--plot", str(html))
    assert code == 0 and "plotly" in html.read_text()[:200_000].lower()


def test_bad_inputs_give_one_line_and_leave_the_study_intact(capsys, db, tmp_path):
    code, _, err = _run(capsys, *CHEAP, "--trials", "3", "--storage", db, "--study", "keep")
    assert code == 0, err
    broken = tmp_path / "broken.toml"
    broken.write_text("depths = [[1, 2]")
    cases = [
        (["-o", "acc,speed"], ["unknown objective 'speed'"]),
        (["-o", "macs,latency:Z80"], ["Z80"]),
        (["--max-latency", "T4"], ["latency limit 'T4'", "TARGET=MS"]),
        (["--max-memory", "lots"], ["memory limit", "'lots'"]),
        (["--space", str(broken)], ["not valid TOML"]),
        (["--storage", "postgresql://user:s3cret@127.0.0.1:9/nowhere"], ["cannot open storage", "user:***@"]),
        (["--storage", "sqlite:////nonexistent/dir/x.db"], ["does not exist"]),
        (["-o", "memory,macs"], ["created with objectives"]),            # same study, objectives swapped
        (["--max-params", "1M"], ["created with limits"]),
    ]
    for extra, words in cases:
        argv = [*CHEAP, "--trials", "5", "--storage", db, "--study", "keep", *extra]
        if extra[0] == "-o":
            argv[argv.index("-o") + 1] = extra[1]
            argv = argv[: -len(extra)]
        code, out, err = _run(capsys, *argv)
        _one_line_error(code, err, *words)
        assert "s3cret" not in err + out
        assert not re.search(r"(?<![\w-])--[a-z]", err), err  # the library names concepts, not flags
    study = optuna.load_study(study_name="keep", storage=db)
    assert len(study.trials) == 3 and study.metric_names == ["macs", "memory_kib", "latency_T4"]
    _one_line_error(*_run(capsys, "pareto", "--storage", db, "--study", "nope")[::2], "no study 'nope'")
    missing = tmp_path / "none.db"
    _one_line_error(*_run(capsys, "pareto", "--storage", f"sqlite:///{missing}")[::2], "does not exist")
    assert not missing.exists()  # a reader never creates a database
    _one_line_error(*_run(capsys, "pareto", "--storage", db, "--max-latency", "Z80=1")[::2], "Z80")
    _one_line_error(*_run(capsys, "pareto", "--storage", db, "--pick", "best-acc-under", "--under", "T4=1")[::2],
                    "accuracy objective")
    _one_line_error(*_run(capsys, "pareto", "--storage", db, "--plot", str(tmp_path / "x.pdf"))[::2], ".png or .html")
    assert _run(capsys, "search", "--sampler", "annealing")[0] == 2  # argparse usage error


def test_a_maximize_minimize_mix_up_is_refused(capsys, db):
    optuna.create_study(study_name="mixed", storage=db, directions=["maximize", "maximize"])
    code, _, err = _run(capsys, *CHEAP[:1], "-o", "macs,memory", "--classes", "10", "--storage", db,
                        "--study", "mixed")
    _one_line_error(code, err, "directions")
    assert optuna.load_study(study_name="mixed", storage=db).directions == [optuna.study.StudyDirection.MAXIMIZE] * 2


def test_dashboard_reports_a_missing_storage_in_one_line(capsys):
    _one_line_error(*_run(capsys, "dashboard", "--storage", "sqlite:////nonexistent/dir/x.db")[::2],
                    "does not exist")


def test_main_job_acc_latency_on_the_embedded_default(capsys, tmp_path, monkeypatch):
    """The acceptance run: real proxy on the embedded digits, real predictors, 6 trials."""
    monkeypatch.chdir(tmp_path)  # default storage sqlite:///nas.db in the working directory
    code, out, err = _run(capsys, "search", "--objective", "acc,latency", "--target", "T4", "--trials", "6",
                          "--seed", "0", "-f", "json")
    assert code == 0, err
    assert (tmp_path / "nas.db").exists()
    body = json.loads(out)
    assert body["evaluated"] == 6 and body["metric_names"] == ["acc", "latency_T4"] and body["rows"]
    study = optuna.load_study(study_name="acc-latency_T4", storage="sqlite:///nas.db")
    trained = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if "proxy_wall_s" in t.user_attrs]
    assert trained and all(0 <= t.values[0] <= 1 and t.values[1] > 0 for t in trained)
    assert all(t.user_attrs["acc"] == t.values[0] for t in trained)
    for row in body["rows"]:  # both axes carry their interval; ties name other front members
        assert row["acc_low"] <= row["acc_high"]
        assert row["latency_T4_low"] <= row["latency_T4"] <= row["latency_T4_high"]
        assert set(row["tied_with"]) <= {r["number"] for r in body["rows"]} - {row["number"]}
    trial_lines = [line for line in err.splitlines() if line.startswith("trial ")]
    both = re.compile(r"acc=[\d.]+ \[[\d.]+–[\d.]+\], latency_T4=[\d.]+ \[[\d.]+–[\d.]+\]")
    assert len(trial_lines) == 6 and all(both.search(line) for line in trial_lines)  # each shows both intervals

    code, out, err = _run(capsys, "pareto", "-f", "csv")
    header = out.splitlines()[0].split(",")
    assert code == 0 and header[:8] == ["number", "acc", "acc_low", "acc_high", "latency_T4", "latency_T4_low",
                                        "latency_T4_high", "tied_with"]
    code, out, err = _run(capsys, "pareto", "--pick", "knee")
    assert code == 0 and "acc 90%" in out and "T4 90%" in out and "tied_with" in out
    assert "pick_within_noise: " in out and "90% intervals: accuracy by bootstrap over the 170 scored" in out
    code, out, err = _run(capsys, "pareto", "--pick", "knee", "-f", "json")
    body = json.loads(out)
    knee = next(r for r in body["rows"] if r["number"] == body["pick"]["number"])
    assert body["pick_tied_with"] == knee["tied_with"]


def test_recipe_and_budget_flags_reach_the_study_and_a_change_is_refused(capsys, db):
    tiny = ["search", "-o", "acc,macs", "--depths", "1,1,1,1", "--widths", "0.25", "--storage", db, "--study", "r",
            "--proxy-epochs", "1", "--proxy-steps", "2", "--proxy-selection", "3", "--trials", "1"]
    code, _, err = _run(capsys, *tiny, "--hflip", "0.3", "--crop-scale", "0.7,1", "--loss", "balanced_softmax",
                          "--selection-ratio", "0.2", "--repeats", "2")
    assert code == 0, err
    study = optuna.load_study(study_name="r", storage=db)
    record = study.user_attrs["nas:data"]
    assert record["recipe"]["hflip"] == 0.3 and record["recipe"]["crop_scale"] == [0.7, 1.0]
    assert record["recipe"]["loss"] == "balanced_softmax" and record["recipe"]["long_tail"] == "exp:10"  # digits'
    assert record["settings"]["selection_ratio"] == 0.2 and sum(record["counts"]["selection"]) == 10 * 34
    proxy = study.user_attrs["nas:config"]["proxy"]
    assert (proxy["repeats"], proxy["budget"]["epochs"], proxy["budget"]["max_steps"]) == (2, 1, 2)
    (trial,) = study.get_trials(states=(TrialState.COMPLETE,))
    assert trial.user_attrs["proxy_selection_images"] == 30 and len(trial.user_attrs["acc_seeds"]) == 2
    _one_line_error(*_run(capsys, *tiny, "--hflip", "0", "--crop-scale", "0.7,1", "--loss", "balanced_softmax",
                          "--selection-ratio", "0.2", "--repeats", "2")[::2],
                    "searched with recipe hflip 0.3; this search asks for hflip 0")
    _one_line_error(*_run(capsys, *tiny, "--hflip", "2")[::2], "hflip 2.0 is not a probability")
    _one_line_error(*_run(capsys, *tiny, "--repeats", "0")[::2], "repeats must be at least 1")
    assert len(optuna.load_study(study_name="r", storage=db).trials) == 1


def test_proxy_budget_flags_document_the_budgets_defaults():
    import argparse

    from nas.cli import build_parser
    from trials.proxy import ProxyBudget

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.option_strings[0]: a.help for a in sub.choices["search"]._actions if a.option_strings}
    budget = ProxyBudget()
    for flag, value in (("--proxy-epochs", budget.epochs), ("--proxy-steps", budget.max_steps),
                        ("--proxy-images", budget.train_images), ("--proxy-selection", budget.selection_per_class)):
        assert f"(default {value})" in helps[flag], flag
