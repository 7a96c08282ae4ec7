"""How a history is read, and what one prompt may cost: every entry says how it was matched and
whether it reached the prompt; a cap and a token budget bound the prompt before any decoding."""

from __future__ import annotations

import time

import pytest

from genrec import DeadlineError, LimitError, Limits, UnknownItemError

from helpers import TITLES, catalog_of


def test_each_entry_says_how_it_was_read(make_rec):
    rec = make_rec(catalog_of(TITLES))
    recs = rec.recommend(["i0", "the matrix", "The Matrix Reloded", "Matrix Reloaded", "  i3 "], k=3)
    read = [(h.given, h.item_id, h.match, h.left_out) for h in recs.history]
    assert read == [("i0", "i0", "id", None), ("the matrix", "i5", "title", None), ("The Matrix Reloded", "i6", "fuzzy", None),
                    ("Matrix Reloaded", "i6", "fuzzy", None), ("i3", "i3", "id", None)]  # fmt: skip
    # a fuzzy match says so even when the matcher scores it 100 (a title's words, not the title)
    assert [h.score for h in recs.history] == [100.0, 100.0, pytest.approx(97.3, abs=0.1), 100.0, 100.0]
    assert recs.to_dict()["history"][2] == {"given": "The Matrix Reloded", "item_id": "i6", "title": "The Matrix Reloaded",
                                            "match": "fuzzy", "score": recs.history[2].score, "left_out": None}  # fmt: skip
    assert recs.to_dict()["items"] == recs.to_dicts()


def test_a_minimum_match_score_refuses_weak_fuzzy_matches(make_rec):
    rec = make_rec(catalog_of(TITLES))
    assert rec.recommend(["The Matrix Reloded"], k=2).history[0].match == "fuzzy"
    with pytest.raises(UnknownItemError, match=r"'The Matrix Reloded' \(closest: 'The Matrix Reloaded', score 97 < 99\)") as err:
        rec.recommend(["i0", "The Matrix Reloded"], k=2, min_match_score=99)
    assert err.value.unknown == ["The Matrix Reloded"]
    # IDs and titles written out are never refused by the score
    assert [h.match for h in rec.recommend(["i0", "the MATRIX"], k=2, min_match_score=100).history] == ["id", "title"]


def test_the_history_cap_applies_before_the_prompt_is_built(make_rec):
    """A 10,000-entry history costs what the cap allows: only the newest items are rendered, the
    rest are said to be left out, and none of them is recommended; strict callers are refused."""
    catalog = catalog_of(TITLES)
    rec = make_rec(catalog, limits=Limits(max_history_items=3))
    history = [f"i{n % 20}" for n in range(10_000)]
    started = time.perf_counter()
    recs = rec.recommend(history, k=3)
    assert time.perf_counter() - started < 30  # (10,000 items rendered would take minutes: measured 115 s)
    assert recs.history_used == 3 and recs.history_dropped == 9_997
    assert [h.left_out for h in recs.history[-4:]] == ["cap", None, None, None]
    assert not {r.item_id for r in recs} & set(history)  # the left-out items are still excluded
    with pytest.raises(LimitError, match=r"10000 history items given; at most 3 .*Limits.max_history_items"):
        rec.recommend(history, k=3, strict_history=True)
    with pytest.raises(LimitError, match="max_history_items must be a whole number"):
        Limits(max_history_items=0)


def test_a_prompt_token_budget_cuts_the_oldest_items(make_rec):
    catalog = catalog_of(TITLES)
    history = [f"i{n}" for n in range(12)]
    full = make_rec(catalog).recommend(history, k=2)
    budget = len(make_rec(catalog).pipeline.prepare(history[-4:], "next_item").prompt_ids)
    cut = make_rec(catalog, limits=Limits(max_prompt_tokens=budget)).recommend(history, k=2)
    assert full.history_dropped == 0 and cut.history_used == 4 and cut.history_dropped == 8
    assert [h.left_out for h in cut.history] == ["context"] * 8 + [None] * 4


def test_a_deadline_stops_decoding(make_rec):
    rec = make_rec(catalog_of(TITLES))
    with pytest.raises(DeadlineError, match="deadline"):
        rec.recommend(["i1"], k=5, deadline=time.monotonic() - 1)
    assert len(rec.recommend(["i1"], k=5, deadline=time.monotonic() + 60)) == 5


def test_a_token_budget_keeps_long_prompts_apart(make_rec):
    """With max_batch_tokens, users are batched while the padded prompts fit: a long history is
    decoded apart from the short ones it would pad; the lists are those of one user at a time."""
    from genrec.tasks.recommend import _batches

    assert _batches([0, 1, 2, 3], [10, 10, 12, 50], size=8, max_tokens=None) == [[0, 1, 2, 3]]
    assert _batches([0, 1, 2, 3], [10, 10, 12, 50], size=8, max_tokens=40) == [[0, 1, 2], [3]]
    assert _batches([0, 1, 2], [10, 10, 10], size=2, max_tokens=1000) == [[0, 1], [2]]
    assert _batches([0], [99], size=4, max_tokens=10) == [[0]]  # alone over the budget: still decoded
    rec = make_rec(catalog_of(TITLES))
    histories = [["i1"], ["i2"], [f"i{n}" for n in range(15)], ["i3", "i4"]]
    batched = rec.recommend_batch(histories, k=3, max_batch_tokens=200)
    alone = [rec.recommend(h, k=3) for h in histories]
    assert [[r.item_id for r in b] for b in batched] == [[r.item_id for r in a] for a in alone]
