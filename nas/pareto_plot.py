"""Plots of a front that a person can act on: PNG/SVG (matplotlib) or HTML (plotly).

* **Axes** carry units (:func:`axis_scale`, the one owner of "objective → label, unit, scale"): accuracy
  in %, latency in ms on its target, MACs in M or G, parameters in M, memory in KiB or MiB. Costs go on
  x and maximized objectives on y.
* **Two objectives, one panel; three or more, a pairwise matrix**: one panel per pair of objectives,
  each with that pair's own 2-D front (the candidates no other candidate beats on both).
* **The front** is drawn as its attainment surface, a staircase (``where="post"`` with the points
  ordered from the best x to the worst, so each step holds the y that is attained up to the next
  point); front points are red and labelled with their trial numbers (and rungs, ``21 r1``, in a
  multi-fidelity study, where a member compared at a lower rung can sit below the staircase; HTML: hover
  shows the spec, every value and the rung), dominated feasible trials are small grey dots.
* **Infeasible trials** (never trained, see :mod:`nas.search`) are hollow circles at their real costs;
  their recorded accuracy (0) is no measurement, so on an accuracy axis they sit on a strip beyond the
  worst measured value. Feasible trials outside the limits given to the front are hollow squares.
* **The pick** (:func:`nas.pareto.pick`: the knee unless another pick is given) is a star; front members
  tied with another member are ringed; 90 % intervals (accuracy: bootstrap, latency: the predictor's)
  are error bars. The axes span the points; a bar wider than the plot runs off its edge.
* **HTML** references plotly.js from its CDN (a small file; viewing needs the network) or, offline,
  embeds it once (~4.8 MB; views anywhere).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.objectives import MAXIMIZE, METRIC, SearchError
from nas.pareto import Front, non_dominated, pick, spec_key, to_minimization
from nas.uncertainty import interval
from search_space.io import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from plotly.graph_objects import Figure as PlotlyFigure

SUFFIXES = (".png", ".svg", ".html")
#: Metric names whose value is a trained model's score (0 when the trial was never trained).
ACCURACY_METRICS = tuple(METRIC[k] for k in MAXIMIZE)
_MARGIN = 0.07  # share of an axis' span left around the points
_WIDE = 3.0  # error bars wider than this many times the points' span are not drawn (a note says so)
_NAMED = {"macs": "MACs", "params": "parameters", "memory_kib": "peak on-chip memory"}
_RED, _GREY, _HOLLOW = "tab:red", "0.62", "tab:orange"
_INFEASIBLE = {False: "infeasible, never trained",
               True: "infeasible, never trained (no accuracy: on a strip past the worst)"}


# -- objective → axis --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scale:
    """How one objective is shown: ``value × factor`` in ``unit``, and which way is better."""

    name: str
    label: str
    unit: str
    factor: float
    direction: str

    @property
    def measured_only_when_trained(self) -> bool:
        """Whether an untrained (infeasible) trial's value on this axis is no measurement (accuracy)."""
        return self.name in ACCURACY_METRICS

    def title(self) -> str:
        """Axis title: ``predicted latency on T4 (ms, lower is better)``."""
        better = "higher" if self.direction == "maximize" else "lower"
        return f"{self.label} ({self.unit + ', ' if self.unit else ''}{better} is better)"

    def show(self, value: float) -> float:
        """A stored value in display units."""
        return float(value) * self.factor

    def text(self, value: float) -> str:
        """``95.2 %``, ``0.2503 ms``: a stored value as a person reads it."""
        return f"{self.show(value):.4g}{' ' + self.unit if self.unit else ''}"


