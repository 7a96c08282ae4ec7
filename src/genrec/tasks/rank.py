"""Ranking given candidates (template ``rank``): each candidate scored by the log-probability of
the model writing its title as the answer, all candidates in one batched pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..decoding import score_continuations
from .host import TaskHost, output_vocabulary
from .prior import Prior
from .results import Recommendation, Recommendations

__all__ = ["rank", "score_titles", "title_lengths"]


def rank(
    host: TaskHost,
    history: Sequence[Any],
    candidates: Sequence[Any],
    *,
    request: str | None = None,
    length_normalize: bool = False,
    template: str = "rank",
    prior: Prior | None = None,
) -> Recommendations:
    """``candidates`` (IDs or titles) best first. The default score is the title's total
    log-probability (what beam search ranks by; favours short titles); ``length_normalize``
    divides by its token count (favours long ones). Ties keep the given order; repeats count once.
    A prior (None: the host's default) mixes in as in beam search, exactly: ``(1 - w) * model + w *
    log p_prior(item | candidates)`` (whole titles are scored, so its aggregation does not apply)."""
    pipeline, catalog = host.pipeline, host.catalog
    host.limits.check_request(request)
    host.limits.check_refs(candidates, "candidates")
    history_positions = pipeline.resolve(history)
    positions = list(dict.fromkeys(pipeline.resolve(candidates, "candidates")))
    prior = prior if prior is not None else host.default_prior
    item_scores, weight = prior.item_scores(catalog, [history_positions]), prior.weight
    if not positions:
        return Recommendations([], history_used=len(history_positions))
    text = pipeline.render(
        template, pipeline.items(history_positions), request, candidates=pipeline.items(positions), k=len(positions)
    )
    prompt_text, ctx = pipeline.split(text, template)
    prompt_ids = pipeline.encode(prompt_text)
    pipeline.check_fits(len(prompt_ids), f"the {template} prompt with {len(positions)} candidates")
    index = pipeline.index(ctx)
    sequences = [index.sequence(pipeline.title_number(p)) for p in positions]
    scores = score_continuations(host.lm.search_model, prompt_ids, sequences, vocabulary=output_vocabulary(host, index))
    if length_normalize:
        scores = [score / len(seq) for score, seq in zip(scores, sequences)]
    if item_scores is not None:
        candidate_scores = item_scores[0][positions]
        log_prior = candidate_scores - np.logaddexp.reduce(candidate_scores)
        scores = [(1.0 - weight) * s + weight * float(p) for s, p in zip(scores, log_prior)]
    order = sorted(range(len(positions)), key=lambda i: -scores[i])
    recs = [Recommendation(catalog.ids[positions[i]], catalog.titles[positions[i]], scores[i]) for i in order]
    return Recommendations(recs, history_used=len(history_positions), prompt_text=prompt_text)


def _title_sequences(
    host: TaskHost, history: Sequence[Any], items: Sequence[Any], template: str, k: int, request: str | None
) -> tuple[Any, Any, list[list[int]]]:
    """The recommendation prompt ``recommend(history, k)`` decodes from, its title index, and each
    item's title as the tokens beam search writes there (closing separator included)."""
    pipeline = host.pipeline
    positions = pipeline.resolve(items, "candidates")
    job = pipeline.prepare(history, template, request=request, k=k)
    index = pipeline.index(job.ctx) if positions else None
    return job, index, [index.sequence(pipeline.title_number(p)) for p in positions] if index else []


def score_titles(
    host: TaskHost,
    history: Sequence[Any],
    items: Sequence[Any],
    *,
    template: str = "next_item",
    k: int = 10,
    request: str | None = None,
) -> np.ndarray:
    """The model's log-probability of writing each item's title (an ID or title each) as the next
    answer to ``template``'s recommendation prompt, the prompt being exactly the one
    ``recommend(history, k)`` decodes from: what constrained beam search ranks titles by (length
    penalty 0), computed for given items in one batched pass instead of searched for."""
    job, index, sequences = _title_sequences(host, history, items, template, k, request)
    if not sequences:
        return np.zeros(0)
    return np.asarray(
        score_continuations(host.lm.search_model, job.prompt_ids, sequences, vocabulary=output_vocabulary(host, index)), dtype=np.float64
    )


def title_lengths(
    host: TaskHost,
    history: Sequence[Any],
    items: Sequence[Any],
    *,
    template: str = "next_item",
    k: int = 10,
    request: str | None = None,
) -> np.ndarray:
    """How many tokens the model writes for each item's title after that same prompt (the title
    is tokenised in its context, so the count can differ from the title's own tokenisation): the
    divisor that makes ``score_titles``'s log-probabilities per token, as ``rank(length_normalize=True)``
    does for its own prompt. No model pass."""
    return np.asarray([len(seq) for seq in _title_sequences(host, history, items, template, k, request)[2]], dtype=np.int64)
