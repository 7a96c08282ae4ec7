"""Beam search over catalog titles (or free text), several users at once.

Each user's prompt is run through the model once; its key/value cache is then repeated for that
user's beams. Every step masks the next-token log-probabilities of all beams of all users with one
vectorised operation over the title index (no Python loop over beams or tokens), so the cost of
the constraint does not grow with the catalog.

Search semantics follow transformers' beam search (the same candidates are kept at every step, so
the two agree on the same model and prompt), with two differences that matter for
recommendation: a beam whose title cannot continue dies instead of running unconstrained, and with
length penalty 0 the search stops as soon as the k best finished titles can no longer be beaten
(scores are sums of log-probabilities, so they only fall as titles grow).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache, LogitsProcessor

from .index import TitleIndex

__all__ = [
    "Hypothesis",
    "PrefixCache",
    "beam_search",
    "score_continuations",
    "TrieLogitsProcessor",
    "allowed_token_mask",
]

NEG_INF = float("-inf")


@dataclass(frozen=True)
class Hypothesis:
    """A finished beam: its tokens (end marker included), score and, when constrained, its trie leaf."""

    tokens: tuple[int, ...]
    score: float
    node: int = -1
    finished: bool = True


@dataclass
class PrefixCache:
    """The key/value cache of the tokens every prompt starts with (a template's instructions),
    computed once and reused by every later call whose prompts start the same way.

    The prefix is the longest common token prefix of the prompts seen, so it is exact whatever the
    tokenizer does; when a prompt differs earlier, the stored prefix shrinks, and a shorter prefix
    is a slice of the stored tensors (attention is causal). Safe to share between threads: stored
    tensors are never modified, only replaced.
    """

    min_tokens: int = 8
    ids: tuple[int, ...] = ()
    layers: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    last_prompt: tuple[int, ...] = ()
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get(self, model: Any, prompts: Sequence[Sequence[int]], cache_arg: str) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]]]:
        """``(length, per-layer (keys, values) for one row)`` of a prefix shared by all ``prompts``
        (every prompt keeps at least one token after it), or ``(0, [])``."""
        with self._lock:
            known = [tuple(p) for p in prompts] + ([self.last_prompt] if self.last_prompt else [])
            self.last_prompt = tuple(prompts[0])
            room = min(len(p) for p in prompts) - 1
            if self.ids:
                shared = _common_prefix([self.ids, *map(tuple, prompts)])
                if shared >= self.min_tokens:
                    shared = min(shared, room)
                    if shared < len(self.ids):
                        # a shorter prefix is a slice of the stored one
                        self.ids = self.ids[:shared]
                        self.layers = [(k[:, :, :shared], v[:, :, :shared]) for k, v in self.layers]
                    return len(self.ids), self.layers
            shared = min(_common_prefix(known), room)
            if shared < self.min_tokens or len(known) < 2:
                return 0, []
            ids = tuple(prompts[0][:shared])
            cache = DynamicCache(config=model.config)
            device = next(model.parameters()).device
            model(input_ids=torch.tensor([ids], device=device), use_cache=True, logits_to_keep=1, **{cache_arg: cache})
            self.ids = ids
            self.layers = [(layer.keys, layer.values) for layer in cache.layers]
            return shared, self.layers


def _common_prefix(sequences: Sequence[Sequence[int]]) -> int:
    first = sequences[0]
    n = min(len(s) for s in sequences)
    for i in range(n):
        token = first[i]
        if any(s[i] != token for s in sequences[1:]):
            return i
    return n


def allowed_token_mask(
    logp: torch.Tensor,
    nodes: torch.Tensor,
    arrays: dict[str, torch.Tensor],
    dead_keys: torch.Tensor | None = None,
    row_users: torch.Tensor | None = None,
    n_nodes: int = 0,
) -> torch.Tensor:
    """``logp`` with every token that does not continue a title (from each row's trie node) set to
    -inf. One gather/scatter for all rows; a row at a dead node or the sentinel gets all -inf."""
    rows_total, _ = logp.shape
    start = arrays["first_child"][nodes]
    count = arrays["n_children"][nodes]
    masked = torch.full_like(logp, NEG_INF)
    total = int(count.sum())
    if total == 0:
        return masked
    row = torch.repeat_interleave(torch.arange(rows_total, device=logp.device), count)
    offset = torch.arange(total, device=logp.device) - torch.repeat_interleave(count.cumsum(0) - count, count)
    child = torch.repeat_interleave(start, count) + offset
    token = arrays["token"][child]
    if dead_keys is not None and len(dead_keys):
        keep = ~torch.isin(row_users[row] * n_nodes + child, dead_keys)
        row, token = row[keep], token[keep]
    masked[row, token] = logp[row, token]
    return masked


def _child_nodes(parent: torch.Tensor, token: torch.Tensor, arrays: dict[str, torch.Tensor], vocab: int, sentinel: int) -> torch.Tensor:
    keys = arrays["keys"]
    query = parent * vocab + token
    pos = torch.searchsorted(keys, query).clamp(max=len(keys) - 1)
    return torch.where(keys[pos] == query, pos, torch.full_like(pos, sentinel))


def _cache_argument(model: Any) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` during 5.x; use what this model takes."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


@torch.inference_mode()
def beam_search(
    model: Any,
    prompts: Sequence[Sequence[int]],
    *,
    num_beams: int,
    num_return: int,
    index: TitleIndex | None = None,
    dead_nodes: Sequence[np.ndarray] | None = None,
    eos_token_ids: Sequence[int] = (),
    max_new_tokens: int | None = None,
    length_penalty: float = 0.0,
    pad_token_id: int = 0,
    stats: dict[str, float] | None = None,
    prefix_cache: PrefixCache | None = None,
) -> list[list[Hypothesis]]:
    """Beam search for each prompt (token ids), all prompts in one batch.

    Constrained (``index`` given): every returned hypothesis is a complete title of the index, the
    ``num_return`` best by score, distinct; ``dead_nodes[u]`` are trie nodes user ``u`` must not
    enter (their titles are excluded). Fewer are returned when fewer titles are reachable.
    Unconstrained (``index=None``): free text ending in one of ``eos_token_ids`` or at
    ``max_new_tokens``.

    Each user is one row of the model's batch. Its prompt is prefilled once; at every step its
    beams' new tokens go in as that row's next ``num_beams`` positions, and a tree-shaped 4D
    attention mask lets each beam see the prompt, its own ancestors' tokens and itself. The cache
    only grows: nothing is copied or reordered when beams change parents.

    ``prefix_cache`` reuses the cache of the prompt text all prompts share (see PrefixCache).
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
    mask_dtype = next(model.parameters()).dtype
    n_users, beams = len(prompts), num_beams
    constrained = index is not None
    if constrained:
        arrays = index.torch_arrays(device)
        max_steps = index.max_depth
        sentinel = index.sentinel
        n_nodes = index.n_nodes
        dead_keys = None
        if dead_nodes is not None:
            parts = [torch.as_tensor(d, dtype=torch.long) + u * n_nodes for u, d in enumerate(dead_nodes) if len(d)]
            dead_keys = torch.cat(parts).sort().values.to(device) if parts else None
        if index.n_titles == 0 or max_steps == 0:
            return [[] for _ in prompts]
    else:
        if max_new_tokens is None:
            raise ValueError("unconstrained beam search needs max_new_tokens")
        max_steps = max_new_tokens
        eos = torch.tensor(list(eos_token_ids), dtype=torch.long, device=device)

    started = time.perf_counter()
    cache_arg = _cache_argument(model)
    cache = DynamicCache(config=model.config)  # filled in place by every forward pass
    shared, layers = prefix_cache.get(model, prompts, cache_arg) if prefix_cache is not None else (0, [])
    for layer_idx, (keys, values) in enumerate(layers):
        cache.update(keys.expand(n_users, -1, -1, -1).contiguous(), values.expand(n_users, -1, -1, -1).contiguous(), layer_idx)
    # the rest of each prompt, left-padded: padding sits between the shared prefix and the rest
    input_ids, rest_mask = _left_pad([p[shared:] for p in prompts], pad_token_id, device)
    prompt_mask = torch.cat([torch.ones((n_users, shared), dtype=rest_mask.dtype, device=device), rest_mask], dim=1)
    positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
    out = model(
        input_ids=input_ids,
        attention_mask=prompt_mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
        **{cache_arg: cache},
    )
    # one row per beam for the candidate step; every beam of a user starts from the same logits
    logp = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1).repeat_interleave(beams, dim=0)
    vocab = logp.shape[-1]
    prompt_keep = prompt_mask.bool()
    first_position = positions[:, -1] + 1
    prefilled = time.perf_counter()

    scores = torch.full((n_users, beams), NEG_INF, device=device)
    scores[:, 0] = 0.0  # only the first beam may expand at the first step
    if constrained:
        nodes = torch.full((n_users, beams), sentinel, dtype=torch.long, device=device)
        nodes[:, 0] = 0
        nodes = nodes.view(-1)
    generated = torch.zeros((n_users, beams, 0), dtype=torch.long, device=device)
    # ancestry[u, b, f]: where, among the generated keys of user u, beam b's f-th token sits
    ancestry = torch.zeros((n_users, beams, 0), dtype=torch.long, device=device)
    active = torch.arange(n_users, device=device)  # original user number of each row
    finished: list[list[Hypothesis]] = [[] for _ in prompts]
    keep_top = 2 * beams
    last_token = None

    steps = 0
    for step in range(max_steps):
        steps = step + 1
        n_active = len(active)
        if step > 0:
            fed = step - 1  # how many tokens per beam are already in the cache
            attention = _tree_mask(prompt_keep, ancestry, fed, beams, mask_dtype)
            out = model(
                input_ids=last_token,
                attention_mask=attention,
                position_ids=(first_position + fed).view(-1, 1).expand(n_active, beams),
                use_cache=True,
                **{cache_arg: cache},
            )
            logp = torch.log_softmax(out.logits.float(), dim=-1).view(n_active * beams, -1)
        if constrained:
            row_users = active.repeat_interleave(beams)
            logp = allowed_token_mask(logp, nodes, arrays, dead_keys, row_users, n_nodes)
        candidates = (logp + scores.view(-1, 1)).view(n_active, beams * vocab)
        top_scores, top_index = candidates.topk(min(keep_top, beams * vocab), dim=1)
        beam_of = top_index // vocab
        token = top_index % vocab
        parent_row = torch.arange(n_active, device=device).view(-1, 1) * beams + beam_of
        valid = top_scores > NEG_INF
        if constrained:
            child = _child_nodes(nodes[parent_row], token, arrays, index.vocab_size, sentinel)
            child = torch.where(valid, child, torch.full_like(child, sentinel))
            is_final = (arrays["node_title"][child] >= 0) & valid
        else:
            child = torch.full_like(token, -1)
            is_final = torch.isin(token, eos) & valid if len(eos) else torch.zeros_like(valid)
        # like transformers: only candidates ranked within the first `beams` may finish
        rank = torch.arange(top_scores.shape[1], device=device).view(1, -1)
        finishing = is_final & (rank < beams)
        flat_generated = generated.reshape(n_active * beams, -1)
        if bool(finishing.any()):
            penalty = float(step + 1) ** length_penalty
            for u, j in finishing.nonzero().tolist():
                tokens = (*flat_generated[int(parent_row[u, j])].tolist(), int(token[u, j]))
                finished[int(active[u])].append(
                    Hypothesis(tokens=tokens, score=float(top_scores[u, j]) / penalty, node=int(child[u, j]))
                )
        running = torch.where(is_final | ~valid, torch.full_like(top_scores, NEG_INF), top_scores)
        scores, pick = running.topk(beams, dim=1)
        chosen_beam = beam_of.gather(1, pick)
        chosen_row = parent_row.gather(1, pick)
        chosen_token = token.gather(1, pick)
        alive = scores > NEG_INF
        if constrained:
            chosen_node = torch.where(alive, child.gather(1, pick), torch.full_like(chosen_token, sentinel))
        chosen_token = torch.where(alive, chosen_token, torch.full_like(chosen_token, pad_token_id))
        generated = torch.cat([flat_generated[chosen_row.view(-1)].view(n_active, beams, -1), chosen_token.unsqueeze(-1)], dim=2)
        if step > 0:
            # each new beam inherits its parent's ancestry plus the parent's token fed this step
            parent_ancestry = ancestry.gather(1, chosen_beam.unsqueeze(-1).expand(-1, -1, ancestry.shape[2]))
            ancestry = torch.cat([parent_ancestry, ((step - 1) * beams + chosen_beam).unsqueeze(-1)], dim=2)

        if not constrained and step + 1 >= max_steps:
            # free text that hit max_new_tokens is returned unfinished, as transformers does
            penalty = float(max_steps) ** length_penalty
            for u, b in alive.nonzero().tolist():
                finished[int(active[u])].append(
                    Hypothesis(tokens=tuple(generated[u, b].tolist()), score=float(scores[u, b]) / penalty, finished=False)
                )
        done = _users_done(scores, finished, active, num_return, beams, length_penalty, step, max_steps)
        if bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).nonzero().view(-1)
            cache.batch_select_indices(keep)  # drop finished users' rows
            prompt_keep, first_position = prompt_keep[keep], first_position[keep]
            scores, chosen_token, generated, ancestry = scores[keep], chosen_token[keep], generated[keep], ancestry[keep]
            if constrained:
                chosen_node = chosen_node[keep]
            active = active[keep]
        last_token = chosen_token
        if constrained:
            nodes = chosen_node.reshape(-1)

    if stats is not None:
        stats.update(steps=steps, prefill_s=prefilled - started, decode_s=time.perf_counter() - prefilled)
    return [sorted(f, key=lambda h: -h.score)[:num_return] for f in finished]


