"""The title constraint: a title index plus the titles each user must not be offered.

One object answers the three questions constrained decoding asks at every step, for all rows
at once: which next tokens continue a title (``mask``), which trie node a token leads to
(``advance``), and whether that node completes a title (``is_final``). Beam search and the
transformers ``TrieLogitsProcessor`` both use it, so both can exclude items.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from .index import TitleIndex

__all__ = ["TitleConstraint", "NEG_INF"]

NEG_INF = float("-inf")


class TitleConstraint:
    """``index`` on ``device``; ``banned_titles[u]`` are title numbers user ``u`` must not get.

    A banned title's trie path is pruned where no other title lies below it (``dead_nodes``), so
    beams never waste a step on it and k allowed titles still come back.
    """

    def __init__(self, index: TitleIndex, device: Any, banned_titles: Sequence[Iterable[int]] = ()) -> None:
        self.index = index
        self.arrays = index.torch_arrays(device)
        self.sentinel = index.sentinel
        self.n_nodes = index.n_nodes
        self.vocab_size = index.vocab_size
        parts = [
            torch.as_tensor(dead, dtype=torch.long) + user * self.n_nodes
            for user, dead in enumerate(index.dead_nodes(banned) for banned in banned_titles)
            if len(dead)
        ]
        self.dead_keys = torch.cat(parts).sort().values.to(device) if parts else None

    @property
    def empty(self) -> bool:
        return self.index.n_titles == 0 or self.index.max_depth == 0

    def allowed(self, nodes: torch.Tensor, row_users: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every allowed ``(row, token, child)``: the tokens that continue a title from each row's
        node, and the nodes they lead to (``row_users``: the user of each row, for the banned
        titles; default user 0). One vectorised gather for all rows."""
        device = nodes.device
        start = self.arrays["first_child"][nodes]
        count = self.arrays["n_children"][nodes]
        total = int(count.sum())
        if total == 0:
            empty = torch.zeros(0, dtype=torch.long, device=device)
            return empty, empty, empty
        row = torch.repeat_interleave(torch.arange(len(nodes), device=device), count)
        offset = torch.arange(total, device=device) - torch.repeat_interleave(count.cumsum(0) - count, count)
        child = torch.repeat_interleave(start, count) + offset
        if self.dead_keys is not None:
            users = row_users[row] if row_users is not None else torch.zeros_like(row)
            keep = ~torch.isin(users * self.n_nodes + child, self.dead_keys)
            row, child = row[keep], child[keep]
        return row, self.arrays["token"][child].long(), child

    def mask(self, logp: torch.Tensor, nodes: torch.Tensor, row_users: torch.Tensor | None = None) -> torch.Tensor:
        """``logp`` with every token that does not continue an allowed title from each row's node
        set to -inf; a row at a dead node or the sentinel gets all -inf."""
        row, token, _ = self.allowed(nodes, row_users)
        return self.keep(logp, row, token)

    @staticmethod
    def keep(logp: torch.Tensor, row: torch.Tensor, token: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        """-inf everywhere but the entries ``(row, token)``, which get ``values`` (default: ``logp``'s)."""
        masked = torch.full_like(logp, NEG_INF)
        masked[row, token] = logp[row, token] if values is None else values
        return masked

    def keep_columns(self, logp: torch.Tensor, row: torch.Tensor, token: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``keep`` over the index's tokens only (``columns``, sorted): ``[rows, len(columns)]``,
        -inf but at ``(row, token)``. A search picks among these few thousand columns instead of
        the whole vocabulary: the same candidates, a fraction of the work."""
        columns = self.arrays["columns"]
        masked = torch.full((logp.shape[0], len(columns)), NEG_INF, dtype=logp.dtype, device=logp.device)
        masked[row, torch.searchsorted(columns, token)] = values
        return masked

    def advance(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The node each (node, token) leads to; the sentinel where the token continues no title."""
        keys = self.arrays["keys"]
        query = nodes * self.vocab_size + tokens
        pos = torch.searchsorted(keys, query).clamp(max=len(keys) - 1)
        return torch.where(keys[pos] == query, pos, torch.full_like(pos, self.sentinel))

    def is_final(self, nodes: torch.Tensor) -> torch.Tensor:
        """Whether each node completes a title (its end marker was the last token)."""
        return self.arrays["node_title"][nodes] >= 0
