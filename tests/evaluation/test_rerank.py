"""Reranking fusion (genrec-rerank+<baseline>) and the exact title scores it rests on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genrec import Catalog, DataError
from genrec.evaluation import EvalConfig, run_evaluation
from genrec.evaluation import rerank as rerank_module
from genrec.evaluation.baselines import Markov
from genrec.evaluation.metrics import top_k
from genrec.evaluation.protocol import Protocol
from genrec.evaluation.splits import sample_examples, split_dataset
from genrec.tasks.rank import score_titles
from test_harness import chain_dataset, tiny_factory  # noqa: F401  (tiny_factory is a fixture)


def lists(out, method):
    return [json.loads(line)["items"] for line in (out / "users" / f"{method}.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("template", ["next_item", "sequence"])
def test_title_scores_are_what_beam_search_ranks_by(make_rec, template):
    titles = ["The Matrix", "The Matrix Reloaded", "Heat", "Alien", "Aliens", "Toy Story", "Fargo", "Up"]
    rec = make_rec(Catalog.from_records([{"item_id": f"i{n}", "title": t} for n, t in enumerate(titles)]))
    history = ["i2", "i5"]
    found = rec.recommend(history, k=5, template=template)
    scores = score_titles(rec, history, [r.item_id for r in found], template=template, k=5)
    np.testing.assert_allclose(scores, [r.score for r in found], rtol=0, atol=1e-4)
    # given in another order, and by title: the same numbers, in the order given
    again = score_titles(rec, history, [found[2].title, found[0].item_id], template=template, k=5)
    np.testing.assert_allclose(again, [found[2].score, found[0].score], rtol=0, atol=1e-4)
    assert len(score_titles(rec, history, [], template=template)) == 0


def test_reranking_at_weight_one_is_the_baseline_and_at_zero_the_models_order(tmp_path, tiny_factory, monkeypatch):
    ds = chain_dataset(n_users=12, n_items=20, length=8)
    common = dict(dataset="chain", k=10, users=6, seed=1, batch_size=4, tune_users=4, rerank_candidates=12)
    calls = []
    real = rerank_module.score_titles
    monkeypatch.setattr(rerank_module, "score_titles", lambda *a, **kw: calls.append(1) or real(*a, **kw))

    out = tmp_path / "w1"
    doc = run_evaluation(ds, EvalConfig(methods=["markov", "genrec-rerank+markov"], prior_grid=(0.0,), rerank_grid=(1.0,), **common), out,
                         progress=False, recommender_factory=tiny_factory)  # fmt: skip
    assert lists(out, "genrec-rerank+markov") == lists(out, "markov")
    method = doc["methods"]["genrec-rerank+markov"]
    assert method["NDCG@10"] == doc["methods"]["markov"]["NDCG@10"] and method["tuned"]["prior_weight"] == 1.0
    assert "reranks markov's top 12" in method["mode"]
    assert len(calls) == 4 + 6  # each validation row and each test row scored once

    # every weight of the grid is read off one scoring pass per row
    calls.clear()
    out = tmp_path / "grid"
    run_evaluation(ds, EvalConfig(methods=["genrec-rerank+markov"], rerank_grid=(0.0, 0.5, 1.0), **common), out,
                   progress=False, recommender_factory=tiny_factory)  # fmt: skip
    tuned = json.loads((out / "tuning" / "genrec-rerank+markov.json").read_text())
    assert [r["prior_weight"] for r in tuned["grid"]] == [0.0, 0.5, 1.0] and len(calls) == 4 + 6

    # weight 0: the baseline's 12 candidates in the model's order
    out = tmp_path / "w0"
    run_evaluation(ds, EvalConfig(methods=["genrec-rerank+markov"], rerank_grid=(0.0,), **common), out,
                   progress=False, recommender_factory=tiny_factory)  # fmt: skip
    split = split_dataset(ds, tie_break="file_order", seed=1)
    markov = Markov(ds.catalog)
    markov.fit(split)
    protocol = Protocol.for_run(ds.catalog, 10, 1)
    rec = tiny_factory(ds.catalog)
    for example, got in zip(sample_examples(split.test, 6, 1), lists(out, "genrec-rerank+markov")):
        scores = np.log(markov.score([list(example.history)])[0] + 1e-6)
        candidates = [ds.catalog.ids[p] for p in top_k(scores, protocol.excluded_mask(example.history), protocol.ties, 12)]
        model = score_titles(rec, list(example.history)[-20:], candidates, template="next_item", k=10)
        assert got == [candidates[i] for i in np.argsort(-model, kind="stable")[:10]]


def test_reranking_settings_are_checked():
    with pytest.raises(DataError, match="rerank candidates must be at least k"):
        EvalConfig(dataset="chain", methods=["genrec-rerank+markov"], k=10, rerank_candidates=5).check()
    with pytest.raises(DataError, match="family cap applies to beam search"):
        EvalConfig(dataset="chain", methods=["genrec-rerank+markov"], k=10, max_per_family=2).check()
    with pytest.raises(DataError, match="genrec-rerank"):
        EvalConfig(dataset="chain", methods=["genrec-rerank+nothing"], k=10).check()
    with pytest.raises(DataError, match=r"rerank grid weights must be in \[0, 1\], got 0.5, 1.5"):
        EvalConfig(dataset="chain", methods=["genrec-rerank+markov"], k=10, rerank_grid=(0.5, 1.5)).check()
    with pytest.raises(DataError, match="prior grid weights must be in .0, 1., got none"):
        EvalConfig(dataset="chain", methods=["genrec+markov"], k=10, prior_grid=()).check()
    with pytest.raises(DataError, match="rerank grid weights must be in .0, 1., got nan"):
        EvalConfig(dataset="chain", methods=["genrec-rerank+markov"], k=10, rerank_grid=(float("nan"),)).check()