def _tree_mask(prompt_keep: torch.Tensor, ancestry: torch.Tensor, fed: int, beams: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive 4D mask ``[users, 1, beams, prompt + (fed + 1) * beams]``: beam b sees the real
    prompt tokens, the keys of its ancestors' tokens, and its own new token."""
    users, prompt_len = prompt_keep.shape
    keys = prompt_len + (fed + 1) * beams
    allowed = torch.zeros((users, beams, keys), dtype=torch.bool, device=prompt_keep.device)
    allowed[:, :, :prompt_len] = prompt_keep.unsqueeze(1)
    if fed:
        allowed.scatter_(2, prompt_len + ancestry, True)
    own = prompt_len + fed * beams + torch.arange(beams, device=prompt_keep.device)
    allowed[:, torch.arange(beams, device=prompt_keep.device), own] = True
    mask = torch.zeros((users, 1, beams, keys), dtype=dtype, device=prompt_keep.device)
    return mask.masked_fill_(~allowed.unsqueeze(1), torch.finfo(dtype).min)


def _users_done(
    scores: torch.Tensor,
    finished: list[list[Hypothesis]],
    active: torch.Tensor,
    num_return: int,
    beams: int,
    length_penalty: float,
    step: int,
    max_steps: int,
) -> torch.Tensor:
    """Which active users can stop: no live beam left, the best live beam cannot beat the
    ``num_return``-th finished one (exact when length_penalty is 0), or the length limit."""
    best_running = scores[:, 0].tolist()
    done = []
    for u, user in enumerate(active.tolist()):
        if best_running[u] == NEG_INF or step + 1 >= max_steps:
            done.append(True)
            continue
        hyps = finished[user]
        if length_penalty == 0.0:
            if len(hyps) >= num_return:
                kth = sorted((h.score for h in hyps), reverse=True)[num_return - 1]
                done.append(best_running[u] <= kth)
            else:
                done.append(False)
        else:
            # transformers' heuristic: a full set of finished beams, and the best running one,
            # scored at its current length, no better than the worst of them
            if len(hyps) >= beams:
                worst = sorted((h.score for h in hyps), reverse=True)[beams - 1]
                done.append(best_running[u] / float(step + 1) ** length_penalty <= worst)
            else:
                done.append(False)
    return torch.tensor(done, device=scores.device)


@torch.inference_mode()
def score_continuations(
    model: Any, prompt: Sequence[int], continuations: Sequence[Sequence[int]], *, chunk_tokens: int = 2048
) -> list[float]:
    """Log-probability of each continuation (a title's tokens) right after ``prompt``.

    One pass per chunk of candidates: the prompt comes once, then every candidate's tokens, and a
    tree-shaped attention mask lets each candidate token see the prompt and the earlier tokens of
    its own candidate only. Logits are computed only where they predict a candidate token.
    """
    if not continuations:
        return []
    if any(len(c) == 0 for c in continuations):
        raise ValueError("empty continuation")
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    cache_arg = _cache_argument(model)
    cache = DynamicCache(config=model.config)
    prompt_ids = torch.tensor([list(prompt)], device=device)
    out = model(input_ids=prompt_ids, use_cache=True, logits_to_keep=1, **{cache_arg: cache})
    first_logp = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    prompt_len = len(prompt)
    prompt_layers = [(layer.keys, layer.values) for layer in cache.layers]
    scores: list[float] = []
    start = 0
    while start < len(continuations):
        # as many candidates as fit the chunk (always at least one)
        end, total = start, 0
        while end < len(continuations) and (end == start or total + len(continuations[end]) <= chunk_tokens):
            total += len(continuations[end])
            end += 1
        batch = [list(c) for c in continuations[start:end]]
        scores.extend(_score_chunk(model, batch, prompt_layers, prompt_len, first_logp, cache_arg, device, dtype))
        start = end
    return scores


def _score_chunk(model, batch, prompt_layers, prompt_len, first_logp, cache_arg, device, dtype) -> list[float]:
    tokens = [t for c in batch for t in c]
    n = len(tokens)
    owner = torch.tensor([i for i, c in enumerate(batch) for _ in c], device=device)
    offset = torch.tensor([j for c in batch for j in range(len(c))], device=device)
    # candidate token q may see candidate token k when both belong to the same candidate and k <= q
    allowed = (owner.view(-1, 1) == owner.view(1, -1)) & (offset.view(1, -1) <= offset.view(-1, 1))
    allowed = torch.cat([torch.ones((n, prompt_len), dtype=torch.bool, device=device), allowed], dim=1)
    mask = torch.zeros((1, 1, n, prompt_len + n), dtype=dtype, device=device).masked_fill_(~allowed.view(1, 1, n, -1), torch.finfo(dtype).min)
    cache = DynamicCache(config=model.config)
    for layer_idx, (keys, values) in enumerate(prompt_layers):
        cache.update(keys, values, layer_idx)
    # positions that predict a next token of the same candidate: all but each candidate's last
    predicts = torch.tensor([k for k in range(n) if k + 1 < n and owner[k + 1] == owner[k]], dtype=torch.long, device=device)
    out = model(
        input_ids=torch.tensor([tokens], device=device),
        attention_mask=mask,
        position_ids=(prompt_len + offset).view(1, -1),
        use_cache=True,
        logits_to_keep=predicts if len(predicts) else 1,
        **{cache_arg: cache},
    )
    totals = [float(first_logp[c[0]]) for c in batch]
    if len(predicts):
        logp = torch.log_softmax(out.logits[0].float(), dim=-1)
        nxt = torch.tensor(tokens, device=device)[predicts + 1]
        gained = logp.gather(1, nxt.view(-1, 1)).view(-1)
        per_candidate = torch.zeros(len(batch), device=device).index_add_(0, owner[predicts], gained)
        totals = [a + float(b) for a, b in zip(totals, per_candidate)]
    return totals


class TrieLogitsProcessor(LogitsProcessor):
    """The title constraint as a transformers ``LogitsProcessor``, for ``model.generate``.

    Vectorised over rows: each call walks every row's generated tokens through the index with one
    batched lookup per generated position. A row that finished a title or left the trie gets no
    allowed token at all, so its beam dies: there is no fallback to unconstrained text. Use it with
    ``eos_token_id`` set to the index's end marker.
    """

    def __init__(self, index: TitleIndex, prompt_length: int):
        self.index = index
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        arrays = self.index.torch_arrays(scores.device)
        sentinel = self.index.sentinel
        nodes = torch.zeros(input_ids.shape[0], dtype=torch.long, device=scores.device)
        for column in range(self.prompt_length, input_ids.shape[1]):
            nodes = _child_nodes(nodes, input_ids[:, column], arrays, self.index.vocab_size, sentinel)
        return allowed_token_mask(scores, nodes, arrays)
