"""Prediction intervals by split-conformal calibration on honest leave-one-out residuals.

Nominal level: :data:`COVERAGE` = 90 %. For each measured point ``i`` of a device the fit already computes
its leave-one-out prediction (the point, and its architecture on every other device, removed from the
prior); its *score* is

    e_i = |ln(pred_i / y_i)| / (1 + d_i)

where ``d_i`` is the distance (:meth:`predictors.domain.Domain.distance`, natural-log units) of point ``i``
from the domain of the *other* points. The half-width of the interval of a spec at distance ``d`` from the
device's domain is ``w = q·(1 + d)`` in log space, ``[ms·e^(−w), ms·e^(w)]``, with ``q`` the
⌈(n+1)·0.9⌉-th smallest of the ``n`` scores: the split-conformal quantile, which covers a new exchangeable
point with probability ≥ 90 % (n/(n+1) ≈ 91 % for n = 10). Dividing by ``1 + d`` makes the scores of
points that were extrapolated comparable with those that were not, so the same ``q`` serves inside and
outside the domain, and the interval grows linearly with how far outside a spec lies.

That quantile needs n ≥ 9 scores. A device with fewer (the seed's devices have 3–6 points) pools its scores
with those of the other devices fitted with it — relative log errors of the same model family, assumed
exchangeable across devices. With fewer than 9 scores even pooled, ``q`` is the largest score seen but at
least :data:`FALLBACK_SCORE` — a floor, not a calibrated level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

COVERAGE = 0.90
#: Fewest scores for which the conformal quantile at :data:`COVERAGE` exists: ⌈(n+1)·0.9⌉ ≤ n ⇔ n ≥ 9.
MIN_SCORES = math.ceil(COVERAGE / (1 - COVERAGE) - 1e-9)
#: Floor of ``q`` when too few scores exist even pooled: ln 1.28, i.e. ±28 % inside the domain.
FALLBACK_SCORE = math.log(1.28)


def conformity_scores(log_residuals: Sequence[float], distances: Sequence[float]) -> np.ndarray:
    """|log residual| / (1 + domain distance), one per held-out point."""
    r = np.abs(np.asarray(log_residuals, dtype=float))
    d = np.asarray(distances, dtype=float)
    return r / (1.0 + d)


def conformal_quantile(scores: Sequence[float], level: float = COVERAGE) -> float | None:
    """The ⌈(n+1)·level⌉-th smallest score; None when there are too few scores for ``level``."""
    ordered = np.sort(np.asarray(scores, dtype=float))
    rank = math.ceil((len(ordered) + 1) * level - 1e-9)
    if rank > len(ordered) or rank < 1:
        return None
    return float(ordered[rank - 1])


def interval_scale(own: Sequence[float], pooled: Sequence[float] = ()) -> tuple[float, str]:
    """``q`` from a device's own scores, else own + ``pooled`` (other devices), else the floor; and which."""
    q = conformal_quantile(own)
    if q is not None:
        return q, "own"
    both = [*own, *pooled]
    q = conformal_quantile(both)
    if q is not None:
        return q, "pooled"
    return max([FALLBACK_SCORE, *both]), "floor"


def half_width(q: float, distance: float) -> float:
    """Log-space half-width at domain distance ``distance``: ``q·(1 + d)``."""
    return q * (1.0 + distance)
