"""The one ranking protocol every method is measured by.

- **Exclusions**: a row's exclusions are that row's history, and every catalog ID that shares a
  title with a history item (the same film listed twice was still seen). No method may return them.
- **Targets in the history** (repeat purchases): no method can return them, so they count as a
  miss for every method, and the report says how many rows that was.
- **Ties**: equal scores are broken by one fixed random order of the items, drawn once per run;
  IDs that share a title (the same score for genrec) come back in that order too.
- **Credit**: a row's rank is the target's position in the list the method returned for that row
  (at most ``k`` long), or a miss; ``check_credit`` fails the run loudly if any result says otherwise.
- **Cut-offs**: metrics only at cut-offs up to ``k``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..catalog import Catalog
from ..errors import DataError
from .metrics import KS, UserResult, rank_in_list

__all__ = ["Protocol", "tie_order", "check_credit", "cutoffs", "PROTOCOL_VERSION", "PROTOCOL_TEXT"]

PROTOCOL_VERSION = 2
PROTOCOL_TEXT = (
    "full catalog; each row excludes its history and every ID sharing a title with it, for every method; "
    "a target inside its row's history counts as a miss for all; the rank credited is the target's position "
    "in the method's own top-k list; score ties broken by a fixed random item order; no sampled negatives"
)


def tie_order(n_items: int, seed: int) -> np.ndarray:
    """A permutation rank per catalog position: lower wins a tie."""
    order = np.empty(n_items, dtype=np.int64)
    order[np.random.default_rng(seed).permutation(n_items)] = np.arange(n_items)
    return order


def cutoffs(k: int, ks: Sequence[int] = KS) -> list[int]:
    """The metric cut-offs a list of ``k`` items can answer."""
    return [c for c in ks if c <= k]


@dataclass(frozen=True)
class Protocol:
    """The ranking rules of one run: catalog, tie order and list length."""

    catalog: Catalog
    ties: np.ndarray
    k: int

    @classmethod
    def for_run(cls, catalog: Catalog, k: int, seed: int) -> Protocol:
        return cls(catalog, tie_order(len(catalog), seed), k)

    def excluded_positions(self, history: Iterable[str]) -> list[int]:
        """Catalog positions a row must not be offered: its items and their title-mates."""
        catalog = self.catalog
        positions: set[int] = set()
        for item_id in history:
            if item_id in catalog:
                positions.update(catalog.title_positions[catalog.title_number_of(item_id)])
        return sorted(positions)

    def excluded_mask(self, history: Iterable[str]) -> np.ndarray:
        mask = np.zeros(len(self.catalog), dtype=bool)
        mask[self.excluded_positions(history)] = True
        return mask

    def target_excluded(self, history: Iterable[str], target: str) -> bool:
        return target in self.catalog and self.catalog.position(target) in set(self.excluded_positions(history))

    def order_ties(self, items: Sequence[str], scores: Sequence[float]) -> list[str]:
        """``items`` (best first) with each run of equal scores put in the tie order."""
        out: list[str] = []
        start = 0
        while start < len(items):
            end = start + 1
            while end < len(items) and scores[end] == scores[start]:
                end += 1
            run = list(items[start:end])
            if len(run) > 1:
                run.sort(key=lambda i: self.ties[self.catalog.position(i)] if i in self.catalog else len(self.ties))
            out.extend(run)
            start = end
        return out

    def credit(self, target: str, items: Sequence[str]) -> int | None:
        """The rank a row earns: the target's position in the method's own list (first k), or None."""
        return rank_in_list(target, list(items)[: self.k])


def check_credit(method: str, results: Sequence[UserResult], k: int) -> None:
    """Every result's rank must be its target's position in its own top-k list, or a miss."""
    wrong = [r for r in results if r.rank != rank_in_list(r.target, r.items[:k])]
    if wrong:
        first = wrong[0]
        raise DataError(
            f"protocol violation: {method} credits {len(wrong)} of {len(results)} rows with a rank that is not "
            f"the target's position in its own top-{k} list (first: user {first.user_id}, target {first.target}, "
            f"credited rank {first.rank}, list position {rank_in_list(first.target, first.items[:k])})"
        )
