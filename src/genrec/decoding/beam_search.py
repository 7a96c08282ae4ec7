"""Beam search over catalog titles (or free text), several users at once.

Each user's prompt is run through the model once; then each beam's new tokens go in as that
user's next positions, and a tree-shaped attention mask lets each beam see the prompt and its own
ancestors only, so the cache is shared by the beams and never copied. Every step masks the
next-token log-probabilities of all beams of all users with one vectorised operation over the
title index (``TitleConstraint``), so the cost of the constraint does not grow with the catalog.

Lookahead: most title tokens are not decisions (a trie node with one child). When a beam's last
token leads into such a chain, the chain is fed in the same model call as that token, and the
log-probability of every forced token and the full row where the chain ends are kept
(``Ahead``). The steps that walk the chain take their log-probabilities from there; the model is
called at a step only when some live beam has just taken a token whose logits are not known. A
beam is fed at most ``max_chain`` forced tokens ahead of where it stands, and every call tops the
others back up to that horizon, so beams pruned midway waste few tokens. The search stays
step-synchronous, so candidates, order and scores are those of calling the model every step.

One step, in the order ``beam_search`` runs them:

- ``feed`` (``lookahead.py``): the model on every live beam whose last token is not in the cache (plus its chain),
  and on the next stretch of the chains other live beams stand on;
- ``step_logp``: each beam's next-token log-probabilities, from its last call;
- ``_mask``: tokens that continue no allowed title set to -inf (constrained search), and the
  allowed ones mixed with a collaborative prior when there is one (``TitlePrior``); under a
  family cap (``FamilyCap``), those that can no longer make their family's best titles are set to
  -inf, and those past a family's first ``limit`` of the step are held back (spare);
- ``_score``: the best ``2 * beams`` (beam, token) candidates per user and the nodes they reach
  (plus the best ``beams`` spare ones);
- ``_finish``: candidates that complete a title (or end free text) become hypotheses;
- ``_select``: the best ``beams`` unfinished candidates become the next step's beams (spare ones
  only for places no other candidate fills: one family cannot crowd out the rest of the beam);
- ``drop_done`` (``kv_rows.py``, as ``compact``): users whose top ``num_return`` can no longer change leave the batch;
- ``compact``: the cache keys of pruned beams are dropped once they are half the generated keys.

Search semantics follow transformers' beam search (the same candidates are kept at every step, so
the two agree on the same model and prompt), with two differences that matter for
recommendation: a beam whose title cannot continue dies instead of running unconstrained, and with
length penalty 0 the search stops as soon as the k best finished titles can no longer be beaten
(scores are sums of log-probabilities, so they only fall as titles grow).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from transformers import DynamicCache

from ..errors import ConfigError, DeadlineError
from .attention import cache_argument, left_pad
from .constraint import NEG_INF, TitleConstraint
from .family import DEFAULT_FAMILY_SHARE, FamilyCap, check_family_cap
from .index import TitleIndex
from .kv_rows import compact, drop_done
from .lookahead import DEFAULT_MAX_CHAIN, feed, step_logp
from .prefix_cache import PrefixCache
from .prior import TitlePrior
from .search_types import CANDIDATE_FIELDS, Ahead, Candidates, Hypothesis, ModelCall, SearchSettings, SearchState
from .vocabulary import OutputVocabulary

__all__ = ["Hypothesis", "SearchSettings", "ModelCall", "beam_search"]


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
    lookahead: bool = True,
    max_chain: int | None = DEFAULT_MAX_CHAIN,
    max_per_family: int | None = None,
    family_share: float = DEFAULT_FAMILY_SHARE,
    vocabulary: OutputVocabulary | None = None,
    on_model_call: Callable[[ModelCall], None] | None = None,
    deadline: float | None = None,
) -> list[list[Hypothesis]]:
    """Beam search for each prompt (token ids), all prompts in one batch.

    Constrained (``index`` given): every returned hypothesis is a complete title of the index, the
    ``num_return`` best by score, distinct; ``banned_titles[u]`` are title numbers user ``u`` must
    not get (their trie paths are pruned). Fewer are returned when fewer titles are reachable.
    Unconstrained (``index=None``): free text ending in one of ``eos_token_ids`` or at
    ``max_new_tokens``.

    ``lookahead`` (constrained only): a beam's forced continuation (the single-child chain after
    its token) is fed in the same model call, so the steps that take it need no call (exact: the
    same beams and scores as without). ``max_chain``: a beam is fed at most that many forced
    tokens beyond the one it stands on (all of a chain that ends within twice that), and every
    call tops each live beam back up to it (None: whole chains at once). Exact too; fewer tokens
    are fed for beams pruned midway, at the cost of a call where a beam runs out before any other
    beam needed one (eval/notes/2026-12-08-chain-horizon.md measures the trade).
    ``prefix_cache`` reuses the cache of the prompt text all prompts share (see PrefixCache).
    ``prior`` (constrained only) mixes a per-user collaborative prior into every step (TitlePrior).
    ``max_per_family`` (constrained only): at most that many titles of one family of variants
    (titles sharing ``family_share`` of their tokens; see FamilyCap) per user; None: no cap.
    ``vocabulary`` (constrained only): next-token probabilities are normalised over these tokens
    alone (``vocabulary.py``), as a model trained with that output vocabulary learnt them; None:
    over the model's whole vocabulary.
    ``stats``, when given, receives ``steps`` (decoding steps run), ``model_calls`` (prefill
    included), ``compactions`` (times the keys of pruned beams were dropped), ``prefill_s`` and
    ``decode_s``.
    ``on_model_call`` (a step hook), when given, is called with every model call after the prefill
    (``ModelCall``: users, beam rows and tokens fed, padded width, keys, seconds): what
    ``eval/profile_decoding.py`` tabulates.
    ``deadline`` (a ``time.monotonic()`` value): past it, the search stops at its next step with a
    DeadlineError, so a caller that gave up frees the model within one step.
    """
    if num_beams < 1 or num_return < 1:
        raise ConfigError("num_beams and num_return must be at least 1")
    if max_chain is not None and max_chain < 0:
        raise ConfigError(f"max_chain must be 0 or more (None: whole chains), got {max_chain}")
    if num_return > num_beams:
        raise ConfigError(f"num_return ({num_return}) cannot exceed num_beams ({num_beams})")
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ConfigError("empty prompt")
    check_family_cap(max_per_family, family_share)
    if vocabulary is not None and index is None:
        raise ConfigError("an output vocabulary restricts constrained search only; free text needs the whole vocabulary")
    device = next(model.parameters()).device
    constraint = None
    if index is not None:
        constraint = TitleConstraint(index, device, banned_titles or ())
        if constraint.empty:
            return [[] for _ in prompts]
        max_steps = index.max_depth
    elif max_new_tokens is None:
        raise ConfigError("unconstrained beam search needs max_new_tokens")
    else:
        max_steps = max_new_tokens
    settings = SearchSettings(
        beams=num_beams,
        num_return=num_return,
        max_steps=max_steps,
        length_penalty=length_penalty,
        pad_token_id=pad_token_id,
        constraint=constraint,
        # a prior built on another device (the CPU, from numpy scores) is indexed by the model's tensors
        prior=prior.to(device) if constraint is not None and prior is not None and prior.weight > 0 else None,
        eos=None if constraint else torch.tensor(list(eos_token_ids), dtype=torch.long, device=device),
        cache_arg=cache_argument(model),
        mask_dtype=next(model.parameters()).dtype,
        lookahead=lookahead and constraint is not None,
        vocabulary=vocabulary.to(device) if vocabulary is not None else None,
        max_chain=max_chain,
    )

    cap = None
    if constraint is not None and max_per_family is not None:
        cap = FamilyCap(index, max_per_family, family_share, device)
    started = time.perf_counter()
    cache = DynamicCache(config=model.config)  # filled in place by every forward pass
    state = _prefill(model, cache, prompts, settings, prefix_cache, device)
    prefilled = time.perf_counter()
    finished: list[list[Hypothesis]] = [[] for _ in prompts]
    steps, calls, compactions = 0, 1, 0
    for step in range(max_steps):
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineError(f"decoding passed its deadline after {step} of at most {max_steps} steps")
        state.step, steps = step, step + 1
        if step > 0:
            call = feed(model, cache, state, settings)
            if call is not None:
                calls += 1
                if on_model_call is not None:
                    on_model_call(call)
        logp, spare = _mask(step_logp(state), state, settings, cap, finished)
        candidates = _score(logp, state, settings, spare)
        _finish(candidates, state, settings, finished)
        _select(candidates, state, settings, finished)
        done = _users_done(state, settings, finished, cap)
        if bool(done.all()):
            break
        if bool(done.any()):
            drop_done(state, cache, done)
        compactions += compact(state, cache)

    if stats is not None:
        stats.update(steps=steps, model_calls=calls, compactions=compactions, prefill_s=prefilled - started, decode_s=time.perf_counter() - prefilled)
    return [_best(f, num_return, cap) for f in finished]


def _best(hypotheses: list[Hypothesis], n: int, cap: FamilyCap | None) -> list[Hypothesis]:
    return cap.best(hypotheses, n) if cap is not None else sorted(hypotheses, key=lambda h: -h.score)[:n]


def _prefill(
    model: Any,
    cache: DynamicCache,
    prompts: Sequence[Sequence[int]],
    settings: SearchSettings,
    prefix_cache: PrefixCache | None,
    device: Any,
) -> SearchState:
    """Run every prompt once (after the shared prefix, when cached); the initial state: one live
    beam per user, whose first step's log-probabilities are known."""
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
    last = out.logits[:, -1, :].float()
    logp = settings.vocabulary.log_softmax(last) if settings.vocabulary is not None else torch.log_softmax(last, dim=-1)
    logp = logp.repeat_interleave(beams, dim=0)
    scores = torch.full((n_users, beams), NEG_INF, device=device)
    scores[:, 0] = 0.0  # only the first beam may expand at the first step
    nodes = None
    if settings.constraint is not None:
        nodes = torch.full((n_users, beams), settings.constraint.sentinel, dtype=torch.long, device=device)
        nodes[:, 0] = 0
        nodes = nodes.view(-1)
    rows = n_users * beams
    width = max(1, settings.max_steps)
    ahead = Ahead(
        tokens=torch.full((rows, width), -1, dtype=torch.long, device=device),
        logp=torch.zeros((rows, width), device=device),
        slots=torch.full((rows, width), -1, dtype=torch.long, device=device),
        length=torch.zeros(rows, dtype=torch.long, device=device),
        taken=torch.zeros(rows, dtype=torch.long, device=device),
        row=logp,
    )
    return SearchState(
        active=torch.arange(n_users, device=device),
        scores=scores,
        generated=torch.zeros((n_users, beams, 0), dtype=torch.long, device=device),
        slots=torch.zeros((n_users, beams, 0), dtype=torch.long, device=device),
        prompt_keep=prompt_mask.bool(),
        first_position=positions[:, -1] + 1,
        nodes=nodes,
        last_token=None,
        ahead=ahead,
    )


