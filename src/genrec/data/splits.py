"""Train / validation / test splits.

Leave-one-out by time: each user's interactions are ordered by timestamp; the last is the test
item, the one before it the validation item, the rest are training. Timestamps tie often
(415 of 943 MovieLens 100K users rated their last two films in the same second), so the order of
tied events needs a rule, and the rule moves the metrics. The default, ``file_order``, keeps tied
events in the order the log lists them (the order they were recorded); ``item_id`` sorts them by
item ID; ``random`` shuffles them with ``seed``. The rule is stored with every result.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .datasets import Dataset, Example
from ..errors import DataError

__all__ = ["Split", "TIE_BREAKS", "HOLDOUTS", "leave_one_out", "given_split", "split_dataset", "sample_examples", "legacy_holdout"]

TIE_BREAKS = ("file_order", "item_id", "random")
#: which training examples of a D3 file are held back for validation: the latest in time (the
#: file's last rows: the processing lists samples in time order), or a seeded random share (which
#: leaks: a held-back row's target is in the same user's later training rows)
HOLDOUTS = ("latest", "random")


@dataclass
class Split:
    """Training sequences per user (oldest first) and the validation and test examples.

    Test histories include the validation item; every history is complete (methods cut it to
    what fits their input; excluded items are always the whole history).
    """

    train: dict[str, list[str]]
    valid: list[Example]
    test: list[Example]
    info: dict[str, Any] = field(default_factory=dict)

    def popularity(self) -> dict[str, int]:
        """Interactions per item in the training sequences."""
        counts: dict[str, int] = {}
        for sequence in self.train.values():
            for item in sequence:
                counts[item] = counts.get(item, 0) + 1
        return counts


def _ordered(frame: pd.DataFrame, tie_break: str, seed: int) -> pd.DataFrame:
    if tie_break == "file_order":
        key = frame["row"]
    elif tie_break == "item_id":
        numeric = pd.to_numeric(frame["item_id"], errors="coerce")
        # numeric IDs sort as numbers, others as text after them
        key = numeric.fillna(np.inf).astype(float) if numeric.notna().all() else frame["item_id"].astype(str)
    elif tie_break == "random":
        key = pd.Series(np.random.default_rng(seed).permutation(len(frame)), index=frame.index)
    else:
        raise DataError(f"unknown tie-break rule {tie_break!r} (have: {', '.join(TIE_BREAKS)})")
    return frame.assign(_tie=key).sort_values(["user_id", "timestamp", "_tie"], kind="mergesort")


def leave_one_out(
    interactions: pd.DataFrame, *, tie_break: str = "file_order", seed: int = 0, min_interactions: int = 3
) -> Split:
    """Leave-one-out by time. Users with fewer than ``min_interactions`` events keep them all in
    training (they have nothing to validate or test on) and are counted in ``info``."""
    if min_interactions < 3:
        raise DataError("leave-one-out needs at least 3 interactions per user (train, validation, test)")
    ordered = _ordered(interactions, tie_break, seed)
    train: dict[str, list[str]] = {}
    valid: list[Example] = []
    test: list[Example] = []
    short = 0
    tied_last_two = 0
    for user, group in ordered.groupby("user_id", sort=False):
        items = group["item_id"].astype(str).tolist()
        times = group["timestamp"].tolist()
        if len(items) < min_interactions:
            train[str(user)] = items
            short += 1
            continue
        train[str(user)] = items[:-2]
        valid.append(Example(str(user), tuple(items[:-2]), items[-2]))
        test.append(Example(str(user), tuple(items[:-1]), items[-1]))
        tied_last_two += times[-1] == times[-2]
    info = {
        "protocol": "leave-one-out by time",
        "tie_break": tie_break,
        "seed": seed,
        "users": len(train),
        "users_evaluated": len(test),
        "users_too_short": short,
        "users_with_tied_last_two": tied_last_two,
        "interactions": int(len(interactions)),
    }
    return Split(train=train, valid=valid, test=test, info=info)


def given_split(dataset: Dataset, *, seed: int = 0, valid_fraction: float = 0.1, holdout: str = "latest") -> Split:
    """A split from given examples. RecBole files give their validation examples and training
    sequences; D3 files give training examples only, of which ``valid_fraction`` is held out for
    validation (tuning, early stopping): the latest rows (``holdout="latest"``: every training
    row precedes every validation row in time, as validation precedes test), or a seeded random
    share (``"random"``). Without a training file, methods learn from the test histories only."""
    if holdout not in HOLDOUTS:
        raise DataError(f"holdout must be one of {', '.join(HOLDOUTS)}, got {holdout!r}")
    if dataset.valid_examples:
        train = {user: list(seq) for user, seq in dataset.train_sequences.items()} or {
            f"{e.user_id}#{n}": [*e.history, e.target] for n, e in enumerate(dataset.train_examples)
        }
        info = {
            "protocol": "the split given with the data (training, validation and test files)",
            "users_evaluated": len(dataset.test_examples),
            "train_sequences": len(train),
            "valid_examples": len(dataset.valid_examples),
        }
        return Split(train=train, valid=list(dataset.valid_examples), test=list(dataset.test_examples), info=info)
    train_examples = list(dataset.train_examples)
    n_valid = int(len(train_examples) * valid_fraction) if train_examples else 0
    if holdout == "random":
        random.Random(seed).shuffle(train_examples)
        valid, kept = train_examples[:n_valid], train_examples[n_valid:]
    else:
        valid, kept = train_examples[len(train_examples) - n_valid :], train_examples[: len(train_examples) - n_valid]
    train: dict[str, list[str]] = {}
    for n, example in enumerate(kept):
        train[f"{example.user_id}#{n}"] = [*example.history, example.target]
    if not train_examples:
        for n, example in enumerate(dataset.test_examples):
            train[f"{example.user_id}#{n}"] = list(example.history)  # histories only: no target leaks
    info = {
        "protocol": "given test examples" + (" with training file" if dataset.train_examples else " (no training file)"),
        "seed": seed,
        "users_evaluated": len(dataset.test_examples),
        "train_sequences": len(train),
        "valid_examples": len(valid),
        "validation": (
            "none" if not valid
            else f"the latest {valid_fraction:.0%} of the training examples (the file's last rows) held back"
            if holdout == "latest" else f"a random {valid_fraction:.0%} of the training examples held back (seed {seed})"
        ),
    }
    return Split(train=train, valid=valid, test=list(dataset.test_examples), info=info)


def split_dataset(dataset: Dataset, *, tie_break: str = "file_order", seed: int = 0, holdout: str = "latest") -> Split:
    if dataset.has_log:
        return leave_one_out(dataset.interactions, tie_break=tie_break, seed=seed)
    return given_split(dataset, seed=seed, holdout=holdout)


def legacy_holdout(settings: dict) -> str:
    """The holdout a run recorded before the setting existed used: random for D3 files (the
    only ones it applies to), which is what the code did then."""
    return "random" if settings.get("dataset") == "d3csv" else "latest"


def sample_examples(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    """``n`` examples drawn without replacement with ``seed`` (all when ``n`` is None or too big),
    in their original order."""
    if n is None or n >= len(examples):
        return list(examples)
    if n < 1:
        raise DataError(f"--users must be at least 1, got {n}")
    chosen = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in chosen]
