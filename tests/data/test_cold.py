"""New items (genrec/data/cold.py): seeded and natural, stripped from training, and every row
grouped as new or known."""

from __future__ import annotations

import pytest

from genrec import DataError
from genrec.data.cold import check_cold, cold_items, count_groups, group_of, seen_items, without_items
from genrec.data.splits import leave_one_out

from helpers import chain_dataset


def test_seeded_new_items_leave_every_training_interaction():
    ds = chain_dataset(n_users=20, n_items=30, length=8)
    split = leave_one_out(ds.interactions)
    cold = cold_items(ds.catalog, 0.2, seed=3)
    assert len(cold) == 6 and cold == cold_items(ds.catalog, 0.2, seed=3) != cold_items(ds.catalog, 0.2, seed=4)
    assert cold_items(ds.catalog, 0.0, seed=3) == frozenset()
    stripped = without_items(split, cold)
    assert not seen_items(stripped) & cold  # never a training target, never in a training history
    removed = sum(len(s) for s in split.train.values()) - sum(len(s) for s in stripped.train.values())
    assert removed == stripped.info["training_interactions_removed"] > 0 and stripped.info["cold_items"] == 6
    # validation and test rows are kept whole: histories may hold new items, targets may be new
    assert stripped.test == split.test and stripped.valid == split.valid
    groups = count_groups(stripped.test, seen_items(stripped))
    assert groups["new"] == sum(e.target in cold or e.target not in seen_items(split) for e in split.test) > 0
    assert groups["new"] + groups["known"] == len(split.test)
    assert {group_of(e, seen_items(stripped)) for e in stripped.test} == {"new", "known"}


def test_bad_settings_are_named():
    with pytest.raises(DataError, match="fraction in \\[0, 1\\)"):
        check_cold(1.0, "all")
    with pytest.raises(DataError, match="only must be one of all, new, known"):
        check_cold(0.1, "old")
