"""Baselines that can score items nobody has interacted with: from their words.

- ``Content``: TF-IDF over each item's title and attributes (scikit-learn); a history scores an
  item by the cosine of the item's vector with the history's profile, the sum of its most recent
  ``window`` items' vectors weighted ``decay ** age``; window and decay chosen on validation.
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
from ..data.splits import Split
from ..errors import require
from .scored import ItemKNN, ScoredMethod, validation_ndcg

__all__ = ["Content", "Hybrid", "item_text"]

_SKIP = {"item_id", "full_title"}  # (the short title's full form repeats the title's words)


def item_text(item: dict[str, Any]) -> str:
    """An item's words: its title and every attribute value ("Crime|Drama" reads as two words)."""
    values = [item.get("title", "")] + [str(v) for k, v in item.items() if k not in _SKIP and k != "title" and v is not None]
    return " ".join(v.replace("|", " ") for v in values if v)


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
        self.vectors: Any = None

    def fit(self, split: Split) -> None:
        text = require("sklearn.feature_extraction.text", "eval", "the content baseline")
        vectorizer = text.TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), strip_accents="unicode")
        self.vectors = vectorizer.fit_transform([item_text(self.catalog.item_at(p)) for p in range(len(self.catalog))]).tocsr()
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
        from scipy import sparse

        rows, cols, weights = [], [], []
        for row, history in enumerate(histories):
            idx = [self.index[i] for i in history if i in self.index]
            recent = idx[-self.window :] if self.window else idx
            for age, position in enumerate(reversed(recent)):
                rows.append(row)
                cols.append(position)
                weights.append(self.decay**age)
        profile = sparse.csr_matrix((weights, (rows, cols)), shape=(len(histories), len(self.catalog))) @ self.vectors
        return np.asarray((profile @ self.vectors.T).todense(), dtype=np.float64)


class Hybrid(ScoredMethod):
    """ItemKNN for the items training has seen, content for all (see the module docstring)."""

    name = "hybrid"
    SHARES = (0.01, 0.1, 0.3, 1.0, 3.0, 10.0)

    def __init__(self, catalog: Catalog, share: float | None = None):
        super().__init__(catalog)
        self.share = share
        self.knn, self.content = ItemKNN(catalog), Content(catalog)
        self.new = np.zeros(len(catalog), dtype=bool)

    def fit(self, split: Split) -> None:
        self.knn.fit(split)
        self.content.fit(split)
        seen = {item for sequence in split.train.values() for item in sequence}
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
