"""Next-item recommendation, with or without a request in plain words (templates ``next_item`` and
``request``): prompts in, constrained beam search over catalog titles, items out; or free text
grounded onto the catalog afterwards (BIGRec-style)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from ..decoding import Hypothesis, TitleContext, TitlePrior, beam_search
from ..errors import LimitError
from ..model import eos_token_ids
from .content_search import decode_content, search_scores
from .host import TaskHost, output_vocabulary
from .pipeline import PreparedPrompt
from .prior import Prior
from .results import Recommendation, Recommendations

__all__ = ["recommend_batch", "decode_constrained", "decode_free", "default_template"]


def default_template(history: Sequence[Any], request: str | None) -> str:
    """``request`` for a request with no history (zero-shot from words alone), else ``next_item``."""
    return "request" if request and not history else "next_item"


def recommend_batch(
    host: TaskHost,
    histories: Sequence[Sequence[Any]],
    k: int,
    *,
    requests: Sequence[str | None] | None = None,
    excludes: Sequence[Sequence[Any]] | None = None,
    constrained: bool = True,
    exclude_history: bool = True,
    template: str = "next_item",
    num_beams: int | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    prior: Prior | None = None,
    min_match_score: float | None = None,
    strict_history: bool = False,
    deadline: float | None = None,
    max_batch_tokens: int | None = None,
    search: str | None = None,
) -> list[Recommendations]:
    """The ``k`` best items for each history; users are decoded together in batches (of at most
    ``batch_size`` users and, with ``max_batch_tokens``, as many prompts as that many padded
    prompt tokens hold: a long prompt then never pads many short ones). ``prior``
    (constrained decoding; None: the host's default) is mixed into every step. ``min_match_score``
    and ``strict_history``: how strictly histories are read (``PromptPipeline.prepare``);
    ``deadline`` (``time.monotonic()``): a DeadlineError once decoding runs past it. ``search``
    (None: the host's): ``beam``, ``content``, ``log`` or ``auto`` (``content_search.py``)."""
    k = host.limits.check_k(k)
    requests = list(requests) if requests is not None else [None] * len(histories)
    excludes = list(excludes) if excludes is not None else [()] * len(histories)
    if len(requests) != len(histories) or len(excludes) != len(histories):
        raise LimitError(f"{len(histories)} histories need as many requests and exclude lists")
    jobs = [
        host.pipeline.prepare(
            history, template, request=request, exclude=exclude, exclude_history=exclude_history, k=k,
            min_match_score=min_match_score, strict_history=strict_history,
        )  # fmt: skip
        for history, request, exclude in zip(histories, requests, excludes)
    ]
    beams = host.limits.check_beams(max(num_beams or host.num_beams, k), k)
    prior = prior if prior is not None else host.default_prior
    scores = prior.item_scores(host.catalog, [job.history_positions for job in jobs])
    if scores is not None and not constrained:
        raise LimitError("a prior applies to constrained decoding only (constrained=True)")
    results: list[Recommendations | None] = [None] * len(jobs)
    words = search_scores(host, search, prior, [job.history_positions for job in jobs], requests) if constrained else None
    if words is not None:
        results = decode_content(host, words, jobs, k, host.content_search, deadline=deadline)
    size = batch_size or host.batch_size
    # similar prompt lengths together: less padding per batch (only what content left to the beam)
    pending = [i for i, r in enumerate(results) if r is None]
    order = sorted(pending, key=lambda i: (jobs[i].ctx.context, len(jobs[i].prompt_ids)))
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(pending), desc="recommending", unit="user", disable=not progress)
    for batch in _batches(order, [len(job.prompt_ids) for job in jobs], size, max_batch_tokens):
        if constrained:
            rows = scores[batch] if scores is not None else None
            decoded = decode_constrained(host, [jobs[i] for i in batch], k, beams, prior=prior, prior_rows=rows, deadline=deadline)
        else:
            decoded = decode_free(host, [jobs[i] for i in batch], k, beams, deadline=deadline)
        for i, recs in zip(batch, decoded):
            results[i] = recs
        bar.update(len(batch))
    bar.close()
    return [r for r in results if r is not None]


def _batches(order: list[int], lengths: list[int], size: int, max_tokens: int | None) -> list[list[int]]:
    """``order`` cut into batches of at most ``size`` users whose padded prompts (rows times the
    longest, as the order is by length) fit ``max_tokens``; a prompt alone over it is a batch."""
    batches: list[list[int]] = []
    for i in order:
        current = batches[-1] if batches else None
        rows = len(current) + 1 if current else 1
        longest = max(lengths[j] for j in [*(current or []), i])
        if current and rows <= size and (max_tokens is None or rows * longest <= max_tokens):
            current.append(i)
        else:
            batches.append([i])
    return batches


def decode_constrained(
    host: TaskHost,
    jobs: list[PreparedPrompt],
    k: int,
    beams: int,
    *,
    prior: Prior | None = None,
    prior_rows: Any = None,
    deadline: float | None = None,
) -> list[Recommendations]:
    """Constrained beam search for prepared prompts: every item is a catalog item, none banned.
    ``prior_rows``: the ``prior``'s item scores for these jobs (``Prior.item_scores``)."""
    # jobs with different tokenisation contexts (different templates) use different indexes
    groups: dict[TitleContext, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(job.ctx, []).append(i)
    results: list[list[Hypothesis]] = [[] for _ in jobs]
    for ctx, members in groups.items():
        index = host.pipeline.index(ctx)
        available = [index.n_titles - len(jobs[i].banned_titles) for i in members]
        width = max(1, min(beams, max(available)))
        title_prior = None
        if prior is not None and prior_rows is not None:
            title_prior = TitlePrior.from_item_scores(
                index, host.catalog.position_titles, prior_rows[members], [jobs[i].banned_titles for i in members],
                weight=prior.weight, aggregation=prior.aggregation, device=host.lm.device,
            )  # fmt: skip
        hyps = beam_search(
            host.lm.search_model,
            [jobs[i].prompt_ids for i in members],
            num_beams=width,
            num_return=min(k, width),
            index=index,
            banned_titles=[jobs[i].banned_titles for i in members],
            length_penalty=host.length_penalty,
            pad_token_id=host.pad_token_id,
            prefix_cache=host.prefix_cache(jobs[members[0]].template),
            prior=title_prior,
            lookahead=host.lookahead,
            max_per_family=host.max_per_family,
            family_share=host.family_share,
            vocabulary=output_vocabulary(host, index),
            deadline=deadline,
        )
        for i, h in zip(members, hyps):
            results[i] = h
    return [_items_of(host, job, hyps, k) for job, hyps in zip(jobs, results)]


def _items_of(host: TaskHost, job: PreparedPrompt, hyps: list[Hypothesis], k: int) -> Recommendations:
    """Titles -> items: a title shared by several IDs yields each of them, with the title's score."""
    catalog = host.catalog
    index = host.pipeline.index(job.ctx)
    recs: list[Recommendation] = []
    for hyp in hyps:
        for title_number in index.titles_at(hyp.node):
            if title_number in job.banned_titles:
                continue
            for pos in catalog.title_positions[title_number]:
                recs.append(Recommendation(catalog.ids[pos], catalog.titles[pos], hyp.score))
    return Recommendations(
        recs[:k], history_used=job.history_used, history_dropped=job.history_dropped, prompt_text=job.prompt_text,
        history=job.history,
    )


def decode_free(host: TaskHost, jobs: list[PreparedPrompt], k: int, beams: int, *, deadline: float | None = None) -> list[Recommendations]:
    """Unconstrained generation, each beam's text grounded onto the catalog (BIGRec-style)."""
    tokenizer = host.lm.tokenizer
    hyps_per_user = beam_search(
        host.lm.search_model,
        [job.prompt_ids for job in jobs],
        num_beams=beams,
        num_return=beams,
        index=None,
        eos_token_ids=host.end_ids or eos_token_ids(tokenizer),
        # room for the longest catalog title plus some words around it
        max_new_tokens=host.pipeline.index(jobs[0].ctx).max_depth + host.free_text_slack,
        length_penalty=host.length_penalty,
        pad_token_id=host.pad_token_id,
        prefix_cache=host.prefix_cache(jobs[0].template),
        deadline=deadline,
    )
    grounder = host.catalog.grounder
    out = []
    for job, hyps in zip(jobs, hyps_per_user):
        recs: list[Recommendation] = []
        seen: set[str] = set()
        outputs: list[str] = []
        ungrounded: list[str] = []
        repeats: list[str] = []
        for hyp in hyps:
            text = tokenizer.decode(list(hyp.tokens), skip_special_tokens=True).split("\n")[0].strip()
            outputs.append(text)
            matches = grounder.ground(text, limit=1, threshold=host.grounding_threshold) if text else []
            if not matches:
                ungrounded.append(text)
                continue
            if host.catalog.title_number(matches[0].title) in job.banned_titles:
                repeats.append(text)
                continue
            for match in matches:
                if match.item_id not in seen:
                    seen.add(match.item_id)
                    recs.append(Recommendation(match.item_id, match.title, hyp.score))
        out.append(
            Recommendations(
                recs[:k],
                history_used=job.history_used,
                history_dropped=job.history_dropped,
                ungrounded=ungrounded,
                outputs=outputs,
                history_repeats=repeats,
                prompt_text=job.prompt_text,
                history=job.history,
            )
        )
    return out
