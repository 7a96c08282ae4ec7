"""Ranking given candidates (template ``rank``): each candidate scored by the log-probability of
the model writing its title as the answer, all candidates in one batched pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..decoding import score_continuations
from .host import TaskHost
from .results import Recommendation, Recommendations

__all__ = ["rank"]


def rank(
    host: TaskHost,
    history: Sequence[Any],
    candidates: Sequence[Any],
    *,
    request: str | None = None,
    length_normalize: bool = False,
    template: str = "rank",
) -> Recommendations:
    """``candidates`` (IDs or titles) best first. The default score is the title's total
    log-probability (what beam search ranks by; favours short titles); ``length_normalize``
    divides by its token count (favours long ones). Ties keep the given order; repeats count once."""
    pipeline, catalog = host.pipeline, host.catalog
    host.limits.check_request(request)
    host.limits.check_refs(candidates, "candidates")
    history_positions = pipeline.resolve(history)
    positions = list(dict.fromkeys(pipeline.resolve(candidates, "candidates")))
    if not positions:
        return Recommendations([], history_used=len(history_positions))
    text = pipeline.render(
        template, pipeline.items(history_positions), request, candidates=pipeline.items(positions), k=len(positions)
    )
    prompt_text, ctx = pipeline.split(text)
    prompt_ids = pipeline.encode(prompt_text)
    pipeline.check_fits(len(prompt_ids), f"the {template} prompt with {len(positions)} candidates")
    index = pipeline.index(ctx)
    sequences = [index.sequence(pipeline.title_number(p)) for p in positions]
    scores = score_continuations(host.lm.model, prompt_ids, sequences)
    if length_normalize:
        scores = [score / len(seq) for score, seq in zip(scores, sequences)]
    order = sorted(range(len(positions)), key=lambda i: -scores[i])
    recs = [Recommendation(catalog.ids[positions[i]], catalog.titles[positions[i]], scores[i]) for i in order]
    return Recommendations(recs, history_used=len(history_positions), prompt_text=prompt_text)
