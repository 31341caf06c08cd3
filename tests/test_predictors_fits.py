"""Unique fits: with fewer points than coefficients (T4: 4 points, 5 coefficients, λ = 0) the non-negative fit is
defined as the limit λ → 0⁺ and does not depend on the solver, on the order of the points or of the features.
Every test runs for both five-coefficient families with a prior: ``shrink`` (the five totals) and ``spatial``
(physical + output positions)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import lsq_linear, minimize, nnls

from predictors import load_table, spec_features
from predictors import nonneg as nonneg_module
from predictors.features import design_matrix
from predictors.fitting import TableFits
from predictors.nonneg import closest_exact_fit, geometric_mean, solve
from search_space import ArchSpec

#: A member of a 32-px demo front: far from what T4 measured, where the free directions of the fit show.
DEMO = ArchSpec((1, 1, 1, 1), (0.25, 0.25, 0.25, 0.25), "repvgg", 1, 32, 10)


@pytest.fixture(scope="module", params=["shrink", "spatial"])
def t4(request):
    """T4's features, latencies and prior under a five-coefficient family (4 points: underdetermined)."""
    fits = TableFits(load_table(), request.param)
    points = fits.points["T4"]
    names = fits.family.features
    assert len(names) == 5 > len(points.specs)
    return design_matrix(points.specs, names), points.latency_ms, fits.prior("T4"), names


def test_the_unregularized_problem_really_is_ambiguous_on_t4(t4):
    """Two exact solvers of the plain NNLS problem fit T4's 4 points equally well and disagree at DEMO — the
    ambiguity the unique fit removes (without it every other test here could pass vacuously)."""
    x, y, _, names = t4
    a = x / y[:, None]
    active_set = nnls(a, np.ones(len(y)))[0]
    bounded = lsq_linear(a, np.ones(len(y)), bounds=(0, np.inf), method="bvls", tol=1e-14).x
    assert a @ active_set == pytest.approx(a @ bounded, abs=1e-9)  # equally good on the data…
    demo = spec_features(DEMO).vector(names)
    assert abs(demo @ active_set / (demo @ bounded) - 1) > 0.2  # …and > 20 % apart where a search goes


@pytest.mark.parametrize("with_prior", [False, True])
def test_lambda_zero_fit_is_the_lexicographic_optimum_of_an_independent_solver(t4, with_prior):
    """SLSQP on "fit the data as well as possible (values from a bounded-variable LS solver), then closest to the
    prior shape / of minimum norm" gives the same coefficients."""
    x, y, prior, _ = t4
    prior = prior if with_prior else None
    ours = solve(x, y, prior, 0.0)
    a = x / y[:, None]
    m = geometric_mean(y)
    fitted = a @ lsq_linear(a, np.ones(len(y)), bounds=(0, np.inf), method="bvls", tol=1e-14).x
    k = x.shape[1]

    def objective(z):
        return np.sum((z[:k] / m - (z[k] * prior if prior is not None else 0.0)) ** 2)

    result = minimize(objective, np.full(k + 1, 0.1), method="SLSQP", bounds=[(0, None)] * (k + 1),
                      constraints=[{"type": "eq", "fun": lambda z: a @ z[:k] - fitted}],
                      options={"ftol": 1e-15, "maxiter": 2000})
    assert result.success
    assert ours == pytest.approx(result.x[:k], abs=1e-6)
    assert a @ ours == pytest.approx(fitted, abs=1e-9)  # λ = 0 still fits the data first


def test_fit_does_not_depend_on_the_order_of_features_or_points(t4):
    x, y, prior, _ = t4
    reference = solve(x, y, prior, 0.0)
    for perm in itertools.permutations(range(x.shape[1])):
        p = list(perm)
        for rows in (list(range(len(y))), list(range(len(y)))[::-1]):
            beta = np.empty_like(reference)
            beta[p] = solve(x[np.ix_(rows, p)], y[rows], prior[p], 0.0)
            assert beta == pytest.approx(reference, rel=1e-9, abs=1e-12)


def test_lambda_zero_is_the_limit_of_small_lambda(t4):
    x, y, prior, _ = t4
    limit = solve(x, y, prior, 0.0)
    gaps = [np.abs(solve(x, y, prior, lam) - limit).max() for lam in (1e-3, 1e-5, 1e-7)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-5  # converges to it, linearly in λ


def test_fast_path_and_exhaustive_enumeration_agree(t4, monkeypatch):
    """The certified active-set path and the enumeration of every support are two solvers of the tie-break."""
    x, y, prior, _ = t4
    a = x / y[:, None]
    fitted = a @ nnls(a, np.ones(len(y)))[0]
    m = geometric_mean(y)
    for p in (prior, None):
        fast = closest_exact_fit(a, fitted, m, p)
        monkeypatch.setattr(nonneg_module, "_active_set", lambda *args: None)
        slow = closest_exact_fit(a, fitted, m, p)
        monkeypatch.undo()
        assert fast == pytest.approx(slow, abs=1e-10)


def test_positive_lambda_fit_is_unique_too(t4):
    """λ > 0 is strictly convex: the stacked NNLS and a bounded-variable solver of the same objective agree."""
    x, y, prior, _ = t4
    lam = 0.1
    a = x / y[:, None]
    m = geometric_mean(y)
    k = x.shape[1]
    root = np.sqrt(lam)
    stacked = np.vstack([np.hstack([a, np.zeros((len(y), 1))]),
                         np.hstack([np.eye(k) * root / m, -root * prior[:, None]])])
    target = np.concatenate([np.ones(len(y)), np.zeros(k)])
    other = lsq_linear(stacked, target, bounds=(0, np.inf), method="trf", tol=1e-15).x[:k]
    assert solve(x, y, prior, lam) == pytest.approx(other, abs=1e-6)
