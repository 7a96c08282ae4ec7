"""Baselines that can score items nobody has interacted with: from their words.

- ``Content``: ``genrec.content.ContentScores`` (TF-IDF over each item's title and attributes; a
  history scores an item by the cosine of the item's vector with the history's profile, the sum of
  its most recent ``window`` items' vectors weighted ``decay ** age``), window and decay chosen on
  validation.
- ``Hybrid``: ItemKNN where it has seen the item, content everywhere: a known item scores its
  ItemKNN score plus ``share`` times its content score, a new item (one no training sequence
  holds) the content part alone, both parts scaled to each row's best; the share chosen on
  validation (small: ItemKNN's order with new items below; large: content's order).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..catalog import Catalog
from ..content import ContentScores
from ..data.cold import seen_items
from ..data.splits import Split
from .scored import ItemKNN, ScoredMethod, validation_ndcg

__all__ = ["Content", "Hybrid"]


def _row_max_scaled(scores: np.ndarray) -> np.ndarray:
    top = scores.max(axis=1, keepdims=True)
    return np.divide(scores, top, out=np.zeros_like(scores), where=top > 0)


class Content(ScoredMethod):
    """Content-based nearest neighbours to the history (see the module docstring)."""

    name = "content"
    WINDOWS = (1, 3, 10, 0)  # 0: the whole history
    DECAYS = (1.0, 0.7)

    def __init__(self, catalog: Catalog, window: int | None = None, decay: float | None = None):
        super().__init__(catalog)
        self.window, self.decay = window, decay
        self.scorer: ContentScores | None = None

    def fit(self, split: Split) -> None:
        self.scorer = ContentScores(self.catalog)
        if (self.window is None or self.decay is None) and split.valid:
            scores = {}
            for window in self.WINDOWS:
                for decay in self.DECAYS:
                    self.window, self.decay = window, decay
                    scores[(window, decay)] = validation_ndcg(self, split.valid)
            (self.window, self.decay) = max(scores, key=lambda s: (scores[s], -s[0], s[1]))  # ties: shorter, flatter
            self.tuned = {"window": self.window or "all", "decay": self.decay,
                          "valid_NDCG@10": {f"{w or 'all'}/{d}": round(v, 4) for (w, d), v in scores.items()}}  # fmt: skip
        self.window = 0 if self.window is None else self.window
        self.decay = 1.0 if self.decay is None else self.decay

    def score(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        assert self.scorer is not None, "fit first"
        return self.scorer.similarities(self.positions(histories), window=self.window or 0, decay=self.decay or 1.0)


class Hybrid(ScoredMethod):
    """ItemKNN for the items training has seen, content for all (see the module docstring)."""

    name = "hybrid"
    SHARES = (0.01, 0.1, 0.3, 1.0, 3.0, 10.0)

    def __init__(self, catalog: Catalog, share: float | None = None, *, neighbors: int | None = None,
                 window: int | None = None, decay: float | None = None):  # fmt: skip
        super().__init__(catalog)
        self.share = share
        self.knn, self.content = ItemKNN(catalog, neighbors), Content(catalog, window, decay)
        self.new = np.zeros(len(catalog), dtype=bool)

    def settings(self) -> dict[str, Any]:
        """What a fit chose: ``Hybrid(catalog, **settings)`` fits again without choosing."""
        return {"share": self.share, "neighbors": self.knn.neighbors, "window": self.content.window, "decay": self.content.decay}

    def fit(self, split: Split) -> None:
        self.knn.fit(split)
        self.content.fit(split)
        seen = seen_items(split)
        self.new = np.array([item not in seen for item in self.catalog.ids])
        if self.share is None and split.valid:
            scores = {}
            for share in self.SHARES:
                self.share = share
                scores[share] = validation_ndcg(self, split.valid)
            self.share = max(scores, key=lambda s: (scores[s], -s))
            self.tuned = {"share": self.share, "new_items": int(self.new.sum()),
                          "valid_NDCG@10": {str(s): round(v, 4) for s, v in scores.items()},
                          "itemknn": self.knn.tuned, "content": self.content.tuned}  # fmt: skip
        self.share = 0.1 if self.share is None else self.share

    def score(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        known = _row_max_scaled(np.asarray(self.knn.score(histories), dtype=np.float64))
        words = _row_max_scaled(self.content.score(histories))
        return np.where(self.new, 0.0, known) + self.share * words
