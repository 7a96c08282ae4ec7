"""Collaborative priors as callers give them, checked and turned into per-user item scores.

A prior is per-item log-scores in catalog order (higher: more likely; any real numbers, treated
as unnormalised log-probabilities): one array for every user, one row per user, or a callable
that takes the users' histories (lists of item IDs, oldest first) and returns one row per user
(the harness's Markov, SASRec and popularity baselines are such callables).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Union

import numpy as np

from ..decoding.prior import AGGREGATIONS
from ..errors import PriorError
from .host import TaskHost

__all__ = ["Prior", "prior_scores", "check_weight", "check_aggregation", "resolve_prior"]

#: an array ``[n_items]`` or ``[n_users, n_items]``, or ``histories -> [n_users, n_items]``
Prior = Union[np.ndarray, Sequence[float], Callable[[list[list[str]]], Any]]


def check_weight(weight: Any) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.floating, np.integer)) or not 0.0 <= float(weight) <= 1.0:
        raise PriorError(f"prior_weight must be a number from 0 to 1, got {weight!r}")
    return float(weight)


def check_aggregation(aggregation: Any) -> str:
    """How a trie node's prior mass gathers its titles' scores: ``logsumexp`` or ``max``."""
    if aggregation not in AGGREGATIONS:
        raise PriorError(f"prior_aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
    return str(aggregation)


def prior_scores(prior: Prior, histories: list[list[str]], n_items: int) -> np.ndarray:
    """``[len(histories), n_items]`` float64 log-scores, or a PriorError naming the problem."""
    source = prior(histories) if callable(prior) else prior
    try:
        scores = np.asarray(source, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PriorError(f"the prior is not an array of numbers ({exc})") from None
    users = len(histories)
    if scores.ndim == 1:
        scores = np.broadcast_to(scores, (users, scores.shape[0]))
    if scores.ndim != 2 or scores.shape != (users, n_items):
        raise PriorError(
            f"the prior has shape {tuple(np.shape(source))}; expected ({n_items},) or ({users}, {n_items}): "
            f"one score per catalog item, in catalog order, for each of the {users} user(s)"
        )
    bad = ~np.isfinite(scores)
    if bad.any():
        user, item = map(int, np.argwhere(bad)[0])
        raise PriorError(
            f"the prior has {int(bad.sum())} NaN or infinite score(s) (first: user {user}, item position {item}: "
            f"{scores[user, item]}); use a large negative number for items that should be unlikely"
        )
    return scores


def resolve_prior(
    host: TaskHost, histories: Sequence[Sequence[int]], prior: Prior | None, weight: float | None
) -> tuple[np.ndarray | None, float]:
    """The call's prior and weight, else the host's defaults, as ``(item scores [users, n_items]
    or None, weight)`` for these histories (catalog positions); None when the weight is 0."""
    prior = prior if prior is not None else host.prior
    weight = check_weight(weight if weight is not None else host.prior_weight)
    if prior is None or weight == 0.0:
        return None, 0.0
    catalog = host.catalog
    ids = [[catalog.ids[p] for p in history] for history in histories]
    return prior_scores(prior, ids, len(catalog)), weight

