"""Fused methods, ``genrec+<baseline>``: the language model with a baseline as its collaborative
prior inside beam search, the prior weight tuned on validation targets only.

The baseline's scores become log-scores (SASRec's are logits already; counts and similarities
are logged), the weight is chosen from ``EvalConfig.prior_grid`` (and the aggregation from
``EvalConfig.prior_aggregations``) by NDCG@10 on a seeded sample of validation rows under the
run's own protocol, and the test rows are decoded once with it. The grid and what each weight
scored are kept in ``tuning/<method>.json`` (a rerun reuses them) and in ``results.json`` under
the method's ``tuned``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from .baselines import ScoredMethod

__all__ = ["FUSED_PREFIX", "is_fused", "prior_of", "log_scores", "tune_prior_weight"]

FUSED_PREFIX = "genrec+"
_FLOOR = 1e-6  # a count or similarity of 0 is unlikely, not impossible


def is_fused(name: str) -> bool:
    return name.startswith(FUSED_PREFIX)


def prior_of(name: str) -> str:
    """The baseline a fused method uses as its prior."""
    return name[len(FUSED_PREFIX) :]


def log_scores(method: ScoredMethod, histories: Sequence[Sequence[str]]) -> np.ndarray:
    """The baseline's scores for these histories as log-scores, one row per history."""
    scores = np.asarray(method.score([list(h) for h in histories]), dtype=np.float64)
    if getattr(method, "scores_are_logits", False):
        return scores
    return np.log(np.maximum(scores, 0.0) + _FLOOR)


def tune_prior_weight(
    validation_ndcg: Callable[[float, str], float],
    grid: Sequence[float],
    path: Path,
    valid_rows: int,
    *,
    aggregations: Sequence[str] = ("logsumexp",),
) -> dict[str, Any]:
    """The best (weight, aggregation) by ``validation_ndcg(weight, aggregation)`` on ``valid_rows``
    validation rows (ties: the smaller weight, then the earlier aggregation), and what every pair
    scored; kept in ``path`` so a rerun does not decode them again. ``valid_NDCG@10`` holds the
    chosen aggregation's scores by weight; with several aggregations, ``valid_NDCG@10_by_aggregation``
    holds them all."""
    if path.exists():
        tuned = json.loads(path.read_text(encoding="utf-8"))
        tuned.setdefault("prior_aggregation", "logsumexp")  # files written before aggregations were tuned
        return tuned
    alone: float | None = None  # weight 0 is the model alone, whatever the aggregation: decoded once
    scored: dict[str, dict[str, float]] = {}
    for aggregation in aggregations:
        scores = scored.setdefault(aggregation, {})
        for weight in grid:
            if weight == 0.0:
                alone = alone if alone is not None else round(validation_ndcg(0.0, aggregation), 5)
                scores[f"{weight:g}"] = alone
            else:
                scores[f"{weight:g}"] = round(validation_ndcg(weight, aggregation), 5)
    order = list(aggregations)
    weight, aggregation = max(
        ((w, a) for a in order for w in grid), key=lambda wa: (scored[wa[1]][f"{wa[0]:g}"], -wa[0], -order.index(wa[1]))
    )
    tuned: dict[str, Any] = {
        "prior_weight": weight,
        "prior_aggregation": aggregation,
        "valid_NDCG@10": scored[aggregation],
        "valid_rows": valid_rows,
    }
    if len(order) > 1:
        tuned["valid_NDCG@10_by_aggregation"] = scored
    atomic_write_text(path, json.dumps(tuned, indent=2))
    return tuned
