"""Collaborative priors as one value (``Prior``): the scores, the weight they get and how a title
prefix gathers them, checked once where the value is made and passed unchanged from the facade
through the tasks to the decoder.

A prior's scores are per-item log-scores in catalog order (higher: more likely; any real numbers,
treated as unnormalised log-probabilities): one array for every user, one row per user, or a
callable that takes the users' histories (lists of item IDs, oldest first) and returns one row
per user (the harness's Markov, SASRec and popularity baselines are such callables).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from ..decoding.prior import AGGREGATIONS
from ..errors import PriorError

__all__ = ["Prior", "PriorScores", "prior_scores", "check_weight", "check_aggregation"]

#: an array ``[n_items]`` or ``[n_users, n_items]``, or ``histories -> [n_users, n_items]``
PriorScores = Union[np.ndarray, Sequence[float], Callable[[list[list[str]]], Any]]


def check_weight(weight: Any) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.floating, np.integer)) or not 0.0 <= float(weight) <= 1.0:
        raise PriorError(f"prior_weight must be a number from 0 to 1, got {weight!r}")
    return float(weight)


def check_aggregation(aggregation: Any) -> str:
    """How a trie node's prior mass gathers its titles' scores: ``logsumexp`` or ``max``."""
    if aggregation not in AGGREGATIONS:
        raise PriorError(f"prior_aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
    return str(aggregation)


def prior_scores(prior: PriorScores, histories: list[list[str]], n_items: int) -> np.ndarray:
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


@dataclass(frozen=True)
class Prior:
    """A collaborative prior: ``scores`` (see the module; None: no prior), mixed into every
    decoding step with ``weight`` in [0, 1] (0: the model alone; 1: the prior decides and the
    model spells titles), a title prefix's score gathered from its titles by ``aggregation``
    (``logsumexp`` or ``max``). The weight and aggregation are checked when the value is made;
    the scores' shape when they meet a catalog (``item_scores``)."""

    scores: PriorScores | None = None
    weight: float = 0.0
    aggregation: str = "logsumexp"

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", check_weight(self.weight))
        object.__setattr__(self, "aggregation", check_aggregation(self.aggregation))

    @property
    def active(self) -> bool:
        """Whether decoding mixes it in at all (scores and a weight above 0)."""
        return self.scores is not None and self.weight > 0.0

    def override(self, scores: PriorScores | Prior | None = None, weight: float | None = None, aggregation: str | None = None) -> Prior:
        """This prior (a Recommender's default) with what one call gives in its place; a whole
        ``Prior`` given as ``scores`` replaces this one before ``weight`` and ``aggregation`` apply."""
        base = scores if isinstance(scores, Prior) else self
        return Prior(
            scores=base.scores if scores is None or isinstance(scores, Prior) else scores,
            weight=base.weight if weight is None else weight,
            aggregation=base.aggregation if aggregation is None else aggregation,
        )

    def item_scores(self, catalog: Any, histories: Sequence[Sequence[int]]) -> np.ndarray | None:
        """``[users, n_items]`` log-scores for these histories (catalog positions); None when the
        prior is not active."""
        if not self.active:
            return None
        ids = [[catalog.ids[p] for p in history] for history in histories]
        return prior_scores(self.scores, ids, len(catalog))
