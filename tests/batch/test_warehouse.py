"""genrec batch's output folder as a warehouse reads it: one schema in every data file, hive
partitions by user hash, and DuckDB or pyarrow.dataset reading ``data/`` directly."""

from __future__ import annotations

import json

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from genrec.batch import DecodeSettings, RecommenderSpec, UserJob, run_batch
from genrec.batch.parts import SCHEMA, user_buckets_of, user_hash

from helpers import catalog_of

TITLES = [f"Film {w} {n}" for n, w in enumerate("red green blue black white amber violet".split() * 2)]


@pytest.fixture
def served(make_rec, tmp_path):
    """The same 11 users written plain and in 3 user buckets (one user fails: a part of its own)."""
    catalog = catalog_of(TITLES)
    rec = make_rec(catalog)
    users = [UserJob(f"u{n}", [f"i{n % len(TITLES)}", f"i{(3 * n + 1) % len(TITLES)}"]) for n in range(10)]
    users.append(UserJob("lost", ["no-such-item"]))
    settings, spec = DecodeSettings(k=3, batch_size=4), RecommenderSpec(catalog)
    run_batch(spec, users, tmp_path / "plain", settings, part_size=4, rec=rec, progress=False)
    run_batch(spec, users[:-1], tmp_path / "bucketed", settings, part_size=4, rec=rec, progress=False, user_buckets=3)
    run_batch(spec, users[-1:], tmp_path / "failed", settings, part_size=4, rec=rec, progress=False)
    return tmp_path


def test_every_data_file_has_the_documented_schema_and_the_run_id(served):
    manifest = json.loads((served / "plain" / "manifest.json").read_text())
    table = pads.dataset(served / "plain" / "data", format="parquet").to_table()
    assert [(f.name, str(f.type)) for f in table.schema] == [(name, "double" if kind == "float64" else kind) for name, kind in SCHEMA]
    assert table.schema.field("rank").type == pa.int32() and table.schema.field("score").type == pa.float64()
    assert set(table.column("run_id").to_pylist()) == {manifest["run_id"]}
    assert table.num_rows == 10 * 3
    # a part whose users all failed still has the schema (a query over many runs does not trip on it)
    empty = pads.dataset(served / "failed" / "data", format="parquet").to_table()
    assert empty.num_rows == 0 and empty.schema.names == [name for name, _ in SCHEMA]
    # the records and the manifest say which files hold each part
    assert [p["files"] for p in manifest["parts"]] == [["data/part-00000.parquet"], ["data/part-00001.parquet"], ["data/part-00002.parquet"]]


def test_user_buckets_partition_the_same_rows_by_a_hash_of_the_user(served):
    plain = pads.dataset(served / "plain" / "data", format="parquet").to_table().to_pandas()
    bucketed = pads.dataset(served / "bucketed" / "data", format="parquet", partitioning="hive").to_table().to_pandas()
    assert {p.name for p in (served / "bucketed" / "data").iterdir()} <= {"user_bucket=0", "user_bucket=1", "user_bucket=2"}
    assert (bucketed["user_bucket"] == user_buckets_of(list(bucketed["user_id"]), 3)).all()
    key = ["user_id", "rank"]
    columns = ["user_id", "rank", "item_id", "title", "score"]
    left = plain[columns].sort_values(key).reset_index(drop=True)
    right = bucketed[columns].sort_values(key).reset_index(drop=True)
    assert left.equals(right)
    assert user_buckets_of(["u1"], 1) == [0]
    # the hash is pinned: a change would move every user of a resumed job to another part
    assert list(user_hash(["u1", "é"])) == [1754113829467839221, 10334490267041205668]


def test_duckdb_reads_the_folder_and_skips_temporaries(served):
    (served / "bucketed" / "data" / ".tmp-99-part-00009").write_bytes(b"half a file")  # a writer that was killed
    glob = str(served / "bucketed" / "data" / "**" / "*.parquet")
    [(users, rows, buckets)] = duckdb.sql(
        f"select count(distinct user_id), count(*), count(distinct user_bucket) from read_parquet('{glob}', hive_partitioning = true)"
    ).fetchall()
    assert (users, rows) == (10, 30) and 1 <= buckets <= 3
    top = duckdb.sql(f"select user_id, item_id from read_parquet('{glob}') where rank = 1 order by user_id").fetchall()
    plain = pads.dataset(served / "plain" / "data", format="parquet").to_table().to_pandas()
    assert top == sorted(plain[plain["rank"] == 1][["user_id", "item_id"]].itertuples(index=False, name=None))


def test_overwrite_with_other_buckets_leaves_no_old_file(served, make_rec):
    catalog = catalog_of(TITLES)
    users = [UserJob(f"u{n}", [f"i{n}"]) for n in range(5)]
    out = served / "bucketed"
    run_batch(RecommenderSpec(catalog), users, out, DecodeSettings(k=2), part_size=4, rec=make_rec(catalog), progress=False,
              user_buckets=1, overwrite=True)  # fmt: skip
    assert sorted(p.relative_to(out).as_posix() for p in (out / "data").rglob("*")) == [
        "data/user_bucket=0", "data/user_bucket=0/part-00000.parquet", "data/user_bucket=0/part-00001.parquet",
    ]  # fmt: skip
    assert pads.dataset(out / "data", format="parquet", partitioning="hive").to_table().num_rows == 10
