"""Recommending from words when no interaction log says anything (``search="content"``): the items
whose words are nearest the history and the request (``genrec.words``: TF-IDF mixed with the
model's own reading of each item) are proposed and ordered by them. At ``weight`` below 1 the model
also scores each proposed title exactly, in the context beam search would write it, and the list is
ordered by the mixture of the two experts' probabilities,

    log((1 - weight) * p_model(title) + weight * p_words(item))

with ``p_words`` the words' softmax over every item the user may be recommended.

The default weight is 1 (the words' order, no model call): measured on new-item rows
(eval/RESULTS.md), the model's rerank at w = 0.5 left the list of TF-IDF's candidates unchanged on
99 of 100 product rows and gave no gain on MovieLens' films, at 1.2-3.4 s a user; and no mixture
the harness tried (product, sum, per token, pointwise mutual information) gave the 135M model's
opinion more weight without losing accuracy on new-item validation rows. The model's reading of
the items, mixed into the words, is what measured better than TF-IDF alone.

``search="auto"`` (the default) uses it when nothing learned from an interaction log is at hand:
no active prior, no log fitted (``Recommender.fit``: its mixture ranks the same way, through
``search_scores``), and a model that genrec did not fine-tune. A request's words join the history's
(a request alone is enough); a conversation's do not (``chat``: a turned-down title's words would
pull its look-alikes up), and reach the model's prompt only when ``weight`` is below 1. Nothing to
go on (no history and no request, or, with TF-IDF alone, no word in common with any item the user
may get) leaves the choice to beam search over the whole catalog.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..content import REQUEST_SHARE
from ..decoding import score_continuations
from ..errors import ConfigError, DeadlineError
from ..words import READING_DEPTH, READING_WEIGHT, WordScores
from .host import TaskHost, output_vocabulary
from .pipeline import PreparedPrompt
from .prior import Prior
from .results import Recommendation, Recommendations

__all__ = ["SEARCHES", "ContentSearch", "check_search", "search_mode", "search_scores", "decode_content"]

#: ``beam``: the model writes titles over the whole catalog; ``content``: the items nearest in words
#: (TF-IDF and the model's reading); ``log``: the mixture fitted on an interaction log
#: (``Recommender.fit``); ``auto``: beam with a prior, else log once one is fitted, else beam for a
#: fine-tuned model, else content
SEARCHES = ("auto", "beam", "content", "log")


@dataclass(frozen=True)
class ContentSearch:
    """How ``search="content"`` proposes and orders: its ``candidates`` best items by their words
    (or ``k``, if more), mixed with the model's score at ``weight`` below 1 (see the module); the
    history's TF-IDF profile from its last ``window`` items (0: all) weighted ``decay ** age``
    (what the content baseline chose on the validation rows of D3 and Amazon Scientific; MovieLens
    chose a window of 10 with the same decay); the model's reading at ``reading`` of its depth, at
    ``reading_weight`` of the words' score (``genrec.words``; None: TF-IDF alone); a request's words
    in the TF-IDF profile at ``request_share`` times its history's items together
    (``genrec.content.request_weights``), and in the model's reading too with ``read_requests``
    (measured: better on Amazon Scientific's long category requests, worse on MovieLens' genres,
    the less good compromise over five row sets; eval/notes/2026-12-07-requests-and-a-larger-reader.md)."""

    candidates: int = 50
    weight: float = 1.0
    window: int = 0
    decay: float = 0.7
    reading: float | None = READING_DEPTH
    reading_weight: float = READING_WEIGHT
    request_share: float = REQUEST_SHARE
    read_requests: bool = False

    def __post_init__(self) -> None:
        if self.candidates < 1 or not 0.0 <= self.weight <= 1.0:
            raise ConfigError(f"content search needs candidates >= 1 and a weight in [0, 1], got {self.candidates} and {self.weight}")
        if self.reading is not None and not 0.0 < self.reading <= 1.0 or not 0.0 <= self.reading_weight <= 1.0:
            raise ConfigError(
                f"content search's reading is a share of the model's depth in (0, 1] (or None) and its weight lies in [0, 1], "
                f"got {self.reading} and {self.reading_weight}"
            )  # fmt: skip
        if not self.request_share > 0.0:
            raise ConfigError(f"content search's request_share must be above 0, got {self.request_share}")


def check_search(search: str) -> str:
    if search not in SEARCHES:
        raise ConfigError(f"search must be one of {', '.join(SEARCHES)}, got {search!r}")
    return search


def search_mode(search: str, prior: Prior, fine_tuned: bool, fitted_log: bool) -> str:
    """What a constrained call with this ``search`` and ``prior`` ranks by: ``beam``, ``content``
    (the words) or ``log`` (the mixture ``Recommender.fit`` fitted on an interaction log)."""
    if check_search(search) == "auto":
        if prior.active:
            return "beam"
        return "log" if fitted_log else "beam" if fine_tuned else "content"
    if search == "log" and not fitted_log:
        raise ConfigError("search='log' ranks by a fitted interaction log: call Recommender.fit(log) first")
    return search


def search_scores(
    host: TaskHost, search: str | None, prior: Prior, histories: Sequence[Sequence[int]], requests: Sequence[str | None] | None = None,
) -> WordScores | None:  # fmt: skip
    """The scores a constrained call proposes from (histories: catalog positions), or None for
    beam search. With a fitted log, a row with a request is scored from the words (the log's
    mixture cannot read a request), the others by the mixture."""
    mode = search_mode(search or host.search, prior, host.fine_tuned, host.log_model is not None)
    if mode == "beam":
        return None
    if mode == "content":
        return host.words().scores(histories, requests)
    fitted = host.log_model.word_scores(histories)  # (search_mode saw that one is fitted)
    asked = np.array([bool(text and text.strip()) for text in requests or [None] * len(histories)])
    if not asked.any():
        return fitted
    words, rows = host.words().scores(histories, requests), asked[:, None]
    return WordScores(np.where(rows, words.logits, fitted.logits), np.where(rows, words.near, fitted.near))


def decode_content(
    host: TaskHost, words: WordScores, jobs: Sequence[PreparedPrompt], k: int, settings: ContentSearch, *,
    deadline: float | None = None,
) -> list[Recommendations | None]:  # fmt: skip
    """Each job's ``k`` items (None where the words have nothing near anything it may be
    recommended: beam search's turn); ``words``: the jobs' scores, one row each.
    ``deadline`` (``time.monotonic()``): a DeadlineError once a job starts past it."""
    catalog, pipeline = host.catalog, host.pipeline
    titles = catalog.position_titles  # each position's title number
    out: list[Recommendations | None] = []
    for n, (job, row) in enumerate(zip(jobs, words.logits)):
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineError(f"content search passed its deadline after {n} of {len(jobs)} users")
        allowed = ~np.isin(titles, list(job.banned_titles))
        if not allowed.any() or not words.near[n][allowed].any():
            out.append(None)
            continue
        ranked = np.flatnonzero(allowed)[np.argsort(-row[allowed], kind="stable")]  # ties: catalog order
        proposed = ranked[: max(settings.candidates, k)]  # (k items come back even past the candidates)
        log_words = row[proposed] - np.logaddexp.reduce(row[allowed])
        mixed = log_words
        if settings.weight < 1.0:
            index = pipeline.index(job.ctx)
            sequences = [index.sequence(int(titles[p])) for p in proposed]
            model = np.asarray(
                score_continuations(host.lm.search_model, job.prompt_ids, sequences, vocabulary=output_vocabulary(host, index)), dtype=np.float64
            )  # fmt: skip
            mixed = _mixture(model, log_words, settings.weight)
        order = np.argsort(-mixed, kind="stable")[:k]
        recs = [Recommendation(catalog.ids[int(proposed[i])], catalog.titles[int(proposed[i])], float(mixed[i])) for i in order]
        out.append(Recommendations(
            recs, history_used=job.history_used, history_dropped=job.history_dropped, prompt_text=job.prompt_text,
            history=job.history,
        ))  # fmt: skip
    return out


def _mixture(model: np.ndarray, log_words: np.ndarray, weight: float) -> np.ndarray:
    if weight <= 0.0:
        return model
    return np.logaddexp(np.log1p(-weight) + model, np.log(weight) + log_words)
