"""The harness (genrec/evaluation/): methods side by side, tuning on validation, resuming, reusing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from genrec import DataError, Recommender
from genrec.data.datasets import load_d3csv
from genrec.evaluation import EvalConfig, load_results, run_evaluation
from genrec.evaluation.fusion import describe_tuning, tune_on_validation

from conftest import REPO
from helpers import chain_dataset, script_main, write_d3


@pytest.fixture
def tiny_factory(tiny_model, tokenizer, tmp_path):
    return lambda catalog: Recommender(catalog, model=tiny_model, tokenizer=tokenizer, cache_dir=tmp_path / "cache")


def test_run_evaluation_writes_everything_and_resumes(tmp_path, tiny_factory):
    ds = chain_dataset(n_users=12, n_items=20, length=8)
    config = EvalConfig(dataset="chain", methods=["pop", "markov", "sasrec", "genrec", "genrec-free"], k=20,
                        users=8, seed=3, sasrec_epochs=5, batch_size=4)  # fmt: skip
    out = tmp_path / "run"
    doc = run_evaluation(ds, config, out, progress=False, recommender_factory=tiny_factory)
    assert doc["n_users"] == 8 and doc["split"]["users_sampled"] == 8
    assert set(doc["methods"]) == {"pop", "markov", "sasrec", "genrec", "genrec-free"}
    for m in doc["methods"].values():
        assert {"HR@10", "NDCG@10", "MRR@10", "HR@20", "invalid_rate", "coverage@10", "latency_p50_s"} <= set(m)
    assert doc["methods"]["markov"]["HR@1"] == 1.0
    assert doc["methods"]["genrec"]["invalid_rate"] == 0.0 and doc["methods"]["genrec"]["mean_list_length"] == 13  # 20 items minus a 7-item history
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["methods"]["pop"]["NDCG@10"] == doc["methods"]["pop"]["NDCG@10"]
    report = (out / "report.md").read_text()
    assert "| markov | 8 |" in report and "no sampled negatives" in report
    # each genrec method is paired against the best baseline (Markov: perfect on a chain)
    paired = doc["methods"]["genrec"]["vs_best_baseline"]
    assert paired["against"] == "markov" and paired["rows"] == 8 and paired["difference"] < 0
    assert "vs_best_baseline" not in doc["methods"]["pop"] and "genrec vs markov, NDCG@10 on 8 rows" in report
    for png in ("ndcg_at_k.png", "popularity.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"

    # a kill in the middle of writing a line: the partial line is dropped and the user redone
    path = out / "users" / "genrec.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:5]) + lines[5][:20])
    again = run_evaluation(ds, config, out, progress=False, recommender_factory=tiny_factory)
    assert len(path.read_text().splitlines()) == 8
    assert again["methods"]["genrec"]["NDCG@10"] == pytest.approx(doc["methods"]["genrec"]["NDCG@10"])

    with pytest.raises(DataError, match="other settings"):
        run_evaluation(ds, EvalConfig(dataset="chain", methods=["pop"], users=8, seed=4), out, progress=False)


def test_d3_dataset_through_the_harness(tmp_path, tiny_factory):
    test, info, train = write_d3(tmp_path / "d3")
    ds = load_d3csv(test, info, train=train)
    doc = run_evaluation(ds, EvalConfig(dataset="d3csv", methods=["pop", "genrec"], k=10), tmp_path / "out",
                         progress=False, recommender_factory=tiny_factory)  # fmt: skip
    assert doc["n_users"] == 2 and "given test examples" in doc["split"]["protocol"]
    assert "latest 10%" in doc["split"]["validation"] and doc["methods"]["pop"]["valid_rows"] == 2  # 20 rows, 10% held back
    assert 0.0 <= doc["methods"]["pop"]["valid_NDCG@10"] <= 1.0
    # a folder written before the holdout was a setting held back a random share: not resumed as the latest
    saved = json.loads((tmp_path / "out" / "run_config.json").read_text())
    del saved["holdout"]
    (tmp_path / "out" / "run_config.json").write_text(json.dumps(saved))
    with pytest.raises(DataError, match=r"other settings \(holdout\)"):
        run_evaluation(ds, EvalConfig(dataset="d3csv", methods=["pop"], k=10), tmp_path / "out", progress=False)
    again = run_evaluation(ds, EvalConfig(dataset="d3csv", methods=["pop"], k=10, holdout="random"), tmp_path / "out", progress=False)
    assert "random 10%" in again["split"]["validation"]


def test_eval_run_cli_contract(tmp_path, capsys):
    (tmp_path / "items.csv").write_text("item_id,title\n" + "".join(f"i{n},Film {n}\n" for n in range(15)))
    rows = "".join(f"u{u},i{(u + t) % 15},{t}\n" for u in range(10) for t in range(6))
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\n" + rows)
    cmd = [sys.executable, str(REPO / "eval" / "run.py"), "--dataset", "interactions", "--interactions", str(tmp_path / "log.csv"),
           "--catalog", str(tmp_path / "items.csv"), "--methods", "pop,markov", "--out", str(tmp_path / "o"), "--quiet"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert doc["dataset"] == "interactions" and doc["n_users"] == 10
    assert set(doc["methods"]) == {"pop", "markov"} and "HR@10" in doc["methods"]["pop"]
    bad_cmd = [*cmd[: cmd.index("--methods")], "--methods", "pop,bogus", "--out", str(tmp_path / "o2")]
    assert script_main(REPO / "eval" / "run.py", bad_cmd[2:]) == 2 and "unknown method(s) bogus" in capsys.readouterr().err
    assert script_main(REPO / "eval" / "run.py", [*cmd[2:], "--history-grid", "5,x"]) == 2
    assert "--history-grid takes comma-separated whole numbers, got '5,x'" in capsys.readouterr().err
    assert script_main(REPO / "eval" / "run.py", [*cmd[2:], "--prior-grid", "0,half"]) == 2
    assert "--prior-grid takes comma-separated numbers, got '0,half'" in capsys.readouterr().err


def test_fused_method_tunes_its_prior_weight_on_validation_only(tmp_path, tiny_factory):
    ds = chain_dataset(n_users=12, n_items=20, length=8)
    config = EvalConfig(dataset="chain", methods=["genrec", "genrec+markov"], k=10, users=6, seed=1,
                        batch_size=4, tune_users=5, prior_grid=(0.0, 0.5, 1.0))  # fmt: skip
    out = tmp_path / "fused"
    doc = run_evaluation(ds, config, out, progress=False, recommender_factory=tiny_factory)
    tuned = doc["methods"]["genrec+markov"]["tuned"]
    assert tuned["valid_rows"] == 5 and set(tuned["valid_NDCG@10"]) == {"0", "0.5", "1"}
    assert tuned["prior_weight"] in (0.5, 1.0) and tuned["valid_NDCG@10"]["1"] == 1.0  # Markov is perfect on a chain
    assert doc["methods"]["genrec+markov"]["NDCG@10"] > doc["methods"]["genrec"]["NDCG@10"]
    assert json.loads((out / "tuning" / "genrec+markov.json").read_text()) == tuned
    again = run_evaluation(ds, config, out, progress=False, recommender_factory=tiny_factory)  # resumes, same numbers
    assert again["methods"]["genrec+markov"] == doc["methods"]["genrec+markov"]
    with pytest.raises(DataError, match="unknown method"):
        EvalConfig(dataset="chain", methods=["genrec+nothing"]).check()
    with pytest.raises(DataError, match="prior aggregations must be some of logsumexp, max, got mean"):
        EvalConfig(dataset="chain", methods=["genrec+markov"], prior_aggregations=("logsumexp", "mean")).check()


def test_reuse_takes_another_runs_tuning_and_gives_a_fresh_runs_numbers(tmp_path, tiny_factory, monkeypatch):
    """``reuse``: a run over other test users takes the tuning of a run with the same settings
    (tuning sees validation rows only), decodes no validation row, and scores what a fresh run
    scores; a run with another setting that decides the numbers is refused by name."""
    import genrec.evaluation.methods as methods

    ds = chain_dataset(n_users=12, n_items=20, length=8)
    config = EvalConfig(dataset="chain", methods=["genrec+markov"], k=10, users=4, seed=1,
                        batch_size=4, tune_users=5, prior_grid=(0.0, 1.0))  # fmt: skip
    run_evaluation(ds, config, tmp_path / "first", progress=False, recommender_factory=tiny_factory)
    more = EvalConfig(**{**config.__dict__, "users": 7})
    fresh = run_evaluation(ds, more, tmp_path / "fresh", progress=False, recommender_factory=tiny_factory)
    validation_decodes = []
    ndcg = methods.genrec_ndcg
    monkeypatch.setattr(methods, "genrec_ndcg", lambda *a, **kw: validation_decodes.append(1) or ndcg(*a, **kw))
    reused = run_evaluation(ds, more, tmp_path / "reused", progress=False, recommender_factory=tiny_factory,
                            reuse=tmp_path / "first")  # fmt: skip
    assert validation_decodes == []
    assert reused["n_users"] == 7
    timing = {"latency_p50_s", "latency_p95_s", "users_per_s"}
    got, want = ({k: v for k, v in doc["methods"]["genrec+markov"].items() if k not in timing} for doc in (reused, fresh))
    assert got == want and "NDCG@10" in got and "tuned" in got
    with pytest.raises(DataError, match=r"other settings \(k\)"):
        run_evaluation(ds, EvalConfig(**{**more.__dict__, "k": 12}), tmp_path / "k12", progress=False,
                       recommender_factory=tiny_factory, reuse=tmp_path / "first")  # fmt: skip
    assert not (tmp_path / "k12").exists()  # refused before anything was written
    with pytest.raises(DataError, match="no run there"):
        run_evaluation(ds, more, tmp_path / "other", progress=False, reuse=tmp_path / "nothing")


def test_tuning_tries_every_weight_with_every_aggregation(tmp_path, tiny_factory):
    calls = []

    def fake_ndcg(weight, aggregation, history):
        calls.append((weight, aggregation))
        return {(0.5, "max"): 0.3, (1.0, "logsumexp"): 0.3}.get((weight, aggregation), 0.1)

    tuned = tune_on_validation(fake_ndcg, tmp_path / "t.json", 7, histories=(20,), weights=(0.0, 0.5, 1.0),
                               aggregations=("logsumexp", "max"))  # fmt: skip
    assert calls.count((0.0, "logsumexp")) == 1 and (0.0, "max") not in calls  # weight 0 is the model alone
    assert (tuned["prior_weight"], tuned["prior_aggregation"]) == (0.5, "max")  # ties: the smaller weight
    assert tuned["valid_NDCG@10"] == {"0": 0.1, "0.5": 0.3, "1": 0.1} and tuned["valid_rows"] == 7
    assert tuned["valid_NDCG@10_by_aggregation"]["logsumexp"] == {"0": 0.1, "0.5": 0.1, "1": 0.3}
    assert tuned["max_history"] == 20 and len(tuned["grid"]) == 6
    again = tune_on_validation(fake_ndcg, tmp_path / "t.json", 7, histories=(20,), weights=(0.0,))
    assert again == tuned and len(calls) == 5  # kept, not redone

    # through the harness: the chosen aggregation decodes the test rows
    ds = chain_dataset(n_users=12, n_items=20, length=8)
    config = EvalConfig(dataset="chain", methods=["genrec+markov"], k=10, users=4, seed=1, batch_size=4,
                        tune_users=4, prior_grid=(0.0, 0.5), prior_aggregations=("logsumexp", "max"))  # fmt: skip
    doc = run_evaluation(ds, config, tmp_path / "agg", progress=False, recommender_factory=tiny_factory)
    tuned = doc["methods"]["genrec+markov"]["tuned"]
    assert tuned["prior_aggregation"] in ("logsumexp", "max") and set(tuned["valid_NDCG@10_by_aggregation"]) == {"logsumexp", "max"}


def test_a_killed_tuning_resumes_from_the_settings_it_finished(tmp_path):
    calls = []

    def dies_at_the_third(weight, aggregation, history):
        calls.append(weight)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the run is killed while decoding w = 0.9
        return {0.0: 0.1, 0.5: 0.2, 0.9: 0.4, 1.0: 0.3}[weight]

    path = tmp_path / "tuning" / "genrec+markov.json"
    with pytest.raises(KeyboardInterrupt):
        tune_on_validation(dies_at_the_third, path, 7, histories=(20,), weights=(0.0, 0.5, 0.9, 1.0))
    partial = path.with_name("genrec+markov.partial.jsonl")
    assert not path.exists() and len(partial.read_text().splitlines()) == 2
    with partial.open("a") as f:
        f.write('{"max_history": 20, "prior_aggreg')  # a line the kill cut off
    alone: dict[int, float] = {}
    tuned = tune_on_validation(dies_at_the_third, path, 7, histories=(20,), weights=(0.0, 0.5, 0.9, 1.0), alone=alone)
    assert calls == [0.0, 0.5, 0.9, 0.9, 1.0]  # only the unfinished settings decoded again
    assert tuned["prior_weight"] == 0.9 and tuned["valid_NDCG@10"] == {"0": 0.1, "0.5": 0.2, "0.9": 0.4, "1": 0.3}
    assert alone == {20: 0.1} and not partial.exists()

    # settings scored on another number of rows are not reused
    other = tmp_path / "other.json"
    other.with_name("other.partial.jsonl").write_text(
        '{"max_history": 20, "prior_aggregation": "logsumexp", "prior_weight": 0.5, "valid_rows": 3, "valid_NDCG@10": 0.9}\n'
    )
    assert tune_on_validation(lambda w, a, h: 0.1 + w / 10, other, 7, histories=(20,), weights=(0.0, 0.5))["prior_weight"] == 0.5
    assert json.loads(other.read_text())["valid_NDCG@10"] == {"0": 0.1, "0.5": 0.15}


def test_tuning_the_history_length_shares_the_model_alone_between_methods(tmp_path):
    calls = []

    def fake_ndcg(weight, aggregation, history):
        calls.append((weight, history))
        return {(0.0, 5): 0.2, (0.0, 10): 0.2, (0.0, 20): 0.1, (0.5, 10): 0.4}.get((weight, history), 0.3)

    alone: dict[int, float] = {}
    model = tune_on_validation(fake_ndcg, tmp_path / "genrec.json", 9, histories=(20, 10, 5), alone=alone)
    assert model["max_history"] == 10  # ties between 10 and 5: the longer history
    assert model["valid_NDCG@10_by_history"] == {"20": 0.1, "10": 0.2, "5": 0.2} and "prior_weight" not in model
    assert alone == {20: 0.1, 10: 0.2, 5: 0.2} and len(calls) == 3
    fused = tune_on_validation(fake_ndcg, tmp_path / "fused.json", 9, histories=(20, 10, 5), weights=(0.0, 0.5), alone=alone)
    assert len(calls) == 6  # the model alone was not decoded again
    resumed: dict[int, float] = {}
    assert tune_on_validation(fake_ndcg, tmp_path / "genrec.json", 9, histories=(20, 10, 5), alone=resumed) == model
    assert resumed == alone and len(calls) == 6  # a rerun reads the model alone's scores back from the file
    assert (fused["max_history"], fused["prior_weight"]) == (10, 0.5) and fused["valid_NDCG@10"] == {"0": 0.2, "0.5": 0.4}
    assert {(r["max_history"], r["prior_weight"]): r["valid_NDCG@10"] for r in fused["grid"]}[20, 0.5] == 0.3
    text = describe_tuning(fused)
    assert "max_history = 10, prior_aggregation = logsumexp, prior_weight = 0.5" in text and len(text.splitlines()) == 7
    with pytest.raises(DataError, match="history lengths to tune must be at least 1, got 0"):
        tune_on_validation(fake_ndcg, tmp_path / "bad.json", 9, histories=(0,))
    with pytest.raises(DataError, match="history lengths must be at least 1"):
        EvalConfig(dataset="chain", methods=["genrec"], history_grid=(3, 0)).check()


def test_the_harness_decodes_the_test_rows_with_the_tuned_history_length(tmp_path, tiny_factory):
    ds = chain_dataset(n_users=12, n_items=20, length=8)
    config = EvalConfig(dataset="chain", methods=["genrec", "genrec+markov"], k=10, users=6, seed=1, batch_size=4,
                        tune_users=5, prior_grid=(0.0, 1.0), history_grid=(1, 4))  # fmt: skip
    doc = run_evaluation(ds, config, tmp_path / "grid", progress=False, recommender_factory=tiny_factory)
    model, fused = doc["methods"]["genrec"]["tuned"], doc["methods"]["genrec+markov"]["tuned"]
    assert set(model["valid_NDCG@10_by_history"]) == {"1", "4"} and len(fused["grid"]) == 4
    for h in (1, 4):  # weight 0 is the model alone: the same decode, the same score
        assert model["valid_NDCG@10_by_history"][str(h)] == next(
            r["valid_NDCG@10"] for r in fused["grid"] if r["max_history"] == h and r["prior_weight"] == 0.0
        )
    report = (tmp_path / "grid" / "report.md").read_text()
    assert doc["split"]["history_grid"] == [1, 4] and "tuned on validation from 1, 4" in report
    assert f"- genrec: tuned on 5 validation rows: max_history = {model['max_history']}\n  - max_history 1: NDCG@10" in report
    fixed = EvalConfig(dataset="chain", methods=["genrec"], k=10, users=6, seed=1, batch_size=4, max_history=model["max_history"])
    plain = run_evaluation(ds, fixed, tmp_path / "fixed", progress=False, recommender_factory=tiny_factory)
    assert [r.items for r in load_results(tmp_path / "fixed", "genrec")] == [r.items for r in load_results(tmp_path / "grid", "genrec")]
    assert plain["methods"]["genrec"]["NDCG@10"] == doc["methods"]["genrec"]["NDCG@10"]


def test_overwrite_discards_the_tuning_too(tmp_path, tiny_factory):
    ds = chain_dataset(n_users=12, n_items=20, length=8)
    config = EvalConfig(dataset="chain", methods=["genrec+markov"], k=10, users=4, seed=1, batch_size=4, tune_users=4, prior_grid=(0.0, 1.0))
    run_evaluation(ds, config, tmp_path / "o", progress=False, recommender_factory=tiny_factory)
    config.prior_grid = (0.0, 0.5)
    # an interrupted tuning's scores go too (a stale score for w = 0.5 would otherwise be reused)
    stale = {"max_history": 20, "prior_aggregation": "logsumexp", "prior_weight": 0.5, "valid_rows": 4, "valid_NDCG@10": 7.0}
    (tmp_path / "o" / "tuning" / "genrec+markov.partial.jsonl").write_text(json.dumps(stale) + "\n")
    doc = run_evaluation(ds, config, tmp_path / "o", progress=False, recommender_factory=tiny_factory, overwrite=True)
    assert set(doc["methods"]["genrec+markov"]["tuned"]["valid_NDCG@10"]) == {"0", "0.5"}
    assert doc["methods"]["genrec+markov"]["tuned"]["valid_NDCG@10"]["0.5"] <= 1.0


def test_a_folder_written_before_a_setting_existed_resumes(tmp_path):
    ds = chain_dataset(n_users=6, n_items=12, length=6)
    config = EvalConfig(dataset="chain", methods=["pop"], k=10)
    out = tmp_path / "old"
    run_evaluation(ds, config, out, progress=False)
    saved = json.loads((out / "run_config.json").read_text())
    del saved["prior_aggregations"]  # as folders written before it was added
    (out / "run_config.json").write_text(json.dumps(saved))
    assert run_evaluation(ds, config, out, progress=False)["methods"]["pop"]["n_users"] == 6
    saved["k"] = 20
    (out / "run_config.json").write_text(json.dumps(saved))
    with pytest.raises(DataError, match=r"other settings \(k\)"):
        run_evaluation(ds, config, out, progress=False)



def test_ray_workers_give_the_same_metrics_as_one_process(tmp_path, tiny_model_dir, ray_instance):
    ds = chain_dataset(n_users=12, n_items=20, length=8)
    config = EvalConfig(dataset="chain", methods=["genrec", "genrec+markov"], k=10, users=8, seed=2, batch_size=3,
                        model=str(tiny_model_dir), tune_users=4, prior_grid=(1.0,))  # fmt: skip
    one = run_evaluation(ds, config, tmp_path / "one", progress=False)
    two = run_evaluation(ds, config, tmp_path / "two", progress=False, workers=2)
    for name in ("genrec", "genrec+markov"):
        for users in ("one", "two"):
            assert (tmp_path / users / "users" / f"{name}.jsonl").is_file()
        ranks = {u: sorted((r["row"], r["rank"], r["items"]) for r in map(json.loads, (tmp_path / u / "users" / f"{name}.jsonl").read_text().splitlines()))
                 for u in ("one", "two")}  # fmt: skip
        assert ranks["one"] == ranks["two"]
        metrics = {k: v for k, v in one["methods"][name].items() if "latency" not in k and not k.endswith("_s")}  # not timings
        assert metrics == {k: v for k, v in two["methods"][name].items() if k in metrics}


def test_family_cap_reaches_every_genrec_list(tmp_path, tiny_factory):
    """``max_per_family`` is the run's: applied to the factory's Recommender, recorded in the run
    config; in every list a family's variants past the cap only close the list."""
    from collections import Counter

    colours = ["Black", "White", "Red", "Blue", "Green", "Silver"]
    titles = [f"{base} {c}" for base in ("Lab Tape", "Steel Ruler") for c in colours]
    titles += ["Beaker 12", "Flask Timer 8", "Pipette Stand 83", "Clamp 85", "Glass Funnel 41", "Scale 73", "Safety Gloves 9"]
    ds = chain_dataset(n_users=10, length=5, titles=titles)
    config = EvalConfig(dataset="chain", methods=["genrec"], k=10, users=6, seed=1, batch_size=3, max_per_family=1)
    out = tmp_path / "cap"
    run_evaluation(ds, config, out, progress=False, recommender_factory=tiny_factory)
    assert json.loads((out / "run_config.json").read_text())["max_per_family"] == 1
    rec = tiny_factory(ds.catalog)
    index = rec.index_for("next_item")
    family = index.families(0.5)
    family_of = {t: int(family[index.title_leaf[n]]) for n, t in enumerate(ds.catalog.unique_titles)}
    assert max(Counter(family_of.values()).values()) == len(colours)

    def variants_only_at_the_end(folder) -> list[bool]:
        out = []
        for line in (folder / "users" / "genrec.jsonl").read_text().splitlines():
            seen, over = Counter(), []
            for item in json.loads(line)["items"]:
                seen[family_of[ds.catalog.title_of(item)]] += 1
                over.append(seen[family_of[ds.catalog.title_of(item)]] > 1)
            first = over.index(True) if True in over else len(over)
            out.append(all(over[first:]))
        return out

    assert all(variants_only_at_the_end(out))
    plain = tmp_path / "plain"
    run_evaluation(ds, EvalConfig(**{**config.__dict__, "max_per_family": None}), plain, progress=False, recommender_factory=tiny_factory)
    assert not all(variants_only_at_the_end(plain))  # uncapped, variants sit among the others
    with pytest.raises(DataError, match="other settings"):
        run_evaluation(ds, EvalConfig(**{**config.__dict__, "max_per_family": 2}), out, progress=False, recommender_factory=tiny_factory)