def axis_scale(name: str, direction: str, values: Sequence[float] = ()) -> Scale:
    """The label, unit and scale of objective ``name`` (a study's metric name); ``values`` choose between
    M and G (MACs) or KiB and MiB (memory). Unknown names are shown as they are."""
    top = max((abs(float(v)) for v in values), default=0.0)
    if name in ACCURACY_METRICS:
        what = "top-1 accuracy" if name == "acc" else "balanced accuracy"
        return Scale(name, f"{what} (proxy, selection split)", "%", 100.0, direction)
    if name.startswith("latency_"):
        return Scale(name, f"predicted latency on {name.removeprefix('latency_')}", "ms", 1.0, direction)
    if name == "macs":
        return Scale(name, _NAMED[name], *(("G", 1e-9) if top >= 1e9 else ("M", 1e-6)), direction)
    if name == "params":
        return Scale(name, _NAMED[name], "M", 1e-6, direction)
    if name == "memory_kib":
        return Scale(name, _NAMED[name], *(("MiB", 1 / 1024) if top >= 1024 else ("KiB", 1.0)), direction)
    return Scale(name, name, "", 1.0, direction)


# -- what is drawn, backend-free ---------------------------------------------------------------------------
@dataclass
class Layer:
    """One kind of marker in one panel: rows and their display coordinates (and error bars)."""

    label: str
    rows: list[dict[str, Any]]
    x: list[float]
    y: list[float]
    xerr: list[list[float]] | None = None
    yerr: list[list[float]] | None = None


@dataclass
class Panel:
    """One pair of objectives: its layers, its own 2-D front (best x first) and axis ranges."""

    x: Scale
    y: Scale
    layers: dict[str, Layer] = field(default_factory=dict)
    stairs: Layer | None = None
    notes: list[str] = field(default_factory=list)
    xlim: tuple[float, float] = (0.0, 1.0)
    ylim: tuple[float, float] = (0.0, 1.0)


def plot_layout(front: Front) -> list[tuple[int, int]]:
    """The objective pairs ``(x index, y index)`` of the panels: costs on x, maximized objectives on y.

    Two objectives give one pair; ``n`` give all ``n·(n−1)/2``, in the order of a lower-triangular matrix.
    """
    order = sorted(range(len(front.metric_names)), key=lambda i: front.directions[i] == "maximize")
    return [(order[c], order[r]) for r in range(1, len(order)) for c in range(r)]


def _excluded(front: Front) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Infeasible trials and feasible ones outside the front's limits, each spec once (no duplicates)."""
    seen = {r.get("spec_hash") for r in front.rows + front.dominated}
    infeasible, outside = [], []
    for r in sorted(front.excluded, key=lambda r: (-r.get("rung", 0), r["number"])):  # highest rung first
        key = spec_key(r)
        if "duplicate_of" in r or key in seen:
            continue
        seen.add(key)
        (outside if r["feasible"] else infeasible).append(r)
    return infeasible, outside


def _bars(rows: Sequence[dict[str, Any]], scale: Scale) -> list[list[float]] | None:
    """``[below, above]`` in display units: each row's distance to the ends of its interval (0 where it has
    none); None when no row has an interval on this axis."""
    if not any(f"{scale.name}_low" in r for r in rows):
        return None
    spans = [interval(r, scale.name) for r in rows]
    values = [float(r[scale.name]) for r in rows]
    return [[scale.factor * max(0.0, v - s.low) for v, s in zip(values, spans)],
            [scale.factor * max(0.0, s.high - v) for v, s in zip(values, spans)]]


