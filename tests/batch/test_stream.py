"""genrec batch on a streamed input: files read and grouped by user inside Ray Data. The parts
hold the users their IDs hash to, each history in time order as one file read in memory gives
it, and the lists are recommend_batch's on those parts, exactly; resume, changed input and bad
rows behave as for one file."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest

from genrec import DataError
from genrec.batch import DecodeSettings, RecommenderSpec, StreamInput, read_users, run_batch_stream
from genrec.batch.parts import user_hash
from genrec.cli import main

from helpers import catalog_of

TITLES = [f"Film {w} {n}" for n, w in enumerate("red green blue black white amber violet grey".split() * 2)]
PARTS = 3


@pytest.fixture
def log_files(tmp_path):
    """One log of 14 users split over three files of three formats, rows shuffled across them."""
    rng = random.Random(5)
    rows = [(f"u{u}", f"i{rng.randrange(len(TITLES))}", rng.choice([10, 20, 20, 30, None])) for u in range(14) for _ in range(rng.randint(1, 4))]
    rng.shuffle(rows)
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).astype({"timestamp": "Int64"})
    folder = tmp_path / "log"
    folder.mkdir()
    frame.iloc[:15].to_csv(folder / "a.csv", index=False)
    frame.iloc[15:30].to_csv(folder / "b.tsv", sep="\t", index=False)
    frame.iloc[30:].to_parquet(folder / "c.parquet", index=False)
    (folder / "_SUCCESS").write_text("")  # a warehouse writer's marker: not an input file
    frame.to_csv(tmp_path / "whole.csv", index=False)
    return folder, tmp_path / "whole.csv"


def _expected(rec, whole, k: int, batch_size: int) -> pd.DataFrame:
    """recommend_batch on each hash part of the users one file read in memory gives."""
    users = read_users(whole)
    rows = []
    for part in range(PARTS):
        mine = sorted((u for u in users if int(user_hash([u.user_id])[0]) % PARTS == part), key=lambda u: u.user_id)
        outs = rec.recommend_batch([u.history for u in mine], k, excludes=[u.history for u in mine], batch_size=batch_size)
        rows += [{"user_id": u.user_id, "rank": n, "item_id": r.item_id, "title": r.title, "score": r.score}
                 for u, recs in zip(mine, outs) for n, r in enumerate(recs, 1)]  # fmt: skip
    return pd.DataFrame(rows)


def _rows(out) -> pd.DataFrame:
    parts = sorted((out / "data").glob("part-*.parquet"))
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True).drop(columns="run_id").astype({"rank": "int64"})


def test_a_streamed_folder_gives_recommend_batch_on_hash_parts_and_resumes(log_files, tiny_model_dir, tmp_path, ray_instance):
    from genrec import Recommender

    folder, whole = log_files
    source = StreamInput.find(folder)
    assert [p.rsplit("/", 1)[-1] for p in source.files] == ["a.csv", "b.tsv", "c.parquet"] and not source.user_rows
    catalog = catalog_of(TITLES)
    spec, settings = RecommenderSpec(catalog, model=str(tiny_model_dir)), DecodeSettings(k=3, batch_size=4)
    out = tmp_path / "out"
    summary = run_batch_stream(spec, source, out, settings, parts=PARTS, progress=False)
    assert (summary.users, summary.served, summary.parts) == (14, 14, PARTS)
    want = _expected(Recommender(catalog, model=str(tiny_model_dir)), whole, k=3, batch_size=4)
    pd.testing.assert_frame_equal(_rows(out), want, check_exact=True)
    records = {json.loads(p.read_text())["part"]: json.loads(p.read_text()) for p in (out / "parts").glob("*.json")}
    assert sum(r["users"] for r in records.values()) == 14 and len(records) == PARTS
    # killed after two parts: the rerun reads and decodes the third alone, to the same lists
    (out / "parts" / "part-00001.json").unlink()
    again = run_batch_stream(spec, source, out, settings, parts=PARTS, progress=False)
    assert again.skipped == 14 - records[1]["users"] and again.served == 14
    pd.testing.assert_frame_equal(_rows(out), want, check_exact=True)
    # a changed input (or part count) is another job: refused unless --overwrite
    pd.DataFrame({"user_id": ["new"], "item_id": ["i1"]}).to_csv(folder / "d.csv", index=False)
    with pytest.raises(DataError, match="other settings.*histories"):
        run_batch_stream(spec, StreamInput.find(folder), out, settings, parts=PARTS, progress=False)
    with pytest.raises(DataError, match="other settings.*parts"):
        run_batch_stream(spec, source, out, settings, parts=PARTS + 1, progress=False)


def test_a_bad_row_is_named_by_its_file_and_row(log_files, tiny_model_dir, tmp_path, ray_instance):
    folder, _ = log_files
    (folder / "e.csv").write_text("user_id,item_id,timestamp\nu1,i2,5\nu2,,7\n")
    spec = RecommenderSpec(catalog_of(TITLES), model=str(tiny_model_dir))
    with pytest.raises(DataError, match=r"e\.csv: row 3 has no item_id"):
        run_batch_stream(spec, StreamInput.find(folder), tmp_path / "out", DecodeSettings(k=2), parts=2, progress=False)
    (folder / "e.csv").write_text("user_id,item_id,timestamp\nu1,i2,yesterday\n")
    with pytest.raises(DataError, match=r"e\.csv: row 2 has timestamp 'yesterday', not a number"):
        run_batch_stream(spec, StreamInput.find(folder), tmp_path / "out", DecodeSettings(k=2), parts=2, progress=False, overwrite=True)


def test_user_rows_stream_and_a_user_in_two_files_is_refused(tiny_model_dir, tmp_path, ray_instance):
    folder = tmp_path / "rows"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"user_id": "x", "history": ["i1", "i2"]}\n\n{"user_id": "y", "history": ["Film red 0"]}\n')
    (folder / "b.jsonl").write_text('{"user_id": "z", "history": ["i4"], "request": "something blue"}\n')
    spec = RecommenderSpec(catalog_of(TITLES), model=str(tiny_model_dir))
    source = StreamInput.find(str(folder / "*.jsonl"))
    assert source.user_rows
    summary = run_batch_stream(spec, source, tmp_path / "out", DecodeSettings(k=2), parts=2, progress=False)
    assert (summary.users, summary.served) == (3, 3)
    (folder / "c.jsonl").write_text('{"user_id": "q", "history": []}\n{"user_id": "x", "history": ["i3"]}\n')
    with pytest.raises(DataError, match=r"c\.jsonl: row 2 repeats user_id 'x' \(first at .*a\.jsonl, row 1\)"):
        run_batch_stream(spec, StreamInput.find(folder), tmp_path / "again", DecodeSettings(k=2), parts=1, progress=False)


def test_finding_the_input_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        StreamInput.find(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no input files"):
        StreamInput.find(tmp_path / "empty")
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "log.csv").write_text("user_id,item_id\nu,i1\n")
    (tmp_path / "mixed" / "rows.jsonl").write_text('{"user_id": "u", "history": ["i1"]}\n')
    with pytest.raises(DataError, match="mixes user rows"):
        StreamInput.find(tmp_path / "mixed")


def test_cli_streams_a_glob_and_refuses_settings_of_the_other_mode(log_files, tiny_model_dir, tmp_path, capsys, ray_instance):
    folder, whole = log_files
    items = tmp_path / "items.csv"
    pd.DataFrame({"item_id": [f"i{n}" for n in range(len(TITLES))], "title": TITLES}).to_csv(items, index=False)
    base = ["batch", "--catalog", str(items), "--model", str(tiny_model_dir), "-k", "2"]
    assert main([*base, "--histories", str(folder / "*.csv"), "--parts", "2", "--out", str(tmp_path / "o")]) == 0
    assert "in 2 parts" in capsys.readouterr().out
    for argv, problem in [
        (["--histories", str(folder), "--part-size", "4"], "a streamed input is split by --parts"),
        (["--histories", str(whole), "--parts", "4"], "one file is sliced by --part-size"),
        (["--histories", str(whole), "--stream", "--prior", "pop"], "--prior pop counts the histories in memory"),
    ]:
        assert main([*base, *argv, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert problem in err and len(err.strip().splitlines()) == 1
