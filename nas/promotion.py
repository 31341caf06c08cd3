"""Which specs climb a rung: non-dominated sorting with crowding-distance ties (MO-ASHA's promotion rule).

Successive halving trains every spec at the first rung and promotes the best ``1/eta`` of each rung to the
next. With several objectives "best" is an order, not a value: specs are sorted by their non-dominated rank
(0 = on the rung's front, 1 = on the front once rank 0 is removed, …), and within one rank by crowding
distance, largest first (NSGA-II's rule: the extremes and the sparse parts of a front go first, so the
promoted set spreads along it), then by position (deterministic). Everything here is pure numpy on points
in *minimization* form (:func:`nas.pareto.to_minimization`), so the search and the replay benchmark
(``bench/fidelity_strategies.py``) share one rule.

The uncertainty of a rung's accuracy can be kept in view with ``noise``: points are ranked by their
optimistic values (each column moved ``noise`` towards better), so a spec whose accuracy is within one
standard error of making the cut is ranked as if it made it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from nas.pareto import common_rung_non_dominated, non_dominated


def nondominated_ranks(points: np.ndarray) -> np.ndarray:
    """Non-dominated rank of each row of ``points`` (n × k, minimized): 0 for the front, 1 for the front
    of the rest, and so on (repeated peeling; fine for the hundreds of specs of a rung)."""
    pts = np.asarray(points, dtype=float).reshape(len(points), -1)
    return _peel(len(pts), lambda left: non_dominated(pts[left]))


def common_rung_ranks(ladders: Sequence[Mapping[int, np.ndarray]]) -> np.ndarray:
    """:func:`nondominated_ranks` with dominance judged at the rung both specs reached
    (:func:`nas.pareto.common_rung_non_dominated`): specs measured at different rungs."""
    return _peel(len(ladders), lambda left: common_rung_non_dominated([ladders[i] for i in left]))


def _peel(n: int, front_of: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Ranks of ``n`` items by repeated peeling: ``front_of(indices)`` is the mask of the non-dominated ones
    among ``indices``; they get the current rank and are removed."""
    ranks = np.full(n, -1, dtype=int)
    left = np.arange(n)
    rank = 0
    while len(left):
        front = front_of(left)
        ranks[left[front]] = rank
        left = left[~front]
        rank += 1
    return ranks


def crowding_distance(points: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each row of ``points`` (one front, minimized): per objective, the gap
    between a point's two neighbours over the column's range, summed; the extremes of any column get
    ``inf``. Fewer than three points are all extremes."""
    pts = np.asarray(points, dtype=float).reshape(len(points), -1)
    n, k = pts.shape
    distance = np.zeros(n)
    if n < 3:
        distance[:] = np.inf
        return distance
    for j in range(k):
        order = np.argsort(pts[:, j], kind="stable")
        column = pts[order, j]
        distance[order[0]] = distance[order[-1]] = np.inf
        span = column[-1] - column[0]
        if span > 0:
            distance[order[1:-1]] += (column[2:] - column[:-2]) / span
    return distance


def promotion_order(points: np.ndarray, noise: np.ndarray | None = None,
                    ranks: np.ndarray | None = None) -> np.ndarray:
    """Indices of ``points`` (minimized) best first: by non-dominated rank, then by crowding distance within
    the rank (largest first), then by index. ``noise`` (same shape, ≥ 0, or None) is subtracted first:
    the ranking uses optimistic values. ``ranks`` replaces the ranks of ``points`` (specs measured at
    different rungs: :func:`common_rung_ranks`)."""
    pts = np.asarray(points, dtype=float).reshape(len(points), -1)
    if noise is not None:
        pts = pts - np.asarray(noise, dtype=float).reshape(pts.shape)
    ranks = nondominated_ranks(pts) if ranks is None else np.asarray(ranks, dtype=int)
    crowding = np.zeros(len(pts))
    for rank in np.unique(ranks):
        members = np.flatnonzero(ranks == rank)
        crowding[members] = crowding_distance(pts[members])
    return np.lexsort((np.arange(len(pts)), -crowding, ranks))


def promotion_quota(finished: int, eta: float) -> int:
    """How many of ``finished`` specs at a rung may climb: ``floor(finished / eta)``."""
    if eta <= 1:
        raise ValueError(f"eta must be greater than 1, got {eta}")
    return int(finished // eta)


def promotable(points: np.ndarray, eta: float, noise: np.ndarray | None = None) -> np.ndarray:
    """Indices of the rung's specs that earn promotion: the first ``floor(n / eta)`` of
    :func:`promotion_order` (asynchronous successive halving: re-evaluated as the rung fills up)."""
    return promotion_order(points, noise)[: promotion_quota(len(points), eta)]

