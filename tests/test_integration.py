"""The real default model (SmolLM2-135M-Instruct, converted from the embedded GGUF)."""

from __future__ import annotations

import pytest

from genrec import Catalog, Recommender
from genrec.cli import DEMO_HISTORY, main

pytestmark = pytest.mark.integration

FIVE_FILMS = ["50", "172", "181", "174", "127"]  # Star Wars, Empire, Return of the Jedi, Raiders, Godfather


@pytest.fixture(scope="module")
def ml100k_rec(ml100k_dir):
    catalog = Catalog.from_file(ml100k_dir / "u.item", sep="|", encoding="latin-1", header=False, kind="movie")
    return Recommender(catalog)


def test_ml100k_top10_distinct_catalog_items_not_in_history(ml100k_rec):
    recs = ml100k_rec.recommend(FIVE_FILMS, k=10)
    ids = [r.item_id for r in recs]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert all(i in ml100k_rec.catalog for i in ids)
    assert not set(ids) & set(FIVE_FILMS)
    assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)
    assert all(r.score < 0 for r in recs)


def test_ml100k_titles_given_as_history(ml100k_rec):
    recs = ml100k_rec.recommend(["Star Wars", "The Empire Strikes Back", "Toy Story"], k=5)
    assert len(recs) == 5 and not {"50", "172", "1"} & {r.item_id for r in recs}


def test_demo_catalog_with_request(real_rec):
    recs = real_rec.recommend(DEMO_HISTORY, k=10, request="something funny")
    assert len(recs) == 10 and len({r.item_id for r in recs}) == 10
    seen = set(real_rec.resolve(DEMO_HISTORY))
    assert not seen & {r.item_id for r in recs}


def test_batch_matches_single_on_real_model(real_rec):
    histories = [DEMO_HISTORY, ["Toy Story", "Finding Nemo"], []]
    batch = real_rec.recommend_batch(histories, k=5)
    for history, got in zip(histories, batch):
        single = real_rec.recommend(history, k=5)
        assert [r.item_id for r in got] == [r.item_id for r in single]


def test_unconstrained_outputs_are_grounded_or_reported(real_rec):
    recs = real_rec.recommend(["Toy Story", "Finding Nemo"], k=5, constrained=False)
    assert all(r.item_id in real_rec.catalog for r in recs)
    assert len(recs.outputs) == 10  # one text per beam
    assert set(recs.ungrounded) <= set(recs.outputs) and set(recs.history_repeats) <= set(recs.outputs)
    for output in recs.history_repeats:  # these name a film of the history
        assert real_rec.ground(output, limit=1)[0].title in {"Toy Story", "Finding Nemo"}
    grounded_titles = {real_rec.ground(o, limit=1)[0].title for o in recs.outputs if o not in recs.ungrounded}
    assert all(r.title in grounded_titles for r in recs)


def test_cli_demo_prints_a_top10_table(capsys):
    assert main(["demo"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("top-10 for history: The Matrix")
    assert len(lines) == 12  # header, column names, ten rows


def test_onnx_runtime_searches_as_torch_on_the_real_model():
    """The real model's 30 blocks exported to ONNX Runtime: the same lists, scores to float rounding."""
    catalog = Catalog.demo()
    torch_rec = Recommender(catalog, search="beam")
    onnx_rec = Recommender(catalog, search="beam", runtime="onnxruntime")
    histories = [DEMO_HISTORY, ["Toy Story", "Finding Nemo"], ["The Godfather"]]
    expected = []
    for history in histories:
        ours, theirs = onnx_rec.recommend(history, k=10), torch_rec.recommend(history, k=10)
        expected.append([r.item_id for r in theirs])
        assert [r.item_id for r in ours] == expected[-1]
        assert [r.score for r in ours] == pytest.approx([r.score for r in theirs], abs=1e-3)
    batch = onnx_rec.recommend_batch(histories, k=10)  # several users a call: those calls run in torch
    assert [[r.item_id for r in user] for user in batch] == expected
