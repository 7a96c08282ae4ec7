"""Forced-chain lookahead: feeding the model only where some live beam needs new logits.

Most title tokens are not decisions (a trie node with one child). When a beam's last token leads
into such a chain, the chain is fed in the same model call as that token, and the log-probability
of every forced token and the full row where the chain ends are kept (``Ahead``); the steps that
walk the chain read them from there (``step_logp``), so the model runs only at steps where some
live beam has just taken a token whose logits are not known. Exact: the same candidates and
scores as calling the model every step.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from .attention import tree_mask
from .constraint import NEG_INF
from .kv_rows import append_rows, rows_of
from .search_types import ModelCall, SearchSettings, SearchState
from .vocabulary import OutputVocabulary, head_logits

__all__ = ["LOOKAHEAD_MAX_ROWS", "chains", "feed", "step_logp"]


#: Lookahead pays while a model call is memory-bound (a handful of beam rows: one user's beams):
#: the forced tokens ride along almost free and save whole calls. A call feeding more rows than
#: this (several users decoded together) is compute-bound and is needed at nearly every step
#: anyway, so chains fed ahead for beams that are later pruned cost more than they save
#: (eval/notes/2026-11-28-decoding-speed.md); such calls feed one token per beam.
LOOKAHEAD_MAX_ROWS = 16


def chains(state: SearchState, settings: SearchSettings, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The forced tokens after each of ``rows``' nodes (``[rows, m]``, -1 padded) and how many of
    them to feed: all but a last one that ends a title (its logits are never needed)."""
    device = rows.device
    if not settings.lookahead or len(rows) > max(settings.beams, LOOKAHEAD_MAX_ROWS):
        none = torch.zeros(len(rows), dtype=torch.long, device=device)
        return torch.zeros((len(rows), 0), dtype=torch.long, device=device), none
    arrays = settings.constraint.arrays
    node = state.nodes[rows]
    length = arrays["forced"][node].long()
    if settings.max_chain is not None:
        # the rest of a capped chain is fed by the call after the beam walks the part fed
        length = length.clamp(max=settings.max_chain)
    longest = int(length.max()) if len(rows) else 0
    tokens = torch.full((len(rows), longest), -1, dtype=torch.long, device=device)
    fed = length.clone()
    for i in range(longest):
        going = i < length
        child = arrays["first_child"][node].long()
        node = torch.where(going, child, node)
        tokens[:, i] = torch.where(going, arrays["token"][child].long(), tokens[:, i])
        ends_title = going & (i == length - 1) & (arrays["n_children"][node] == 0)
        fed = torch.where(ends_title, fed - 1, fed)
    return tokens, fed


def feed(model: Any, cache: DynamicCache, state: SearchState, settings: SearchSettings) -> ModelCall | None:
    """Run the model on every live beam whose last token is not in the cache yet, followed by its
    forced chain (lookahead); store what it computes in ``state.ahead``. Returns the call made, or
    None when every live beam is served from earlier lookahead."""
    started = time.perf_counter()
    n_active, beams = len(state.active), settings.beams
    device = state.scores.device
    need = ((state.slots[:, :, -1] < 0) & (state.scores > NEG_INF)).view(-1)
    rows = need.nonzero().view(-1)
    if len(rows) == 0:
        return None
    chain, fed = chains(state, settings, rows)
    span = 1 + fed  # queries per fed beam: its last token, then the fed part of its chain
    user = rows // beams
    # pack each user's queries side by side: beam rows in order, each its span
    ends = torch.zeros(n_active, dtype=torch.long, device=device).index_add_(0, user, span)
    width = int(ends.max())
    start_in_user = torch.cumsum(span, 0) - span - (torch.cumsum(ends, 0) - ends)[user]
    n_queries = int(span.sum())
    query_row = torch.repeat_interleave(torch.arange(len(rows), device=device), span)  # index into rows
    offset = torch.arange(n_queries, device=device) - torch.repeat_interleave(torch.cumsum(span, 0) - span, span)
    column = start_in_user[query_row] + offset
    # only the users with something to feed are run: the others' rows would be all padding
    callers = torch.unique(user)
    run_all = len(callers) == n_active or any(type(layer) is not DynamicLayer for layer in cache.layers)
    if run_all:
        callers = torch.arange(n_active, device=device)
    local = torch.full((n_active,), -1, dtype=torch.long, device=device)
    local[callers] = torch.arange(len(callers), device=device)
    q_user = local[user[query_row]]  # the query's row in this call
    tokens = torch.cat([state.last_token.view(-1)[rows].unsqueeze(1), chain.clamp(min=0)], dim=1)
    input_ids = torch.full((len(callers), width), settings.pad_token_id, dtype=torch.long, device=device)
    input_ids[q_user, column] = tokens[query_row, offset]
    first_position = state.first_position[callers]
    positions = first_position.view(-1, 1).expand(len(callers), width).clone()
    positions[q_user, column] = first_position[q_user] + state.step - 1 + offset
    flat_slots = state.slots.view(n_active * beams, -1)
    earlier = flat_slots[rows[query_row], :-1]  # all fed: only a beam's last token waits
    mask = tree_mask(
        state.prompt_keep[callers], earlier, q_user, column, start_in_user[query_row], state.n_keys, width, settings.mask_dtype
    )
    call_cache = cache if run_all else rows_of(cache, callers, model.config)
    decoder = model.base_model
    out = decoder(
        input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **{settings.cache_arg: call_cache}
    )
    if not run_all:
        append_rows(cache, call_cache, callers, width)
    hidden = out.last_hidden_state[q_user, column]  # [queries, hidden], in rows order
    base_slot = state.n_keys + start_in_user  # slot of each fed beam's last token
    keys_before = state.prompt_keep.shape[1] + state.n_keys
    state.n_keys += width
    flat_slots[rows, -1] = base_slot
    store_ahead(model, state, settings.vocabulary, rows, chain, fed, hidden, query_row, offset, base_slot)
    return ModelCall(
        users=len(torch.unique(user)), active=n_active, rows=len(rows), tokens=n_queries, width=width, keys=keys_before,
        seconds=time.perf_counter() - started,
    )  # fmt: skip


