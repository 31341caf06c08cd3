"""One fit for every command: a search, a model card and ``nas hw`` predict the same numbers from the same
tables; a search says once when its space lies outside a target's measured region, records it per trial, and
``nas pareto`` marks it."""

from __future__ import annotations

import csv
import io

import optuna

from nas.cli import main
from nas.deploy import predicted_latency
from nas.hw import predict_arch
from nas.search import Search, SearchConfig
from nas.space import SearchSpace
from predictors import fitted
from search_space import ArchSpec, analyze

HEADER = "device,precision,arch,latency_ms,status\n"
SPACE = SearchSpace()  # the default search space: 1,296 specs at 32 px
SMALLEST = ArchSpec(tuple(lo for lo, _ in SPACE.depths), tuple(min(w) for w in SPACE.widths), resolution=32,
                    num_classes=10)
LARGEST = ArchSpec(tuple(hi for _, hi in SPACE.depths), tuple(max(w) for w in SPACE.widths), resolution=32,
                   num_classes=10)


def sim_table(tmp_path, specs, name="sim.csv"):
    """A made-up device whose latency is a known law of MACs and depth (the numbers only need to be valid)."""
    lines = [HEADER.strip()]
    for spec in specs:
        report = analyze(spec)
        lines.append(f"sim,fp32,{spec.to_string()},{1e-8 * report.macs + 0.01 * report.conv_count + 0.1!r},ok")
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def cost_search(path, **changes):
    config = SearchConfig(objectives="latency:sim,macs", tables=[str(path)], storage=":memory:", num_classes=10,
                          trials=4, seed=0, sampler="random", **changes)
    return Search(config)


def test_search_export_and_hw_share_one_fit(tmp_path):
    path = sim_table(tmp_path, [ArchSpec((1, 2, 2, 1), (0.5,) * 4, resolution=64, num_classes=10),
                                ArchSpec((2, 2, 4, 1), (1.0,) * 4, resolution=112, num_classes=10),
                                ArchSpec((1, 1, 1, 1), (0.25,) * 4, resolution=32, num_classes=10)])
    search = cost_search(path)
    shared = fitted([path])
    assert search.predictors["sim"] is shared.predictors["sim"]  # the very same object
    assert search.predictors["T4"] is fitted([str(path)]).predictors["T4"]
    spec = ArchSpec((1, 2, 3, 1), (0.5, 0.5, 0.75, 1.0), resolution=48, num_classes=10)
    card = {r["key"]: r for r in predicted_latency(spec, [str(path)])}
    hw = {r["device"]: r for r in predict_arch(spec.to_string(), [path]).rows}
    for key, predictor in search.predictors.items():
        p = predictor.predict(spec)
        assert card[key]["ms"] == hw[key]["ms"] == p.ms
        assert (card[key]["low"], card[key]["high"]) == (hw[key]["low"], hw[key]["high"]) == (p.low, p.high)
        assert card[key]["extrapolated"] == hw[key]["extrapolated"] == p.extrapolated


def test_a_search_inside_the_measured_region_says_nothing(tmp_path):
    # every domain coordinate (MACs, bytes, depth, resolution) grows with depth and width: the corners bound it
    search = cost_search(sim_table(tmp_path, [SMALLEST, LARGEST, SMALLEST.replace(depths=(2, 2, 4, 1))]))
    assert search.warnings == []
    assert not any(search.predictors["sim"].predict(s).extrapolated for s in SPACE.iter_specs(10))


def test_a_search_outside_says_so_once_records_it_and_the_front_marks_it(tmp_path, capsys):
    # measured at 112 px only, while the space is at 32 px: every spec of the space is extrapolated
    path = sim_table(tmp_path, [s.replace(resolution=112) for s in (SMALLEST, LARGEST)])
    search = cost_search(path)
    assert len(search.warnings) == 1  # T4 is no target here: only sim is checked
    assert search.warnings[0].startswith("sim: 1,296 of 1,296 specs of the search space lie outside")
    assert "resolution 32 px below the measured 112 px" in search.warnings[0]
    search.run()
    trials = search.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert trials
    for trial in trials:
        spec = ArchSpec.parse(trial.user_attrs["spec"])
        prediction = search.predictors["sim"].predict(spec)
        assert trial.user_attrs["latency_sim_extrapolated"] is True is prediction.extrapolated
        assert trial.user_attrs["latency_sim_extrapolation"] == prediction.extrapolation != ""

    db = f"sqlite:///{tmp_path / 'nas.db'}"
    argv = ["search", "-o", "latency:sim,macs", "--classes", "10", "--tables", str(path), "--storage", db,
            "--trials", "3", "--sampler", "random", "--seed", "1", "-f", "csv"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("warning: sim: 1,296 of 1,296 specs") == 1 and "T4" not in err.split("warning:")[1]
    assert main(["pareto", "--storage", db, "-f", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows and all(r["extrapolated"] == "sim" for r in rows)
    assert main(["pareto", "--storage", db]) == 0
    assert "extrapolated" in capsys.readouterr().out


def test_a_search_without_latency_targets_checks_nothing():
    search = Search(SearchConfig(objectives="macs,params", storage=":memory:", num_classes=10, trials=1))
    assert search.devices == [] and search.warnings == []
