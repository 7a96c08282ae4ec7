"""What search from words reads when no interaction log says anything: each item's words as TF-IDF
weighs them (``genrec.content``), mixed with the model's own reading of them (``genrec.encoder``'s
untrained vectors: no log read).

Each of the two scores every catalog item for a user; each row is standardised over the catalog
and they are mixed ``(1 - w) * tfidf + w * reading``. A request's text joins the TF-IDF profile,
counting as much as the history's items together (``content.request_weights``, times a share), so
a request alone (no history) is a profile too; given ``read``, it joins the model's reading too.
Measured with simulated requests (eval/bench_requests.py), the TF-IDF profile alone at a share of
1 was the best compromise over five row sets; read by the model, a short request pulled the list
away, though a sentence's filler words ("watch", "film") pulled TF-IDF toward titles holding them.

Why this mixture: on 2,503 new-item test rows of three datasets (MovieLens, Amazon Scientific, D3),
the model's reading at layer 8 of the default model's 30, mixed at w = 0.5, both chosen on the
runs' 1,801 validation rows together, scored NDCG@10 0.0529 against TF-IDF's 0.0495 (+0.0034,
p = 0.025; eval/RESULTS.md "New items"). The layer is given as a depth (8 / 30) so that another
model reads at the same relative depth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .content import (
    REQUEST_SHARE,
    ContentScores,
    history_weights,
    log_similarity,
    request_weights,
    standardised,
)
from .encoder import ItemEncoder

__all__ = ["READING_DEPTH", "READING_WEIGHT", "WordScores", "Words", "reading_layer"]

#: the model's layer read, as a share of its depth: layer 8 of the default model's 30
READING_DEPTH = 8 / 30
#: the model's reading's share of the words' score
READING_WEIGHT = 0.5


def reading_layer(depth: float, n_layers: int) -> int:
    """The layer at ``depth`` (a share of ``n_layers``) of a model: at least 1 (after the first block)."""
    return min(n_layers, max(1, round(depth * n_layers)))


@dataclass(frozen=True)
class WordScores:
    """``logits``: ``[users, n_items]`` log-scores, the order of the list (their softmax over the
    items a user may get is the words' probability); ``near``: ``[users, n_items]``, the items the
    words put anywhere near the user (none: nothing to go on, beam search's turn)."""

    logits: np.ndarray
    near: np.ndarray


class Words:
    """Scores every item for histories (catalog positions) and requests from their words: TF-IDF
    alone (``encoder`` None), or mixed with the model's reading (see the module docstring);
    ``read``: the model's raw features of texts at the encoder's layer (for requests); ``window`` and
    ``decay``: of the TF-IDF profile (None: ``content``'s own); ``request_share``: a request's weight,
    in units of its history's items together."""

    def __init__(
        self, content: ContentScores, encoder: ItemEncoder | None = None, *, weight: float = READING_WEIGHT,
        read: Callable[[Sequence[str]], np.ndarray] | None = None, window: int | None = None, decay: float | None = None,
        request_share: float = REQUEST_SHARE,
    ) -> None:  # fmt: skip
        self.content, self.encoder, self.weight, self.read = content, encoder, weight, read
        self.window, self.decay = window, decay  # of the TF-IDF profile (None: the content scorer's own)
        self.request_share = request_share

    def scores(self, histories: Sequence[Sequence[int]], requests: Sequence[str | None] | None = None) -> WordScores:
        texts = [(text or "").strip() for text in requests] if requests is not None else [""] * len(histories)
        similarities = self.content.similarities(
            histories, window=self.window, decay=self.decay, requests=texts, request_share=self.request_share
        )  # fmt: skip
        if self.encoder is None:
            return WordScores(log_similarity(similarities), similarities > 0.0)
        extra = None
        asked = [n for n, text in enumerate(texts) if text]
        if asked and self.read is not None:
            extra = np.zeros((len(histories), self.encoder.features.shape[1]), dtype=np.float32)
            s = self.encoder.settings
            profiles = history_weights([histories[n] for n in asked], len(self.encoder.features), window=s.window, decay=s.decay)
            weights = request_weights(profiles, self.request_share)
            extra[asked] = weights[:, None] * self.encoder.unit_vectors(self.read([texts[n] for n in asked]))
        reading = self.encoder.scores(histories, extra=extra)
        mixed = (1.0 - self.weight) * standardised(similarities) + self.weight * standardised(reading)
        profiled = np.array([len(h) > 0 or bool(text) for h, text in zip(histories, texts)])
        return WordScores(mixed, np.broadcast_to(profiled[:, None], mixed.shape))