def _mask(
    logp: torch.Tensor, state: SearchState, settings: SearchSettings, cap: FamilyCap | None, finished: list[list[Hypothesis]]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The step's scores of every (beam, token), and under a family cap the held-back ones apart.
    Constrained, the columns are the index's tokens (``TitleConstraint.keep_columns``), not the vocabulary."""
    if settings.constraint is None:
        return logp, None
    row_users = state.active.repeat_interleave(settings.beams)
    row, token, child = settings.constraint.allowed(state.nodes, row_users)
    mixed = settings.prior.mix(logp, row, token, child, row_users) if settings.prior is not None else logp[row, token]
    if cap is None:
        return settings.constraint.keep_columns(logp, row, token, mixed), None
    total = state.scores.view(-1)[row] + mixed
    if settings.length_penalty == 0.0:  # (scores only fall as a title grows; a normalised one can rise)
        closed = cap.closed(child, total, row_users[row], finished)
        mixed = torch.where(closed, torch.full_like(mixed, NEG_INF), mixed)
        total = torch.where(closed, torch.full_like(total, NEG_INF), total)
    held = cap.overflow(child, total, row_users[row])
    if not bool(held.any()):
        return settings.constraint.keep_columns(logp, row, token, mixed), None
    kept = torch.where(held, torch.full_like(mixed, NEG_INF), mixed)
    keep = settings.constraint.keep_columns
    return keep(logp, row, token, kept), keep(logp, row[held], token[held], mixed[held])


def _score(logp: torch.Tensor, state: SearchState, settings: SearchSettings, spare: torch.Tensor | None = None) -> Candidates:
    main = _top(logp, state, settings, 2 * settings.beams)
    if spare is None:
        return main
    extra = _top(spare, state, settings, settings.beams)
    joined = [torch.cat([getattr(main, name), getattr(extra, name)], dim=1) for name in CANDIDATE_FIELDS]
    flags = torch.zeros_like(main.valid)
    return Candidates(*joined, spare=torch.cat([flags, torch.ones_like(extra.valid)], dim=1))


def _top(logp: torch.Tensor, state: SearchState, settings: SearchSettings, n: int) -> Candidates:
    """The best ``n`` (beam, token) extensions per user of ``logp``, best first (constrained,
    ``logp``'s columns are the index's tokens)."""
    n_active, beams = len(state.active), settings.beams
    vocab = logp.shape[-1]
    flat = (logp + state.scores.view(-1, 1)).view(n_active, beams * vocab)
    top_scores, top_index = flat.topk(min(n, beams * vocab), dim=1)
    beam_of = top_index // vocab
    token = top_index % vocab
    parent_row = torch.arange(n_active, device=logp.device).view(-1, 1) * beams + beam_of
    valid = top_scores > NEG_INF
    constraint = settings.constraint
    if constraint is not None:
        token = constraint.arrays["columns"][token]
        child = constraint.advance(state.nodes[parent_row], token)
        child = torch.where(valid, child, torch.full_like(child, constraint.sentinel))
        is_final = constraint.is_final(child) & valid
    else:
        child = torch.full_like(token, -1)
        is_final = torch.isin(token, settings.eos) & valid if len(settings.eos) else torch.zeros_like(valid)
    return Candidates(top_scores, beam_of, token, parent_row, valid, child, is_final)


def _finish(candidates: Candidates, state: SearchState, settings: SearchSettings, finished: list[list[Hypothesis]]) -> None:
    """Record the candidates that complete a title; like transformers, only those ranked within
    the first ``beams`` may finish (and any spare one: a held-back variant can still close a list)."""
    rank = torch.arange(candidates.scores.shape[1], device=candidates.scores.device).view(1, -1)
    finishing = candidates.is_final & (rank < settings.beams)
    if candidates.spare is not None:
        finishing = finishing | (candidates.is_final & candidates.valid & candidates.spare)
    if not bool(finishing.any()):
        return
    flat_generated = state.generated.reshape(len(state.active) * settings.beams, -1)
    penalty = float(state.step + 1) ** settings.length_penalty
    for u, j in finishing.nonzero().tolist():
        user, node = int(state.active[u]), int(candidates.child[u, j])
        tokens = (*flat_generated[int(candidates.parent_row[u, j])].tolist(), int(candidates.token[u, j]))
        finished[user].append(Hypothesis(tokens=tokens, score=float(candidates.scores[u, j]) / penalty, node=node))


def _select(candidates: Candidates, state: SearchState, settings: SearchSettings, finished: list[list[Hypothesis]]) -> None:
    """The best ``beams`` unfinished candidates become the beams; each inherits its parent's
    tokens, their cache slots and its lookahead. Free text that reached the length limit is returned unfinished, as
    transformers does."""
    n_active, beams = len(state.active), settings.beams
    running = torch.where(candidates.is_final | ~candidates.valid, torch.full_like(candidates.scores, NEG_INF), candidates.scores)
    if candidates.spare is None:
        scores, pick = running.topk(beams, dim=1)
    else:  # best first, the spare ones after all the others (and dead ones last)
        tier = torch.where(running == NEG_INF, 2, candidates.spare.to(torch.int8))
        order = torch.argsort(running, dim=1, descending=True, stable=True)
        order = order.gather(1, torch.argsort(tier.gather(1, order), dim=1, stable=True))
        pick = order[:, :beams]
        scores = running.gather(1, pick)
    chosen_row = candidates.parent_row.gather(1, pick)
    chosen_token = candidates.token.gather(1, pick)
    alive = scores > NEG_INF
    if settings.constraint is not None:
        sentinel = torch.full_like(chosen_token, settings.constraint.sentinel)
        state.nodes = torch.where(alive, candidates.child.gather(1, pick), sentinel).reshape(-1)
    chosen_token = torch.where(alive, chosen_token, torch.full_like(chosen_token, settings.pad_token_id))
    parent = chosen_row.view(-1)
    flat_generated = state.generated.reshape(n_active * beams, -1)
    state.generated = torch.cat([flat_generated[parent].view(n_active, beams, -1), chosen_token.unsqueeze(-1)], dim=2)
    # each new beam inherits its parent's tokens, their cache slots and the parent's lookahead; a
    # beam that took the next token of a chain fed ahead has that token in the cache already
    ahead = state.ahead.select(parent)
    on_chain = ahead.taken < ahead.length
    at = ahead.taken.clamp(max=ahead.slots.shape[1] - 1).unsqueeze(1)
    slot = torch.where(on_chain, ahead.slots.gather(1, at).squeeze(1), torch.full_like(parent, -1))
    ahead.taken = torch.where(on_chain, ahead.taken + 1, ahead.taken)
    state.ahead = ahead
    flat_slots = state.slots.reshape(n_active * beams, -1)[parent]
    state.slots = torch.cat([flat_slots, slot.unsqueeze(1)], dim=1).view(n_active, beams, -1)
    state.scores = scores
    state.last_token = chosen_token
    if settings.constraint is None and state.step + 1 >= settings.max_steps:
        penalty = float(settings.max_steps) ** settings.length_penalty
        for u, b in alive.nonzero().tolist():
            finished[int(state.active[u])].append(
                Hypothesis(tokens=tuple(state.generated[u, b].tolist()), score=float(scores[u, b]) / penalty, finished=False)
            )


def _users_done(state: SearchState, settings: SearchSettings, finished: list[list[Hypothesis]], cap: FamilyCap | None) -> torch.Tensor:
    """Which active users can stop: no live beam left, the best live beam cannot beat the
    ``num_return``-th finished one of the list (exact when length_penalty is 0), or the length limit."""
    best_running = state.scores.max(dim=1).values.tolist()  # (under a family cap, spare beams come last whatever their score)
    done = []
    for u, user in enumerate(state.active.tolist()):
        if best_running[u] == NEG_INF or state.step + 1 >= settings.max_steps:
            done.append(True)
            continue
        listed = cap.best(finished[user], len(finished[user]), fill=False) if cap is not None else finished[user]
        scores = sorted((h.score for h in listed), reverse=True)
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
