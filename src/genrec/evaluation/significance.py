"""Is one method really better than another on the same rows? Paired comparisons.

Two methods evaluated on the same test rows differ by a mean of per-row differences; with a few
hundred rows and hit rates of a few percent, most differences in the third decimal are noise.
``paired_comparison`` reports, per metric: how many rows each method wins, the mean difference,
a paired bootstrap confidence interval (rows resampled with replacement, both methods together)
and a two-sided sign-flip randomisation p-value (under "no difference" each row's difference is
as likely to have either sign).

Rows that are not independent (the same user and target in several seeded runs pooled together)
are passed as ``clusters``: the rows of one cluster are resampled and sign-flipped together, so a
row counted ten times weighs as much as before but is no longer ten pieces of evidence.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import DataError
from ..ranking.metrics import UserResult, hit_rate, mrr, ndcg

__all__ = ["PairedComparison", "paired_comparison", "metric_values"]

_METRICS: dict[str, Callable[[int | None, int], float]] = {"NDCG": ndcg, "HR": hit_rate, "MRR": mrr}


@dataclass(frozen=True)
class PairedComparison:
    """``method`` against ``against`` on ``metric`` over the same ``rows``."""

    method: str
    against: str
    metric: str
    rows: int
    better: int  # rows where ``method`` scores higher
    worse: int
    tied: int
    mean: float  # the metric's mean over the rows, for ``method``
    against_mean: float
    difference: float  # mean - against_mean
    ci_low: float
    ci_high: float
    confidence: float
    p_value: float
    resamples: int
    clusters: int | None = None  # independent groups of rows resampled together (None: every row its own)

    @property
    def p_text(self) -> str:
        """The p-value as the resamples can resolve it (never a bare 0)."""
        return f"{self.p_value:.3f}" if self.p_value >= 0.001 else "< 0.001"

    @property
    def significant(self) -> bool:
        """Beyond noise by both tests: the confidence interval excludes zero and the randomisation
        p-value is below 1 - confidence. With few rows that differ the bootstrap interval can
        exclude zero while the sign flips say p = 0.12 (six rows apart): that is not a result."""
        return (self.ci_low > 0 or self.ci_high < 0) and self.p_value < 1.0 - self.confidence

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.significant}

    def _p_relation(self) -> str:
        text = self.p_text
        return text if text.startswith("<") else f"= {text}"

    def describe(self) -> str:
        verdict = "significant" if self.significant else "not significant"
        return (
            f"{self.method} vs {self.against}, {self.metric} on {self.rows} rows: {self.difference:+.4f} "
            f"({self.confidence:.0%} CI [{self.ci_low:+.4f}, {self.ci_high:+.4f}], p {self._p_relation()}, "
            f"{verdict}); better on {self.better} rows, worse on {self.worse}"
        )


def metric_values(results: Sequence[UserResult], metric: str) -> np.ndarray:
    """Per-row values of ``metric`` (``NDCG@10``, ``HR@20``, ``MRR@5``: any cut-off)."""
    match = re.fullmatch(r"(NDCG|HR|MRR)@(\d+)", metric.strip(), flags=re.IGNORECASE)
    if match is None:
        raise DataError(f"unknown metric {metric!r}: use NDCG@k, HR@k or MRR@k")
    fn, k = _METRICS[match.group(1).upper()], int(match.group(2))
    return np.array([fn(r.rank, k) for r in results], dtype=np.float64)


def paired_comparison(
    method: Sequence[UserResult],
    against: Sequence[UserResult],
    *,
    names: tuple[str, str] = ("method", "against"),
    metric: str = "NDCG@10",
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    clusters: Sequence[Hashable] | None = None,
) -> PairedComparison:
    """Compare two methods' results row by row (rows matched by ``row``; both must hold the
    same rows with the same targets, or the comparison would not be paired). ``clusters``: one
    key per result of ``method`` (in its order), rows sharing a key resampled and flipped together."""
    if resamples < 1:
        raise DataError(f"resamples must be at least 1, got {resamples}")
    if not 0 < confidence < 1:
        raise DataError(f"confidence must be in (0, 1), got {confidence}")
    if clusters is not None and len(clusters) != len(method):
        raise DataError(f"{len(clusters)} cluster keys for {len(method)} results: pass one per result")
    a, b = _paired_rows(method, against, names)
    values, against_values = metric_values(a, metric), metric_values(b, metric)
    diff = values - against_values
    n = len(diff)
    # each cluster's summed difference and size (without clusters, every row its own)
    if clusters is None:
        sums, sizes = diff, np.ones(n)
    else:
        key_of, number = {r.row: key for r, key in zip(method, clusters)}, {}
        group = np.array([number.setdefault(key_of[r.row], len(number)) for r in a])  # numbered as first met
        sums, sizes = np.bincount(group, weights=diff), np.bincount(group).astype(np.float64)
    m = len(sums)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, m, size=(resamples, m))
    boot = sums[picks].sum(axis=1) / sizes[picks].sum(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    flips = rng.choice(np.array([-1.0, 1.0]), size=(resamples, m))
    observed = abs(diff.mean())
    # the observed assignment counts as one of the permutations, so p is never 0
    extreme = int(np.sum(np.abs((flips * sums).sum(axis=1) / n) >= observed - 1e-12))
    return PairedComparison(
        method=names[0],
        against=names[1],
        metric=metric.upper(),
        rows=n,
        better=int(np.sum(diff > 0)),
        worse=int(np.sum(diff < 0)),
        tied=int(np.sum(diff == 0)),
        mean=float(values.mean()),
        against_mean=float(against_values.mean()),
        difference=float(diff.mean()),
        ci_low=float(low),
        ci_high=float(high),
        confidence=confidence,
        p_value=(1 + extreme) / (1 + resamples),
        resamples=resamples,
        clusters=None if clusters is None else m,
    )


def _paired_rows(
    method: Sequence[UserResult], against: Sequence[UserResult], names: tuple[str, str]
) -> tuple[list[UserResult], list[UserResult]]:
    if not method:
        raise DataError(f"{names[0]} has no results to compare")
    by_row = {r.row: r for r in against}
    rows = {r.row for r in method}
    if len(rows) != len(method) or len(by_row) != len(against):
        raise DataError("results hold the same row twice: pass one method's results of one run")
    missing = sorted(rows ^ set(by_row))
    if missing:
        raise DataError(
            f"{names[0]} and {names[1]} were not evaluated on the same rows (row {missing[0]} is in one only; "
            f"{len(missing)} differ): compare runs with the same dataset, users and seed"
        )
    paired = [(r, by_row[r.row]) for r in sorted(method, key=lambda r: r.row)]
    for x, y in paired:
        if (x.user_id, x.target) != (y.user_id, y.target):
            raise DataError(
                f"row {x.row} is user {x.user_id} -> {x.target} in {names[0]} but user {y.user_id} -> {y.target} "
                f"in {names[1]}: the runs split or sampled differently"
            )
    return [x for x, _ in paired], [y for _, y in paired]
