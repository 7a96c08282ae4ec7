"""Forced-chain lookahead: feeding the model only where some live beam needs new logits.

Most title tokens are not decisions (a trie node with one child). When a beam's last token leads
into such a chain, the chain is fed in the same model call as that token, and the log-probability
of every forced token and the full row where the fed part ends are kept (``Ahead``); the steps
that walk the chain read them from there (``step_logp``), so the model runs only at steps where
some live beam has just taken a token whose logits are not known. Exact: the same candidates and
scores as calling the model every step.

With a horizon (``max_chain=N``), a beam is fed at most N forced tokens beyond the token it
stands on (all of a chain that ends within 2N), and every model call tops up each live beam's fed
part back to N (``top_up``): a call some beam needs anyway carries the others' next stretch, so a
beam runs out only when no call came for N steps, and a beam pruned midway wasted at most 2N tokens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from .attention import tree_mask
from .constraint import NEG_INF
from .kv_rows import append_rows, rows_of
from .search_types import ModelCall, SearchSettings, SearchState
from .vocabulary import OutputVocabulary, head_logits

__all__ = ["DEFAULT_MAX_CHAIN", "LOOKAHEAD_MAX_ROWS", "chains", "feed", "step_logp", "top_up"]


#: Lookahead pays while a model call is memory-bound (a handful of beam rows: one user's beams):
#: the forced tokens ride along almost free and save whole calls. A call feeding more rows than
#: this (several users decoded together) is compute-bound and is needed at nearly every step
#: anyway, so chains fed ahead for beams that are later pruned cost more than they save
#: (eval/notes/2026-11-28-decoding-speed.md); such calls feed one token per beam.
LOOKAHEAD_MAX_ROWS = 16

#: Forced tokens a beam is fed ahead of where it stands (a chain that ends within twice that is fed
#: whole: cutting it would cost a call for a few tokens). On product titles half the tokens of whole
#: chains went to beams pruned before they reached them (eval/notes/2026-12-08-chain-horizon.md).
DEFAULT_MAX_CHAIN = 6


@dataclass
class _Feed:
    """The beam rows one call feeds: those whose last token is not in the cache (``lead`` 1: that
    token, then its chain) and those topped up (``lead`` 0: the next stretch of a chain they stand
    on, after the part fed earlier)."""

    rows: torch.Tensor  # flat beam rows
    lead: torch.Tensor  # 1: the beam's last token is fed first; 0: a top-up
    chain: torch.Tensor  # [rows, m] forced tokens newly known (-1 padded)
    fed: torch.Tensor  # how many of them are fed (a last one that ends a title is not)
    base: torch.Tensor  # where the new tokens go in the beam's Ahead (0: it starts afresh)
    earlier: torch.Tensor  # [rows, e] cache slots of the tokens each row's queries see (-1: none)
    first_position: torch.Tensor  # position id of each row's first query

    @property
    def span(self) -> torch.Tensor:
        return self.lead + self.fed


def chains(state: SearchState, settings: SearchSettings, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The forced tokens after each of ``rows``' nodes (``[rows, m]``, -1 padded) and how many of
    them to feed: all but a last one that ends a title (its logits are never needed)."""
    device = rows.device
    if not _chains_fed(settings, len(rows)):
        none = torch.zeros(len(rows), dtype=torch.long, device=device)
        return torch.zeros((len(rows), 0), dtype=torch.long, device=device), none
    room = torch.full((len(rows),), -1 if settings.max_chain is None else settings.max_chain, device=device)
    return _forced_after(settings, state.nodes[rows], room)


def _chains_fed(settings: SearchSettings, n_rows: int) -> bool:
    return settings.lookahead and n_rows <= max(settings.beams, LOOKAHEAD_MAX_ROWS)


