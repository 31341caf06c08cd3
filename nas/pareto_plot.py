"""Plots of a front: PNG (matplotlib) or self-contained HTML (plotly, the JS embedded: no network to view).

Two objectives give a 2-D plot, three or more a 3-D plot of the first three. Front points are coloured
and joined, dominated feasible trials are grey, and trials whose spec is a preset carry its name. Every
point with an interval (accuracy: bootstrap; latency: the predictor's; see :mod:`nas.uncertainty`) has
error bars on that axis, and front members tied with another member are ringed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas.objectives import SearchError
from nas.pareto import Front
from nas.uncertainty import interval
from search_space.io import atomic_path

SUFFIXES = (".png", ".html")


def _axes(front: Front) -> list[str]:
    return front.metric_names[:3]


def _label(front: Front, index: int) -> str:
    name = front.metric_names[index]
    bars = "; bars: 90% interval" if name in front.interval_names else ""
    return f"{name} ({'higher' if front.directions[index] == 'maximize' else 'lower'} is better{bars})"


def _coords(rows: Sequence[dict[str, Any]], axes: Sequence[str]) -> list[list[float]]:
    return [[float(r[a]) for r in rows] for a in axes]


def _errors(rows: Sequence[dict[str, Any]], axis: str) -> list[list[float]] | None:
    """``[below, above]``: each row's distance from its value to the ends of its interval on ``axis``
    (0 where a row has none); None when no row has an interval there."""
    if not any(f"{axis}_low" in r for r in rows):
        return None
    spans = [interval(r, axis) for r in rows]
    values = [float(r[axis]) for r in rows]
    return [[max(0.0, v - s.low) for v, s in zip(values, spans)], [max(0.0, s.high - v) for v, s in zip(values, spans)]]


def _tied(front: Front) -> list[dict[str, Any]]:
    return [r for r in front.rows if r.get("tied_with")]


def plot_front(front: Front, path: str | Path) -> Path:
    """Write the plot of ``front`` to ``path`` (``.png`` or ``.html``, atomically); return the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise SearchError(f"cannot plot to {path.name}", "give a file ending in .png or .html")
    if not path.parent.is_dir():
        raise SearchError(f"folder {path.parent} does not exist", "create it first")
    if len(front.metric_names) < 2:
        raise SearchError("a front plot needs at least two objectives")
    with atomic_path(path) as tmp:
        (_png if suffix == ".png" else _html)(front, tmp)
    return path


def _title(front: Front) -> str:
    return (f"{front.study_name}: {len(front.rows)} front points, {len(front.dominated)} dominated, "
            f"hypervolume {front.hypervolume:.4f}")


def _png(front: Front, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = _axes(front)
    three = len(axes) == 3
    fig = plt.figure(figsize=(8, 6))
    ax = fig.add_subplot(projection="3d") if three else fig.add_subplot()
    for rows, colour in ((front.dominated, "0.8"), (front.rows, "tab:red")):
        bars = {f"{k}err": _errors(rows, a) for k, a in zip("xyz", axes)}
        if rows and any(v is not None for v in bars.values()):
            ax.errorbar(*_coords(rows, axes), **bars, fmt="none", ecolor=colour, elinewidth=0.8, capsize=2,
                        alpha=0.7)
    if front.dominated:
        ax.scatter(*_coords(front.dominated, axes), c="0.75", s=18, label="dominated")
    if front.rows:
        ax.scatter(*_coords(front.rows, axes), c="tab:red", s=36, label="front", zorder=3)
        if not three:
            ax.plot(*_coords(front.rows, axes), c="tab:red", lw=1, alpha=0.6)
    if _tied(front):
        ax.scatter(*_coords(_tied(front), axes), s=140, facecolors="none", edgecolors="k", linewidths=0.8,
                   label="tied with another member (within noise)", zorder=4)
    for r in front.rows + front.dominated:
        if r.get("preset"):
            ax.text(*[float(r[a]) for a in axes], f" {r['preset']}", fontsize=8)
    ax.set_xlabel(_label(front, 0))
    ax.set_ylabel(_label(front, 1))
    if three:
        ax.set_zlabel(_label(front, 2))
    ax.set_title(_title(front), fontsize=10)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120, format="png")
    plt.close(fig)


def _hover(rows: Sequence[dict[str, Any]]) -> list[str]:
    return [f"trial {r['number']}<br>{r.get('spec', '')}" + (f"<br>preset {r['preset']}" if r.get("preset") else "")
            + (f"<br>tied with {', '.join(map(str, r['tied_with']))}" if r.get("tied_with") else "")
            for r in rows]


def _plotly_errors(rows: Sequence[dict[str, Any]], axes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``error_x`` / ``error_y`` / ``error_z`` of a plotly trace (asymmetric), for the axes with intervals."""
    out = {}
    for key, axis in zip("xyz", axes):
        bars = _errors(rows, axis)
        if bars is not None:
            out[f"error_{key}"] = {"type": "data", "symmetric": False, "array": bars[1], "arrayminus": bars[0],
                                   "thickness": 1}
    return out


def _html(front: Front, out: Path) -> None:
    import plotly.graph_objects as go

    axes = _axes(front)
    three = len(axes) == 3
    trace = go.Scatter3d if three else go.Scatter
    fig = go.Figure()
    for rows, name, colour, mode in ((front.dominated, "dominated", "lightgrey", "markers"),
                                     (front.rows, "front", "crimson", "markers" if three else "lines+markers")):
        if not rows:
            continue
        xyz = dict(zip("xyz", _coords(rows, axes)))
        fig.add_trace(trace(**xyz, mode=mode, name=name, marker={"color": colour}, text=_hover(rows),
                            hoverinfo="text+x+y" + ("+z" if three else ""), **_plotly_errors(rows, axes)))
    if _tied(front):
        xyz = dict(zip("xyz", _coords(_tied(front), axes)))
        fig.add_trace(trace(**xyz, mode="markers", name="tied with another member (within noise)",
                            marker={"size": 16, "color": "rgba(0,0,0,0)", "line": {"width": 1, "color": "black"}},
                            hoverinfo="skip"))
    presets = [r for r in front.rows + front.dominated if r.get("preset")]
    if presets:
        xyz = dict(zip("xyz", _coords(presets, axes)))
        fig.add_trace(trace(**xyz, mode="text", text=[r["preset"] for r in presets], name="presets",
                            textposition="top center"))
    labels = [_label(front, i) for i in range(len(axes))]
    if three:
        fig.update_layout(scene={"xaxis_title": labels[0], "yaxis_title": labels[1], "zaxis_title": labels[2]})
    else:
        fig.update_layout(xaxis_title=labels[0], yaxis_title=labels[1])
    fig.update_layout(title=_title(front))
    fig.write_html(str(out), include_plotlyjs=True, full_html=True)
