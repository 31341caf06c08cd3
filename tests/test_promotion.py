"""The promotion rule, checked against brute force and hand-derivable cases."""

from itertools import combinations

import numpy as np
import pytest

from nas.pareto import common_rung_non_dominated, non_dominated
from nas.promotion import (
    common_rung_ranks,
    crowding_distance,
    nondominated_ranks,
    promotable,
    promotion_order,
    promotion_quota,
)


def _dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def _brute_ranks(pts: np.ndarray) -> list[int]:
    # rank = length of the longest chain of dominators ending at the point (equals peeling rank)
    n = len(pts)
    memo: dict[int, int] = {}

    def depth(i: int) -> int:
        if i not in memo:
            memo[i] = max([depth(j) + 1 for j in range(n) if _dominates(pts[j], pts[i])], default=0)
        return memo[i]

    return [depth(i) for i in range(n)]


@pytest.mark.parametrize("seed", range(5))
def test_ranks_equal_longest_dominance_chain(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pts = rng.integers(0, 6, size=(40, 2 + seed % 2)).astype(float)  # integer grid: many ties
    assert nondominated_ranks(pts).tolist() == _brute_ranks(pts)


def test_crowding_distance_closed_form() -> None:
    # a straight front x + y = 1 at x = 0, .1, .3, .6, 1: interior distance = 2 * (gap over the range) per point
    x = np.array([0.0, 0.1, 0.3, 0.6, 1.0])
    pts = np.stack([x, 1 - x], axis=1)
    d = crowding_distance(pts)
    assert np.isinf(d[0]) and np.isinf(d[-1])
    np.testing.assert_allclose(d[1:-1], [2 * 0.3, 2 * 0.5, 2 * 0.7])


def test_order_is_rank_then_crowding_then_index() -> None:
    pts = np.array([[0.0, 1.0], [0.5, 0.5], [0.2, 0.8], [1.0, 0.0], [0.6, 0.6], [0.9, 0.9]])
    order = promotion_order(pts).tolist()
    # rank 0: 0, 2, 1, 3 (a straight front): extremes 0 and 3 first (inf, by index), then 1 (gap 0.8) before 2 (0.5)
    assert order[:4] == [0, 3, 1, 2]
    assert order[4:] == [4, 5]  # rank 1 then rank 2


def test_quota_and_noise() -> None:
    assert [promotion_quota(n, 3) for n in (0, 2, 3, 8, 9)] == [0, 0, 1, 2, 3]
    with pytest.raises(ValueError):
        promotion_quota(3, 1)
    pts = np.array([[0.0, 1.0], [1.0, 0.0], [0.55, 0.55], [0.5, 0.6], [2.0, 2.0], [3.0, 3.0]])
    # without noise the front is {0, 1, 2, 3}; quota 2 takes the two extremes
    assert sorted(promotable(pts, 3).tolist()) == [0, 1]
    # a large optimistic shift on spec 4's first column makes it non-dominated and an extreme
    noise = np.zeros_like(pts)
    noise[4, 0] = 2.5
    assert 4 in promotable(pts, 3, noise).tolist()


def test_promotable_is_a_prefix_of_every_larger_quota() -> None:
    pts = np.random.default_rng(7).random((30, 2))
    chosen = {eta: promotable(pts, eta).tolist() for eta in (2, 3, 5)}
    assert [len(chosen[eta]) for eta in (2, 3, 5)] == [15, 10, 6]
    for small, large in combinations([5, 3, 2], 2):
        assert chosen[small] == chosen[large][: len(chosen[small])]


@pytest.mark.parametrize("seed", range(3))
def test_common_rung_dominance_with_one_rung_each_is_plain_dominance(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pts = rng.integers(0, 5, size=(25, 2)).astype(float)
    same = [{0: p} for p in pts]
    assert common_rung_non_dominated(same).tolist() == non_dominated(pts).tolist()
    assert common_rung_ranks(same).tolist() == _brute_ranks(pts)
    later = rng.integers(0, 5, size=(25, 2)).astype(float)  # all climbed a rung: only the later values count
    climbed = [{0: p, 1: q} for p, q in zip(pts, later)]
    assert common_rung_non_dominated(climbed).tolist() == non_dominated(later).tolist()


def test_a_spec_stopped_early_meets_a_promoted_one_at_its_own_rung() -> None:
    # (−accuracy, cost). B is cheaper and climbed to rung 2; A stopped at rung 0, where it beat B on accuracy.
    a = {0: np.array([-0.50, 2.0])}
    b = {0: np.array([-0.40, 1.0]), 1: np.array([-0.70, 1.0]), 2: np.array([-0.80, 1.0])}
    c = {0: np.array([-0.45, 3.0])}  # dearer and worse than A at rung 0: dominated by A
    assert non_dominated(np.array([a[0], b[2], c[0]])).tolist() == [False, True, False]  # highest-rung values
    assert common_rung_non_dominated([a, b, c]).tolist() == [True, True, False]
    assert common_rung_ranks([a, b, c]).tolist() == [0, 0, 1]
    # B's rung 0 worse than C's but cheaper: C is dominated by A only, so removing A frees it
    assert common_rung_non_dominated([b, c]).tolist() == [True, True]


def test_given_ranks_replace_the_points_own() -> None:
    pts = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0], [0.6, 0.6]])
    assert promotion_order(pts).tolist()[-1] == 3  # dominated by point 1
    assert promotion_order(pts, ranks=np.array([1, 1, 1, 0])).tolist()[0] == 3
