"""New items: items that no interaction of the training part has seen, so that only a method that
reads an item's words (a text model, a content baseline) can recommend them.

Two kinds, measured the same way:

- natural: items first seen after the training part ends (a D3 file's test targets that its
  training file never holds; a log's items first bought after a user's training part);
- seeded: ``cold_items(catalog, fraction, seed)`` turns a seeded fraction of the catalog into new
  items, and ``without_items`` removes every interaction with them from the training part
  (training targets dropped, training histories stripped), while they stay in the catalog, the
  candidate set and the validation and test rows (a user may have bought one).

Every test or validation row is then ``new`` (its target is an item the training part never
saw) or ``known``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import replace

from ..catalog import Catalog
from ..errors import DataError
from .datasets import Example
from .splits import Split

__all__ = ["GROUPS", "ONLY", "cold_items", "without_items", "seen_items", "group_of", "count_groups", "check_cold", "tuning_split"]

GROUPS = ("new", "known")
#: which test rows a run evaluates
ONLY = ("all", *GROUPS)


def check_cold(fraction: float, only: str, tune_cold: float = 0.0) -> None:
    if not 0.0 <= fraction < 1.0:  # (also refuses NaN)
        raise DataError(f"cold items must be a fraction in [0, 1), got {fraction}")
    if not 0.0 <= tune_cold < 1.0:
        raise DataError(f"tuning's cold items must be a fraction in [0, 1), got {tune_cold}")
    if only not in ONLY:
        raise DataError(f"only must be one of {', '.join(ONLY)}, got {only!r}")


def cold_items(catalog: Catalog, fraction: float, seed: int) -> frozenset[str]:
    """A seeded ``fraction`` of the catalog's items, the same for training and evaluation."""
    if fraction <= 0.0:
        return frozenset()
    ids = sorted(catalog.ids)
    return frozenset(random.Random(f"cold-{seed}").sample(ids, round(len(ids) * fraction)))


def without_items(split: Split, items: frozenset[str]) -> Split:
    """``split`` with every interaction with ``items`` removed from its training part: they are
    stripped from the training sequences (so they are never a training target nor in a training
    history); validation and test rows are kept as they are."""
    if not items:
        return split
    train: dict[str, list[str]] = {}
    removed = 0
    for user, sequence in split.train.items():
        kept = [item for item in sequence if item not in items]
        removed += len(sequence) - len(kept)
        if kept:
            train[user] = kept
    info = {**split.info, "cold_items": len(items), "training_interactions_removed": removed}
    return replace(split, train=train, info=info)


def seen_items(split: Split) -> frozenset[str]:
    """The items some training sequence holds."""
    return frozenset(item for sequence in split.train.values() for item in sequence)


def group_of(example: Example, seen: frozenset[str]) -> str:
    return "known" if example.target in seen else "new"


def count_groups(examples: Iterable[Example], seen: frozenset[str]) -> dict[str, int]:
    counts = dict.fromkeys(GROUPS, 0)
    for example in examples:
        counts[group_of(example, seen)] += 1
    return counts


def tuning_split(split: Split, tune_on: str = "all", tune_cold: float = 0.0, seed: int = 0) -> Split:
    """The split methods choose their settings on. ``tune_cold`` F: a seeded fraction F of the
    items training has seen is made new for the choice as well (every training interaction with
    them removed, as ``without_items`` does), so that the validation rows whose target is new are
    many where the run's own new items are few; the methods are then fitted again on ``split``
    with what they chose. ``tune_on`` new or known: only the validation rows of that group."""
    if tune_cold > 0.0:
        seen = sorted(seen_items(split))
        split = without_items(split, frozenset(random.Random(f"tune-cold-{seed}").sample(seen, round(len(seen) * tune_cold))))
    if tune_on == "all":
        return split
    seen_now = seen_items(split)
    return replace(split, valid=[e for e in split.valid if group_of(e, seen_now) == tune_on])
