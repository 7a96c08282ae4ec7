"""The words content search reads (``genrec.words``): TF-IDF mixed with the model's own reading of
each item, a request's words joining the history's."""

from __future__ import annotations

import numpy as np
import pytest

from genrec import Catalog, ConfigError, ContentScores, ContentSearch
from genrec.encoder import EncoderSettings, ItemEncoder, embed_texts
from genrec.words import READING_DEPTH, Words, reading_layer

FILMS = [
    ("a0", "Alien", "Horror|Sci-Fi"), ("a1", "Aliens", "Action|Sci-Fi"), ("t0", "The Terminator", "Action|Sci-Fi"),
    ("c0", "Toy Story", "Animation|Comedy"), ("c1", "Toy Story 2", "Animation|Comedy"),
    ("r0", "Titanic", "Romance|Drama"), ("r1", "Casablanca", "Romance|Drama"), ("x0", "Heat", "Crime"),
]  # fmt: skip


@pytest.fixture
def catalog():
    return Catalog.from_records([{"item_id": i, "title": t, "genres": g} for i, t, g in FILMS], kind="movie")


def reference_mixture(tfidf: np.ndarray, reading: np.ndarray, w: float) -> np.ndarray:
    """The mixture written out row by row, apart from ``genrec.content.standardised``."""
    out = np.empty_like(tfidf)
    for n in range(len(tfidf)):
        a = (tfidf[n] - tfidf[n].mean()) / (tfidf[n].std() + 1e-9)
        b = (reading[n] - reading[n].mean()) / (reading[n].std() + 1e-9)
        out[n] = (1 - w) * a + w * b
    return out


def test_the_layer_read_is_the_same_share_of_any_models_depth():
    assert reading_layer(READING_DEPTH, 30) == 8  # the default model's layer, chosen on validation rows
    assert reading_layer(READING_DEPTH, 24) == 6 and reading_layer(READING_DEPTH, 2) == 1 and reading_layer(1.0, 4) == 4
    assert reading_layer(0.01, 12) == 1  # never the embeddings alone
    with pytest.raises(ConfigError, match="share of the model's depth"):
        ContentSearch(reading=0.0)
    with pytest.raises(ConfigError, match="its weight lies in"):
        ContentSearch(reading_weight=1.5)
    with pytest.raises(ConfigError, match="request_share must be above 0, got 0.0"):
        ContentSearch(request_share=0.0)


def test_words_mix_standardised_tfidf_and_reading_and_a_request_joins_both(catalog, tiny_model, tokenizer):
    from genrec.content import catalog_texts

    texts = catalog_texts(catalog)
    features = embed_texts(tiny_model, tokenizer, texts, layers=[1])[1]
    encoder = ItemEncoder(features, EncoderSettings(epochs=0))

    def read(requests):
        return embed_texts(tiny_model, tokenizer, list(requests), layers=[1])[1]

    content = ContentScores(catalog)
    words = Words(content, encoder, weight=0.3, read=read)
    histories = [[0, 2], [3]]
    got = words.scores(histories)
    expected = reference_mixture(content.similarities(histories), encoder.scores(histories), 0.3)
    np.testing.assert_allclose(got.logits, expected, atol=1e-6)
    assert got.near.all()  # the model reads every item: each is somewhere
    # a request counts as much as the history's items together in both profiles (after two items,
    # 1.7); a request alone is a profile too
    asked = words.scores([[0, 2], []], ["romance drama", "a comedy"])
    request_vectors = encoder.unit_vectors(read(["romance drama", "a comedy"])) * np.array([[1.7], [1.0]])
    tfidf = content.similarities([[0, 2], []], requests=["romance drama", "a comedy"])
    expected = reference_mixture(tfidf, encoder.scores([[0, 2], []], extra=request_vectors), 0.3)
    np.testing.assert_allclose(asked.logits, expected, atol=1e-6)
    assert tfidf[1, catalog.position("c0")] > 0 and tfidf[1, catalog.position("r0")] == 0
    assert not np.allclose(asked.logits[0], words.scores([[0, 2]]).logits[0])
    # at another request share, both profiles weigh the request that many times more
    halved = Words(content, encoder, weight=0.3, read=read, request_share=0.5).scores([[0, 2], []], ["romance drama", "a comedy"])
    tfidf = content.similarities([[0, 2], []], requests=["romance drama", "a comedy"], request_share=0.5)
    expected = reference_mixture(tfidf, encoder.scores([[0, 2], []], extra=0.5 * request_vectors), 0.3)
    np.testing.assert_allclose(halved.logits, expected, atol=1e-6)
    assert not words.scores([[]]).near.any()  # no history, no request: nothing to go on
    # TF-IDF alone: log-similarities, near where a word is shared
    alone = Words(content).scores([[catalog.position("c0")]])
    sims = content.similarities([[catalog.position("c0")]])
    np.testing.assert_allclose(alone.logits, np.log(sims + 1e-6))
    assert (alone.near == (sims > 0)).all() and not alone.near[0, catalog.position("x0")]


