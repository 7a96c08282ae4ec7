"""genrec batch: input checks, the part files, resuming (a kill included), and the same results
as one process whatever the number of workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from genrec import DataError
from genrec.batch import DecodeSettings, RecommenderSpec, UserJob, fingerprint, read_users, run_batch
from genrec.cli import main

from helpers import catalog_of

TITLES = [f"Film {w} {n}" for n, w in enumerate("red green blue black white amber violet grey pink gold".split() * 3)]


@pytest.fixture
def catalog():
    return catalog_of(TITLES)


def _users(n: int, seed: int = 0) -> list[UserJob]:
    import random

    rng = random.Random(seed)
    return [UserJob(f"u{u}", [f"i{rng.randrange(len(TITLES))}" for _ in range(rng.randint(1, 5))]) for u in range(n)]


def _read_rows(out: Path) -> pd.DataFrame:
    """The output's rows in part order, without the run's ID (``_reference`` has none)."""
    parts = sorted((out / "data").glob("part-*.parquet"))
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True).drop(columns="run_id")


def _reference(rec, users: list[UserJob], part_size: int, k: int, batch_size: int) -> pd.DataFrame:
    """What one process gives: ``recommend_batch`` on each part of the input."""
    rows = []
    for start in range(0, len(users), part_size):
        part = users[start : start + part_size]
        outs = rec.recommend_batch([u.history for u in part], k, excludes=[u.history for u in part], batch_size=batch_size)
        for user, recs in zip(part, outs):
            rows += [{"user_id": user.user_id, "rank": n, "item_id": r.item_id, "title": r.title, "score": r.score} for n, r in enumerate(recs, 1)]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------- inputs
def test_interaction_log_in_time_order_users_in_file_order(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\nb,i3,30\na,i1,20\nb,i2,10\na,i4,20\nb,i5,\n")
    users = read_users(path)
    assert [u.user_id for u in users] == ["b", "a"]
    # missing timestamps first, equal ones in file order
    assert users[0].history == ["i5", "i2", "i3"] and users[1].history == ["i1", "i4"]


def test_user_rows_jsonl_and_parquet(tmp_path):
    rows = [{"user_id": "x", "history": ["i1", "Heat"], "request": "something tense"}, {"user_id": 7, "history": []}]
    jsonl = tmp_path / "users.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    parquet = tmp_path / "users.parquet"
    pd.DataFrame([{**r, "user_id": str(r["user_id"])} for r in rows]).to_parquet(parquet)
    for path in (jsonl, parquet):
        users = read_users(path)
        assert [(u.user_id, u.history, u.request) for u in users] == [("x", ["i1", "Heat"], "something tense"), ("7", [], None)]


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("log.csv", "user,item\n1,2\n", "missing column(s) user_id, item_id"),
        ("log.csv", "", "is empty"),
        ("log.csv", "user_id,item_id\n", "holds no users"),
        ("log.csv", "user_id,item_id\n1,5\n,6\n", "row 3 has no user_id"),
        ("log.csv", "user_id,item_id,timestamp\n1,5,yesterday\n", "row 2 has timestamp 'yesterday'"),
        ("users.jsonl", '{"user_id": 1, "history": ["a"]}\n{"user_id": 1, "history": []}\n', "line 2 repeats user_id '1' (first at line 1)"),
        ("users.jsonl", '{"user_id": 1, "history": "a"}\n', "line 1 (user '1'): history must be a list"),
        ("users.jsonl", '{"user_id": 1}\n{oops\n', "line 2 is not JSON"),
        ("users.xml", "<x/>", "unknown histories format"),
    ],
)
def test_bad_histories_name_the_problem(tmp_path, name, text, problem):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        read_users(path)


# ---------------------------------------------------------------------- one process
def test_parts_equal_recommend_batch_and_report_unknown_items(make_rec, catalog, tmp_path):
    rec = make_rec(catalog)
    users = _users(7)
    users[2] = UserJob("u2", ["i3", "no-such-item", "i4"])
    users[5] = UserJob("u5", ["gone-1", "gone-2"])
    settings = DecodeSettings(k=3, batch_size=2)
    summary = run_batch(RecommenderSpec(catalog), users, tmp_path / "out", settings, part_size=3, rec=rec, progress=False)
    out = tmp_path / "out"
    assert summary.users == 7 and summary.served == 6 and summary.failed == 1 and summary.with_unknown_items == 2
    got = _read_rows(out)
    served = [u if u.user_id != "u2" else UserJob("u2", ["i3", "i4"]) for u in users if u.user_id != "u5"]
    # u5 fails alone: the rest of its part is decoded as a part of the remaining users
    want = pd.concat([_reference(rec, served[:3], 3, 3, 2), _reference(rec, served[3:5], 2, 3, 2), _reference(rec, served[5:], 3, 3, 2)])
    pd.testing.assert_frame_equal(got.astype({"rank": "int64"}), want.reset_index(drop=True), check_exact=True)
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert failures == [{"user_id": "u5", "error": "none of its 2 history item(s) is in the catalog (first: 'gone-1')"}]
    unknown = {r["user_id"]: r["unknown"] for r in map(json.loads, (out / "unknown_items.jsonl").read_text().splitlines())}
    assert unknown == {"u2": ["no-such-item"], "u5": ["gone-1", "gone-2"]}
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(p["start"], p["end"], p["complete"]) for p in manifest["parts"]] == [(0, 3, True), (3, 6, True), (6, 7, True)]
    assert manifest["summary"]["served"] == 6


def test_rerun_skips_complete_parts_and_redoes_the_rest(make_rec, catalog, tmp_path):
    rec = make_rec(catalog)
    users, out = _users(9), tmp_path / "out"
    settings = DecodeSettings(k=2)
    run_batch(RecommenderSpec(catalog), users, out, settings, part_size=4, rec=rec, progress=False)
    first = _read_rows(out)
    (out / "parts" / "part-00001.json").unlink()  # as if killed between the data file and its record
    (out / "data" / "part-00002.parquet").unlink()
    (out / "data" / ".tmp-123-part-00002").write_bytes(b"half a file")
    summary = run_batch(RecommenderSpec(catalog), users, out, settings, part_size=4, rec=rec, progress=False)
    assert summary.skipped == 4 and summary.served == 9
    assert not list(out.glob("**/.tmp-*"))
    pd.testing.assert_frame_equal(_read_rows(out), first, check_exact=True)
    with pytest.raises(DataError, match=r"other settings \(settings.k\)"):
        run_batch(RecommenderSpec(catalog), users, out, DecodeSettings(k=3), part_size=4, rec=rec, progress=False)


def test_family_cap_is_in_the_fingerprint(catalog):
    """A capped run's folder cannot be resumed uncapped (or with another cap); folders written
    before the cap existed keep their fingerprint."""
    def prints(**spec):
        return fingerprint(RecommenderSpec(catalog, **spec), DecodeSettings(), part_size=4, fmt="parquet", inputs={})

    assert "max_per_family" not in prints() and "family_share" not in prints()
    assert prints(max_per_family=2)["max_per_family"] == 2 and prints(max_per_family=2)["family_share"] == 0.5
    assert prints(max_per_family=2) != prints(max_per_family=3) != prints()
    # the same lists to float rounding, still recorded: a folder is resumed as it was started
    assert "runtime" not in prints() and prints(runtime="onnxruntime")["runtime"] == "onnxruntime"


def test_jsonl_output(make_rec, catalog, tmp_path):
    rec = make_rec(catalog)
    run_batch(RecommenderSpec(catalog), _users(3), tmp_path / "o", DecodeSettings(k=2), fmt="jsonl", rec=rec, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "o" / "data" / "part-00000.jsonl").read_text().splitlines()]
    assert [(r["user_id"], r["rank"]) for r in rows] == [(u, n) for u in ("u0", "u1", "u2") for n in (1, 2)]


# ---------------------------------------------------------------------- the command
@pytest.fixture
def batch_files(tmp_path):
    items = tmp_path / "items.csv"
    pd.DataFrame({"item_id": [f"i{n}" for n in range(len(TITLES))], "title": TITLES}).to_csv(items, index=False)
    log = tmp_path / "log.csv"
    rows = [(u.user_id, item) for u in _users(12, seed=3) for item in u.history]
    pd.DataFrame(rows, columns=["user_id", "item_id"]).to_csv(log, index=False)
    return items, log


def test_cli_batch_and_its_one_line_errors(batch_files, tiny_model_dir, tmp_path, capsys):
    items, log = batch_files
    base = ["batch", "--catalog", str(items), "--model", str(tiny_model_dir), "-k", "2", "--part-size", "5"]
    assert main([*base, "--histories", str(log), "--out", str(tmp_path / "o"), "--prior", "pop"]) == 0
    assert "12 users in 3 parts" in capsys.readouterr().out
    assert len(_read_rows(tmp_path / "o")) == 24
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item\n1,2\n")
    blocked = tmp_path / "file"
    blocked.write_text("")
    for argv, problem in [
        (["--histories", str(bad), "--out", str(tmp_path / "x")], "missing column(s) user_id, item_id"),
        (["--histories", str(log), "--out", str(blocked / "sub")], "cannot write to --out"),
        (["--histories", str(log), "--out", str(tmp_path / "o"), "--prior", "pop", "-k", "3"], "holds a batch run with other settings (settings.k)"),
        (["--histories", str(log), "--out", str(tmp_path / "y"), "--prior", str(log)], "--prior"),
    ]:
        assert main([*base, *argv]) == 2
        err = capsys.readouterr().err
        assert problem in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_killed_run_resumes_to_the_same_results(batch_files, tiny_model_dir, tmp_path):
    items, log = batch_files
    argv = [sys.executable, "-m", "genrec.cli", "batch", "--catalog", str(items), "--model", str(tiny_model_dir),
            "--histories", str(log), "-k", "3", "--part-size", "1", "--batch-size", "1",
            "--search", "beam"]  # fmt: skip (beam: search from words ends 12 parts before the kill lands)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*argv, "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.time() + 120
    while time.time() < deadline and len(list(killed.glob("parts/part-*.json"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    records = list(killed.glob("parts/part-*.json"))
    assert 3 <= len(records) < 12, "the run was not killed midway"
    for record in records:  # every part a record vouches for is whole
        for file in json.loads(record.read_text())["files"]:
            pd.read_parquet(killed / file)
    subprocess.run([*argv, "--out", str(killed)], check=True, capture_output=True)
    subprocess.run([*argv, "--out", str(tmp_path / "whole")], check=True, capture_output=True)
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["summary"]["skipped"] >= 3 and manifest["summary"]["served"] == 12
    pd.testing.assert_frame_equal(_read_rows(killed), _read_rows(tmp_path / "whole"), check_exact=True)


# ---------------------------------------------------------------------- workers
@pytest.fixture
def one_thread():
    """Float sums depend on how torch splits them over threads: compare at the workers' count."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def test_two_ray_workers_equal_one_process(catalog, tiny_model_dir, tmp_path, one_thread, ray_instance):
    users = _users(10, seed=4)
    spec = RecommenderSpec(catalog, model=str(tiny_model_dir), cache_dir=str(tmp_path / "cache"))
    settings = DecodeSettings(k=3, batch_size=2)
    one = run_batch(spec, users, tmp_path / "one", settings, part_size=3, progress=False)
    two = run_batch(spec, users, tmp_path / "two", settings, part_size=3, workers=2, threads_per_worker=1, progress=False)
    assert one.served == two.served == 10
    assert two.workers and not any(w.endswith(f":{os.getpid()}") for w in two.workers), "decoded by the actors, not here"
    pd.testing.assert_frame_equal(_read_rows(tmp_path / "one"), _read_rows(tmp_path / "two"), check_exact=True)


