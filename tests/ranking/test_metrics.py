"""Metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.ranking.metrics import (
    UserResult,
    full_rank,
    hit_rate,
    mean_ndcg,
    mrr,
    ndcg,
    popularity_percentiles,
    rank_in_list,
    summarize,
    top_k,
)


def test_single_target_metrics_by_hand():
    assert ndcg(1, 10) == 1.0
    assert ndcg(3, 10) == pytest.approx(0.5)  # 1 / log2(4)
    assert ndcg(2, 10) == pytest.approx(1 / math.log2(3))
    assert ndcg(11, 10) == 0.0 and ndcg(None, 10) == 0.0
    assert hit_rate(10, 10) == 1.0 and hit_rate(11, 10) == 0.0
    assert mrr(4, 5) == 0.25 and mrr(6, 5) == 0.0
    assert mean_ndcg([1, 3, None, 11]) == pytest.approx(1.5 / 4)  # a miss and a rank past k count 0
    assert mean_ndcg([11], k=20) == pytest.approx(1 / math.log2(12)) and mean_ndcg([]) == 0.0
    assert mean_ndcg(r for r in (1, 1)) == 1.0  # any iterable


def test_rank_in_list():
    assert rank_in_list("b", ["a", "b", "c"]) == 2
    assert rank_in_list("z", ["a"]) is None


def test_full_rank_excludes_history_and_breaks_ties_by_fixed_order():
    scores = np.array([5.0, 3.0, 3.0, 3.0, 9.0])
    excluded = np.array([False, False, False, False, True])  # item 4 is in the history
    tie_order = np.array([0, 3, 1, 2, 4])  # among ties: item 2, then 3, then 1
    assert full_rank(scores, 0, excluded, tie_order) == 1
    assert full_rank(scores, 2, excluded, tie_order) == 2
    assert full_rank(scores, 3, excluded, tie_order) == 3
    assert full_rank(scores, 1, excluded, tie_order) == 4


def test_constant_scores_give_chance_level_not_perfect():
    """A method that scores everything equal must not rank the target first."""
    rng = np.random.default_rng(0)
    n = 200
    tie_order = np.empty(n, dtype=int)
    tie_order[rng.permutation(n)] = np.arange(n)
    ranks = [full_rank(np.zeros(n), t, np.zeros(n, dtype=bool), tie_order) for t in range(n)]
    assert sorted(ranks) == list(range(1, n + 1))  # every rank exactly once: a random order


def test_top_k_matches_full_rank():
    scores = np.array([1.0, 4.0, 4.0, 2.0, 0.5, 4.0])
    excluded = np.array([False, False, True, False, False, False])
    tie_order = np.array([5, 2, 0, 1, 3, 4])
    best = top_k(scores, excluded, tie_order, 3)
    assert best.tolist() == [1, 5, 3]
    for position, item in enumerate(best, start=1):
        assert full_rank(scores, item, excluded, tie_order) == position
    assert top_k(scores, np.ones(6, dtype=bool), tie_order, 3).tolist() == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=30), st.data())
def test_top_k_and_full_rank_agree(values, data):
    n = len(values)
    scores = np.array(values, dtype=float)
    excluded = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    tie_order = np.array(data.draw(st.permutations(range(n))))
    k = data.draw(st.integers(1, n))
    best = top_k(scores, excluded, tie_order, k).tolist()
    assert not any(excluded[i] for i in best)
    for position, item in enumerate(best, start=1):
        assert full_rank(scores, item, excluded, tie_order) == position


def test_popularity_percentiles_midrank():
    pct = popularity_percentiles({"a": 10, "b": 5, "c": 5}, ["a", "b", "c", "d"])
    assert pct["a"] == pytest.approx(87.5)  # 3 below + half of itself, of 4
    assert pct["b"] == pct["c"] == pytest.approx(50.0)
    assert pct["d"] == pytest.approx(12.5)


def test_summarize_by_hand():
    results = [
        UserResult("u1", "x", ["x", "y"], rank=1, n_outputs=2, latency_s=1.0),
        UserResult("u2", "z", ["y", "q", "z"], rank=3, n_outputs=4, n_invalid=1, n_duplicates=1, latency_s=3.0),
        UserResult("u3", "w", ["y"], rank=None, n_outputs=1, n_history_repeats=1, latency_s=2.0),
    ]
    pct = {"x": 10.0, "y": 90.0, "q": 50.0, "z": 20.0}
    out = summarize(results, catalog_size=10, popularity_pct=pct)
    assert out["n_users"] == 3
    assert out["HR@1"] == pytest.approx(1 / 3)
    assert out["HR@5"] == pytest.approx(2 / 3)
    assert out["NDCG@5"] == pytest.approx((1 + 0.5) / 3)
    assert out["MRR@5"] == pytest.approx((1 + 1 / 3) / 3)
    assert out["invalid_rate"] == pytest.approx(1 / 7)
    assert out["duplicate_rate"] == pytest.approx(1 / 7)
    assert out["history_repeat_rate"] == pytest.approx(1 / 7)
    assert out["coverage@10"] == pytest.approx(4 / 10)
    assert out["popularity_pct@10"] == pytest.approx((10 + 90 + 90 + 50 + 20 + 90) / 6)
    assert out["latency_p50_s"] == 2.0
    assert out["users_per_s"] == pytest.approx(3 / 6)
