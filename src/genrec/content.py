"""Items proposed from their words: TF-IDF over each item's title and attributes (scikit-learn),
and a history's cosine similarity to every item.

This is what genrec recommends from when no interaction log says anything: a new item nobody has
bought, a catalog nobody has used yet. Measured on new-item rows (eval/RESULTS.md), a
title's words find the next item better than the 135M model writing titles from scratch does;
``Recommender(search="content")`` has these scores propose the candidates and the model rerank
them. The harness's ``content`` baseline scores with the same vectors.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from .catalog import Catalog
from .errors import ConfigError

__all__ = [
    "REQUEST_SHARE", "ContentScores", "item_text", "flag_attributes", "catalog_texts", "log_similarity", "history_weights",
    "request_weights", "standardised",
]  # fmt: skip

_SKIP = {"item_id", "full_title"}  # (the short title's full form repeats the title's words)
_URL = re.compile(r"(?i)^(https?|ftp)://\S*$")
_SET = ("1", "true")  # a flag's values (as text, lower case): set, and
_FLAG_VALUES = (*_SET, "0", "false")


def log_similarity(similarities: np.ndarray) -> np.ndarray:
    """Similarities as log-scores: a similarity of 0 is unlikely (1e-6), not impossible."""
    return np.log(similarities + 1e-6)


def standardised(scores: np.ndarray) -> np.ndarray:
    """Each row centred and divided by its spread over the catalog: scores of different scales
    (TF-IDF cosines, the model's, a baseline's) mixed as equals."""
    centred = scores - scores.mean(axis=1, keepdims=True)
    return centred / (centred.std(axis=1, keepdims=True) + 1e-9)


def item_text(item: dict[str, Any], flags: frozenset[str] = frozenset()) -> str:
    """An item's words: its title and every attribute value ("Crime|Drama" reads as two words),
    less web addresses (an address names a page, and its words would make every item of one site
    near every other: MovieLens' ``u.item`` read as it is has one per film). A ``flags`` attribute
    (a 0/1 or true/false column) reads as its name where it is set ("Sci-Fi"), as nothing elsewhere."""
    values = [item.get("title", "")]
    for key, value in item.items():
        if key in _SKIP or key == "title" or value is None:
            continue
        values.append((key if str(value).strip().lower() in _SET else "") if key in flags else str(value))
    return " ".join(v.replace("|", " ") for v in values if v and not _URL.match(v.strip()))


def flag_attributes(catalog: Catalog) -> frozenset[str]:
    """The attributes that are flags (0/1 or true/false) over the whole catalog (MovieLens' nineteen
    genre columns in ``u.item``): their values alone are no words, their names are."""
    return _flags([catalog.item_at(p) for p in range(len(catalog))])


def _flags(items: Sequence[dict[str, Any]]) -> frozenset[str]:
    seen: dict[str, bool] = {}
    for item in items:
        for key, value in item.items():
            if key not in _SKIP and key != "title" and value is not None:
                seen[key] = seen.get(key, True) and str(value).strip().lower() in _FLAG_VALUES
    return frozenset(key for key, flag in seen.items() if flag)


def catalog_texts(catalog: Catalog) -> list[str]:
    """Every item's words (``item_text``, the catalog's 0/1 columns read as flags), in catalog order."""
    items = [catalog.item_at(p) for p in range(len(catalog))]  # (each item read once, for its flags and its words)
    flags = _flags(items)
    return [item_text(item, flags) for item in items]


def history_weights(histories: Sequence[Sequence[int]], n_items: int, *, window: int, decay: float) -> Any:
    """``[users, n_items]`` sparse weights of each history's most recent ``window`` items (0: all),
    ``decay ** age`` each (the newest has age 0): a history's profile is these weights times the
    items' vectors."""
    from scipy import sparse

    rows, cols, weights = [], [], []
    for row, history in enumerate(histories):
        recent = list(history)[-window:] if window else list(history)
        for age, position in enumerate(reversed(recent)):
            rows.append(row)
            cols.append(int(position))
            weights.append(decay**age)
    return sparse.csr_matrix((weights, (rows, cols)), shape=(len(histories), n_items))