def test_dtype_is_the_runs_and_reaches_the_model(tmp_path, tiny_model_dir):
    """``dtype`` decides the weights genrec decodes with (a GPU defaults to bf16; float32 there
    decodes as a CPU run does): recorded in the run config, applied to the run's Recommender,
    checked before any work."""
    import torch

    from genrec.evaluation.methods import build_recommender

    ds = chain_dataset(n_users=8, length=5)
    config = EvalConfig(dataset="chain", methods=["genrec"], k=10, users=3, seed=1, batch_size=3,
                        model=str(tiny_model_dir), dtype="bfloat16")  # fmt: skip
    assert build_recommender(ds.catalog, config).lm.model.dtype == torch.bfloat16
    run_evaluation(ds, config, tmp_path / "run", progress=False)
    assert json.loads((tmp_path / "run" / "run_config.json").read_text())["dtype"] == "bfloat16"
    with pytest.raises(DataError, match="other settings"):
        run_evaluation(ds, EvalConfig(**{**config.__dict__, "dtype": "float32"}), tmp_path / "run", progress=False)
    with pytest.raises(DataError, match="dtype must be one of"):
        run_evaluation(ds, EvalConfig(**{**config.__dict__, "dtype": "fp8"}), tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


def test_the_beam_width_is_the_runs_and_reaches_every_search(tmp_path, tiny_factory, monkeypatch):
    """``num_beams`` decides genrec's lists: each search keeps max(num_beams, k) beams (never more
    than the titles left), the width is recorded in the run config, results.json and the report,
    and a folder decoded with another width is not resumed."""
    import genrec.tasks.recommend as recommend

    widths = []
    search = recommend.beam_search
    monkeypatch.setattr(recommend, "beam_search", lambda *a, **kw: widths.append(kw["num_beams"]) or search(*a, **kw))
    ds = chain_dataset(n_users=8, n_items=40, length=5)
    config = EvalConfig(dataset="chain", methods=["genrec"], k=10, users=4, seed=1, batch_size=2, num_beams=24)
    doc = run_evaluation(ds, config, tmp_path / "wide", progress=False, recommender_factory=tiny_factory)
    assert widths == [24, 24]
    assert doc["split"]["beams"] == 24
    assert json.loads((tmp_path / "wide" / "run_config.json").read_text())["num_beams"] == 24
    assert "decode with 24 beams" in (tmp_path / "wide" / "report.md").read_text()
    widths.clear()
    narrow = run_evaluation(ds, EvalConfig(**{**config.__dict__, "num_beams": 4}), tmp_path / "narrow", progress=False,
                            recommender_factory=tiny_factory)  # fmt: skip
    assert widths == [10, 10] and narrow["split"]["beams"] == 10  # never fewer beams than k
    with pytest.raises(DataError, match=r"other settings \(num_beams\)"):
        run_evaluation(ds, EvalConfig(**{**config.__dict__, "num_beams": 12}), tmp_path / "wide", progress=False,
                       recommender_factory=tiny_factory)  # fmt: skip
    with pytest.raises(DataError, match="beam width must be at least 1"):
        run_evaluation(ds, EvalConfig(**{**config.__dict__, "num_beams": 0}), tmp_path / "bad", progress=False)


def test_new_items_are_measured_apart(tmp_path, tiny_factory):
    """With a seeded share of new items, every method is reported on the rows whose target is new,
    the known ones and all; ID baselines reach new targets only by the tie order; --only new
    evaluates those rows alone."""
    ds = chain_dataset(n_users=30, n_items=20, length=6)
    config = EvalConfig(dataset="chain", methods=["pop", "markov", "content", "hybrid", "genrec"], k=10, seed=2, batch_size=8,
                        cold_items=0.3)  # fmt: skip
    doc = run_evaluation(ds, config, tmp_path / "all", progress=False, recommender_factory=tiny_factory)
    new_info = doc["split"]["new_items"]
    assert new_info["cold_items_seeded"] == 6 and new_info["test_rows"]["new"] > 0 and new_info["test_rows"]["known"] > 0
    markov = doc["methods"]["markov"]
    assert set(markov["groups"]) == {"new", "known"}
    assert markov["groups"]["new"]["n_users"] + markov["groups"]["known"]["n_users"] == markov["n_users"] == 30
    assert markov["groups"]["known"]["NDCG@10"] > markov["groups"]["new"]["NDCG@10"]  # perfect on a chain it has seen
    assert "vs_best_baseline" in doc["methods"]["genrec"]["groups"]["new"]
    assert doc["methods"]["hybrid"]["tuned"]["new_items"] >= 6 and set(doc["methods"]["content"]["groups"]) == {"new", "known"}
    assert "| markov | new |" in (tmp_path / "all" / "report.md").read_text()
    only = run_evaluation(ds, EvalConfig(**{**config.__dict__, "only": "new"}), tmp_path / "new", progress=False,
                          recommender_factory=tiny_factory)  # fmt: skip
    assert only["n_users"] == new_info["test_rows"]["new"] and set(only["methods"]["pop"]["groups"]) == {"new"}
    assert only["methods"]["markov"]["NDCG@10"] == pytest.approx(markov["groups"]["new"]["NDCG@10"])
