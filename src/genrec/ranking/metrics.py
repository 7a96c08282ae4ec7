"""Ranking metrics over the full catalog.

Every method ranks all catalog items minus the user's history (no sampled negatives: ranking the
target against 100 sampled items inflates HR and NDCG several-fold). Score ties are broken by a
fixed random order of the items drawn once per run, never by where the target sits, so a method
that scores everything equal gets chance-level metrics, not perfect ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "KS",
    "UserResult",
    "hit_rate",
    "ndcg",
    "mean_ndcg",
    "mrr",
    "rank_in_list",
    "full_rank",
    "top_k",
    "popularity_percentiles",
    "summarize",
]

KS = (1, 5, 10, 20)


def rank_in_list(target: str, items: Sequence[str]) -> int | None:
    """1-based position of ``target`` in a recommended list, or None."""
    for position, item in enumerate(items, start=1):
        if item == target:
            return position
    return None


def hit_rate(rank: int | None, k: int) -> float:
    return 1.0 if rank is not None and rank <= k else 0.0


def ndcg(rank: int | None, k: int) -> float:
    """With one relevant item the ideal DCG is 1, so NDCG@k = 1 / log2(rank + 1)."""
    return 1.0 / math.log2(rank + 1) if rank is not None and rank <= k else 0.0


def mean_ndcg(ranks: Iterable[int | None], k: int = 10) -> float:
    """Mean NDCG@k of rows' ranks (None: not in the list); 0.0 for no rows."""
    values = [ndcg(rank, k) for rank in ranks]
    return float(np.mean(values)) if values else 0.0


def mrr(rank: int | None, k: int) -> float:
    return 1.0 / rank if rank is not None and rank <= k else 0.0


def full_rank(scores: np.ndarray, target: int, excluded: np.ndarray, tie_order: np.ndarray) -> int:
    """Rank of item ``target`` among all items not ``excluded`` (a boolean mask), by score, ties
    broken by ``tie_order`` (a permutation rank per item). O(n), no sort."""
    keep = ~excluded
    s_t, o_t = scores[target], tie_order[target]
    better = (scores > s_t) | ((scores == s_t) & (tie_order < o_t))
    return int(np.count_nonzero(better & keep)) + 1


def top_k(scores: np.ndarray, excluded: np.ndarray, tie_order: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best items not excluded, best first, ties by ``tie_order``."""
    masked = np.where(excluded, -np.inf, scores.astype(np.float64))
    k = min(k, int(np.count_nonzero(~excluded)))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    kth = np.partition(masked, len(masked) - k)[len(masked) - k]  # the k-th largest score
    # every item tied with the k-th score competes, and the tie order decides among them
    pool = np.nonzero(masked >= kth)[0]
    order = np.lexsort((tie_order[pool], -masked[pool]))
    return pool[order][:k]


def popularity_percentiles(counts: Mapping[str, int], catalog_ids: Sequence[str]) -> dict[str, float]:
    """Each catalog item's popularity as a percentile (0-100) of the catalog, by mid-rank:
    an item more popular than every other item is near 100, a never-seen item near 0."""
    values = np.array([counts.get(i, 0) for i in catalog_ids], dtype=np.float64)
    order = np.sort(values)
    below = np.searchsorted(order, values, side="left")
    equal = np.searchsorted(order, values, side="right") - below
    pct = 100.0 * (below + 0.5 * equal) / max(len(values), 1)
    return dict(zip(catalog_ids, pct.tolist()))


@dataclass
class UserResult:
    """What one method did for one user: its list, the target's rank, and what it produced."""

    user_id: str
    target: str
    items: list[str]
    rank: int | None
    n_outputs: int
    n_invalid: int = 0
    n_duplicates: int = 0
    n_history_repeats: int = 0
    latency_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    row: int = -1  # the example's number in the run (a user may have several test rows)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserResult:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else 0.0


def summarize(
    results: Iterable[UserResult],
    *,
    catalog_size: int,
    popularity_pct: Mapping[str, float],
    ks: Sequence[int] = KS,
    wall_s: float | None = None,
) -> dict[str, Any]:
    """Mean metrics over users, output-quality rates over all outputs, coverage, popularity, speed."""
    results = list(results)
    n = len(results)
    out: dict[str, Any] = {"n_users": n}
    if n == 0:
        return out
    for k in ks:
        out[f"HR@{k}"] = float(np.mean([hit_rate(r.rank, k) for r in results]))
        out[f"NDCG@{k}"] = float(np.mean([ndcg(r.rank, k) for r in results]))
        out[f"MRR@{k}"] = float(np.mean([mrr(r.rank, k) for r in results]))
    outputs = sum(r.n_outputs for r in results)
    out["invalid_rate"] = sum(r.n_invalid for r in results) / outputs if outputs else 0.0
    out["duplicate_rate"] = sum(r.n_duplicates for r in results) / outputs if outputs else 0.0
    out["history_repeat_rate"] = sum(r.n_history_repeats for r in results) / outputs if outputs else 0.0
    top10 = [item for r in results for item in r.items[:10]]
    out["coverage@10"] = len(set(top10)) / catalog_size if catalog_size else 0.0
    pct = [popularity_pct[i] for i in top10 if i in popularity_pct]
    out["popularity_pct@10"] = float(np.mean(pct)) if pct else 0.0
    out["mean_list_length"] = float(np.mean([len(r.items) for r in results]))
    latencies = [r.latency_s for r in results]
    out["latency_p50_s"] = _percentile(latencies, 50)
    out["latency_p95_s"] = _percentile(latencies, 95)
    total = wall_s if wall_s is not None else sum(latencies)
    out["users_per_s"] = n / total if total > 0 else float("inf")
    return out