def _forced_after(settings: SearchSettings, node: torch.Tensor, room: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The forced tokens after each ``node``, and how many to feed: at most ``room`` of them (-1: no
    limit), or all of them if they end within ``max_chain`` beyond it."""
    arrays = settings.constraint.arrays
    length = arrays["forced"][node].long()
    cut = (room >= 0) & (length > room + (settings.max_chain or 0))
    length = torch.where(cut, torch.minimum(length, room), length)
    longest = int(length.max()) if len(node) else 0
    tokens = torch.full((len(node), longest), -1, dtype=torch.long, device=node.device)
    fed = length.clone()
    for i in range(longest):
        going = i < length
        child = arrays["first_child"][node].long()
        node = torch.where(going, child, node)
        tokens[:, i] = torch.where(going, arrays["token"][child].long(), tokens[:, i])
        ends_title = going & (i == length - 1) & (arrays["n_children"][node] == 0)
        fed = torch.where(ends_title, fed - 1, fed)
    return tokens, fed


def top_up(state: SearchState, settings: SearchSettings, live: torch.Tensor) -> _Feed | None:
    """Of the ``live`` beam rows (their last token in the cache), those standing on a chain whose
    fed part reaches fewer than ``max_chain`` tokens ahead: the next stretch of each, back to it."""
    ahead, horizon = state.ahead, settings.max_chain
    left = ahead.length - ahead.taken
    rows = (live & (left < horizon)).nonzero().view(-1)
    if len(rows) == 0:
        return None
    # what a fresh feed would give each beam where it stands, less the ``left`` tokens it holds
    left = left[rows]
    whole, whole_fed = _forced_after(settings, state.nodes[rows], torch.full_like(left, horizon))
    fed = whole_fed - left
    going = fed > 0  # (a stretch of only the end of a title is read off the row already known)
    if not bool(going.any()):
        return None
    rows, left, fed, whole = rows[going], left[going], fed[going], whole[going]
    chain = _pad_gather(whole, left, (whole >= 0).sum(dim=1) - left)
    ahead_slots = _pad_gather(ahead.slots[rows], ahead.taken[rows], left)
    beams_slots = state.slots.reshape(-1, state.slots.shape[-1])[rows]
    return _Feed(
        rows=rows, lead=torch.zeros_like(rows), chain=chain, fed=fed, base=ahead.length[rows],
        earlier=torch.cat([beams_slots, ahead_slots], dim=1),
        first_position=state.first_position[rows // settings.beams] + state.step + left,
    )  # fmt: skip


def _pad_gather(values: torch.Tensor, start: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``values[i, start[i] : start[i] + count[i]]``, left-aligned, -1 padded."""
    width = int(count.max()) if len(count) else 0
    at = torch.arange(width, device=values.device).view(1, -1)
    picked = values.gather(1, (start.view(-1, 1) + at).clamp(max=values.shape[1] - 1))
    return torch.where(at < count.view(-1, 1), picked, torch.full_like(picked, -1))


def feed(model: Any, cache: DynamicCache, state: SearchState, settings: SearchSettings) -> ModelCall | None:
    """Run the model on every live beam whose last token is not in the cache yet, followed by its
    forced chain (lookahead), and, with a horizon, on the next stretch of the chains other live
    beams stand on (``top_up``); store what it computes in ``state.ahead``. Returns the call made,
    or None when every live beam is served from earlier lookahead."""
    started = time.perf_counter()
    n_active, beams = len(state.active), settings.beams
    live = (state.scores > NEG_INF).view(-1)
    need = (state.slots[:, :, -1] < 0).view(-1) & live
    rows = need.nonzero().view(-1)
    if len(rows) == 0:  # (a top-up alone never makes a call)
        return None
    chain, fed = chains(state, settings, rows)
    flat_slots = state.slots.view(n_active * beams, -1)
    plan = _Feed(
        rows=rows, lead=torch.ones_like(rows), chain=chain, fed=fed, base=torch.zeros_like(rows),
        earlier=flat_slots[rows, :-1], first_position=state.first_position[rows // beams] + state.step - 1,
    )  # fmt: skip
    if settings.max_chain is not None and _chains_fed(settings, len(rows)):
        extra = top_up(state, settings, live & ~need)
        if extra is not None:
            plan = _joined(plan, extra)
    return _run(model, cache, state, settings, plan, started)


def _joined(a: _Feed, b: _Feed) -> _Feed:
    def cat(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.dim() == 1:
            return torch.cat([x, y])
        width = max(x.shape[1], y.shape[1])
        pad = [torch.nn.functional.pad(t, (0, width - t.shape[1]), value=-1) for t in (x, y)]
        return torch.cat(pad)

    fields = ("rows", "lead", "chain", "fed", "base", "earlier", "first_position")
    joined = [cat(getattr(a, name), getattr(b, name)) for name in fields]
    order = torch.argsort(joined[0])  # a call packs each user's rows side by side
    return _Feed(*(t[order] for t in joined))


def _run(model: Any, cache: DynamicCache, state: SearchState, settings: SearchSettings, plan: _Feed, started: float) -> ModelCall:
    n_active, beams = len(state.active), settings.beams
    device = state.scores.device
    rows, span = plan.rows, plan.span
    user = rows // beams
    # pack each user's queries side by side: rows in order, each its span
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
    tokens = torch.cat([state.last_token.view(-1)[rows].unsqueeze(1), plan.chain.clamp(min=0)], dim=1)
    # a row's query ``o`` is its last token (o = 0, lead 1) or chain token ``o - lead``
    token_at = tokens[query_row, offset + 1 - plan.lead[query_row]]
    input_ids = torch.full((len(callers), width), settings.pad_token_id, dtype=torch.long, device=device)
    input_ids[q_user, column] = token_at
    first_position = state.first_position[callers]
    positions = first_position.view(-1, 1).expand(len(callers), width).clone()
    positions[q_user, column] = plan.first_position[query_row] + offset
    mask = tree_mask(
        state.prompt_keep[callers], plan.earlier[query_row], q_user, column, start_in_user[query_row], state.n_keys, width, settings.mask_dtype
    )
    call_cache = cache if run_all else rows_of(cache, callers, model.config)
    out = model.base_model(
        input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **{settings.cache_arg: call_cache}
    )
    if not run_all:
        append_rows(cache, call_cache, callers, width)
    hidden = out.last_hidden_state[q_user, column]  # [queries, hidden], in rows order
    first_slot = state.n_keys + start_in_user  # slot of each row's first query
    keys_before = state.prompt_keep.shape[1] + state.n_keys
    state.n_keys += width
    led = plan.lead > 0
    state.slots.view(n_active * beams, -1)[rows[led], -1] = first_slot[led]
    store_ahead(model, state, settings.vocabulary, plan, hidden, query_row, offset, first_slot)
    return ModelCall(
        users=len(torch.unique(user)), active=n_active, rows=len(rows), tokens=n_queries, width=width, keys=keys_before,
        seconds=time.perf_counter() - started,
    )  # fmt: skip


def store_ahead(
    model: Any, state: SearchState, vocabulary: OutputVocabulary | None, plan: _Feed, hidden: torch.Tensor,
    query_row: torch.Tensor, offset: torch.Tensor, first_slot: torch.Tensor,
) -> None:  # fmt: skip
    """From the fed rows' hidden states: each new forced token's log-probability (only its logit
    and the normaliser: no full row is kept for a forced step) and the full row after the last fed
    token. A topped-up row's first new token was scored by the row it already held. The LM head
    runs in chunks, so long chains never hold every position's logits at once; with an output
    ``vocabulary`` it computes that vocabulary's columns only."""
    ahead, rows, chain = state.ahead, plan.rows, plan.chain
    n_chain = chain.shape[1]
    fresh = rows[plan.lead > 0]
    ahead.tokens[fresh] = -1
    ahead.slots[fresh] = -1
    known = (chain >= 0).sum(dim=1)
    if n_chain:
        at = torch.arange(n_chain, device=rows.device).view(1, -1)
        where = (plan.base.view(-1, 1) + at).clamp(max=ahead.tokens.shape[1] - 1)
        new = at < known.view(-1, 1)
        r = rows.view(-1, 1).expand_as(where)
        ahead.tokens[r[new], where[new]] = chain[new]
        slot = first_slot.view(-1, 1) + plan.lead.view(-1, 1) + at
        fed = at < plan.fed.view(-1, 1)
        ahead.slots[r[fed], where[fed]] = slot[fed]
        topped = (plan.lead == 0).nonzero().view(-1)
        if len(topped):
            ahead.logp[rows[topped], plan.base[topped]] = ahead.row[rows[topped], chain[topped, 0]]
    ahead.length[rows] = plan.base + known
    ahead.taken[fresh] = 0
    # query ``o`` of a row predicts its new chain token ``o + 1 - lead``; its last query keeps the full row
    lead = plan.lead[query_row]
    predicts = offset + 1 - lead
    is_last = offset == plan.span[query_row] - 1
    next_token = torch.full_like(offset, -1)
    forced_query = predicts < known[query_row]
    next_token[forced_query] = chain[query_row[forced_query], predicts[forced_query]]
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
            qr = query_row[q][forced]
            ahead.logp[rows[qr], plan.base[qr] + predicts[q][forced]] = values
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
