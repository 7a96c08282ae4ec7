"""eval/bench_requests.py: rows that ask for one of their target's attributes, scored with and
without the request by the harness's own test protocol."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from genrec import Catalog
from genrec.data.datasets import Example, load_dataset
from genrec.errors import DataError
from genrec.evaluation import EvalConfig, run_evaluation
from conftest import REPO
from helpers import chain_dataset, load_script, script_main

GENRES = ("Action|Sci-Fi", "Comedy", "Drama|Romance", "Horror")


def _bench():
    return load_script(REPO / "eval" / "bench_requests.py")


def _genre_dataset(tmp_path):
    chain = chain_dataset(n_users=40, n_items=24, length=6)
    records = [{**chain.catalog.item_at(p), "genres": GENRES[p % len(GENRES)]} for p in range(len(chain.catalog))]
    chain = replace(chain, catalog=Catalog.from_records(records, kind="movie"))
    chain.interactions[["user_id", "item_id", "timestamp"]].to_csv(tmp_path / "log.csv", index=False)
    chain.catalog.to_dataframe().to_csv(tmp_path / "items.csv", index=False)
    return {"interactions": str(tmp_path / "log.csv"), "catalog": str(tmp_path / "items.csv")}


def test_a_request_names_one_of_its_targets_values_drawn_by_the_row():
    bench = _bench()
    catalog = Catalog.from_records([{"item_id": "a", "title": "Alien", "genres": "Horror|Sci-Fi"}, {"item_id": "b", "title": "Heat"}])
    drawn = {bench.request_of(catalog, Example(f"u{n}", (), "a"), "genres", "a {value} film", 0) for n in range(30)}
    assert drawn == {"a Horror film", "a Sci-Fi film"}
    again = bench.request_of(catalog, Example("u1", (), "a"), "genres", "{value}", 0)
    assert again == bench.request_of(catalog, Example("u1", (), "a"), "genres", "{value}", 0)  # the same row, the same draw
    with pytest.raises(DataError, match="item 'b' has no 'genres' to ask for \\(user u3\\)"):
        bench.request_of(catalog, Example("u3", (), "b"), "genres", "{value}", 0)


def test_the_bench_scores_the_harness_rows_and_chooses_the_share_on_validation(tmp_path, tiny_model_dir):
    data = _genre_dataset(tmp_path)

    def bench(seeds, *more):
        argv = [*more, "--dataset", "interactions", "--interactions", data["interactions"], "--catalog", data["catalog"],
                "--attribute", "genres", "--cold-items", "0.3", "--only", "new", "--seeds", seeds,
                "--model", str(tiny_model_dir), "--out", str(tmp_path / "bench")]  # fmt: skip
        assert script_main(REPO / "eval" / "bench_requests.py", argv) == 0
        return json.loads((tmp_path / "bench" / "requests.json").read_text())

    got = bench("0,1", "--beam-rows", "3")
    # beam search with the request in its prompt, on three sampled rows, against the default there
    beam = got["comparisons"]["beam+request vs words+request@1"]
    assert beam["rows"] == 3 and 0.0 <= beam["beam+request"] <= 1.0 and 0.0 <= beam["words+request"] <= 1.0
    # each share chosen as the best on the validation rows (ties: the smaller)
    for method, share in got["chosen_share"].items():
        grid = {float(s): v for s, v in got["valid_ndcg10"][method].items() if s != "None"}
        assert grid[share] == max(grid.values()) and all(grid[s] < grid[share] for s in grid if s < share)
    # with one seed, content without a request is the harness's content on the same new-item rows
    one = bench("0")
    ds = load_dataset("interactions", **data)
    config = EvalConfig(dataset="interactions", data=data, methods=["content"], k=10, seed=0, cold_items=0.3, only="new", tune_on="new")
    doc = run_evaluation(ds, config, tmp_path / "run", progress=False)
    assert one["rows"] == doc["n_users"] > 0 and one["left_out"] == {"valid": 0, "test": 0}  # every target has genres
    assert one["test_ndcg10"]["content"] == pytest.approx(doc["methods"]["content"]["NDCG@10"], abs=1e-4)
    assert got["rows"] > one["rows"]  # two seeds' rows pooled


def test_the_bench_refuses_a_request_without_its_value(tmp_path):
    data = _genre_dataset(tmp_path)
    argv = ["--dataset", "interactions", "--interactions", data["interactions"], "--catalog", data["catalog"],
            "--attribute", "genres", "--request", "a film", "--out", str(tmp_path / "bench")]  # fmt: skip
    with pytest.raises(SystemExit, match="--request must hold"):
        script_main(REPO / "eval" / "bench_requests.py", argv)
