"""``Recommender.fit(log)``: the trained mixture (hybrid baseline and the model's item vectors)
fitted on an interaction log, what ``search="auto"`` ranks by once a log is fitted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genrec import ConfigError, ContentSearch, DataError
from genrec.content import standardised
from genrec.log_model import WEIGHTS, holdout_split, read_log
from helpers import series_catalog, the_log


@pytest.fixture
def catalog():
    return series_catalog()


def test_a_fitted_log_ranks_by_what_the_log_says(make_rec, catalog):
    rec = make_rec(catalog, search="auto", content_search=ContentSearch(reading=None))
    before = rec.recommend(["The Terminator", "Alien"], k=1)[0].item_id
    assert before != "x0"  # without a log: the words' nearest (Heat shares none)
    assert rec.fit(the_log()) is rec
    tuned = rec.log_model.tuned
    assert tuned["weight"] in WEIGHTS and tuned["layer"] == 1  # the tiny model's 2 layers: depths round to 1
    assert tuned["users"] == 25 and tuned["valid_examples"] == 24 and tuned["interactions"] == 73
    assert tuned["hybrid"]["new_items"] == 4  # held out: a1 and c1, and x0 and r0 (only ever last)
    assert tuned["new_items"] == 2  # refitted on the whole log: a1 and c1
    recs = rec.recommend(["The Terminator", "Alien"], k=3)
    assert recs[0].item_id == "x0"  # co-occurrence the words cannot see
    assert not {r.item_id for r in recs} & {"t0", "a0"} and len(recs) == 3
    # the list is the mixture's order: (1 - w) * hybrid + w * vectors, each standardised per row
    model = rec.log_model.scores
    history = [["t0", "a0"]]
    w = model.weight
    hybrid = standardised(np.asarray(model.base.score(history), dtype=np.float64))
    vectors = standardised(model.encoder.scores(model.positions(history)))
    expected = hybrid if w <= 0 else vectors if w >= 1 else (1 - w) * hybrid + w * vectors
    order = [catalog.ids[p] for p in np.argsort(-expected[0], kind="stable") if catalog.ids[p] not in ("t0", "a0")]
    assert [r.item_id for r in rec.recommend(["t0", "a0"], k=7)] == order
    # a request is read by the words (the log's mixture cannot read one), a prior goes to the beam
    assert rec.recommend(["Alien"], k=1, request="Toy Story")[0].item_id in {"c0", "c1"}
    assert rec.recommend(["The Terminator", "Alien"], k=1, search="content")[0].item_id == before


def test_given_validation_pairs_choose_and_the_log_is_fitted_as_it_is(make_rec, catalog):
    rec = make_rec(catalog).fit({"u": ["t0", "a0"], "v": ["r1"]}, valid=[(["t0", "a0"], "x0"), (["r1"], "c0")])
    tuned = rec.log_model.tuned
    assert tuned["valid_examples"] == 2 and tuned["users"] == 2 and tuned["interactions"] == 3
    assert tuned["new_items"] == len(catalog) - 3  # nothing held back, nothing refitted: x0 and c0 stay new
    with pytest.raises(DataError, match="valid pair 1's target 'zz9' is not in catalog"):
        make_rec(catalog).fit({"u": ["t0", "a0"]}, valid=[(["t0"], "a0"), (["a0"], "zz9")])


def test_log_search_needs_a_fitted_log(make_rec, catalog):
    rec = make_rec(catalog, search="log")
    with pytest.raises(ConfigError, match=r"Recommender.fit\(log\) first"):
        rec.recommend(["Alien"], k=1)


def test_an_item_the_catalog_lacks_is_named_or_left_out_and_counted(make_rec, catalog):
    rec = make_rec(catalog)
    log = the_log()
    log["u0"] = ["t0", "zz9", "a0", "x0"]
    with pytest.raises(DataError, match=r"item 'zz9' \(user 'u0'\) is not in catalog"):
        rec.fit(log)
    rec.fit(log, lenient=True)
    assert rec.log_model.tuned["unknown_items_left_out"] == 1


def test_a_log_with_nothing_to_validate_on_is_an_error(make_rec, catalog):
    with pytest.raises(DataError, match="no user with two interactions"):
        make_rec(catalog).fit({"u": ["a0"], "v": ["x0"]})


def test_the_log_is_read_in_time_order_from_a_table_or_a_file(tmp_path):
    table = pd.DataFrame({"user_id": ["u", "u", "v", "u"], "item_id": ["b", "a", "c", "d"], "timestamp": [20, 10, 5, 30]})
    assert read_log(table) == {"u": ["a", "b", "d"], "v": ["c"]}
    path = tmp_path / "log.csv"
    table.to_csv(path, index=False)
    assert read_log(path) == {"u": ["a", "b", "d"], "v": ["c"]}
    with pytest.raises(DataError, match="row 1 has timestamp 'soon'"):
        read_log(table.assign(timestamp=["20", "soon", "5", "30"]))
    assert read_log({"u": [1, 2]}) == {"u": ["1", "2"]}


def test_each_users_last_interaction_validates():
    split = holdout_split({"u": ["a", "b", "c"], "v": ["d"]})
    assert split.train == {"u": ["a", "b"], "v": ["d"]}
    assert [(e.user_id, e.history, e.target) for e in split.valid] == [("u", ("a", "b"), "c")]
