"""Reranking fusion (genrec-rerank+<baseline>) and the exact title scores it rests on."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from genrec import Catalog, DataError
from genrec.evaluation import EvalConfig, run_evaluation
from genrec.evaluation import rerank as rerank_module
from genrec.baselines.scored import Markov
from genrec.evaluation.fusion import tune_on_validation
from genrec.ranking.metrics import top_k
from genrec.ranking.protocol import Protocol
from genrec.evaluation.rerank import MIXTURES, BaseScores, RerankRow, load_rows, mixed_list, save_rows, score_rows, with_lengths
from genrec.data.splits import sample_examples, split_dataset
from genrec.tasks.rank import score_titles, title_lengths
from helpers import chain_dataset
from test_harness import tiny_factory  # noqa: F401  (a fixture)


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
    # the token counts per-token scores divide by: the tokens the beam writes there, separator included
    lengths = title_lengths(rec, history, ["i0", "i1", "Up"], template=template, k=5)
    job = rec.pipeline.prepare(history, template, k=5)
    index = rec.pipeline.index(job.ctx)
    assert lengths.tolist() == [len(index.sequence(rec.pipeline.title_number(p))) for p in (0, 1, 7)]
    assert lengths[1] > lengths[0] >= 2 and len(title_lengths(rec, history, [], template=template)) == 0


def test_reranking_at_weight_one_is_the_baseline_and_at_zero_the_models_order(tmp_path, tiny_factory, monkeypatch):
    ds = chain_dataset(n_users=12, n_items=20, length=8)
    common = dict(dataset="chain", k=10, users=6, seed=1, batch_size=4, tune_users=4, rerank_candidates=12)
    calls = []
    real = rerank_module.score_titles
    # a row scored once (the no-history scores pmi mixes in are counted apart: once per item)
    monkeypatch.setattr(rerank_module, "score_titles", lambda *a, **kw: (calls.append(1) if len(a[1]) else None) or real(*a, **kw))

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
    tried = [(r["mixture"], r["prior_weight"]) for r in tuned["grid"]]
    assert tried == [(m, w) for m in MIXTURES for w in (0.0, 0.5, 1.0)] and len(calls) == 4 + 6

    # the validation rows' scores are kept: another grid, in a folder they are copied to, scores only the test rows
    calls.clear()
    finer = tmp_path / "finer"
    (finer / "tuning").mkdir(parents=True)
    shutil.copy(out / "tuning" / "genrec-rerank+markov.rows-20.npz", finer / "tuning")
    run_evaluation(ds, EvalConfig(methods=["genrec-rerank+markov"], rerank_grid=(0.25, 0.75), rerank_mixtures=("sum",), **common),
                   finer, progress=False, recommender_factory=tiny_factory)  # fmt: skip
    tuned = json.loads((finer / "tuning" / "genrec-rerank+markov.json").read_text())
    assert [(r["mixture"], r["prior_weight"]) for r in tuned["grid"]] == [("sum", 0.25), ("sum", 0.75)] and len(calls) == 6

    # weight 0 of the product: the baseline's 12 candidates in the model's order
    out = tmp_path / "w0"
    run_evaluation(ds, EvalConfig(methods=["genrec-rerank+markov"], rerank_grid=(0.0,), rerank_mixtures=("product",), **common), out,
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
    with pytest.raises(DataError, match=r"unknown method\(s\) genrec-union\+nothing .*genrec-union\+<baseline>"):
        EvalConfig(dataset="chain", methods=["genrec-union+nothing"], k=10).check()
    with pytest.raises(DataError, match="family cap applies to beam search"):
        EvalConfig(dataset="chain", methods=["genrec-union+itemknn"], k=10, max_per_family=2).check()
    EvalConfig(dataset="chain", methods=["genrec-union+sasrec"], k=10).check()  # an alias is a baseline too
    with pytest.raises(DataError, match=r"rerank grid weights must be in \[0, 1\], got 0.5, 1.5"):
        EvalConfig(dataset="chain", methods=["genrec-rerank+markov"], k=10, rerank_grid=(0.5, 1.5)).check()
    with pytest.raises(DataError, match="prior grid weights must be in .0, 1., got none"):
        EvalConfig(dataset="chain", methods=["genrec+markov"], k=10, prior_grid=()).check()
    with pytest.raises(DataError, match="rerank grid weights must be in .0, 1., got nan"):
        EvalConfig(dataset="chain", methods=["genrec-rerank+markov"], k=10, rerank_grid=(float("nan"),)).check()


def test_union_adds_the_beams_titles_to_the_baselines_candidates(tmp_path, tiny_factory):
    ds = chain_dataset(n_users=12, n_items=20, length=8)
    common = dict(dataset="chain", k=10, users=6, seed=1, batch_size=4, tune_users=4, rerank_candidates=10)
    split = split_dataset(ds, tie_break="file_order", seed=1)
    markov = Markov(ds.catalog)
    markov.fit(split)
    protocol = Protocol.for_run(ds.catalog, 10, 1)
    rec = tiny_factory(ds.catalog)
    examples = sample_examples(split.test, 6, 1)

    # weight 1: the baseline's list, whatever the beam added
    out = tmp_path / "w1"
    doc = run_evaluation(ds, EvalConfig(methods=["markov", "genrec-union+markov"], rerank_grid=(1.0,), **common), out,
                         progress=False, recommender_factory=tiny_factory)  # fmt: skip
    assert lists(out, "genrec-union+markov") == lists(out, "markov")
    assert "reranks markov's top 10 and its own top 10" in doc["methods"]["genrec-union+markov"]["mode"]

    # weight 0 of the product: the model's order of the union, computed here title by title
    out = tmp_path / "w0"
    run_evaluation(ds, EvalConfig(methods=["genrec-union+markov"], rerank_grid=(0.0,), rerank_mixtures=("product",), **common), out,
                   progress=False, recommender_factory=tiny_factory)  # fmt: skip
    added = 0
    for example, got in zip(examples, lists(out, "genrec-union+markov")):
        history = list(example.history)
        scores = np.log(markov.score([history])[0] + 1e-6)
        candidates = [ds.catalog.ids[p] for p in top_k(scores, protocol.excluded_mask(history), protocol.ties, 10)]
        beam = [r.item_id for r in rec.recommend(history[-20:], k=10, exclude=history, search="beam")]
        union = candidates + [i for i in beam if i not in candidates]
        added += len(union) - len(candidates)
        model = score_titles(rec, history[-20:], union, template="next_item", k=10)
        assert got == [union[i] for i in np.argsort(-model, kind="stable")[:10]]
    assert added > 0  # the beam did reach beyond the baseline's candidates


def test_the_validation_pass_shows_its_progress(tmp_path, tiny_factory, capsys):
    # on a real catalog the tuning scores (or decodes) hundreds of rows for most of an hour: it must not look hung
    ds = chain_dataset(n_users=12, n_items=20, length=8)
    common = dict(dataset="chain", k=10, users=4, seed=1, batch_size=4, tune_users=4, rerank_candidates=12)
    config = EvalConfig(methods=["genrec-union+markov", "genrec+markov"], rerank_grid=(0.5,), prior_grid=(0.5,), **common)
    run_evaluation(ds, config, tmp_path / "out", recommender_factory=tiny_factory)
    shown = capsys.readouterr().err
    assert "genrec-union+markov validation (history 20): 100%" in shown
    assert "genrec+markov validation (w=0.5, logsumexp, history 20): 100%" in shown
    run_evaluation(ds, config, tmp_path / "quiet", progress=False, recommender_factory=tiny_factory)
    assert "validation" not in capsys.readouterr().err


def test_the_mixtures_are_a_product_a_sum_and_a_per_token_product_of_the_experts():
    catalog = Catalog.from_records([{"item_id": f"i{n}", "title": f"Title {n}"} for n in range(4)])
    protocol = Protocol.for_run(catalog, 2, 0)
    # the model is sure of i2; the prior spreads its mass over i0 and i1, and knows nothing of i2
    model, prior_full = np.log([0.01, 0.01, 0.9]), np.log([0.5, 0.49, 1e-6])
    tokens = np.array([2, 2, 3])
    row = RerankRow(np.array([0, 1, 2]), model, prior_full - np.logaddexp.reduce(prior_full), prior_full, tokens, 0.0, 3,
                    base=np.log([0.1, 0.2, 0.7]))  # fmt: skip
    # a product needs both to agree: at an even share the prior's veto keeps i2 out
    assert mixed_list(row, 0.5, protocol, "product") == ["i0", "i1"]
    # a sum lets either vouch: i2 takes half the model's 0.9, more than half of either prior share
    assert mixed_list(row, 0.5, protocol, "sum") == ["i2", "i0"]
    for mixture in MIXTURES:
        assert mixed_list(row, 1.0, protocol, mixture) == ["i0", "i1"]
        assert mixed_list(row, 0.0, protocol, mixture) == ["i2", "i0"]

    # a long title's total log-probability is low for its length: per token it is the model's favourite
    long = RerankRow(np.array([0, 1, 2]), np.array([-4.0, -5.0, -6.0]), np.log([0.34, 0.33, 0.33]), np.log([0.34, 0.33, 0.33]),
                     np.array([2, 2, 6]), 0.0, 3)  # fmt: skip
    assert mixed_list(long, 0.0, protocol, "product") == ["i0", "i1"]
    assert mixed_list(long, 0.0, protocol, "per-token") == ["i2", "i0"]  # -1.0 a token against -2.0 and -2.5
    # a prior that barely prefers i0 leaves the per-token order; the totals still put the long title last
    assert mixed_list(long, 0.5, protocol, "per-token") == ["i2", "i0"]
    assert mixed_list(long, 0.5, protocol, "product") == ["i0", "i1"]
    with pytest.raises(ValueError, match="unknown mixture 'mean': one of product, sum, per-token, pmi"):
        mixed_list(long, 0.5, protocol, "mean")


def test_pmi_takes_out_what_the_model_would_write_after_no_history():
    catalog = Catalog.from_records([{"item_id": f"i{n}", "title": f"Title {n}"} for n in range(3)])
    protocol = Protocol.for_run(catalog, 2, 0)
    # i0 is what the model writes for anyone; after this history it gains least of the three
    model, base = np.log([0.5, 0.3, 0.2]), np.log([0.9, 0.05, 0.05])
    flat = np.log(np.full(3, 1 / 3))
    row = RerankRow(np.array([0, 1, 2]), model, flat, flat, np.array([2, 2, 2]), 0.0, 3, base=base)
    assert mixed_list(row, 0.0, protocol, "product") == ["i0", "i1"]
    assert mixed_list(row, 0.0, protocol, "pmi") == ["i1", "i2"]
    with pytest.raises(ValueError, match="without the model's no-history scores"):
        mixed_list(replace(row, base=None), 0.5, protocol, "pmi")


def test_no_history_scores_are_the_titles_log_probabilities_after_an_empty_history(make_rec, tmp_path):
    titles = ["The Matrix", "Heat", "Alien", "Toy Story"]
    rec = make_rec(Catalog.from_records([{"item_id": f"i{n}", "title": t} for n, t in enumerate(titles)]))
    protocol = Protocol.for_run(rec.catalog, 2, 0)
    base = BaseScores(rec, protocol, "next_item")
    np.testing.assert_allclose(base.of([2, 0, 2]), score_titles(rec, [], ["i2", "i0", "i2"], k=2), rtol=0, atol=1e-5)
    assert sorted(base.scores) == [0, 2]  # each item scored once
    row = RerankRow(np.array([1, 3]), np.zeros(2), np.zeros(2), np.zeros(2), np.array([2, 2]), 0.0, 2)
    (added,) = base.add_to([row])
    np.testing.assert_allclose(added.base, score_titles(rec, [], ["i1", "i3"], k=2), rtol=0, atol=1e-5)
    save_rows(tmp_path / "rows.npz", [added])  # kept with the rows
    np.testing.assert_allclose(load_rows(tmp_path / "rows.npz")[0].base, added.base)


def test_a_reranking_tuning_names_its_mixture_and_reads_older_files_as_product(tmp_path):
    def fake_ndcg(weight, mixture, history):
        return 0.3 if (weight, mixture) == (0.5, "sum") else 0.1

    def killed_at_weight_one(weight, mixture, history):
        if weight == 1.0:
            raise KeyboardInterrupt
        return fake_ndcg(weight, mixture, history)

    path = tmp_path / "genrec-union+markov.json"
    with pytest.raises(KeyboardInterrupt):  # killed after its first two settings
        tune_on_validation(killed_at_weight_one, path, 5, histories=(20,), weights=(0.0, 0.5, 1.0),
                           aggregations=("product", "sum"), alone={}, weighted=True, setting="mixture")  # fmt: skip
    assert all("mixture" in json.loads(line) for line in path.with_name(path.stem + ".partial.jsonl").read_text().splitlines())
    tuned = tune_on_validation(fake_ndcg, path, 5, histories=(20,), weights=(0.0, 0.5, 1.0), aggregations=("product", "sum"),
                               alone={}, weighted=True, setting="mixture")  # fmt: skip
    assert (tuned["mixture"], tuned["prior_weight"]) == ("sum", 0.5) and "prior_aggregation" not in tuned
    assert tuned["valid_NDCG@10_by_mixture"]["sum"] == {"0": 0.1, "0.5": 0.3, "1": 0.1}

    # a reranking method's weight 0 is the model's order of the candidates, per token or not: tried for each mixture
    per_token_alone = tune_on_validation(
        lambda weight, mixture, history: 0.4 if (weight, mixture) == (0.0, "per-token") else 0.1, tmp_path / "w0.json", 5,
        histories=(20,), weights=(0.0, 1.0), aggregations=MIXTURES, alone={}, weighted=True, setting="mixture",
    )  # fmt: skip
    assert (per_token_alone["mixture"], per_token_alone["prior_weight"]) == ("per-token", 0.0)
    assert [r["valid_NDCG@10"] for r in per_token_alone["grid"] if r["prior_weight"] == 0.0] == [0.1, 0.1, 0.4, 0.1]

    older = tmp_path / "genrec-rerank+markov.json"
    older.write_text(json.dumps({"max_history": 20, "prior_weight": 1.0, "prior_aggregation": "logsumexp", "valid_rows": 5}))
    assert tune_on_validation(fake_ndcg, older, 5, histories=(20,), weights=(1.0,), aggregations=("product", "sum"),
                              weighted=True, setting="mixture")["mixture"] == "product"  # fmt: skip


def test_kept_rows_read_back_as_they_were_scored(tmp_path):
    rows = [
        RerankRow(np.array([3, 1, 7]), np.array([-1.5, -2.0, -9.0]), np.log([0.5, 0.3, 0.2]), np.log([0.05, 0.03, 0.02]),
                  np.array([2, 3, 9]), 1.25, 2),  # fmt: skip
        RerankRow(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64), 0.5, 0),
        RerankRow(np.array([0]), np.array([-0.5]), np.array([0.0]), np.array([-3.0]), np.array([4]), 0.75, 1),
    ]
    save_rows(tmp_path / "rows.npz", rows)
    again = load_rows(tmp_path / "rows.npz")
    assert len(again) == 3
    for a, b in zip(rows, again):
        assert (a.seconds, a.proposed) == (b.seconds, b.proposed)
        for name in ("positions", "model", "prior", "prior_full", "tokens"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert again[0].positions.dtype == np.int64


def test_rows_kept_without_title_lengths_get_them_without_a_model_pass(tmp_path, tiny_factory, monkeypatch):
    ds = chain_dataset(n_users=12, n_items=20, length=8)
    split = split_dataset(ds, tie_break="file_order", seed=1)
    markov = Markov(ds.catalog)
    markov.fit(split)
    protocol = Protocol.for_run(ds.catalog, 10, 1)
    rec = tiny_factory(ds.catalog)
    examples = list(enumerate(sample_examples(split.valid, 4, 1)))
    rows = score_rows(rec, examples, markov, protocol=protocol, candidates=10, max_history=20, template="next_item", beam=True,
                      progress=False)  # fmt: skip
    # as a file from before lengths were kept: no tokens array
    save_rows(tmp_path / "old.npz", [replace(r, tokens=None) for r in rows])
    with np.load(tmp_path / "old.npz") as saved:
        assert "tokens" not in saved.files
    old = load_rows(tmp_path / "old.npz")
    assert all(r.tokens is None for r in old)
    with pytest.raises(ValueError, match="without their title lengths"):
        mixed_list(old[0], 0.5, protocol, "per-token")
    assert mixed_list(old[0], 0.5, protocol, "product") == mixed_list(rows[0], 0.5, protocol, "product")
    monkeypatch.setattr(rerank_module, "score_titles", lambda *a, **kw: pytest.fail("lengths need no model pass"))
    filled = with_lengths(old, rec, examples, protocol=protocol, max_history=20, template="next_item")
    for a, b in zip(rows, filled):
        np.testing.assert_array_equal(a.tokens, b.tokens)
        assert len(b.tokens) == len(b.positions) and (b.tokens >= 2).all()