def test_a_request_counts_as_much_as_the_history_and_its_stop_words_not_at_all():
    from genrec.content import history_weights, request_weights

    np.testing.assert_allclose(request_weights(history_weights([[0, 1, 2], [], [5]], 6, window=20, decay=0.7)), [1 + 0.7 + 0.49, 1.0, 1.0])
    np.testing.assert_allclose(request_weights(history_weights([[0, 1, 2]], 6, window=1, decay=0.7)), [1.0])
    films = Catalog.from_records([
        {"item_id": "q", "title": "Requiem for a Dream"}, {"item_id": "s", "title": "Space Camp"},
        {"item_id": "t", "title": "Toy Story"}, {"item_id": "u", "title": "Toy Soldiers"},
    ])  # fmt: skip
    content = ContentScores(films)
    asked = content.similarities([[]], requests=["a space film for kids"])[0]
    assert asked[0] == 0.0 and asked[1] > 0.0  # "for" and "a" are no request's words; "space" is
    # after Toy Story and Toy Soldiers (weights 0.7 and 1) the request counts 1.7
    both = content.similarities([[2, 3]], requests=["space"])[0]
    alone = content.similarities([[]], requests=["space"])[0]
    history = content.similarities([[2, 3]])[0]
    np.testing.assert_allclose(both, history + 1.7 * alone)
    # at another share, that many times the history's items (and of one item, without a history)
    np.testing.assert_allclose(content.similarities([[2, 3]], requests=["space"], request_share=0.5)[0], history + 0.85 * alone)
    np.testing.assert_allclose(content.similarities([[]], requests=["space"], request_share=0.5)[0], 0.5 * alone)
    np.testing.assert_allclose(request_weights(history_weights([[0, 1, 2], []], 6, window=20, decay=0.7), 2.0), [4.38, 2.0])


def test_a_request_alone_is_searched_from_its_words(make_rec, catalog):
    rec = make_rec(catalog, search="content", content_search=ContentSearch(reading=None))
    assert {r.item_id for r in rec.recommend([], request="a romance drama", k=2)} == {"r0", "r1"}
    assert [r.item_id for r in rec.recommend(["Toy Story"], request="", k=1)] == ["c1"]  # an empty request is none


def test_by_default_the_words_order_the_list_without_a_model_call(make_rec, catalog, monkeypatch, tmp_path):
    rec = make_rec(catalog, search="auto")
    assert rec.content_search.weight == 1.0 and rec.content_search.reading == READING_DEPTH
    rec.warm()  # a service reads the catalog before its first request, and keeps it on disk
    assert list((tmp_path / "cache" / "item_vectors").glob("item-vectors-*.npz"))

    def no_model(*args, **kwargs):
        raise AssertionError("the model scored titles at weight 1")

    monkeypatch.setattr("genrec.tasks.content_search.score_continuations", no_model)
    found = rec.recommend(["Heat"], k=4)  # no word in common with anything, but the model read every item
    logits = rec.words().scores([[catalog.position("x0")]]).logits[0]
    allowed = [p for p in np.argsort(-logits, kind="stable") if catalog.ids[p] != "x0"]
    assert [r.item_id for r in found] == [catalog.ids[p] for p in allowed[:4]]
    log_p = logits[allowed] - np.logaddexp.reduce(logits[allowed])
    np.testing.assert_allclose([r.score for r in found], log_p[:4], atol=1e-9)
    # more asked for than content search's candidates: still k items, in the words' order
    rec.content_search = ContentSearch(candidates=2)
    assert [r.item_id for r in rec.recommend(["Heat"], k=5)] == [catalog.ids[p] for p in allowed[:5]]
    # new settings, new words: at reading weight 0 the order is TF-IDF's
    rec.content_search = ContentSearch(reading_weight=0.0)
    sims = rec.content_scores().similarities([[catalog.position("c0")]])[0]
    top = rec.recommend(["Toy Story"], k=1)[0].item_id
    assert top == catalog.ids[int(np.argmax(np.where(np.arange(len(catalog)) == catalog.position("c0"), -1, sims)))] == "c1"
    # a request's words join the TF-IDF profile; the model reads them too only when asked to
    rec.content_search = ContentSearch()
    default = rec.words()
    assert default.read is None and default.request_share == 1.0
    expected = reference_mixture(
        rec.content_scores().similarities([[catalog.position("x0")]], requests=["a comedy"]),
        default.encoder.scores([[catalog.position("x0")]]), default.weight,
    )  # fmt: skip
    np.testing.assert_allclose(default.scores([[catalog.position("x0")]], ["a comedy"]).logits, expected, atol=1e-6)
    rec.content_search = ContentSearch(read_requests=True, request_share=0.5)
    reading = rec.words()
    assert reading.read is not None and reading.request_share == 0.5
    assert not np.allclose(reading.scores([[catalog.position("x0")]], ["a comedy"]).logits, expected)


def test_zero_one_columns_read_as_their_names(tmp_path):
    """MovieLens' u.item read as it is holds its genres as 0/1 columns: named, they are words."""
    from genrec.content import catalog_texts, flag_attributes

    path = tmp_path / "u.item"
    path.write_text("1|Alien (1979)|1979|0|1|1\n2|Heat (1995)|1995|1|0|0\n3|Jaws (1975)|1975|0|1|0\n", encoding="latin-1")
    films = Catalog.from_file(path, sep="|", header=False, encoding="latin-1", columns=["item_id", "title", "year", "Crime", "Horror", "Sci-Fi"])
    assert flag_attributes(films) == {"Crime", "Horror", "Sci-Fi"}  # a year is no flag
    assert catalog_texts(films) == ["Alien (1979) 1979 Horror Sci-Fi", "Heat (1995) 1995 Crime", "Jaws (1975) 1975 Horror"]
    scores = ContentScores(films).similarities([[]], requests=["horror"])[0]
    assert scores[0] > 0 and scores[2] > 0 and scores[1] == 0
    # true/false (a JSON catalog's booleans) are flags too; a column holding anything else is not
    tools = Catalog.from_records([
        {"item_id": "d", "title": "Drill", "cordless": True, "volts": "1"}, {"item_id": "s", "title": "Saw", "cordless": False, "volts": "18"},
    ])  # fmt: skip
    assert flag_attributes(tools) == {"cordless"} and catalog_texts(tools) == ["Drill cordless 1", "Saw 18"]
