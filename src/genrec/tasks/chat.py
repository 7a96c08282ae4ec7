"""Conversation (template ``chat``): items named in the conversation are found and never
recommended again; those the user liked go into the prompt, those turned down are listed as such;
the reply is rendered by the template's ``reply`` block from the recommended items."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..grounding import Match
from .content_search import decode_content, search_scores
from .explain import unique_matches
from .host import TaskHost
from .prior import Prior
from .recommend import decode_constrained
from .results import ChatResponse

__all__ = ["chat", "read_conversation"]

_SENTENCE = re.compile(r"(?<=[.!?;\n])\s+|\s+(?:but|although|though|however)\s+", re.IGNORECASE)
# a sentence that turns an item down: "not X", "I hated X", "no more X", "already seen X"
_NEGATIVE = re.compile(
    r"\b(?:not|no|never|don'?t|didn'?t|doesn'?t|won'?t|hate[ds]?|hating|dislike[ds]?|boring|bored|awful|terrible|"
    r"worst|avoid|skip|already (?:seen|watched|read)|seen it|instead of|rather than|except|other than)\b|n't\b",
    re.IGNORECASE,
)


def read_conversation(host: TaskHost, turns: Sequence[dict[str, str]]) -> tuple[list[Match], list[Match], list[Match]]:
    """``(liked, rejected, mentioned)``: the catalog items the conversation names, sentence by
    sentence; an item the user named in a negative sentence is rejected."""
    grounder = host.catalog.grounder
    liked: list[Match] = []
    rejected: list[Match] = []
    mentioned: list[Match] = []
    for turn in turns:
        for sentence in _SENTENCE.split(turn["content"]):
            for _, matches in grounder.find_mentions(sentence):
                mentioned.extend(matches)
                if turn["role"] == "user":
                    (rejected if _NEGATIVE.search(sentence) else liked).extend(matches)
    mentioned, rejected = unique_matches(mentioned), unique_matches(rejected)
    rejected_ids = {m.item_id for m in rejected}
    liked = [m for m in unique_matches(liked) if m.item_id not in rejected_ids]
    return liked, rejected, mentioned


def chat(
    host: TaskHost,
    messages: Any,
    k: int = 5,
    *,
    exclude: Sequence[Any] = (),
    template: str = "chat",
    prior: Prior | None = None,
    search: str | None = None,
) -> ChatResponse:
    """The reply and the ``k`` items it recommends, every one a catalog item; a prior sees the
    items the user liked as the history, and so does content search (the conversation's words
    reach the model only: a turned-down title's words would pull its look-alikes up)."""
    k = host.limits.check_k(k)
    beams = host.limits.check_beams(max(host.num_beams, k), k)
    turns = host.limits.check_messages(messages)
    liked, rejected, mentioned = read_conversation(host, turns)
    last_user = next(t["content"] for t in reversed(turns) if t["role"] == "user")
    conversation = [t for t in turns if t["role"] != "system"]
    extra = {"conversation": conversation, "rejected": [host.catalog.item(m.item_id) for m in rejected]}
    job = host.pipeline.prepare(
        [m.item_id for m in liked],
        template,
        request=last_user,
        exclude=[m.item_id for m in mentioned] + list(exclude),
        k=k,
        extra=extra,
    )
    prior = prior if prior is not None else host.default_prior
    recs = None
    words = search_scores(host, search, prior, [job.history_positions])
    if words is not None:
        recs = decode_content(host, words, [job], k, host.content_search)[0]
    if recs is None:
        rows = prior.item_scores(host.catalog, [job.history_positions])
        recs = decode_constrained(host, [job], k, beams, prior=prior, prior_rows=rows)[0]
    items = [host.catalog.item(r.item_id) for r in recs]
    reply = host.prompts.render_block(template, "reply", items=items, kind=host.catalog.kind, k=k)
    return ChatResponse(reply, list(recs), mentioned, rejected)
