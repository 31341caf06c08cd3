"""Plots of a front: PNG (matplotlib) or self-contained HTML (plotly, the JS embedded: no network to view).

Two objectives give a 2-D plot, three or more a 3-D plot of the first three. Front points are coloured
and joined, dominated feasible trials are grey, and trials whose spec is a preset carry its name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas.objectives import SearchError
from nas.pareto import Front
from search_space.io import atomic_path

SUFFIXES = (".png", ".html")


def _axes(front: Front) -> list[str]:
    return front.metric_names[:3]


def _label(name: str, direction: str) -> str:
    return f"{name} ({'higher' if direction == 'maximize' else 'lower'} is better)"


def _coords(rows: Sequence[dict[str, Any]], axes: Sequence[str]) -> list[list[float]]:
    return [[float(r[a]) for r in rows] for a in axes]


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
    if front.dominated:
        ax.scatter(*_coords(front.dominated, axes), c="0.75", s=18, label="dominated")
    if front.rows:
        ax.scatter(*_coords(front.rows, axes), c="tab:red", s=36, label="front", zorder=3)
        if not three:
            ax.plot(*_coords(front.rows, axes), c="tab:red", lw=1, alpha=0.6)
    for r in front.rows + front.dominated:
        if r.get("preset"):
            ax.text(*[float(r[a]) for a in axes], f" {r['preset']}", fontsize=8)
    ax.set_xlabel(_label(axes[0], front.directions[0]))
    ax.set_ylabel(_label(axes[1], front.directions[1]))
    if three:
        ax.set_zlabel(_label(axes[2], front.directions[2]))
    ax.set_title(_title(front), fontsize=10)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120, format="png")
    plt.close(fig)


def _hover(rows: Sequence[dict[str, Any]]) -> list[str]:
    return [f"trial {r['number']}<br>{r.get('spec', '')}" + (f"<br>preset {r['preset']}" if r.get("preset") else "")
            for r in rows]


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
                            hoverinfo="text+x+y" + ("+z" if three else "")))
    presets = [r for r in front.rows + front.dominated if r.get("preset")]
    if presets:
        xyz = dict(zip("xyz", _coords(presets, axes)))
        fig.add_trace(trace(**xyz, mode="text", text=[r["preset"] for r in presets], name="presets",
                            textposition="top center"))
    labels = [_label(a, d) for a, d in zip(axes, front.directions)]
    if three:
        fig.update_layout(scene={"xaxis_title": labels[0], "yaxis_title": labels[1], "zaxis_title": labels[2]})
    else:
        fig.update_layout(xaxis_title=labels[0], yaxis_title=labels[1])
    fig.update_layout(title=_title(front))
    fig.write_html(str(out), include_plotlyjs=True, full_html=True)
