"""Front plots read as a person needs them: units, a staircase front, the pick, infeasible trials, small HTML.

The matplotlib figures are inspected as objects; every expectation is derived here independently: the
front by brute force over the trials, units from the objective names, positions from the trial values.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from itertools import combinations

import matplotlib
import numpy as np
import optuna
import pytest
from matplotlib import cbook
from matplotlib.container import ErrorbarContainer

from nas.objectives import Limits, SearchError
from nas.pareto import pareto_front, pick
from nas.pareto_plot import axis_scale, check_plot_target, html_figure, plot_front, static_figure

matplotlib.use("Agg")
optuna.logging.set_verbosity(optuna.logging.ERROR)
#: Display factor of each objective, as a person reads it: accuracy in %, latency in ms, MACs in M, memory KiB.
SHOWN = {"acc": 100.0, "latency_T4": 1.0, "macs": 1e-6, "memory_kib": 1.0, "params": 1e-6}
#: A word each objective's axis label must contain.
SHOWN_LABEL = {"acc": "accuracy", "latency_T4": "latency", "memory_kib": "memory", "macs": "MACs"}


def _study(rows, directions, names):
    """An in-memory study of COMPLETE trials: rows = (values, attrs, constraints)."""
    study = optuna.create_study(directions=list(directions), storage=optuna.storages.InMemoryStorage())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(names))
    dist = optuna.distributions.IntDistribution(0, 10_000)
    for values, attrs, cons in rows:
        study.add_trial(optuna.trial.create_trial(values=list(values), params={"i": len(study.trials)},
                                                  distributions={"i": dist}, user_attrs=attrs, constraints=cons))
    return study


def _random_rows(seed, n=30, infeasible_share=0.2):
    """Trials with accuracy (±2 points), latency (±20 %), memory and MACs; infeasible ones record accuracy 0."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        lat, mem, macs = rng.uniform(0.1, 0.5), float(rng.integers(50, 900)), rng.uniform(1e6, 5e8)
        acc = float(np.clip(0.5 + lat + rng.normal(0, 0.08), 0.05, 0.99))
        feasible = rng.random() >= infeasible_share
        attrs = {"spec_hash": f"h{i}", "spec": f"repvgg_spec_{i}", "feasible": feasible,
                 "latency_T4_low": lat * 0.8, "latency_T4_high": lat * 1.2}
        if feasible:
            attrs.update(acc_low=acc - 0.02, acc_high=acc + 0.02)
        else:
            attrs["infeasible_reason"] = "latency over the limit"
        rows.append(((acc if feasible else 0.0, lat, mem, macs), attrs, {"c": -1.0 if feasible else 1.0}))
    return rows


def _two(rows, names=("acc", "latency_T4"), directions=("maximize", "minimize")):
    index = {"acc": 0, "latency_T4": 1, "memory_kib": 2, "macs": 3}
    return _study([(tuple(v[index[n]] for n in names), a, c) for v, a, c in rows], directions, names)


def _feasible_values(study, x, y):
    """(trial number, x, y) of the feasible trials, in display units."""
    names = study.metric_names
    return [(t.number, t.values[names.index(x)] * SHOWN[x], t.values[names.index(y)] * SHOWN[y])
            for t in study.trials if all(v <= 0 for v in t.constraints.values())]


def _brute_front(points, x_max, y_max):
    """The (x, y) points that no other point beats on both axes (maximized axes as given)."""
    def better_or_equal(a, b, maximize):
        return a >= b if maximize else a <= b

    def dominates(p, q):
        return (better_or_equal(p[0], q[0], x_max) and better_or_equal(p[1], q[1], y_max)) and p != q

    return {q for q in points if not any(dominates(p, q) for p in points)}


def _by_gid(ax, gid):
    found = [a for a in [*ax.collections, *ax.lines] if a.get_gid() == gid]
    assert len(found) == 1, f"{gid}: {len(found)} artists"
    return found[0]


def _check_staircase(ax, points, x_max, y_max):
    """The staircase line of ``ax`` is drawn post-step through exactly the brute-force front, and every vertex of
    the drawn path is on the boundary of the region the front attains (attained, not strictly inside)."""
    line = _by_gid(ax, "stairs")
    assert line.get_drawstyle() == "steps-post"
    front = _brute_front(points, x_max, y_max)
    corners = set(zip(np.round(line.get_xdata(), 9), np.round(line.get_ydata(), 9)))
    assert corners == {(round(x, 9), round(y, 9)) for x, y in front}
    xs, ys = cbook.pts_to_poststep(np.asarray(line.get_xdata()), np.asarray(line.get_ydata()))

    def beats(a, b, maximize, strict):
        return (a > b if maximize else a < b) if strict else (a >= b if maximize else a <= b)

    for vx, vy in zip(xs, ys):
        assert any(beats(px, vx, x_max, False) and beats(py, vy, y_max, False) for px, py in front)
        assert not any(beats(px, vx, x_max, True) and beats(py, vy, y_max, True) for px, py in front)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_front_is_a_post_staircase_through_the_brute_force_front(seed):
    study = _two(_random_rows(seed))
    fig = static_figure(pareto_front(study))
    (ax,) = fig.axes
    points = [(x, y) for _, x, y in _feasible_values(study, "latency_T4", "acc")]  # latency on x, accuracy on y
    _check_staircase(ax, points, x_max=False, y_max=True)
    front_numbers = {n for n, x, y in _feasible_values(study, "latency_T4", "acc")
                     if (x, y) in _brute_front(points, False, True)}
    assert {t.get_text().split()[0] for t in ax.texts} == {str(n) for n in front_numbers}  # trial labels


