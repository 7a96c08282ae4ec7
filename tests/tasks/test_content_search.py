"""Content search: the items nearest the history in words (TF-IDF mixed with the model's reading)
proposed and ordered, the model reranking them at a weight below 1; the default
(``search="auto"``) when nothing learned from an interaction log is at hand."""

from __future__ import annotations

import time

import numpy as np
import pytest

from genrec import Catalog, ConfigError, ContentScores, ContentSearch, DeadlineError, Prior
from genrec.tasks.content_search import search_mode
from genrec.tasks.rank import score_titles

TFIDF = ContentSearch(reading=None)  # the words as TF-IDF alone

SERIES = [
    ("a0", "Alien", "Horror|Sci-Fi"), ("a1", "Aliens", "Action|Sci-Fi"), ("a2", "Alien 3", "Sci-Fi"),
    ("t0", "The Terminator", "Action|Sci-Fi"), ("t1", "Terminator 2", "Action|Sci-Fi"),
    ("c0", "Toy Story", "Animation|Comedy"), ("c1", "Toy Story 2", "Animation|Comedy"),
    ("r0", "Titanic", "Romance|Drama"), ("r1", "Casablanca", "Romance|Drama"), ("x0", "Heat", "Crime"),
]  # fmt: skip


@pytest.fixture
def catalog():
    return Catalog.from_records([{"item_id": i, "title": t, "genres": g} for i, t, g in SERIES], kind="movie")


def test_an_item_sharing_words_with_the_history_is_nearer_than_one_sharing_none(catalog):
    scores = ContentScores(catalog)
    sims = scores.similarities([[catalog.position("c0")], []])
    near, far = sims[0, catalog.position("c1")], sims[0, catalog.position("x0")]
    assert near > 0.3 and far == 0.0 and not sims[1].any()  # an empty history is near nothing
    # an older item counts decay ** age: after Toy Story then Alien, Toy Story 2 is 0.7 as near as after Toy Story alone
    sims = scores.similarities([[catalog.position("c0"), catalog.position("a0")]])[0]
    assert np.isclose(sims[catalog.position("c1")], 0.7 * near)
    assert np.isclose(sims[catalog.position("a2")], sims_of(scores, "a0", catalog)[catalog.position("a2")]) and sims[catalog.position("a2")] > 0
    # a window of one item forgets Toy Story
    assert scores.similarities([[catalog.position("c0"), catalog.position("a0")]], window=1)[0, catalog.position("c1")] == 0
    # as a prior: log-scores per catalog position, from histories of IDs (unknown IDs left out)
    logs = scores([["c0", "nope"], []])
    assert logs.shape == (2, len(catalog)) and np.allclose(logs[0], np.log(sims_of(scores, "c0", catalog) + 1e-6))
    with pytest.raises(ConfigError, match="decay"):
        ContentScores(catalog, decay=0.0)
    # titles without a word of two letters or more are near nothing (hypothesis found the empty vocabulary)
    wordless = Catalog.from_records([{"item_id": "p", "title": "!"}, {"item_id": "q", "title": "7"}])
    assert not ContentScores(wordless).similarities([[0]]).any()


def sims_of(scores, item, catalog):
    return scores.similarities([[catalog.position(item)]])[0]


def test_content_search_reranks_contents_candidates_and_never_returns_the_history(make_rec, catalog):
    rec = make_rec(catalog, search="content", content_search=ContentSearch(candidates=4, weight=1.0, reading=None))
    found = rec.recommend(["Alien", "The Terminator"], k=3)
    sims = sims_of(rec.content_scores(), "a0", catalog) * 0.7 + sims_of(rec.content_scores(), "t0", catalog)  # the newest counts 1
    allowed = [p for p in np.argsort(-sims, kind="stable") if catalog.ids[p] not in ("a0", "t0")]
    # at weight 1 the list is content's own order
    assert [r.item_id for r in found] == [catalog.ids[p] for p in allowed[:3]]
    # at weight 0 the model orders content's 4 candidates by the log-probability beam search ranks by
    rec.content_search = ContentSearch(candidates=4, weight=0.0, reading=None)
    found = rec.recommend(["Alien", "The Terminator"], k=4)
    candidates = [catalog.ids[p] for p in allowed[:4]]
    assert sorted(r.item_id for r in found) == sorted(candidates)
    model = score_titles(rec, ["Alien", "The Terminator"], candidates, k=4)
    assert [r.item_id for r in found] == [candidates[i] for i in np.argsort(-model, kind="stable")]
    np.testing.assert_allclose([r.score for r in found], np.sort(model)[::-1], atol=1e-4)


