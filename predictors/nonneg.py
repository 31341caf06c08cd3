"""The one non-negative least-squares problem every latency family solves, with a *unique* answer.

For one device with points ``x_i`` (features) and latencies ``y_i``, with ``a_i = x_i / y_i`` (relative
residuals) and ``m`` the geometric mean of ``y``::

    minimize   Σ_i (a_i·β − 1)²  +  λ·‖β/m − s·θ̄‖²      over β ≥ 0 and a speed s ≥ 0

θ̄ is the prior shape (a family without a prior uses the penalty ``λ·‖β/m‖²``: minimum norm).

* λ > 0 with a prior: the objective is strictly convex in (β, s) — ``A·β = 0`` and ``β = m·s·θ̄`` force
  ``s·A·θ̄ = 0``, and ``A·θ̄ > 0`` — so the minimizer is unique and NNLS on the stacked system finds it.
* λ = 0 is read as the limit λ → 0⁺: first fit the data as well as possible, then, among the β ≥ 0 that
  fit it *equally* well (a polytope when the points do not pin every coefficient down: fewer points than
  features, or collinear features), take the one closest to the prior (or of minimum norm). The fitted
  values ``A·β`` of the first stage are unique (the data term is strictly convex in them), and the second
  stage is a strictly convex problem on that polytope, so the answer is unique and does not depend on the
  solver, on the order of the points or on the order of the features.

The second stage only runs when ``A`` is rank-deficient, and is solved exactly. On the optimal support the
problem is an equality-constrained least squares (a KKT linear system). Fast path: a barely regularized NNLS
guesses the support, a few primal-dual active-set steps correct it, and the answer is accepted only with a
KKT certificate (stationarity, feasibility, non-negative multipliers: for a convex problem that proves the
global optimum). Otherwise every support is enumerated (at most 2^(k+1) for k ≤ 6 features): every
non-negative support solution is feasible and the optimum is one of them, so the smallest objective wins.
"""

from __future__ import annotations

import itertools

import numpy as np

_FEASIBLE_TOL = 1e-8
_PROBE = 1e-3  # weight of the tie-break in the fast path's guess of the optimal support


def _nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls  # scipy.optimize costs a second to import: only when fitting

    beta, _ = nnls(a, b)
    return beta


def geometric_mean(y: np.ndarray) -> float:
    """exp(mean(ln y)): the device's typical latency, the scale the penalty is measured in."""
    return float(np.exp(np.mean(np.log(y))))


def solve(x: np.ndarray, y: np.ndarray, prior: np.ndarray | None, lam: float) -> np.ndarray:
    """The unique non-negative β of the module docstring for features ``x`` (n×k) and latencies ``y``."""
    n, k = x.shape
    a = x / y[:, None]
    ones = np.ones(n)
    m = geometric_mean(y)
    if prior is not None and lam > 0:
        root = np.sqrt(lam)
        top = np.hstack([a, np.zeros((n, 1))])
        penalty = np.hstack([np.eye(k) * (root / m), -root * prior[:, None]])
        solution = _nnls(np.vstack([top, penalty]), np.concatenate([ones, np.zeros(k)]))
        return solution[:k]
    beta = _nnls(a, ones)
    if np.linalg.matrix_rank(a) == k:
        return beta  # the data pin every coefficient down
    return closest_exact_fit(a, a @ beta, m, prior, fallback=beta)


def _penalty_matrix(k: int, m: float, prior: np.ndarray | None) -> np.ndarray:
    """P with ‖P·z‖² the tie-break: z = (β, s) with a prior, z = β without."""
    eye = np.eye(k) / m
    return eye if prior is None else np.hstack([eye, -prior[:, None]])