def _span(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    pad = _MARGIN * (hi - lo) if hi > lo else 0.05 * abs(lo) or 0.5
    return lo - pad, hi + pad


def _layer(label: str, rows: list[dict[str, Any]], xs: Scale, ys: Scale, bars: bool = False,
           strip: tuple[bool, bool] = (False, False)) -> Layer:
    """A layer of ``rows``; an axis in ``strip`` gets NaN, placed on the strip once the ranges are known."""
    x = [math.nan if strip[0] else xs.show(r[xs.name]) for r in rows]
    y = [math.nan if strip[1] else ys.show(r[ys.name]) for r in rows]
    if not bars:
        return Layer(label, rows, x, y)
    return Layer(label, rows, x, y, _bars(rows, xs), _bars(rows, ys))


def _panel(front: Front, xs: Scale, ys: Scale, picked: dict[str, Any] | None, picked_by: str) -> Panel:
    panel = Panel(xs, ys)
    infeasible, outside = _excluded(front)
    strips = (xs.measured_only_when_trained, ys.measured_only_when_trained)
    candidates = front.rows + front.dominated
    layers = {
        "dominated": _layer("dominated (feasible)", front.dominated, xs, ys, bars=True),
        "front": _layer("front", front.rows, xs, ys, bars=True),
        "outside": _layer("outside the limits", outside, xs, ys),
        "tied": _layer("tied with another member (within noise)", [r for r in front.rows if r.get("tied_with")],
                       xs, ys),
    }
    if infeasible and not all(strips):  # two accuracy axes: nothing to place
        layers["infeasible"] = _layer(_INFEASIBLE[any(n in ACCURACY_METRICS for n in front.metric_names)],
                                      infeasible, xs, ys, strip=strips)
    if picked is not None:
        layers["pick"] = _layer(f"pick ({picked_by}): trial {picked['number']}", [picked], xs, ys)
    panel.layers = {k: v for k, v in layers.items() if v.rows}
    if any("rung" in r for r in candidates):  # multi-fidelity: only front members (judged across rungs) step
        candidates = front.rows
    if candidates:
        pts = to_minimization([[r[xs.name], r[ys.name]] for r in candidates],
                              [xs.direction, ys.direction])
        best = [candidates[i] for i in np.flatnonzero(non_dominated(pts))]
        best.sort(key=lambda r: (-1 if xs.direction == "maximize" else 1) * float(r[xs.name]))
        panel.stairs = _layer("front (attainment surface)", best, xs, ys)
    if panel.layers:
        panel.xlim, panel.ylim = _axis_range(panel, "x"), _axis_range(panel, "y")
        if "infeasible" in panel.layers:
            _place_on_strip(panel, "x" if strips[0] else "y" if strips[1] else "")
    return panel


def _place_on_strip(panel: Panel, axis: str) -> None:
    """Put the untrained trials on a strip just past the worst end of accuracy axis ``axis`` (widened to hold it)."""
    if not axis:
        return
    layer, scale = panel.layers["infeasible"], panel.x if axis == "x" else panel.y
    lo, hi = panel.xlim if axis == "x" else panel.ylim
    extra = _MARGIN * (hi - lo)
    worst, wider = (lo, (lo - extra, hi)) if scale.direction == "maximize" else (hi, (lo, hi + extra))
    setattr(layer, axis, [worst] * len(layer.rows))
    setattr(panel, f"{axis}lim", wider)


def _axis_range(panel: Panel, axis: str) -> tuple[float, float]:
    """The range of ``axis``: its points, and their error bars unless one is more than :data:`_WIDE` times
    wider than the points' span; such bars would cross the plot edge to edge and hide the points, so they are
    left out and a note says how wide they are (the HTML hover still shows each interval)."""
    scale = panel.x if axis == "x" else panel.y
    values = [v for layer in panel.layers.values() for v in getattr(layer, axis) if not math.isnan(v)] or [0.0]
    lo, hi = min(values), max(values)
    barred = [layer for layer in panel.layers.values() if getattr(layer, f"{axis}err") is not None]
    ends = [(v - below, v + above) for layer in barred
            for v, below, above in zip(getattr(layer, axis), *getattr(layer, f"{axis}err"))]
    if ends and hi > lo and max(b - a for a, b in ends) > _WIDE * (hi - lo):
        panel.notes.append(f"{scale.label}: 90 % intervals up to {min(a for a, _ in ends):.3g}–"
                           f"{max(b for _, b in ends):.3g} {scale.unit}, too wide to draw")
        for layer in barred:
            setattr(layer, f"{axis}err", None)
    elif ends:
        lo, hi = min(lo, *(a for a, _ in ends)), max(hi, *(b for _, b in ends))
    return _span([lo, hi])


def axis_scales(front: Front) -> list[Scale]:
    """The :class:`Scale` of each objective of ``front``, in objective order (units fit every trial's values)."""
    rows = front.rows + front.dominated + front.excluded
    return [axis_scale(n, d, [float(r[n]) for r in rows if n in r])
            for n, d in zip(front.metric_names, front.directions)]


def front_panels(front: Front, picked: dict[str, Any] | None = None, picked_by: str = "knee") -> list[Panel]:
    """The panels of a plot of ``front`` (one per pair of :func:`plot_layout`); ``picked`` defaults to the knee."""
    if len(front.metric_names) < 2:
        raise SearchError("a front plot needs at least two objectives")
    if picked is None and front.rows:
        picked, picked_by = pick(front, "knee"), "knee"
    scales = axis_scales(front)
    return [_panel(front, scales[i], scales[j], picked, picked_by) for i, j in plot_layout(front)]


def _title(front: Front, panels: Sequence[Panel]) -> str:
    drawn = any(layer.xerr or layer.yerr for p in panels for layer in p.layers.values())
    bars = "; bars: 90 % intervals" if drawn else ""
    notes = "".join(f"\n{note}" for note in dict.fromkeys(n for p in panels for n in p.notes))
    infeasible = len(_excluded(front)[0])
    return (f"{front.study_name}\n{len(front.rows)} on the front, {len(front.dominated)} dominated, "
            f"{infeasible} infeasible · hypervolume {front.hypervolume:.4f}{bars}{notes}")


# -- writing -----------------------------------------------------------------------------------------------
def check_plot_target(path: str | Path | None, offline: bool = False) -> Path:
    """The plot file ``path``, checked before anything is computed or written (suffix, folder, offline)."""
    if path is None:
        raise SearchError("only an HTML plot embeds plotly.js", "also name a .html file for the plot")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise SearchError(f"cannot plot to {path.name}", "give a file ending in .svg, .png or .html")
    if not path.parent.is_dir():
        raise SearchError(f"folder {path.parent} does not exist", "create it first")
    if offline and suffix != ".html":
        raise SearchError(f"{path.name}: only an HTML plot embeds plotly.js", "write the plot to a .html file")
    return path


def plot_front(front: Front, path: str | Path, *, picked: dict[str, Any] | None = None,
               picked_by: str = "knee", offline: bool = False) -> Path:
    """Write the plot of ``front`` to ``path`` (``.png``, ``.svg`` or ``.html``, atomically); return the path.

    ``picked`` is the row to highlight (:func:`nas.pareto.pick`'s answer, chosen ``picked_by``; default the
    knee); ``offline`` embeds plotly.js in an HTML file instead of referencing its CDN.
    """
    path = check_plot_target(path, offline)
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        if suffix == ".html":
            html_figure(front, picked, picked_by).write_html(
                str(tmp), include_plotlyjs=True if offline else "cdn", full_html=True,
                config={"displaylogo": False})
        else:
            import matplotlib.pyplot as plt

            fig = static_figure(front, picked, picked_by)
            fig.savefig(tmp, dpi=110, format=suffix[1:])
            plt.close(fig)
    return path


# -- matplotlib --------------------------------------------------------------------------------------------
_STYLE: dict[str, dict[str, Any]] = {
    "dominated": {"s": 14, "c": _GREY, "zorder": 2},
    "front": {"s": 34, "c": _RED, "zorder": 4},
    "outside": {"s": 26, "marker": "s", "facecolors": "none", "edgecolors": "0.45", "linewidths": 0.9},
    "infeasible": {"s": 30, "marker": "o", "facecolors": "none", "edgecolors": _HOLLOW, "linewidths": 1.0},
    "tied": {"s": 150, "facecolors": "none", "edgecolors": "k", "linewidths": 0.7, "zorder": 5},
    "pick": {"s": 260, "marker": "*", "c": "gold", "edgecolors": "k", "linewidths": 0.9, "zorder": 6},
}


def static_figure(front: Front, picked: dict[str, Any] | None = None, picked_by: str = "knee") -> Figure:
    """The matplotlib figure of :func:`plot_front`: one panel, or a lower-triangular matrix of C(n, 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = front_panels(front, picked, picked_by)
    side = len(front.metric_names) - 1
    fig, grid = plt.subplots(side, side, figsize=(8.4, 6.2) if side == 1 else (4.3 * side, 3.9 * side),
                             squeeze=False)
    layout = [(r - 1, c) for r in range(1, side + 1) for c in range(r)]
    for (r, c), panel in zip(layout, panels):
        _draw(grid[r][c], panel)
    legend = {label: handle for ax in fig.axes for handle, label in zip(*ax.get_legend_handles_labels())}
    fig.suptitle(_title(front, panels), fontsize=10)
    fig.tight_layout()
    if side == 1:
        grid[0][0].legend(legend.values(), legend.keys(), loc="best", fontsize=8)
        return fig
    corner = grid[0][side - 1].get_position()  # the empty upper triangle holds the legend
    for r in range(side):
        for c in range(r + 1, side):
            fig.delaxes(grid[r][c])
    fig.legend(legend.values(), legend.keys(), loc="upper right", fontsize=9, bbox_to_anchor=(corner.x1, corner.y1))
    return fig


def _point_name(row: dict[str, Any]) -> str:
    """A point's label: its trial number, preset, and rung in a multi-fidelity study (``21 r1``)."""
    return (f"{row['number']}" + (f" {row['preset']}" if row.get("preset") else "")
            + (f" r{row['rung']}" if "rung" in row else ""))


def _named_points(panel: Panel) -> list[tuple[dict[str, Any], float, float]]:
    """The labelled points of a panel: the staircase's, then front members off it (in a multi-fidelity
    study a member judged at a lower common rung can sit below the staircase of displayed values)."""
    out = list(zip(panel.stairs.rows, panel.stairs.x, panel.stairs.y)) if panel.stairs is not None else []
    return out + _off_stairs(panel)


def _off_stairs(panel: Panel) -> list[tuple[dict[str, Any], float, float]]:
    """Front members of a multi-fidelity study that are not on the panel's staircase."""
    front, named = panel.layers.get("front"), {r["number"] for r in (panel.stairs.rows if panel.stairs else [])}
    if front is None:
        return []
    return [(r, x, y) for r, x, y in zip(front.rows, front.x, front.y) if r["number"] not in named and "rung" in r]


def _draw(ax: Any, panel: Panel) -> None:
    for key in ("dominated", "front"):
        layer = panel.layers.get(key)
        if layer and (layer.xerr or layer.yerr):
            ax.errorbar(layer.x, layer.y, xerr=layer.xerr, yerr=layer.yerr, fmt="none", capsize=2, alpha=0.5,
                        elinewidth=0.8, ecolor=_STYLE[key]["c"], zorder=1)
    if panel.stairs is not None:
        ax.step(panel.stairs.x, panel.stairs.y, where="post", color=_RED, lw=1.3, alpha=0.8,
                label=panel.stairs.label, gid="stairs", zorder=3)
    for row, x, y in _named_points(panel):
        ax.annotate(_point_name(row), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7, zorder=7)
    for key, layer in panel.layers.items():
        ax.scatter(layer.x, layer.y, label=layer.label, gid=key, **_STYLE[key])
    ax.set_xlim(*panel.xlim)
    ax.set_ylim(*panel.ylim)
    ax.set_xlabel(panel.x.title(), fontsize=9)
    ax.set_ylabel(panel.y.title(), fontsize=9)
    ax.grid(alpha=0.25)


# -- plotly ------------------------------------------------------------------------------------------------
_MARKER: dict[str, dict[str, Any]] = {
    "dominated": {"color": "lightgrey", "size": 6},
    "front": {"color": "crimson", "size": 9},
    "outside": {"symbol": "square-open", "color": "grey", "size": 8},
    "infeasible": {"symbol": "circle-open", "color": "darkorange", "size": 8},
    "tied": {"symbol": "circle-open", "color": "black", "size": 18},
    "pick": {"symbol": "star", "color": "gold", "size": 18, "line": {"color": "black", "width": 1}},
}


def _hover(rows: Sequence[dict[str, Any]], scales: Sequence[Scale]) -> list[str]:
    """Hover text per row: trial, spec, preset, every objective with its interval, ties, why infeasible."""
    out = []
    for r in rows:
        lines = [f"trial {r['number']}" + (f" ({r['preset']})" if r.get("preset") else ""), str(r.get("spec", ""))]
        for s in scales:
            span = interval(r, s.name)
            bounds = f" [{s.show(span.low):.4g}–{s.show(span.high):.4g}]" if span.low != span.high else ""
            untrained = s.measured_only_when_trained and not r.get("feasible", True)
            lines.append(f"{s.label}: " + ("not trained" if untrained else s.text(r[s.name]) + bounds))
        if "rung" in r:
            lines.append(f"rung {r['rung']} ({r.get('rung_epochs')} epochs)")
        if r.get("tied_with"):
            lines.append(f"tied with {', '.join(map(str, r['tied_with']))}")
        if r.get("infeasible_reason"):
            lines.append(f"infeasible: {r['infeasible_reason']}")
        out.append("<br>".join(lines))
    return out


def _errors(layer: Layer) -> dict[str, dict[str, Any]]:
    return {f"error_{k}": {"type": "data", "symmetric": False, "array": bars[1], "arrayminus": bars[0],
                           "thickness": 1}
            for k, bars in (("x", layer.xerr), ("y", layer.yerr)) if bars is not None}


def html_figure(front: Front, picked: dict[str, Any] | None = None, picked_by: str = "knee") -> PlotlyFigure:
    """The plotly figure of :func:`plot_front` (the same panels as :func:`static_figure`), with hover text."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = front_panels(front, picked, picked_by)
    side, scales = len(front.metric_names) - 1, axis_scales(front)
    fig = make_subplots(rows=side, cols=side, horizontal_spacing=0.08, vertical_spacing=0.1)
    layout = [(r, c) for r in range(1, side + 1) for c in range(1, r + 1)]
    legend: set[str] = set()  # each kind of trace in the legend once, whichever panel has it first
    for (r, c), panel in zip(layout, panels):
        if panel.stairs is not None:
            fig.add_trace(go.Scatter(x=panel.stairs.x, y=panel.stairs.y, mode="lines+text", line_shape="hv",
                                     line={"color": "crimson", "width": 1.5}, name=panel.stairs.label,
                                     text=[_point_name(row) for row in panel.stairs.rows], textposition="top right",
                                     textfont={"size": 9}, legendgroup="stairs", showlegend="stairs" not in legend,
                                     hoverinfo="skip"), row=r, col=c)
            legend.add("stairs")
        if off := _off_stairs(panel):
            fig.add_trace(go.Scatter(x=[x for _, x, _ in off], y=[y for _, _, y in off], mode="text",
                                     text=[_point_name(row) for row, _, _ in off], textposition="top right",
                                     textfont={"size": 9}, showlegend=False, hoverinfo="skip"), row=r, col=c)
        for key, layer in panel.layers.items():
            fig.add_trace(go.Scatter(
                x=layer.x, y=layer.y, mode="markers", name=layer.label, marker=_MARKER[key], legendgroup=key,
                showlegend=key not in legend, hoverinfo="skip" if key == "tied" else "text",
                hovertext=_hover(layer.rows, scales), **(_errors(layer) if key in ("front", "dominated") else {})),
                row=r, col=c)
            legend.add(key)
        fig.update_xaxes(title_text=panel.x.title(), range=list(panel.xlim), row=r, col=c)
        fig.update_yaxes(title_text=panel.y.title(), range=list(panel.ylim), row=r, col=c)
    fig.update_layout(title=_title(front, panels).replace("\n", "<br>"), template="plotly_white",
                      margin={"t": 120}, height=600 if side == 1 else 420 * side + 120,
                      width=None if side == 1 else 480 * side)
    return fig
