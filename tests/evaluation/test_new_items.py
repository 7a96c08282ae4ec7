"""New-item runs: tuning on the new-item validation rows, the library's content search measured
through the same path the product serves it by, and the model's item vectors (genrec-embed)."""

from __future__ import annotations

import json
import re

import pytest

import genrec.encoder as encoder
import genrec.log_model as log_model
from genrec.data.cold import cold_items
from genrec.data.splits import sample_examples, split_dataset
from genrec.errors import DataError
from genrec.evaluation import EvalConfig, run_evaluation
from genrec.ranking.protocol import Protocol
from helpers import chain_dataset
from test_harness import tiny_factory  # noqa: F401  (a fixture)


def lists(out, method):
    return [json.loads(line) for line in (out / "users" / f"{method}.jsonl").read_text().splitlines()]


def test_a_cold_start_run_tunes_on_the_new_item_validation_rows(tmp_path, tiny_factory):
    ds = chain_dataset(n_users=30, n_items=20, length=6)
    common = dict(dataset="chain", k=10, seed=2, batch_size=8, cold_items=0.3, only="new", rerank_candidates=10,
                  rerank_grid=(0.0, 1.0))  # fmt: skip
    doc = run_evaluation(ds, EvalConfig(methods=["content", "genrec-rerank+content"], tune_on="new", **common), tmp_path / "new",
                         progress=False, recommender_factory=tiny_factory)  # fmt: skip
    valid = doc["split"]["new_items"]["valid_rows"]
    assert 0 < valid["new"] < valid["new"] + valid["known"]
    assert doc["methods"]["genrec-rerank+content"]["tuned"]["valid_rows"] == valid["new"]
    # the content baseline tunes its window on the same rows: its validation grid differs from a run on all rows
    every = run_evaluation(ds, EvalConfig(methods=["content"], **common), tmp_path / "all", progress=False,
                           recommender_factory=tiny_factory)  # fmt: skip
    assert doc["methods"]["content"]["tuned"]["valid_NDCG@10"] != every["methods"]["content"]["tuned"]["valid_NDCG@10"]


def test_a_run_tuned_on_few_new_rows_says_so(tmp_path, caplog):
    ds = chain_dataset(n_users=30, n_items=20, length=6)
    common = dict(dataset="chain", methods=["content"], k=10, seed=2, cold_items=0.3)
    with caplog.at_level("WARNING", logger="genrec.evaluation.harness"):
        doc = run_evaluation(ds, EvalConfig(tune_on="new", **common), tmp_path / "new", progress=False)
    n = doc["split"]["new_items"]["valid_rows"]["new"]
    assert f"only {n} validation rows with a new target" in caplog.text and "--cold-items" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="genrec.evaluation.harness"):
        run_evaluation(ds, EvalConfig(**common), tmp_path / "all", progress=False)
    assert "validation rows" not in caplog.text  # tuned on all rows: nothing to say


def test_genrec_content_is_the_libraries_content_search(tmp_path, tiny_factory):
    ds = chain_dataset(n_users=12, n_items=20, length=6)
    config = EvalConfig(dataset="chain", methods=["genrec", "genrec-content"], k=10, users=6, seed=1, batch_size=4)
    doc = run_evaluation(ds, config, tmp_path / "run", progress=False, recommender_factory=tiny_factory)
    assert doc["methods"]["genrec-content"]["mode"].startswith("content search")
    rec = tiny_factory(ds.catalog)
    split = split_dataset(ds, tie_break=config.tie_break, seed=config.seed, holdout=config.holdout)
    examples = sample_examples(split.test, config.users, config.seed)
    protocol = Protocol.for_run(ds.catalog, config.k, config.seed)
    rows, beam = lists(tmp_path / "run", "genrec-content"), lists(tmp_path / "run", "genrec")
    assert len(rows) == 6 and [r["items"] for r in rows] != [b["items"] for b in beam]
    for row in rows:
        history = list(examples[row["row"]].history)
        found = rec.recommend(history[-config.max_history :], k=10, exclude=history, search="content")
        # exact ties (these titles share every word but a digit) go by the run's tie order, as for every method
        assert row["items"] == protocol.order_ties([r.item_id for r in found], [r.score for r in found])