def _kkt_on(kkt: np.ndarray, rhs: np.ndarray, big_a: np.ndarray, support: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Equality-constrained optimum z on ``support`` and the multipliers ν = 2PᵀP·z + Aᵀ·μ of every variable
    (0 on the support; the non-negativity constraints off it need ν ≥ 0)."""
    c = big_a.shape[1]
    rows = [*support, *range(c, kkt.shape[0])]
    solution = np.linalg.lstsq(kkt[np.ix_(rows, rows)], rhs[rows], rcond=None)[0]
    z = np.zeros(c)
    z[support] = solution[:len(support)]
    return z, kkt[:c, :c] @ z + big_a.T @ solution[len(support):]


def _active_set(kkt: np.ndarray, rhs: np.ndarray, big_a: np.ndarray, fitted: np.ndarray, support: list[int],
                scale: float) -> np.ndarray | None:
    """From a guessed support, a few primal-dual active-set steps; returns z only with a KKT certificate of
    optimality (then it is the global optimum: the problem is convex), else None."""
    c = big_a.shape[1]
    for _ in range(2 * c):
        if not support:
            return None
        z, nu = _kkt_on(kkt, rhs, big_a, support)
        off = [j for j in range(c) if j not in support]
        tol = _FEASIBLE_TOL * (1.0 + float(np.abs(nu).max()))
        if np.abs(big_a @ z - fitted).max() > _FEASIBLE_TOL * scale:
            return None
        if z.min() < -_FEASIBLE_TOL * scale:
            support = [j for j in support if j != int(np.argmin(z))]
        elif off and nu[off].min() < -tol:
            support = sorted([*support, off[int(np.argmin(nu[off]))]])
        else:
            return np.maximum(z, 0.0)
    return None


def closest_exact_fit(a: np.ndarray, fitted: np.ndarray, m: float, prior: np.ndarray | None,
                      fallback: np.ndarray | None = None) -> np.ndarray:
    """argmin ‖β/m − s·θ̄‖² (or ‖β/m‖²) over β, s ≥ 0 with ``a·β = fitted`` (certified fast path, else
    enumeration of the supports).

    ``fallback`` (a β known to fit ``fitted``) is returned if rounding leaves no support feasible."""
    n, k = a.shape
    p = _penalty_matrix(k, m, prior)
    c = p.shape[1]
    big_a = np.hstack([a, np.zeros((n, c - k))])
    # the KKT system of "min ‖P·z‖² s.t. A·z = fitted" on all variables; a support selects rows and columns
    kkt = np.block([[2 * p.T @ p, big_a.T], [big_a, np.zeros((n, n))]])
    rhs = np.concatenate([np.zeros(c), fitted])
    scale = max(float(np.abs(fitted).max()), 1.0)
    # fast path: the support of a barely regularized fit, accepted only with a KKT certificate of optimality
    guess = _nnls(np.vstack([big_a, _PROBE * p]), np.concatenate([fitted, np.zeros(p.shape[0])]))
    support = [int(j) for j in np.flatnonzero(guess > _PROBE * guess.max())]
    certified = _active_set(kkt, rhs, big_a, fitted, support, scale)
    if certified is not None:
        return certified[:k]
    best = _enumerate(kkt, rhs, big_a, p, fitted, scale)
    if best is None:  # only by rounding: the first stage's β is feasible on its own support
        return np.zeros(k) if fallback is None else fallback
    return best[:k]


def _enumerate(kkt: np.ndarray, rhs: np.ndarray, big_a: np.ndarray, p: np.ndarray, fitted: np.ndarray,
               scale: float) -> np.ndarray | None:
    """The exhaustive solver: the feasible support solution of smallest ‖P·z‖² (None if none is feasible)."""
    c = big_a.shape[1]
    multipliers = list(range(c, kkt.shape[0]))
    best, best_z = np.inf, None
    for size in range(1, c + 1):
        for support in itertools.combinations(range(c), size):
            rows = [*support, *multipliers]
            z = np.linalg.lstsq(kkt[np.ix_(rows, rows)], rhs[rows], rcond=None)[0][:size]
            if z.min() < -_FEASIBLE_TOL * scale:
                continue
            full = np.zeros(c)
            full[list(support)] = np.maximum(z, 0.0)
            if np.abs(big_a @ full - fitted).max() > _FEASIBLE_TOL * scale:
                continue
            objective = float(np.sum((p @ full) ** 2))
            if objective < best * (1 - 1e-12):
                best, best_z = objective, full
    return best_z