def test_a_history_with_no_words_in_common_is_left_to_beam_search(make_rec, catalog):
    rec = make_rec(catalog, search="content", content_search=TFIDF)
    assert [r.item_id for r in rec.recommend(["Heat"], k=5)] == [r.item_id for r in rec.recommend(["Heat"], k=5, search="beam")]
    # a request alone has no history to compare: the request template's beam
    assert [r.item_id for r in rec.recommend([], request="please", k=3)] == [
        r.item_id for r in rec.recommend([], request="please", k=3, search="beam")
    ]
    # in one batch, each user goes its own way
    both = rec.recommend_batch([["Heat"], ["Toy Story"]], k=2)
    assert [r.item_id for r in both[0]] == [r.item_id for r in rec.recommend(["Heat"], k=2, search="beam")]
    assert both[1][0].item_id == "c1"


def test_auto_is_content_unless_something_learned_from_a_log_is_at_hand(make_rec, catalog, tmp_path):
    def mode(search, prior=Prior(), fine_tuned=False, fitted_log=False):
        return search_mode(search, prior, fine_tuned, fitted_log)

    assert mode("auto") == "content"
    assert mode("auto", Prior(np.zeros(3), weight=0.5)) == "beam"
    assert mode("auto", Prior(np.zeros(3), weight=0.0)) == "content"  # a prior at weight 0 is no prior
    assert mode("auto", fine_tuned=True) == "beam"
    assert mode("auto", fine_tuned=True, fitted_log=True) == "log"
    assert mode("auto", Prior(np.zeros(3), weight=0.5), fitted_log=True) == "beam"
    assert mode("content", Prior(np.zeros(3), weight=0.5), fine_tuned=True) == "content"
    assert mode("beam", fitted_log=True) == "beam"
    with pytest.raises(ConfigError, match="search must be one of auto, beam, content, log"):
        mode("nearest")
    with pytest.raises(ConfigError, match=r"Recommender.fit\(log\) first"):
        mode("log")
    rec = make_rec(catalog, search="auto")
    assert rec.search == "auto" and not rec.fine_tuned
    rec.warm()  # a service builds the vectors before its first request
    assert rec._content_scores is not None and rec._content_scores._vectors is not None
    assert rec.recommend(["Toy Story"], k=1)[0].item_id == "c1"  # content's nearest
    prior = np.zeros(len(catalog))
    prior[catalog.position("x0")] = 50.0
    assert rec.recommend(["Toy Story"], k=1, prior=prior, prior_weight=1.0)[0].item_id == "x0"  # a prior: the beam
    with pytest.raises(ConfigError, match="search must be"):
        make_rec(catalog, search="nearest")


def test_chat_proposes_from_the_liked_items_words_and_never_the_mentioned_ones(make_rec, catalog):
    messages = [{"role": "user", "content": "I loved Alien and The Terminator but hated Titanic. What next?"}]
    rec = make_rec(catalog, search="auto", content_search=TFIDF)
    ids = [r.item_id for r in rec.chat(messages, k=3).items]
    assert len(ids) == 3 and not {"a0", "t0", "r0"} & set(ids)
    assert set(ids) <= {"a1", "a2", "t1"}  # the sci-fi sequels share their words
    rec.content_search = ContentSearch()  # and the model's reading mixed in: still none of the mentioned
    ids = [r.item_id for r in rec.chat(messages, k=3).items]
    assert len(ids) == 3 and not {"a0", "t0", "r0"} & set(ids)


def test_content_search_keeps_the_deadline(make_rec, catalog):
    rec = make_rec(catalog, search="content")
    with pytest.raises(DeadlineError, match="content search passed its deadline"):
        rec.recommend(["Alien"], k=2, deadline=time.monotonic() - 1)
