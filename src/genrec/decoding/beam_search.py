"""Beam search over catalog titles (or free text), several users at once.

Each user's prompt is run through the model once; at every step its beams' new tokens go in as
that user's next positions, and a tree-shaped attention mask lets each beam see the prompt and its
own ancestors only, so the cache is shared by the beams and never copied. Every step masks the
next-token log-probabilities of all beams of all users with one vectorised operation over the
title index (``TitleConstraint``), so the cost of the constraint does not grow with the catalog.

One step, in the order ``beam_search`` runs them:

- ``_expand``: the model's next-token log-probabilities for every live beam (one forward pass);
- ``_mask``: tokens that continue no allowed title set to -inf (constrained search), and the
  allowed ones mixed with a collaborative prior when there is one (``TitlePrior``);
- ``_score``: the best ``2 * beams`` (beam, token) candidates per user and the nodes they reach;
- ``_finish``: candidates that complete a title (or end free text) become hypotheses;
- ``_select``: the best ``beams`` unfinished candidates become the next step's beams;
- ``_drop_done``: users whose top ``num_return`` can no longer change leave the batch.

Search semantics follow transformers' beam search (the same candidates are kept at every step, so
the two agree on the same model and prompt), with two differences that matter for
recommendation: a beam whose title cannot continue dies instead of running unconstrained, and with
length penalty 0 the search stops as soon as the k best finished titles can no longer be beaten
(scores are sums of log-probabilities, so they only fall as titles grow).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from .attention import cache_argument, left_pad, tree_mask
from .constraint import NEG_INF, TitleConstraint
from .index import TitleIndex
from .prefix_cache import PrefixCache
from .prior import TitlePrior

__all__ = ["Hypothesis", "beam_search"]


@dataclass(frozen=True)
class Hypothesis:
    """A finished beam: its tokens (end marker included), score and, when constrained, its trie leaf."""

    tokens: tuple[int, ...]
    score: float
    node: int = -1
    finished: bool = True


@dataclass(frozen=True)
class _Settings:
    """What stays fixed during one search."""

    beams: int
    num_return: int
    max_steps: int
    length_penalty: float
    pad_token_id: int
    constraint: TitleConstraint | None
    prior: TitlePrior | None
    eos: torch.Tensor | None
    cache_arg: str
    mask_dtype: torch.dtype


@dataclass
class _State:
    """The live beams of the users still decoding (one row per user, ``beams`` per row)."""

    active: torch.Tensor  # original user number of each row
    scores: torch.Tensor  # [users, beams] running log-probabilities (-inf: no beam)
    generated: torch.Tensor  # [users, beams, step] tokens so far
    ancestry: torch.Tensor  # [users, beams, step - 1] where each ancestor's key sits among the generated keys
    prompt_keep: torch.Tensor  # [users, prompt] real (not padding) prompt positions
    first_position: torch.Tensor  # [users] position id of the first generated token
    nodes: torch.Tensor | None  # [users * beams] trie node of each beam (constrained)
    last_token: torch.Tensor | None  # [users, beams] tokens to feed at the next step
    step: int = 0


@dataclass
class _Candidates:
    """The best (beam, token) extensions of one step, ``2 * beams`` per user, best first."""

    scores: torch.Tensor
    beam_of: torch.Tensor
    token: torch.Tensor
    parent_row: torch.Tensor
    valid: torch.Tensor
    child: torch.Tensor
    is_final: torch.Tensor


@torch.inference_mode()
def beam_search(
    model: Any,
    prompts: Sequence[Sequence[int]],
    *,
    num_beams: int,
    num_return: int,
    index: TitleIndex | None = None,
    banned_titles: Sequence[Iterable[int]] | None = None,
    eos_token_ids: Sequence[int] = (),
    max_new_tokens: int | None = None,
    length_penalty: float = 0.0,
    pad_token_id: int = 0,
    stats: dict[str, float] | None = None,
    prefix_cache: PrefixCache | None = None,
    prior: TitlePrior | None = None,
) -> list[list[Hypothesis]]:
    """Beam search for each prompt (token ids), all prompts in one batch.

    Constrained (``index`` given): every returned hypothesis is a complete title of the index, the
    ``num_return`` best by score, distinct; ``banned_titles[u]`` are title numbers user ``u`` must
    not get (their trie paths are pruned). Fewer are returned when fewer titles are reachable.
    Unconstrained (``index=None``): free text ending in one of ``eos_token_ids`` or at
    ``max_new_tokens``.

    ``prefix_cache`` reuses the cache of the prompt text all prompts share (see PrefixCache).
    ``prior`` (constrained only) mixes a per-user collaborative prior into every step (TitlePrior).
    ``stats``, when given, receives ``steps`` (decoding steps run), ``prefill_s`` and ``decode_s``.
    """
    if num_beams < 1 or num_return < 1:
        raise ValueError("num_beams and num_return must be at least 1")
    if num_return > num_beams:
        raise ValueError(f"num_return ({num_return}) cannot exceed num_beams ({num_beams})")
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("empty prompt")
    device = next(model.parameters()).device
    constraint = None
    if index is not None:
        constraint = TitleConstraint(index, device, banned_titles or ())
        if constraint.empty:
            return [[] for _ in prompts]
        max_steps = index.max_depth
    elif max_new_tokens is None:
        raise ValueError("unconstrained beam search needs max_new_tokens")
    else:
        max_steps = max_new_tokens
    settings = _Settings(
        beams=num_beams,
        num_return=num_return,
        max_steps=max_steps,
        length_penalty=length_penalty,
        pad_token_id=pad_token_id,
        constraint=constraint,
        prior=prior if constraint is not None and prior is not None and prior.weight > 0 else None,
        eos=None if constraint else torch.tensor(list(eos_token_ids), dtype=torch.long, device=device),
        cache_arg=cache_argument(model),
        mask_dtype=next(model.parameters()).dtype,
    )

    started = time.perf_counter()
    cache = DynamicCache(config=model.config)  # filled in place by every forward pass
    logp, state = _prefill(model, cache, prompts, settings, prefix_cache, device)
    prefilled = time.perf_counter()
    finished: list[list[Hypothesis]] = [[] for _ in prompts]
    steps = 0
    for step in range(max_steps):
        state.step, steps = step, step + 1
        if step > 0:
            logp = _expand(model, cache, state, settings)
        logp = _mask(logp, state, settings)
        candidates = _score(logp, state, settings)
        _finish(candidates, state, settings, finished)
        _select(candidates, state, settings, finished)
        done = _users_done(state, settings, finished)
        if bool(done.all()):
            break
        if bool(done.any()):
            _drop_done(state, cache, done)

    if stats is not None:
        stats.update(steps=steps, prefill_s=prefilled - started, decode_s=time.perf_counter() - prefilled)
    return [sorted(f, key=lambda h: -h.score)[:num_return] for f in finished]


def _prefill(
    model: Any,
    cache: DynamicCache,
    prompts: Sequence[Sequence[int]],
    settings: _Settings,
    prefix_cache: PrefixCache | None,
    device: Any,
) -> tuple[torch.Tensor, _State]:
    """Run every prompt once (after the shared prefix, when cached); the first step's
    log-probabilities (one row per beam) and the initial state: one live beam per user."""
    n_users, beams = len(prompts), settings.beams
    shared, layers = prefix_cache.get(model, prompts, settings.cache_arg) if prefix_cache is not None else (0, [])
    for layer_idx, (keys, values) in enumerate(layers):
        cache.update(keys.expand(n_users, -1, -1, -1).contiguous(), values.expand(n_users, -1, -1, -1).contiguous(), layer_idx)
    # the rest of each prompt, left-padded: padding sits between the shared prefix and the rest
    input_ids, rest_mask = left_pad([p[shared:] for p in prompts], settings.pad_token_id, device)
    prompt_mask = torch.cat([torch.ones((n_users, shared), dtype=rest_mask.dtype, device=device), rest_mask], dim=1)
    positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
    out = model(
        input_ids=input_ids,
        attention_mask=prompt_mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
        **{settings.cache_arg: cache},
    )
    # one row per beam; every beam of a user starts from the same logits
    logp = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1).repeat_interleave(beams, dim=0)
    scores = torch.full((n_users, beams), NEG_INF, device=device)
    scores[:, 0] = 0.0  # only the first beam may expand at the first step
    nodes = None
    if settings.constraint is not None:
        nodes = torch.full((n_users, beams), settings.constraint.sentinel, dtype=torch.long, device=device)
        nodes[:, 0] = 0
        nodes = nodes.view(-1)
    state = _State(
        active=torch.arange(n_users, device=device),
        scores=scores,
        generated=torch.zeros((n_users, beams, 0), dtype=torch.long, device=device),
        ancestry=torch.zeros((n_users, beams, 0), dtype=torch.long, device=device),
        prompt_keep=prompt_mask.bool(),
        first_position=positions[:, -1] + 1,
        nodes=nodes,
        last_token=None,
    )
    return logp, state


def _expand(model: Any, cache: DynamicCache, state: _State, settings: _Settings) -> torch.Tensor:
    """Feed the tokens the beams took at the previous step; their next-token log-probabilities."""
    n_active, beams = len(state.active), settings.beams
    fed = state.step - 1  # how many tokens per beam are already in the cache
    out = model(
        input_ids=state.last_token,
        attention_mask=tree_mask(state.prompt_keep, state.ancestry, fed, beams, settings.mask_dtype),
        position_ids=(state.first_position + fed).view(-1, 1).expand(n_active, beams),
        use_cache=True,
        **{settings.cache_arg: cache},
    )
    return torch.log_softmax(out.logits.float(), dim=-1).view(n_active * beams, -1)


def _mask(logp: torch.Tensor, state: _State, settings: _Settings) -> torch.Tensor:
    if settings.constraint is None:
        return logp
    row_users = state.active.repeat_interleave(settings.beams)
    row, token, child = settings.constraint.allowed(state.nodes, row_users)
    mixed = settings.prior.mix(logp, row, token, child, row_users) if settings.prior is not None else None
    return settings.constraint.keep(logp, row, token, mixed)


def _score(logp: torch.Tensor, state: _State, settings: _Settings) -> _Candidates:
    n_active, beams = len(state.active), settings.beams
    vocab = logp.shape[-1]
    flat = (logp + state.scores.view(-1, 1)).view(n_active, beams * vocab)
    top_scores, top_index = flat.topk(min(2 * beams, beams * vocab), dim=1)
    beam_of = top_index // vocab
    token = top_index % vocab
    parent_row = torch.arange(n_active, device=logp.device).view(-1, 1) * beams + beam_of
    valid = top_scores > NEG_INF
    constraint = settings.constraint
    if constraint is not None:
        child = constraint.advance(state.nodes[parent_row], token)
        child = torch.where(valid, child, torch.full_like(child, constraint.sentinel))
        is_final = constraint.is_final(child) & valid
    else:
        child = torch.full_like(token, -1)
        is_final = torch.isin(token, settings.eos) & valid if len(settings.eos) else torch.zeros_like(valid)
    return _Candidates(top_scores, beam_of, token, parent_row, valid, child, is_final)


def _finish(candidates: _Candidates, state: _State, settings: _Settings, finished: list[list[Hypothesis]]) -> None:
    """Record the candidates that complete a title; like transformers, only those ranked within
    the first ``beams`` may finish."""
    rank = torch.arange(candidates.scores.shape[1], device=candidates.scores.device).view(1, -1)
    finishing = candidates.is_final & (rank < settings.beams)
    if not bool(finishing.any()):
        return
    flat_generated = state.generated.reshape(len(state.active) * settings.beams, -1)
    penalty = float(state.step + 1) ** settings.length_penalty
    for u, j in finishing.nonzero().tolist():
        tokens = (*flat_generated[int(candidates.parent_row[u, j])].tolist(), int(candidates.token[u, j]))
        finished[int(state.active[u])].append(
            Hypothesis(tokens=tokens, score=float(candidates.scores[u, j]) / penalty, node=int(candidates.child[u, j]))
        )


def _select(candidates: _Candidates, state: _State, settings: _Settings, finished: list[list[Hypothesis]]) -> None:
    """The best ``beams`` unfinished candidates become the beams; each inherits its parent's
    tokens and ancestry. Free text that reached the length limit is returned unfinished, as
    transformers does."""
    n_active, beams = len(state.active), settings.beams
    running = torch.where(candidates.is_final | ~candidates.valid, torch.full_like(candidates.scores, NEG_INF), candidates.scores)
    scores, pick = running.topk(beams, dim=1)
    chosen_beam = candidates.beam_of.gather(1, pick)
    chosen_row = candidates.parent_row.gather(1, pick)
    chosen_token = candidates.token.gather(1, pick)
    alive = scores > NEG_INF
    if settings.constraint is not None:
        sentinel = torch.full_like(chosen_token, settings.constraint.sentinel)
        state.nodes = torch.where(alive, candidates.child.gather(1, pick), sentinel).reshape(-1)
    chosen_token = torch.where(alive, chosen_token, torch.full_like(chosen_token, settings.pad_token_id))
    flat_generated = state.generated.reshape(n_active * beams, -1)
    state.generated = torch.cat([flat_generated[chosen_row.view(-1)].view(n_active, beams, -1), chosen_token.unsqueeze(-1)], dim=2)
    if state.step > 0:
        # each new beam inherits its parent's ancestry plus the parent's token fed this step
        parent_ancestry = state.ancestry.gather(1, chosen_beam.unsqueeze(-1).expand(-1, -1, state.ancestry.shape[2]))
        state.ancestry = torch.cat([parent_ancestry, ((state.step - 1) * beams + chosen_beam).unsqueeze(-1)], dim=2)
    state.scores = scores
    state.last_token = chosen_token
    if settings.constraint is None and state.step + 1 >= settings.max_steps:
        penalty = float(settings.max_steps) ** settings.length_penalty
        for u, b in alive.nonzero().tolist():
            finished[int(state.active[u])].append(
                Hypothesis(tokens=tuple(state.generated[u, b].tolist()), score=float(scores[u, b]) / penalty, finished=False)
            )


def _users_done(state: _State, settings: _Settings, finished: list[list[Hypothesis]]) -> torch.Tensor:
    """Which active users can stop: no live beam left, the best live beam cannot beat the
    ``num_return``-th finished one (exact when length_penalty is 0), or the length limit."""
    best_running = state.scores[:, 0].tolist()
    done = []
    for u, user in enumerate(state.active.tolist()):
        if best_running[u] == NEG_INF or state.step + 1 >= settings.max_steps:
            done.append(True)
            continue
        scores = sorted((h.score for h in finished[user]), reverse=True)
        if settings.length_penalty == 0.0:
            n = settings.num_return
            done.append(len(scores) >= n and best_running[u] <= scores[n - 1])
        else:
            # transformers' heuristic: a full set of finished beams, and the best running one,
            # scored at its current length, no better than the worst of them
            n = settings.beams
            current = best_running[u] / float(state.step + 1) ** settings.length_penalty
            done.append(len(scores) >= n and current <= scores[n - 1])
    return torch.tensor(done, device=state.scores.device)


def _drop_done(state: _State, cache: DynamicCache, done: torch.Tensor) -> None:
    """Remove finished users' rows from the state and the cache."""
    keep = (~done).nonzero().view(-1)
    cache.batch_select_indices(keep)
    state.active = state.active[keep]
    state.scores = state.scores[keep]
    state.generated = state.generated[keep]
    state.ancestry = state.ancestry[keep]
    state.prompt_keep = state.prompt_keep[keep]
    state.first_position = state.first_position[keep]
    state.last_token = state.last_token[keep]
    if state.nodes is not None:
        beams = state.scores.shape[1]
        state.nodes = state.nodes.view(-1, beams)[keep].reshape(-1)