def store_ahead(
    model: Any, state: SearchState, vocabulary: OutputVocabulary | None, rows: torch.Tensor, chain: torch.Tensor, fed: torch.Tensor, hidden: torch.Tensor,
    query_row: torch.Tensor, offset: torch.Tensor, base_slot: torch.Tensor,
) -> None:  # fmt: skip
    """From the fed beams' hidden states: each forced token's log-probability (only its logit and
    the normaliser: no full row is kept for a forced step) and the full row after the last fed
    token. The LM head runs in chunks, so long chains never hold every position's logits at once;
    with an output ``vocabulary`` it computes that vocabulary's columns only."""
    ahead = state.ahead
    n_chain = chain.shape[1]
    ahead.tokens[rows] = -1
    ahead.slots[rows] = -1
    if n_chain:
        ahead.tokens[rows, :n_chain] = chain
        fed_slots = base_slot.view(-1, 1) + 1 + torch.arange(n_chain, device=rows.device).view(1, -1)
        ahead.slots[rows, :n_chain] = torch.where(torch.arange(n_chain, device=rows.device).view(1, -1) < fed.view(-1, 1), fed_slots, -1)
    ahead.length[rows] = (chain >= 0).sum(dim=1)
    ahead.taken[rows] = 0
    is_last = offset == fed[query_row]  # the query whose full row is kept
    next_token = torch.full_like(offset, -1)
    forced_query = offset < ahead.length[rows][query_row]
    next_token[forced_query] = chain[query_row[forced_query], offset[forced_query]]
    chunk = 1024
    for lo in range(0, len(hidden), chunk):
        logits = head_logits(model, hidden[lo : lo + chunk], vocabulary)
        norm = torch.logsumexp(logits, dim=-1)
        q = slice(lo, lo + len(logits))
        forced = forced_query[q].nonzero().view(-1)
        if len(forced):
            column = next_token[q][forced]
            if vocabulary is not None:
                column = vocabulary.slots_of(column)
            values = logits[forced, column] - norm[forced]
            ahead.logp[rows[query_row[q][forced]], offset[q][forced]] = values
        last = is_last[q].nonzero().view(-1)
        if len(last):
            row = logits[last] - norm[last].unsqueeze(1)
            ahead.row[rows[query_row[q][last]]] = vocabulary.spread(row) if vocabulary is not None else row


def step_logp(state: SearchState) -> torch.Tensor:
    """Each beam's next-token log-probabilities: one forced entry while it is on a chain fed
    ahead, else the full row its last call computed."""
    ahead = state.ahead
    on_chain = (ahead.taken < ahead.length).nonzero().view(-1)
    if len(on_chain) == 0:
        return ahead.row
    logp = ahead.row.clone()
    logp[on_chain] = NEG_INF
    at = ahead.taken[on_chain]
    logp[on_chain, ahead.tokens[on_chain, at]] = ahead.logp[on_chain, at]
    return logp
