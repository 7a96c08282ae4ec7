"""One ranking protocol for every method: each test here failed on the harness before it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genrec import Catalog, DataError, Recommender
from genrec.evaluation import EvalConfig, run_evaluation
from genrec.data.datasets import Dataset, Example
from genrec.ranking.metrics import rank_in_list
from genrec.ranking.protocol import Protocol, check_credit
from genrec.ranking.metrics import UserResult


def catalog_of(titles: list[str]) -> Catalog:
    return Catalog.from_records([{"item_id": f"m{n}", "title": t} for n, t in enumerate(titles)])


def given(catalog: Catalog, test: list[Example], train: list[Example]) -> Dataset:
    return Dataset(name="given", catalog=catalog, test_examples=test, train_examples=train)


@pytest.fixture
def tiny_factory(tiny_model, tokenizer, tmp_path):
    return lambda catalog: Recommender(catalog, model=tiny_model, tokenizer=tokenizer, cache_dir=tmp_path / "cache")


def rows_of(out) -> dict[str, list[dict]]:
    return {p.stem: [json.loads(line) for line in p.read_text().splitlines()] for p in (out / "users").glob("*.jsonl")}


def test_a_target_inside_its_history_is_a_miss_for_every_method(tmp_path):
    """A repeat purchase: no method's list may show it, so no method is credited with it."""
    catalog = catalog_of([f"Item {n}" for n in range(12)])
    # m0 is by far the most popular item, and it is the target of a row whose history holds it
    train = [Example(f"t{n}", ("m0", f"m{1 + n % 5}"), "m0") for n in range(30)]
    test = [Example("u1", ("m0", "m3"), "m0"), Example("u2", ("m3",), "m0")]
    doc = run_evaluation(given(catalog, test, train), EvalConfig(dataset="given", methods=["pop", "markov"], k=10),
                         tmp_path / "out", progress=False)  # fmt: skip
    assert doc["split"]["targets_in_history"] == 1
    for name, rows in rows_of(tmp_path / "out").items():
        repeat = next(r for r in rows if r["user_id"] == "u1")
        assert repeat["rank"] is None and "m0" not in repeat["items"], name
        assert next(r for r in rows if r["user_id"] == "u2")["rank"] == 1, name  # m0 is everyone's top
        assert doc["methods"][name]["HR@10"] == 0.5


def test_several_test_rows_per_user_are_ranked_separately(tmp_path):
    """D3 files give one user several test rows: each row has its own history, exclusions and
    result; none is collapsed onto another row of the same user."""
    catalog = catalog_of([f"Item {n}" for n in range(15)])
    train = [Example(f"t{n}", (f"m{n % 7}",), f"m{(n % 7) + 1}") for n in range(40)]
    test = [Example("u1", ("m1",), "m2"), Example("u1", ("m1", "m2"), "m3"), Example("u1", ("m1", "m2", "m3"), "m4")]
    doc = run_evaluation(given(catalog, test, train), EvalConfig(dataset="given", methods=["markov"], k=10),
                         tmp_path / "out", progress=False)  # fmt: skip
    rows = rows_of(tmp_path / "out")["markov"]
    assert sorted(r["row"] for r in rows) == [0, 1, 2] and [r["target"] for r in sorted(rows, key=lambda r: r["row"])] == ["m2", "m3", "m4"]
    assert all(r["rank"] == 1 for r in rows)  # each row's own last item leads to its own target
    assert doc["methods"]["markov"]["n_users"] == 3 and doc["methods"]["markov"]["HR@1"] == 1.0


def test_metrics_only_at_cutoffs_up_to_k(tmp_path):
    catalog = catalog_of([f"Item {n}" for n in range(30)])
    train = [Example(f"t{n}", (f"m{n % 9}",), f"m{(n * 7) % 30}") for n in range(60)]
    test = [Example(f"u{n}", (f"m{n}",), f"m{(n * 3) % 30}") for n in range(8)]
    doc = run_evaluation(given(catalog, test, train), EvalConfig(dataset="given", methods=["pop"], k=15),
                         tmp_path / "out", progress=False)  # fmt: skip
    metrics = doc["methods"]["pop"]
    assert "NDCG@10" in metrics and not any(key.endswith("@20") for key in metrics if key[0].isupper())
    assert doc["split"]["cutoffs"] == [1, 5, 10]
    assert "@20" not in (tmp_path / "out" / "report.md").read_text().split("\n| method")[1].split("\n")[0]


def test_title_mates_of_the_history_are_excluded_for_every_method(tmp_path, tiny_factory):
    """The same film listed under two IDs: having seen one, neither comes back, whichever method."""
    catalog = catalog_of(["Heat", "Heat", "Alien", "Aliens", "Jaws", "Up", "Se7en", "Thief", "Big", "Ran", "Rocky", "Fargo"])
    train = [Example(f"t{n}", ("m2",), "m1") for n in range(20)] + [Example("t", ("m3",), "m4")]
    test = [Example("u1", ("m0",), "m5")]
    doc = run_evaluation(given(catalog, test, train), EvalConfig(dataset="given", methods=["pop", "markov", "genrec"], k=10),
                         tmp_path / "out", progress=False, recommender_factory=tiny_factory)  # fmt: skip
    for name, rows in rows_of(tmp_path / "out").items():
        assert not {"m0", "m1"} & set(rows[0]["items"]), name
    assert doc["methods"]["pop"]["n_users"] == 1


def test_ids_sharing_a_title_follow_the_tie_order():
    catalog = catalog_of(["Heat", "Alien", "Heat", "Heat", "Jaws"])
    protocol = Protocol(catalog, ties=np.array([4, 0, 1, 0, 2]), k=10)  # m3 before m2 before m0
    items = protocol.order_ties(["m1", "m0", "m2", "m3", "m4"], [-1.0, -2.0, -2.0, -2.0, -3.0])
    assert items == ["m1", "m3", "m2", "m0", "m4"]


def test_a_credited_rank_that_is_not_in_the_list_fails_the_run(tmp_path):
    good = UserResult("u", "m1", ["m3", "m1"], 2, n_outputs=2)
    check_credit("x", [good], k=10)
    with pytest.raises(DataError, match="protocol violation: pop credits 1 of 2 rows"):
        check_credit("pop", [good, UserResult("v", "m1", ["m3", "m4"], 1, n_outputs=2)], k=10)
    # a results file altered on disk (or written by an older harness) is caught on resume
    catalog = catalog_of([f"Item {n}" for n in range(12)])
    train = [Example(f"t{n}", (f"m{n % 4}",), f"m{n % 4 + 1}") for n in range(20)]
    ds = given(catalog, [Example("u1", ("m1",), "m9"), Example("u2", ("m2",), "m3")], train)
    config = EvalConfig(dataset="given", methods=["pop"], k=10)
    run_evaluation(ds, config, tmp_path / "out", progress=False)
    path = tmp_path / "out" / "users" / "pop.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["rank"] = (rank_in_list(rows[0]["target"], rows[0]["items"]) or 0) + 1
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="protocol violation"):
        run_evaluation(ds, config, tmp_path / "out", progress=False)
