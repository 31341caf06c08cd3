"""Active measurement: which architectures should be measured next on a device to pin its predictor down?

A family's prediction is linear in its features ``x`` and is fitted on *relative* residuals, so a measured
spec contributes the row ``a = x / ℓ(x)`` to the design, ``ℓ`` its latency. Before anything is measured ``ℓ``
is unknown; :func:`suggest_specs` assumes every feature costs the same at the pool's median
(``ℓ(x) = Σ_j x_j / median_j``), which makes the rows scale-free. The uncertainty of a prediction at ``a`` is
proportional to ``aᵀ F⁻¹ a`` with ``F = δ·I + Σ_measured a aᵀ`` the information of what is measured (``δ``
a small ridge so that ``F`` is invertible before there are as many points as features).

Greedy D-optimal design: repeatedly measure the candidate with the largest ``aᵀ F⁻¹ a`` — the one the current
fit knows least — which is also the step that most increases ``det F``. Before the greedy steps, the
candidates' extremes are taken wherever no measured spec already reaches them: the smallest and the largest
MACs, the lowest and the highest resolution (so the measured domain spans the space the search will visit).
Ties go to the canonical spec string, so the answer depends only on the set of candidates and measured specs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from predictors.errors import PredictorError
from predictors.families import AUTO, DEFAULT_FAMILY, get_family
from predictors.features import design_matrix, spec_features
from search_space import ArchSpec

#: Ridge of the information matrix, relative to a measured row's squared norm (a row has norm ~1).
RIDGE = 1e-6


def _relative_rows(specs: Sequence[ArchSpec], features: tuple[str, ...], medians: np.ndarray) -> np.ndarray:
    x = design_matrix(list(specs), features)
    latency = (x / medians).sum(axis=1)
    return x / latency[:, None]


def _extremes(pool: list[ArchSpec], measured: Sequence[ArchSpec]) -> list[Callable[[ArchSpec], bool]]:
    """One test per extreme that no measured spec reaches yet: "is this candidate that extreme?"."""
    macs = {s: spec_features(s).macs for s in [*pool, *measured]}
    tests: list[Callable[[ArchSpec], bool]] = []
    for value in (lambda s: macs[s], lambda s: float(s.resolution)):
        low, high = min(value(s) for s in pool), max(value(s) for s in pool)
        if not any(value(m) <= low for m in measured):
            tests.append(lambda s, v=value, t=low: v(s) == t)
        if not any(value(m) >= high for m in measured):
            tests.append(lambda s, v=value, t=high: v(s) == t)
    return tests


def suggest_specs(candidates: Sequence[ArchSpec], k: int, measured: Sequence[ArchSpec] = (),
                  family: str = DEFAULT_FAMILY) -> list[ArchSpec]:
    """``k`` candidates to measure next, in the order to measure them (fewer if fewer are left): the
    candidates' extremes not yet reached by ``measured``, then greedy D-optimal picks in ``family``'s feature
    space (``"auto"``: the default family's, as there is no table to choose with). Never a measured spec, never
    a duplicate; deterministic for the same input."""
    if k < 1:
        raise PredictorError(f"asked for {k} suggestions", "ask for at least one architecture")
    fam = get_family(DEFAULT_FAMILY if family == AUTO else family)
    done = set(measured)
    pool = sorted({s for s in candidates if s not in done}, key=ArchSpec.to_string)
    if not pool:
        return []
    medians = np.median(design_matrix([*pool, *measured], fam.features), axis=0)
    medians[medians <= 0] = 1.0
    rows = _relative_rows(pool, fam.features, medians)
    done_rows = _relative_rows(list(measured), fam.features, medians)
    information = RIDGE * np.eye(len(fam.features)) + done_rows.T @ done_rows
    picked: list[int] = []
    extremes = _extremes(pool, measured)
    while len(picked) < min(k, len(pool)):
        variance = np.einsum("ij,ji->i", rows, np.linalg.solve(information, rows.T))
        variance[picked] = -np.inf
        wanted = None
        while extremes and wanted is None:
            test = extremes.pop(0)
            matching = [i for i, s in enumerate(pool) if test(s)]
            if not set(matching) & set(picked):
                wanted = max(matching, key=lambda i: (variance[i], -i))
        choice = wanted if wanted is not None else int(np.argmax(variance))  # argmax: the first of equals
        picked.append(choice)
        information += np.outer(rows[choice], rows[choice])
    return [pool[i] for i in picked]
