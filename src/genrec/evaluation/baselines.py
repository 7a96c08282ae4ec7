"""Score-based baselines on the same split: most popular, and first-order transitions.

A baseline scores every catalog item for a history; ranking, history exclusion and tie-breaking
are shared with every other scored method (see ``metrics.full_rank`` / ``metrics.top_k``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..catalog import Catalog
from .splits import Split

__all__ = ["ScoredMethod", "Popularity", "Markov"]


class ScoredMethod:
    """A method that scores every catalog item for each history."""

    name = "scored"

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.index = {item_id: n for n, item_id in enumerate(catalog.ids)}

    def fit(self, split: Split) -> None:
        raise NotImplementedError

    def score(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """``[len(histories), len(catalog)]`` scores, higher is better."""
        raise NotImplementedError

    def _popularity(self, split: Split) -> np.ndarray:
        counts = np.zeros(len(self.catalog), dtype=np.float64)
        for item, count in split.popularity().items():
            if item in self.index:
                counts[self.index[item]] = count
        return counts


class Popularity(ScoredMethod):
    """The items most interacted with in the training data, the same list for everyone."""

    name = "pop"

    def fit(self, split: Split) -> None:
        self.counts = self._popularity(split)

    def score(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(histories), len(self.counts))).copy()


class Markov(ScoredMethod):
    """First-order transitions: how often each item followed the user's last item in training
    sequences. Items never seen after it are ordered by popularity (scaled below one transition,
    so popularity only breaks ties)."""

    name = "markov"

    def fit(self, split: Split) -> None:
        counts = self._popularity(split)
        self.prior = counts / (counts.max() + 1.0) if counts.size else counts
        self.transitions: dict[int, dict[int, int]] = {}
        for sequence in split.train.values():
            idx = [self.index[i] for i in sequence if i in self.index]
            for prev, nxt in zip(idx, idx[1:]):
                row = self.transitions.setdefault(prev, {})
                row[nxt] = row.get(nxt, 0) + 1

    def score(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        out = np.tile(self.prior, (len(histories), 1))
        for row, history in enumerate(histories):
            if not history or history[-1] not in self.index:
                continue
            for nxt, count in self.transitions.get(self.index[history[-1]], {}).items():
                out[row, nxt] += count
        return out