def test_genrec_embed_reads_items_once_and_mixes_a_baseline_on_validation(tmp_path, tiny_factory, monkeypatch):
    ds = chain_dataset(n_users=30, n_items=20, length=6)
    config = EvalConfig(dataset="chain", methods=["content", "genrec-embed", "genrec-embed+content"], k=10, seed=2,
                        cold_items=0.3, embed_layers=(1, 2), embed_epochs=2)  # fmt: skip
    doc = run_evaluation(ds, config, tmp_path / "run", progress=False, recommender_factory=tiny_factory)
    alone, mixed = doc["methods"]["genrec-embed"], doc["methods"]["genrec-embed+content"]
    assert alone["tuned"]["layer"] in (1, 2) and [e["epoch"] for e in alone["tuned"]["epochs"]] == [0, 1, 2]
    assert mixed["tuned"]["weight"] in (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0) and "mixed with content" in mixed["mode"]
    # the mixture chooses its layer, epoch and w together: w = 1 at every layer and epoch is the
    # encoder alone (the same seed trains the same map), so it validates at least as well as that
    grid = mixed["tuned"]["mixture_valid_NDCG@10"]
    assert grid[str(mixed["tuned"]["weight"])] == max(grid.values()) >= max(alone["tuned"]["valid_NDCG@10"].values())
    assert {p.name for p in (tmp_path / "run").glob("item_encoder*.npz")} == {"item_encoder.npz", "item_encoder+content.npz"}
    assert set(doc["methods"]["genrec-embed"]["groups"]) == {"new", "known"}
    # new items are ranked from their vectors like any other (a new item on someone's list)
    new_items = cold_items(ds.catalog, 0.3, 2)
    assert any(set(row["items"]) & new_items for row in lists(tmp_path / "run", "genrec-embed"))
    # a resumed or extended run reads the kept vectors instead of the catalog
    monkeypatch.setattr(encoder, "embed_texts", lambda *a, **k: (_ for _ in ()).throw(AssertionError("read again")))
    again = run_evaluation(ds, config, tmp_path / "run", progress=False, recommender_factory=tiny_factory, overwrite=False)
    assert again["methods"]["genrec-embed"]["tuned"] == alone["tuned"]
    assert again["methods"]["genrec-embed+content"]["tuned"] == mixed["tuned"]
    # and so does a run that reuses this one (the same model over the same catalog); it trains its own map
    fewer = EvalConfig(**{**config.__dict__, "users": 5})
    reused = run_evaluation(ds, fewer, tmp_path / "reused", progress=False, recommender_factory=tiny_factory, reuse=tmp_path / "run")
    def chosen(tuned):  # (its training time is its own)
        return {key: value for key, value in tuned.items() if key != "train_s"}

    assert chosen(reused["methods"]["genrec-embed"]["tuned"]) == chosen(alone["tuned"])


def test_overwrite_forgets_the_kept_item_vectors_and_encoder(tmp_path, tiny_factory):
    ds = chain_dataset(n_users=12, n_items=20, length=6)
    config = EvalConfig(dataset="chain", methods=["genrec-embed"], k=10, seed=2, embed_layers=(2,), embed_epochs=1)
    run_evaluation(ds, config, tmp_path / "run", progress=False, recommender_factory=tiny_factory)
    kept = {p.name for p in (tmp_path / "run").glob("item_*.npz")}
    assert kept == {"item_vectors.npz", "item_encoder.npz"}
    other = EvalConfig(**{**config.__dict__, "embed_layers": (1,)})
    doc = run_evaluation(ds, other, tmp_path / "run", progress=False, recommender_factory=tiny_factory, overwrite=True)
    assert doc["methods"]["genrec-embed"]["tuned"]["layer"] == 1


def test_embed_settings_out_of_range_are_refused_by_name():
    with pytest.raises(DataError, match="embed layers"):
        EvalConfig(dataset="chain", methods=["genrec-embed"], embed_layers=(-1,)).check()
    with pytest.raises(DataError, match="unknown method"):
        EvalConfig(dataset="chain", methods=["genrec-embed+nothing"]).check()


