"""Active measurement: suggested specs cover the candidates' extremes, never repeat, and teach a fit more than
the same number of random specs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from predictors import DEFAULT_FAMILY, PredictorError, suggest_specs
from predictors.features import design_matrix
from predictors.fitting import TableFits
from predictors.latency import build_predictor
from predictors.tables import HardwareTable, TableRow
from search_space import ArchSpec, analyze


def space(resolutions=(32, 64, 112)):
    """A small search space: the default space's depths and widths at several resolutions (864 specs)."""
    specs = []
    for d1, d2, d3 in itertools.product((1, 2), (1, 2), (1, 2, 4)):
        for w in itertools.product((0.25, 0.5, 0.75), (0.25, 0.75), (0.25, 0.5, 0.75), (0.25, 1.0)):
            specs += [ArchSpec((d1, d2, d3, 1), w, "repvgg", 1, r, 10) for r in resolutions]
    return specs


@pytest.fixture(scope="module")
def pool():
    return space()


def test_extremes_first_then_distinct_unmeasured_specs(pool):
    picked = suggest_specs(pool, 8)
    macs = {s: analyze(s).macs for s in pool}
    assert min(macs.values()) in {macs[s] for s in picked} and max(macs.values()) in {macs[s] for s in picked}
    assert {s.resolution for s in picked} >= {32, 112}
    assert len(set(picked)) == 8 and set(picked) <= set(pool)
    measured = picked[:4]
    more = suggest_specs(pool, 8, measured=measured)
    assert not set(more) & set(measured) and len(set(more)) == 8


def test_extremes_already_measured_are_not_asked_again(pool):
    macs = {s: analyze(s).macs for s in pool}
    smallest, largest = min(pool, key=macs.get), max(pool, key=macs.get)
    picked = suggest_specs(pool, 2, measured=[smallest, largest])
    assert smallest not in picked and largest not in picked


def test_deterministic_and_independent_of_the_candidates_order(pool):
    first = suggest_specs(pool, 10)
    shuffled = list(pool)
    np.random.default_rng(3).shuffle(shuffled)
    assert suggest_specs(shuffled + pool[:50], 10) == first  # order and duplicates do not matter
    assert suggest_specs(pool, 10) == first


def test_asking_for_more_than_is_left_and_bad_counts(pool):
    few = pool[:3]
    assert sorted(suggest_specs(few, 10), key=ArchSpec.to_string) == sorted(few, key=ArchSpec.to_string)
    assert suggest_specs(few, 2, measured=few) == []
    with pytest.raises(PredictorError):
        suggest_specs(pool, 0)


def fit_on(specs, latencies):
    """The package's default fit of one synthetic device ("sim") on these points."""
    rows = tuple(TableRow("sim", "fp32", s.to_string(), s, float(y), "ok") for s, y in zip(specs, latencies))
    return build_predictor(TableFits(HardwareTable(rows), DEFAULT_FAMILY), "sim")


def expected_error_factor(rows, idx):
    """Closed form from the law: an unregularized least-squares fit on rows ``idx`` has an expected squared
    relative error at a spec of row ``a`` of σ²·aᵀ(AᵀA)⁻¹a; the mean of that factor over the space."""
    design = rows[idx]
    inverse = np.linalg.pinv(design.T @ design)
    return float(np.mean(np.einsum("ij,jk,ik->i", rows, inverse, rows)))


def test_suggested_points_teach_a_fit_more_than_random_points(pool):
    """A synthetic linear law in the default family's features, measured with 5 % multiplicative noise. Fitting
    the package's default predictor on 10 suggested specs predicts the whole space better than on 10 random
    specs: paired over 20 noise draws, by more than two standard errors; and the law's closed form agrees.
    Errors are measured against the law itself, not against noisy labels."""
    features = TableFits(HardwareTable(()), DEFAULT_FAMILY).family.features
    x = design_matrix(pool, features)
    law = np.linspace(1.0, 0.4, len(features))  # ms per A0-unit of each term; every term matters
    truth = x @ law
    rows = x / truth[:, None]  # the relative design the fit sees
    where = [pool.index(s) for s in suggest_specs(pool, 10)]
    rng = np.random.default_rng(11)
    gaps, random_factors = [], []
    for _ in range(20):
        noisy = truth * np.exp(rng.normal(0.0, 0.05, len(pool)))
        at_random = list(rng.choice(len(pool), 10, replace=False))
        random_factors.append(expected_error_factor(rows, at_random))
        error = {}
        for name, idx in (("suggested", where), ("random", at_random)):
            predictor = fit_on([pool[i] for i in idx], noisy[idx])
            predicted = np.array([predictor.predict_ms(s) for s in pool])
            error[name] = float(np.mean(np.abs(predicted / truth - 1)))
        gaps.append(error["suggested"] - error["random"])
    assert expected_error_factor(rows, where) < np.mean(random_factors)
    assert np.mean(gaps) < -2 * np.std(gaps) / np.sqrt(len(gaps)), gaps
