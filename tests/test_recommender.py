from __future__ import annotations

import json
import logging

import pytest

from genrec import LimitError, Recommender, UnknownItemError
from genrec.recommender import TRAINING_RECORD

from helpers import TITLES, catalog_of


@pytest.fixture
def rec(make_rec):
    return make_rec(catalog_of(TITLES, year=1999))


def test_history_accepts_ids_and_titles(rec):
    assert rec.resolve(["i0", "Heat 2", "the matrix", "Amelie"]) == ["i0", "i4", "i5", "i8"]


def test_unknown_history_entries_are_listed(rec):
    with pytest.raises(UnknownItemError) as err:
        rec.recommend(["i0", "nope", "Completely Unknown Film"], k=3)
    assert err.value.unknown == ["nope", "Completely Unknown Film"]
    assert "'nope', 'Completely Unknown Film'" in str(err.value)


def test_history_must_be_a_list(rec):
    with pytest.raises(LimitError, match="not one string"):
        rec.recommend("i0", k=3)


def test_request_limits(rec):
    with pytest.raises(LimitError, match="characters"):
        rec.recommend([], k=3, request="x" * 5000)
    with pytest.raises(LimitError, match="must be text"):
        rec.recommend([], k=3, request=42)


def test_long_history_is_cut_from_the_oldest_end_and_reported(make_rec, caplog):
    rec = make_rec(catalog_of(TITLES), max_prompt_tokens=90)
    history = [f"i{n}" for n in range(len(TITLES))]
    with caplog.at_level(logging.WARNING):
        recs = rec.recommend(history, k=1, exclude_history=False)
    assert recs.history_dropped > 0 and recs.history_used + recs.history_dropped == len(history)
    assert "oldest" in caplog.text
    kept = TITLES[recs.history_dropped :]
    assert all(f"- {t}" in recs.prompt_text for t in kept[-3:])
    assert f"- {TITLES[0]}\n" not in recs.prompt_text


def test_results_as_dataframe_and_dicts(rec):
    recs = rec.recommend(["i0"], k=4, request="something tense")
    df = recs.to_dataframe()
    assert list(df.columns) == ["item_id", "title", "score"] and len(df) == 4
    assert recs.to_dicts()[0].keys() == {"item_id", "title", "score"}
    assert "What I want now: something tense" in recs.prompt_text


def test_unconstrained_mode_grounds_or_reports(rec):
    recs = rec.recommend(["i0"], k=5, constrained=False)
    assert all(r.item_id in rec.catalog for r in recs)
    assert all(r.item_id != "i0" for r in recs)
    # the tiny random model writes gibberish: it must be reported, not dropped
    assert len(recs.outputs) == 10
    # every output is accounted for: ungrounded, a history repeat, or one of the items
    grounded_ids = []
    for text in recs.outputs:
        matches = rec.ground(text, limit=1) if text else []
        if not matches:
            assert text in recs.ungrounded
        elif rec.catalog.title_of(matches[0].item_id) == rec.catalog.title_of("i0"):
            assert text in recs.history_repeats
        else:
            grounded_ids.append(matches[0].item_id)
    assert len(recs.ungrounded) + len(recs.history_repeats) + len(grounded_ids) == len(recs.outputs)
    assert [r.item_id for r in recs] == list(dict.fromkeys(grounded_ids))[:5]


def test_prompts_dir_changes_behaviour_without_code(make_rec, tmp_path):
    (tmp_path / "next_item.jinja").write_text(
        "{% block user %}Pick a title. Seen: {{ history | map(attribute='title') | join(' / ') }}{% endblock %}"
    )
    rec = make_rec(catalog_of(TITLES), prompts_dir=tmp_path)
    recs = rec.recommend(["i0", "i1"], k=2)
    assert "Pick a title. Seen: Alien / Aliens" in recs.prompt_text and len(recs) == 2


def test_ground_and_ground_list(rec):
    assert rec.ground("the matrix reloaded")[0].item_id == "i6"
    mentions = rec.ground_list("1. Heat\n2. Nothing Like It")
    assert [m.grounded for m in mentions] == [True, False]


def test_model_directory_path_and_training_record_warning(tiny_model_dir, tmp_path):
    catalog = catalog_of(TITLES)
    (tiny_model_dir / TRAINING_RECORD).write_text(json.dumps({"catalog_hash": "other", "catalog_name": "ml-1m"}))
    try:
        with pytest.warns(UserWarning, match="fine-tuned on catalog 'ml-1m'") as caught:
            rec = Recommender(catalog, model=str(tiny_model_dir), cache_dir=tmp_path)
        assert "title-years" not in str(caught[0].message)
        other_form = {"catalog_hash": "other", "config": {"data": {"title_years": "ambiguous"}}}
        (tiny_model_dir / TRAINING_RECORD).write_text(json.dumps(other_form))
        with pytest.warns(UserWarning, match="trained on titles with --title-years ambiguous"):
            Recommender(catalog, model=str(tiny_model_dir), cache_dir=tmp_path)
        short = {"catalog_hash": "other", "config": {"data": {"title_years": "always", "title_words": "6"}}}
        (tiny_model_dir / TRAINING_RECORD).write_text(json.dumps(short))
        with pytest.warns(UserWarning, match=r"trained on titles with --title-words 6$"):
            Recommender(catalog, model=str(tiny_model_dir), cache_dir=tmp_path)
        (tiny_model_dir / TRAINING_RECORD).write_text(json.dumps({"catalog_hash": catalog.content_hash}))
        Recommender(catalog, model=str(tiny_model_dir), cache_dir=tmp_path)  # same catalog: no warning
    finally:
        (tiny_model_dir / TRAINING_RECORD).unlink()
    assert len(rec.recommend([], k=3)) == 3


def test_title_index_cached_on_disk(make_rec, tmp_path):
    catalog = catalog_of(TITLES)
    first = make_rec(catalog, cache_dir=tmp_path / "c")
    first.recommend([], k=1)
    assert len(list((tmp_path / "c" / "indexes").glob("*.npz"))) == 1
    second = make_rec(catalog, cache_dir=tmp_path / "c")
    assert second.index_for().checksum() == first.index_for().checksum()


def test_demo_catalog_default(make_rec):
    rec = make_rec(None)
    assert rec.catalog.kind == "movie" and len(rec.catalog) > 300