@pytest.mark.parametrize(("names", "directions"), [
    (("latency_T4", "memory_kib"), ("minimize", "minimize")),   # both minimized: the steps go down
    (("acc", "macs"), ("maximize", "maximize")),                # both maximized: x from its best (right) end
])
def test_the_staircase_follows_each_axis_direction(names, directions):
    study = _two(_random_rows(3), names, directions)
    (ax,) = static_figure(pareto_front(study)).axes
    x, y = names  # both axes run the same way: the objectives keep their order
    _check_staircase(ax, [(a, b) for _, a, b in _feasible_values(study, x, y)],
                     x_max=directions[0] == "maximize", y_max=directions[1] == "maximize")


def test_axis_labels_carry_units_and_directions():
    (ax,) = static_figure(pareto_front(_two(_random_rows(0)))).axes
    assert "latency" in ax.get_xlabel() and "T4" in ax.get_xlabel() and "(ms" in ax.get_xlabel()
    assert "accuracy" in ax.get_ylabel() and "(%" in ax.get_ylabel() and "higher is better" in ax.get_ylabel()
    assert "lower is better" in ax.get_xlabel()
    cases = [("macs", [3e8], "M", 1e-6), ("macs", [2.5e9], "G", 1e-9), ("memory_kib", [300.0], "KiB", 1.0),
             ("memory_kib", [4096.0], "MiB", 1 / 1024), ("params", [1.2e6], "M", 1e-6), ("bacc", [0.5], "%", 100)]
    for name, values, unit, factor in cases:
        scale = axis_scale(name, "minimize", values)
        assert scale.unit == unit and f"({unit}," in scale.title()
        assert scale.show(values[0]) == pytest.approx(values[0] * factor)


def test_infeasible_trials_are_hollow_at_their_real_costs():
    rows = _random_rows(4, infeasible_share=0.4)
    infeasible = [(v, a) for v, a, c in rows if not a["feasible"]]
    assert infeasible
    twin = next(i for i, (_, a, _) in enumerate(rows) if not a["feasible"])  # a duplicate is drawn once
    rows.append((rows[twin][0], {**rows[twin][1], "duplicate_of": twin}, rows[twin][2]))
    # Two costs: the infeasible trials sit where their costs are.
    (ax,) = static_figure(pareto_front(_two(rows, ("latency_T4", "memory_kib"), ("minimize", "minimize")))).axes
    hollow = _by_gid(ax, "infeasible")
    assert len(hollow.get_facecolor()) == 0  # facecolor 'none'
    assert sorted(map(tuple, hollow.get_offsets())) == sorted((v[1], v[2]) for v, _ in infeasible)
    # Accuracy: recorded 0 but never measured — a strip below every measured accuracy, at their real latency.
    (ax,) = static_figure(pareto_front(_two(rows))).axes
    hollow = _by_gid(ax, "infeasible")
    measured = [v[0] * 100 for v, a, _ in rows if a["feasible"]]
    offsets = np.asarray(hollow.get_offsets())
    assert sorted(offsets[:, 0]) == pytest.approx(sorted(v[1] for v, _ in infeasible))
    assert len(set(offsets[:, 1])) == 1 and offsets[0, 1] < min(measured)
    assert offsets[0, 1] > min(measured) - 0.25 * (max(measured) - min(measured))  # near them, not at 0
    assert ax.get_ylim()[0] < offsets[0, 1]  # inside the plot
    assert "never trained" in hollow.get_label()


def test_the_pick_is_the_one_nas_pareto_pick_chooses():
    front = pareto_front(_two(_random_rows(5)))
    (ax,) = static_figure(front).axes  # default: the knee
    knee = pick(front, "knee")
    assert _by_gid(ax, "pick").get_offsets().tolist() == [[knee["latency_T4"], pytest.approx(knee["acc"] * 100)]]
    assert f"trial {knee['number']}" in _by_gid(ax, "pick").get_label()
    under = pick(front, "best-acc-under", Limits.parse(["T4=0.3"]))
    (ax,) = static_figure(front, under, "best-acc-under").axes
    star = _by_gid(ax, "pick")
    assert star.get_offsets().tolist() == [[under["latency_T4"], pytest.approx(under["acc"] * 100)]]
    assert "best-acc-under" in star.get_label()