#: how much a request counts, in units of its history's items together (``request_weights``)
REQUEST_SHARE = 1.0


def request_weights(weights: Any, share: float = REQUEST_SHARE) -> np.ndarray:
    """How much each user's request counts in a profile whose items are weighted ``weights`` (a
    ``history_weights`` matrix): ``share`` times the history's items together (its row sums), and
    at least ``share`` items' worth. A request says what is wanted now; it should neither drown in
    a long history nor drown it."""
    return share * np.maximum(1.0, np.asarray(weights.sum(axis=1), dtype=np.float64).ravel())


class ContentScores:
    """Each item's similarity to a history: the cosine of the item's TF-IDF vector (word unigrams
    and bigrams, sublinear term frequency, accents stripped; fitted on the catalog's own text) with
    the history's profile, the sum of its most recent ``window`` items' vectors (0: all of them)
    weighted ``decay ** age``.

    Called with histories of item IDs it returns log-scores (``log(similarity + 1e-6)``), so it is
    also a prior (``genrec.Prior(scores=ContentScores(catalog), weight=...)``)."""

    def __init__(self, catalog: Catalog, *, window: int = 0, decay: float = 0.7) -> None:
        if window < 0 or not 0.0 < decay <= 1.0:
            raise ConfigError(f"content window must be 0 (all) or more and decay in (0, 1], got {window} and {decay}")
        self.catalog, self.window, self.decay = catalog, window, decay
        self._vectors: Any = None
        self._vectorizer: Any = None

    @property
    def vectors(self) -> Any:
        """The items' TF-IDF vectors (a sparse matrix, one row per catalog position), built on first use."""
        if self._vectors is None:
            from scipy import sparse
            from sklearn.feature_extraction.text import TfidfVectorizer

            vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), strip_accents="unicode")
            texts = catalog_texts(self.catalog)
            try:
                self._vectors = vectorizer.fit_transform(texts).tocsr()
                self._vectorizer = vectorizer
            except ValueError:  # no title holds a word (of two characters or more): nothing is near anything
                self._vectors = sparse.csr_matrix((len(self.catalog), 0))
        return self._vectors

    def similarities(
        self, histories: Sequence[Sequence[int]], *, window: int | None = None, decay: float | None = None,
        requests: Sequence[str | None] | None = None, request_share: float = REQUEST_SHARE,
    ) -> np.ndarray:  # fmt: skip
        """``[users, n_items]`` cosine similarities for histories given as catalog positions
        (oldest first); ``window`` and ``decay``: in place of this scorer's own. A user's
        ``requests`` text (None: none) joins the profile ``request_share`` times as much as the
        history's items together (``request_weights``), its English stop words left out ("for",
        "a": a request is a sentence, a title a name, and a title holding "for" is no nearer a
        request holding it)."""
        texts = [text or "" for text in requests] if requests is not None else [""] * len(histories)
        if not any(len(h) for h in histories) and not any(t.strip() for t in texts):  # near nothing, without building the vectors
            return np.zeros((len(histories), len(self.catalog)))
        window = self.window if window is None else window
        decay = self.decay if decay is None else decay
        vectors = self.vectors
        weights = history_weights(histories, len(self.catalog), window=window, decay=decay)
        profile = weights @ vectors
        if self._vectorizer is not None and any(t.strip() for t in texts):
            from scipy import sparse
            from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

            clean, split = self._vectorizer.build_preprocessor(), self._vectorizer.build_tokenizer()
            kept = [" ".join(w for w in split(clean(t)) if w not in ENGLISH_STOP_WORDS) for t in texts]
            profile = profile + sparse.diags(request_weights(weights, request_share)) @ self._vectorizer.transform(kept)
        return np.asarray((profile @ vectors.T).todense(), dtype=np.float64)

    def __call__(self, histories: list[list[str]]) -> np.ndarray:
        index = self.catalog.position
        positions = [[index(i) for i in history if i in self.catalog] for history in histories]
        return log_similarity(self.similarities(positions))
