"""The HTML (plotly) plot of a front: the panels of :mod:`nas.pareto_plot`, with hover text.

Same layers, staircase, labels and titles as the static plot (:func:`nas.pareto_plot.front_panels`); each point's
hover shows its trial, spec, preset, every objective with its interval, the rung in a multi-fidelity study, ties
and why a trial is infeasible. :func:`nas.pareto_plot.plot_front` writes it (plotly.js from its CDN or embedded).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nas.pareto import Front
from nas.pareto_plot import Layer, Scale, axis_scales, figure_title, front_panels, off_stairs, point_name
from nas.uncertainty import interval

if TYPE_CHECKING:
    from plotly.graph_objects import Figure as PlotlyFigure

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
                                     text=[point_name(row) for row in panel.stairs.rows], textposition="top right",
                                     textfont={"size": 9}, legendgroup="stairs", showlegend="stairs" not in legend,
                                     hoverinfo="skip"), row=r, col=c)
            legend.add("stairs")
        if off := off_stairs(panel):
            fig.add_trace(go.Scatter(x=[x for _, x, _ in off], y=[y for _, _, y in off], mode="text",
                                     text=[point_name(row) for row, _, _ in off], textposition="top right",
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
    fig.update_layout(title=figure_title(front, panels).replace("\n", "<br>"), template="plotly_white",
                      margin={"t": 120}, height=600 if side == 1 else 420 * side + 120,
                      width=None if side == 1 else 480 * side)
    return fig