@pytest.mark.parametrize("n", [3, 4])
def test_three_or_more_objectives_give_a_pairwise_matrix_of_2d_fronts(n):
    names = ("acc", "latency_T4", "memory_kib", "macs")[:n]
    directions = ("maximize", "minimize", "minimize", "minimize")[:n]
    rows = _random_rows(6, n=25)
    study = _study([(v[:n], a, c) for v, a, c in rows], directions, names)
    fig = static_figure(pareto_front(study))
    assert len(fig.axes) == math.comb(n, 2)
    pairs = set()
    for ax in fig.axes:
        x, y = (next(m for m in names if SHOWN_LABEL[m] in label) for label in (ax.get_xlabel(), ax.get_ylabel()))
        pairs.add(frozenset((x, y)))
        maxim = dict(zip(names, (d == "maximize" for d in directions)))
        _check_staircase(ax, [(a, b) for _, a, b in _feasible_values(study, x, y)], maxim[x], maxim[y])
    assert pairs == {frozenset(p) for p in combinations(names, 2)}  # every pair once



def test_html_references_plotly_once_small_or_embeds_it_offline(tmp_path):
    study = _two(_random_rows(7, n=40))
    front = pareto_front(study)
    small, full = plot_front(front, tmp_path / "f.html"), plot_front(front, tmp_path / "o.html", offline=True)
    text = small.read_text()
    assert small.stat().st_size < 60_000 and len(re.findall(r"<script[^>]+cdn\.plot\.ly", text)) == 1
    assert "plotly.js v" not in text
    offline = full.read_text()
    assert offline.count("* plotly.js v") == 1 and not re.search(r"<script[^>]+src=", offline)
    assert full.stat().st_size > 3_000_000  # the library itself, once
    # Hover: the spec and each value with its unit; accuracy bars in % (value − low, high − value).
    fig = html_figure(front)
    trace, row = next(t for t in fig.data if t.name == "front"), front.rows[0]
    assert trace.hovertext[0].startswith(f"trial {row['number']}<br>{row['spec']}<br>")
    assert f"{row['latency_T4']:.4g} ms" in trace.hovertext[0] and f"{row['acc'] * 100:.4g} %" in trace.hovertext[0]
    assert list(trace.error_y.array) == pytest.approx([(r["acc_high"] - r["acc"]) * 100 for r in front.rows])
    stairs = next(t for t in fig.data if t.line.shape == "hv")
    assert list(stairs.x) == sorted(stairs.x)  # best latency first: 'hv' is a post step
    assert sorted(map(int, stairs.text)) == sorted(r["number"] for r in front.rows)  # trial labels


def test_svg_and_png_are_written_and_bad_targets_refused_before_writing(tmp_path):
    front = pareto_front(_two(_random_rows(8)))
    assert plot_front(front, tmp_path / "f.svg").read_text().lstrip().startswith("<?xml")
    assert plot_front(front, tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for target, offline, words in [(tmp_path / "f.pdf", False, ".svg, .png or .html"),
                                   (tmp_path / "no" / "f.png", False, "does not exist"),
                                   (tmp_path / "g.png", True, "only an HTML plot"), (None, True, "HTML plot")]:
        with pytest.raises(SearchError, match=re.escape(words)):
            check_plot_target(target, offline)
    with pytest.raises(SearchError):
        plot_front(front, tmp_path / "g.png", offline=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "f.svg"]  # nothing half-written


def test_cli_plot_highlights_the_pick_it_prints(tmp_path, capsys):
    from nas.cli import main

    db = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(storage=db, study_name="s", directions=["maximize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["acc", "latency_T4"])
    for values, attrs, cons in _random_rows(9, n=12):
        study.add_trial(optuna.trial.create_trial(values=list(values[:2]), user_attrs=attrs, constraints=cons))
    html = tmp_path / "f.html"
    code = main(["pareto", "--storage", db, "--plot", str(html), "--pick", "best-acc-under", "--under", "T4=0.3",
                 "-f", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert f"pick (best-acc-under): trial {out['pick']['number']}" in html.read_text()
    assert main(["pareto", "--storage", db, "--offline", "--plot", str(tmp_path / "x.png")]) == 1
    assert "only an HTML plot" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


def test_accuracy_bars_are_drawn_and_bars_wider_than_the_plot_are_named_instead():
    # Latency intervals 10× wider than the latencies' spread (a predictor outside its table): not drawn, named.
    rows = [((acc, lat), {"spec_hash": str(i), "acc_low": acc - 0.03, "acc_high": acc + 0.01,
                          "latency_T4_low": 0.02, "latency_T4_high": 2.0}, {"c": 0.0})
            for i, (acc, lat) in enumerate([(0.90, 0.20), (0.93, 0.25), (0.95, 0.30), (0.91, 0.28)])]
    fig = static_figure(pareto_front(_study(rows, ("maximize", "minimize"), ("acc", "latency_T4"))))
    (ax,) = fig.axes
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert bars and all(c.has_yerr and not c.has_xerr for c in bars)
    ends = sorted(tuple(np.round(seg[:, 1], 6)) for c in bars for seg in c.lines[2][0].get_segments())
    assert ends == sorted((round((a - 0.03) * 100, 6), round((a + 0.01) * 100, 6)) for (a, _), _, _ in rows)
    assert "predicted latency on T4: 90 % intervals up to 0.02–2 ms, too wide to draw" in fig._suptitle.get_text()