@pytest.mark.integration
def test_two_ray_workers_equal_recommend_batch_on_the_real_model(ml100k_dir, tmp_path, one_thread, ray_instance):
    """8 MovieLens users on the default model: the parts of two workers are recommend_batch's lists."""
    from genrec import Catalog, Recommender

    catalog = Catalog.from_file(ml100k_dir / "u.item", sep="|", encoding="latin-1", header=False)
    log = pd.read_csv(ml100k_dir / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"], dtype=str)
    path = tmp_path / "log.csv"
    log[log["user_id"].astype(int) <= 8][["user_id", "item_id", "timestamp"]].to_csv(path, index=False)
    users = read_users(path)
    assert len(users) == 8
    settings = DecodeSettings(k=10, batch_size=4, max_history=10)
    summary = run_batch(RecommenderSpec(catalog), users, tmp_path / "two", settings, part_size=4, workers=2, threads_per_worker=1, progress=False)
    assert summary.served == 8
    rec = Recommender(catalog)
    want = pd.concat([_reference_tail(rec, users[:4], 10), _reference_tail(rec, users[4:], 10)], ignore_index=True)
    pd.testing.assert_frame_equal(_read_rows(tmp_path / "two").astype({"rank": "int64"}), want, check_exact=True)


def _reference_tail(rec, part: list[UserJob], max_history: int) -> pd.DataFrame:
    outs = rec.recommend_batch([u.history[-max_history:] for u in part], 10, excludes=[u.history for u in part], batch_size=len(part))
    rows = [{"user_id": u.user_id, "rank": n, "item_id": r.item_id, "title": r.title, "score": r.score}
            for u, recs in zip(part, outs) for n, r in enumerate(recs, 1)]  # fmt: skip
    return pd.DataFrame(rows)


def test_an_unexpected_error_names_the_line_that_raised_it(monkeypatch, caplog):
    """A part's users share one failure message: for an error genrec did not raise itself (a
    device mismatch on a GPU, say), it names the innermost frame, and the traceback is logged."""
    import logging
    import types

    from genrec.batch import runner as runner_mod
    from genrec.batch.runner import DecodeSettings, PartRunner, UserJob

    def broken(*args, **kwargs):
        raise RuntimeError("indices should be on the same device")

    monkeypatch.setattr(runner_mod, "decode_part", broken)
    part = PartRunner(None, DecodeSettings(constrained=False), rec=types.SimpleNamespace())
    with caplog.at_level(logging.WARNING, logger="genrec.batch.runner"):
        outcome = part.run(3, [UserJob("u1", ["a"]), UserJob("u2", ["b"])])
    line = broken.__code__.co_firstlineno + 1
    expected = f"RuntimeError: indices should be on the same device (at test_batch.py:{line} in broken)"
    assert outcome.failures == {"u1": expected, "u2": expected}
    assert "part 3 failed" in caplog.text and "Traceback" in caplog.text


def test_a_ten_thousand_item_history_costs_what_the_cap_allows(catalog, tiny_model_dir, tmp_path):
    """A user whose history is 10,000 entries long is decoded from its newest ``max_history``
    items, every entry excluded, in about the time of a short one; the job finishes."""
    from genrec import Recommender

    long_history = [f"i{n % 20}" for n in range(10_000)]  # 20 of the 30 items, over and over
    users = [UserJob("long", long_history), UserJob("short", ["i25"])]
    settings = DecodeSettings(k=3, batch_size=1, max_history=5)
    started = time.perf_counter()
    summary = run_batch(RecommenderSpec(catalog, model=str(tiny_model_dir)), users, tmp_path / "out", settings, part_size=1,
                        progress=False)  # fmt: skip
    assert time.perf_counter() - started < 60 and (summary.served, summary.failed) == (2, 0)
    rows = _read_rows(tmp_path / "out")
    got = list(rows[rows.user_id == "long"].item_id)
    want = Recommender(catalog, model=str(tiny_model_dir)).recommend(long_history[-5:], k=3, exclude=long_history)
    assert got == [r.item_id for r in want] and len(got) == 3 and not set(got) & set(long_history)
