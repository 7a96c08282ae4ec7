"""At most ``limit`` titles of one family per list: a cap against near-duplicate recommendations.

Product catalogs hold families of variants (the same filament in 25 colours, one title apart in
its last words). A model that likes the family fills the list with them, and the beam with their
shared prefix: one target colour can earn at most one of those slots (D3's homogeneity problem;
eval/notes/2026-12-03-products-training.md measures it on Amazon Scientific). The cap keeps a family's best ``limit`` titles.
Three rules keep its variants from taking the beam: at each step only a family's best ``limit``
extensions compete for the beam as usual, the rest are held back and get only the places no other
candidate fills; an extension that can no longer make its family's best ``limit`` dies; and a list
is read with at most ``limit`` per family. When the search still finds fewer than k titles within
the cap (a small catalog), the best held-back variants close the list, after all the others.
Families come from the title index (``TitleIndex.families``): titles sharing at least ``share``
of the longest one's tokens.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import torch

from ..errors import LimitError
from .index import TitleIndex

if TYPE_CHECKING:
    from .search_types import Hypothesis

__all__ = ["FamilyCap", "check_family_cap", "DEFAULT_FAMILY_SHARE"]

#: Variants share most of a title: half of the longer one's tokens, at least.
DEFAULT_FAMILY_SHARE = 0.5


def check_family_cap(limit: int | None, share: float = DEFAULT_FAMILY_SHARE) -> tuple[int | None, float]:
    """``(limit, share)`` when valid (``limit`` None: no cap), else a LimitError naming the value."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise LimitError(f"max_per_family must be a whole number of at least 1 (or None for no cap), got {limit!r}")
    if not 0.0 < float(share) <= 1.0:
        raise LimitError(f"family_share must be in (0, 1], got {share!r}")
    return limit, float(share)


class FamilyCap:
    """The cap for one beam search: which family each trie node lies in, and how a list is read
    under it (the best titles the search found, taken by score, at most ``limit`` per family).

    Every finished title is kept, and the cap is applied when a list is read (``best``): a longer
    variant can finish after shorter ones of its family and still outscore them. A live beam
    inside a family dies once the user has ``limit`` finished titles of that family scoring at
    least as well as it does: scores only fall as a title grows, so nothing below it could make
    the family's best ``limit``.
    """

    def __init__(self, index: TitleIndex, limit: int, share: float, device: torch.device) -> None:
        check_family_cap(limit, share)
        self.limit = limit
        self.family = torch.from_numpy(index.families(share)).to(device)
        self.n_nodes = index.n_nodes

    def best(self, hypotheses: list[Hypothesis], n: int, *, fill: bool = True) -> list[Hypothesis]:
        """The ``n`` best of ``hypotheses`` with at most ``limit`` per family, best first; when that
        leaves fewer than ``n`` (the search found too few other titles) and ``fill``, the best
        held-back variants follow them."""
        taken: Counter = Counter()
        kept, held = [], []
        for hyp in sorted(hypotheses, key=lambda h: -h.score):
            family = int(self.family[hyp.node])
            if family >= 0 and taken[family] >= self.limit:
                held.append(hyp)
                continue
            taken[family] += 1
            kept.append(hyp)
        return (kept + held if fill else kept)[:n]

    def closed(self, nodes: torch.Tensor, scores: torch.Tensor, users: torch.Tensor, finished: list[list[Hypothesis]]) -> torch.Tensor:
        """Which candidates (flat: each one's trie node, score and user, original numbering) can no
        longer make their family's best ``limit`` titles."""
        keys, bars = [], []
        for user in set(users.tolist()):
            by_family: dict[int, list[float]] = {}
            for hyp in finished[user]:
                family = int(self.family[hyp.node])
                if family >= 0:
                    by_family.setdefault(family, []).append(hyp.score)
            for family, found in by_family.items():
                if len(found) >= self.limit:
                    keys.append(user * self.n_nodes + family)
                    bars.append(sorted(found, reverse=True)[self.limit - 1])
        if not keys:
            return torch.zeros_like(nodes, dtype=torch.bool)
        keys_t, order = torch.tensor(keys, dtype=torch.long, device=nodes.device).sort()
        bars_t = torch.tensor(bars, dtype=scores.dtype, device=nodes.device)[order]
        family = self.family[nodes].long()
        query = users * self.n_nodes + family
        pos = torch.searchsorted(keys_t, query).clamp(max=len(keys_t) - 1)
        return (family >= 0) & (keys_t[pos] == query) & (scores <= bars_t[pos])

    def overflow(self, nodes: torch.Tensor, scores: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """Which of one step's entries (flat: trie node, score, user) come after the first
        ``limit`` of their family for their user, by score: they are held back, so that one family
        cannot take every place in the beam while the other titles are pruned for good."""
        held = torch.zeros_like(nodes, dtype=torch.bool)
        family = self.family[nodes].long()
        inside = ((family >= 0) & (scores > float("-inf"))).nonzero().view(-1)
        if len(inside) <= self.limit:
            return held
        group = users[inside] * self.n_nodes + family[inside]
        order = torch.argsort(scores[inside], descending=True, stable=True)
        order = order[torch.argsort(group[order], stable=True)]  # by group, best first within each
        _, counts = torch.unique_consecutive(group[order], return_counts=True)
        starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        rank = torch.arange(len(order), device=nodes.device) - starts
        held[inside[order[rank >= self.limit]]] = True
        return held
