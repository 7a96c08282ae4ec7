"""The key/value cache's rows kept in step with a search's state: the rows of some users run
alone (``rows_of``, ``append_rows``), finished users dropped (``drop_done``), and the keys of
pruned beams compacted away (``compact``)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from .constraint import NEG_INF
from .search_types import SearchState

__all__ = ["rows_of", "append_rows", "drop_done", "compact", "gather_keys"]


def rows_of(cache: DynamicCache, users: torch.Tensor, config: Any) -> DynamicCache:
    """A cache holding only ``users``' rows of ``cache`` (a copy)."""
    part = DynamicCache(config=config)
    for layer_idx, layer in enumerate(cache.layers):
        part.update(layer.keys[users], layer.values[users], layer_idx)
    return part


def append_rows(cache: DynamicCache, part: DynamicCache, users: torch.Tensor, width: int) -> None:
    """Append the ``width`` keys a call on ``users``' rows added to ``part`` to every row of
    ``cache``: the other users get masked placeholders in those slots, which no query ever sees."""
    for layer, part_layer in zip(cache.layers, part.layers):
        for name in ("keys", "values"):
            full, added = getattr(layer, name), getattr(part_layer, name)[:, :, -width:]
            grown = full.new_zeros((full.shape[0], full.shape[1], width, full.shape[3]))
            grown[users] = added
            setattr(layer, name, torch.cat([full, grown], dim=2))


def drop_done(state: SearchState, cache: DynamicCache, done: torch.Tensor) -> None:
    """Remove finished users' rows from the state and the cache."""
    keep = (~done).nonzero().view(-1)
    cache.batch_select_indices(keep)
    state.active = state.active[keep]
    state.scores = state.scores[keep]
    state.generated = state.generated[keep]
    state.slots = state.slots[keep]
    beams = state.scores.shape[1]
    state.ahead = state.ahead.select((keep.view(-1, 1) * beams + torch.arange(beams, device=keep.device)).view(-1))
    state.prompt_keep = state.prompt_keep[keep]
    state.first_position = state.first_position[keep]
    state.last_token = state.last_token[keep]
    if state.nodes is not None:
        state.nodes = state.nodes.view(-1, beams)[keep].reshape(-1)


def compact(state: SearchState, cache: DynamicCache) -> bool:
    """Drop the generated keys no live beam can reach any more (those of pruned beams and of
    padding), once they are at least half of the generated keys: attention then reads only what
    counts, and the slots are renumbered. Masked keys add nothing to attention, so nothing changes."""
    n_active, beams, _ = state.slots.shape
    if state.n_keys == 0 or any(type(layer) is not DynamicLayer for layer in cache.layers):
        return False  # (sliding-window layers, a DynamicLayer subclass, keep their own window: left alone)
    alive = (state.scores > NEG_INF).view(-1, 1)
    refs = torch.cat([state.slots.view(n_active * beams, -1), state.ahead.slots], dim=1)
    refs = torch.where(alive & (refs >= 0), refs, torch.full_like(refs, -1))
    row_user = (torch.arange(n_active * beams, device=refs.device) // beams).view(-1, 1).expand_as(refs)
    used = torch.zeros((n_active, state.n_keys), dtype=torch.bool, device=refs.device)
    valid = refs >= 0
    used[row_user[valid], refs[valid]] = True
    keep = int(used.sum(dim=1).max())
    if 2 * keep > state.n_keys:
        return False
    # each user's reachable slots first, in their order (then unreachable ones, up to a common count)
    order = torch.argsort((~used).to(torch.int8), dim=1, stable=True)[:, :keep]
    new_of_old = torch.full((n_active, state.n_keys), -1, dtype=torch.long, device=refs.device)
    new_of_old.scatter_(1, order, torch.arange(keep, device=refs.device).expand(n_active, -1))

    def renumber(slots: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        return torch.where(slots >= 0, new_of_old[users, slots.clamp(min=0)], slots)

    state.slots = renumber(state.slots, torch.arange(n_active, device=refs.device).view(-1, 1, 1).expand_as(state.slots))
    state.ahead.slots = renumber(state.ahead.slots, row_user[:, : state.ahead.slots.shape[1]])
    prompt_len = state.prompt_keep.shape[1]
    for layer in cache.layers:
        layer.keys, layer.values = (gather_keys(t, order, prompt_len) for t in (layer.keys, layer.values))
    state.n_keys = keep
    return True


def gather_keys(tensor: torch.Tensor, order: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """``[users, heads, prompt + generated, dim]`` keeping the prompt and the generated keys in ``order``."""
    users, heads, _, dim = tensor.shape
    index = order.view(users, 1, -1, 1).expand(-1, heads, -1, dim)
    return torch.cat([tensor[:, :, :prompt_len], tensor[:, :, prompt_len:].gather(2, index)], dim=2)