def test_the_ceiling_diagnostic_rebuilds_the_runs_rows(tmp_path, tiny_factory, capsys):
    """eval/embed_ceiling.py rebuilds a run's split, cold items and rows from its folder: the map
    the mixture kept, at the w it chose, scores the run's own test NDCG@10, and w = 0 is the
    baseline's."""
    from conftest import REPO
    from genrec.data.datasets import load_dataset
    from helpers import script_main

    chain = chain_dataset(n_users=30, n_items=20, length=6)
    chain.interactions[["user_id", "item_id", "timestamp"]].to_csv(tmp_path / "log.csv", index=False)
    chain.catalog.to_dataframe().to_csv(tmp_path / "items.csv", index=False)
    data = {"interactions": str(tmp_path / "log.csv"), "catalog": str(tmp_path / "items.csv")}
    ds = load_dataset("interactions", interactions=data["interactions"], catalog=data["catalog"])
    config = EvalConfig(dataset="interactions", data=data, methods=["content", "genrec-embed+content"], k=10, seed=2,
                        cold_items=0.3, embed_layers=(1, 2), embed_epochs=2)  # fmt: skip
    doc = run_evaluation(ds, config, tmp_path / "run", progress=False, recommender_factory=tiny_factory)
    capsys.readouterr()
    assert script_main(REPO / "eval" / "embed_ceiling.py", [str(tmp_path / "run")]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| layer")]
    tuned = doc["methods"]["genrec-embed+content"]["tuned"]
    assert len(table) == 2 + (tuned["epoch"] > 0)  # each layer untrained, and the map kept if one was trained
    chosen = next(line for line in table if f"layer {tuned['layer']}, " + ("map" if tuned["epoch"] else "untrained") in line)
    cells = [cell.strip() for cell in chosen.strip("|").split("|")[1:]]
    test_at = {w: float(cell.split(" / ")[1]) for w, cell in zip(log_model.WEIGHTS, cells)}
    assert test_at[tuned["weight"]] == pytest.approx(doc["methods"]["genrec-embed+content"]["NDCG@10"], abs=1e-4)
    assert test_at[0.0] == pytest.approx(doc["methods"]["content"]["NDCG@10"], abs=1e-4)
    # --pool: the untrained encoder's layer and w chosen on validation alone, then its test rows
    # against the baseline's; over one run, the very cell of that run's table
    assert script_main(REPO / "eval" / "embed_ceiling.py", [str(tmp_path / "run"), "--pool"]) == 0
    out = capsys.readouterr().out
    layer, w = re.search(r"chosen on validation: layer (\d+), untrained, w = ([\d.]+)", out).groups()

    def cells(line):  # {w: (validation, test)} of a table row
        return {x: tuple(float(v) for v in cell.split(" / ")) for x, cell in zip(log_model.WEIGHTS, line.strip("|").split("|")[1:])}

    untrained = {line.split(",")[0]: cells(line) for line in table if "untrained" in line}
    chosen = untrained[f"| layer {layer}"][float(w)]
    assert chosen[0] == max(v[0] for row in untrained.values() for v in row.values())  # the best on validation
    tested = re.search(r"test, (\d+) rows \((\d+) distinct dataset, user and target\): ([\d.]+) against content ([\d.]+)", out).groups()
    assert int(tested[0]) == int(tested[1]) == doc["n_users"]  # one run: no row twice
    tested = (tested[0], tested[2], tested[3])
    assert float(tested[1]) == pytest.approx(chosen[1], abs=1e-4)
    assert float(tested[2]) == pytest.approx(doc["methods"]["content"]["NDCG@10"], abs=1e-4)


def test_tune_cold_chooses_with_more_new_items_then_fits_again_on_all(tmp_path, tiny_factory):
    from genrec.data.cold import seen_items, tuning_split, without_items
    from genrec.evaluation.context import RunContext

    ds = chain_dataset(n_users=30, n_items=20, length=6)
    config = EvalConfig(dataset="chain", methods=["hybrid", "genrec-embed+hybrid"], k=10, seed=2, cold_items=0.2, only="new",
                        tune_on="new", tune_cold=0.3, embed_layers=(1,), embed_epochs=2)  # fmt: skip
    split = split_dataset(ds, tie_break=config.tie_break, seed=config.seed, holdout=config.holdout)
    split = without_items(split, cold_items(ds.catalog, config.cold_items, config.seed))
    seen = seen_items(split)
    tuning = tuning_split(split, "new", 0.3, config.seed)
    assert tuning == tuning_split(split, "new", 0.3, config.seed)  # seeded
    made_new = seen - seen_items(tuning)
    assert len(made_new) == round(len(seen) * 0.3) and len(tuning.valid) > sum(e.target not in seen for e in split.valid)
    assert all(e.target not in seen_items(tuning) for e in tuning.valid)
    ctx = RunContext(ds.catalog, split, config, Protocol.for_run(ds.catalog, 10, 2), tmp_path / "ctx", progress=False)
    chose, serves = ctx.baseline("hybrid", choosing=True), ctx.baseline("hybrid")
    assert chose is not serves and (chose.share, chose.knn.neighbors) == (serves.share, serves.knn.neighbors)
    assert {ds.catalog.ids[p] for p in chose.new.nonzero()[0]} == set(ds.catalog.ids) - seen_items(tuning)
    assert {ds.catalog.ids[p] for p in serves.new.nonzero()[0]} == set(ds.catalog.ids) - seen  # fitted again on all
    doc = run_evaluation(ds, config, tmp_path / "run", progress=False, recommender_factory=tiny_factory)
    info = doc["split"]["new_items"]
    assert info["tuning_rows"] == len(tuning.valid) and info["tune_cold"]["items_made_new"] == len(made_new)
    assert "refit" in doc["methods"]["genrec-embed+hybrid"]["tuned"]
    assert "--tune-cold 0.3" in (tmp_path / "run" / "report.md").read_text()
    with pytest.raises(DataError, match="--tune-cold is for the scored and genrec-embed methods.*genrec-rerank"):
        EvalConfig(dataset="chain", methods=["content", "genrec-rerank+content"], tune_cold=0.3).check()
