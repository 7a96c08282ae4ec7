"""The files of a batch job's output folder, each written whole or not at all.

    data/part-00000.parquet  one row per user and rank (``SCHEMA``: user_id, rank, item_id,
                             title, score, run_id); with ``user_buckets`` N, the part's users
                             split by a hash of their ID: data/user_bucket=B/part-00000.parquet
    parts/part-00000.json    the part's record: which users it holds (index range and hash), its
                             files, failures and unknown history entries, time and worker;
                             written after the data, so a record is the proof its part is whole
    manifest.json            the job's settings (fingerprint), every part's users, the summary
    failures.jsonl           users that could not be served, with the reason
    unknown_items.jsonl      users served without some history entries, with those entries

``data/`` holds nothing but data files of one schema, so a warehouse reads it as one table
(``read_parquet('out/data/**/*.parquet', hive_partitioning = true)`` in DuckDB, ``pyarrow.dataset``
or Spark with hive partitioning). Everything is written to a temporary name (a dot first, no
``.parquet``: every reader skips it) in the same folder and renamed, so a run killed at any point
leaves either a complete file or none; a rerun removes stray temporaries.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..atomic import TMP_PREFIX, atomic_file, atomic_write_text, clean_stale
from ..errors import DataError
from .runner import PartOutcome

__all__ = [
    "FORMATS", "LAYOUT", "SCHEMA", "PartPlan", "completed_parts", "plan_parts", "prepare_out_dir", "user_buckets_of", "user_hash", "users_sha", "write_json",
    "write_jsonl", "write_part",
]  # fmt: skip

FORMATS = ("parquet", "jsonl")
MANIFEST = "manifest.json"
DATA, RECORDS = "data", "parts"
#: this folder layout's version, in every job's fingerprint (2: data files under data/, records under parts/)
LAYOUT = 2
_HASH_KEY = "genrec-user-hash"  # 16 bytes, SipHash's key: changing it moves every user


#: the output's columns and their Arrow types, the same in every part (a part whose users all
#: failed included); ``run_id``: the job's settings hash, shared by a resumed job's parts
SCHEMA = (("user_id", "string"), ("rank", "int32"), ("item_id", "string"), ("title", "string"), ("score", "float64"), ("run_id", "string"))


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, kind)()) for name, kind in SCHEMA])


@dataclass(frozen=True)
class PartPlan:
    """Users ``start:end`` of the input (in input order), and a hash of their IDs."""

    number: int
    start: int
    end: int
    users_sha: str
    first_user: str
    last_user: str

    @property
    def users(self) -> int:
        return self.end - self.start


def plan_parts(user_ids: list[str], part_size: int) -> list[PartPlan]:
    if part_size < 1:
        raise DataError(f"part size must be at least 1, got {part_size}")
    plans = []
    for number, start in enumerate(range(0, len(user_ids), part_size)):
        ids = user_ids[start : start + part_size]
        plans.append(PartPlan(number, start, start + len(ids), users_sha(ids), ids[0], ids[-1]))
    return plans


def users_sha(ids: Iterable[str]) -> str:
    """A short hash of a part's user IDs, in order (a record's proof of which users it holds)."""
    digest = hashlib.sha256()
    for user_id in ids:
        digest.update(user_id.encode("utf-8", "surrogatepass") + b"\x1e")
    return digest.hexdigest()[:16]


def part_name(number: int) -> str:
    return f"part-{number:05d}"


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False))


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def user_hash(user_ids: Any) -> np.ndarray:
    """A 64-bit hash of each user ID (pandas' SipHash with a fixed key: the same on every machine,
    Python run and pandas version), computed a column at a time; it places users in streamed parts
    and output buckets."""
    return pd.util.hash_array(np.asarray(user_ids, dtype=object), hash_key=_HASH_KEY, categorize=False)


def user_buckets_of(user_ids: Any, buckets: int) -> list[int]:
    """Each user's output bucket (``--user-buckets``): ``user_hash`` modulo the bucket count."""
    return (user_hash(user_ids) % np.uint64(buckets)).tolist() if len(user_ids) else []


def _write_rows(path: Path, rows: list[dict[str, Any]], fmt: str) -> None:
    if fmt == "jsonl":
        write_jsonl(path, rows)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_file(path) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=_schema()), tmp)


def write_part(
    out_dir: Path, plan: PartPlan, outcome: PartOutcome, fmt: str, fingerprint_sha: str, user_buckets: int | None = None
) -> dict[str, Any]:
    """The part's data files, then its record (the proof of completion). Returns the record."""
    name = part_name(plan.number)
    rows = [{**row, "run_id": fingerprint_sha} for row in outcome.rows()]
    files: dict[str, list[dict[str, Any]]] = {}
    if user_buckets is None:
        files[f"{DATA}/{name}.{fmt}"] = rows
    else:
        bucket = dict(zip(outcome.user_ids, user_buckets_of(outcome.user_ids, user_buckets)))  # the part's IDs hashed together
        for row in rows:
            files.setdefault(f"{DATA}/user_bucket={bucket[row['user_id']]}/{name}.{fmt}", []).append(row)
    for file, part_rows in sorted(files.items()):
        _write_rows(out_dir / file, part_rows, fmt)
    record = {
        "part": plan.number, "files": sorted(files), **{k: v for k, v in asdict(plan).items() if k != "number"},
        "users": plan.users, "rows": len(rows), "served": len(outcome.recommendations),
        "failures": outcome.failures, "unknown": outcome.unknown, "seconds": outcome.seconds,
        "worker": outcome.worker, "peak_rss_mb": outcome.peak_rss_mb, "fingerprint": fingerprint_sha,
    }  # fmt: skip
    write_json(out_dir / RECORDS / f"{name}.json", record)
    return record


def completed_parts(
    out_dir: Path, plans: list[PartPlan], fingerprint_sha: str, *, same_users: bool = True
) -> dict[int, dict[str, Any]]:
    """The records of parts a previous run completed for these same settings (and, with
    ``same_users``, these same users: a streamed part's users are known once it is read, and the
    settings' fingerprint holds the input's)."""
    done: dict[int, dict[str, Any]] = {}
    for plan in plans:
        record_path = out_dir / RECORDS / f"{part_name(plan.number)}.json"
        if not record_path.is_file():
            continue
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # unreadable: redo the part
        whole = all((out_dir / file).is_file() for file in record.get("files", [None]) if file)
        users_match = not same_users or record.get("users_sha") == plan.users_sha
        if whole and users_match and record.get("fingerprint") == fingerprint_sha:
            done[plan.number] = record
    return done


def prepare_out_dir(out_dir: Path, fingerprint: dict[str, Any], overwrite: bool) -> None:
    """Create ``out_dir`` (or check it holds a run of these same settings) and remove temporaries
    a killed run left; an unwritable folder is a DataError."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f"{TMP_PREFIX}{os.getpid()}-probe"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise DataError(f"cannot write to --out {out_dir}: {exc.strerror or exc}") from None
    for folder in (out_dir, out_dir / RECORDS, *(out_dir / DATA).glob("*/"), out_dir / DATA):
        clean_stale(folder)
    manifest = out_dir / MANIFEST
    if overwrite:
        for old in [manifest, out_dir / "failures.jsonl", out_dir / "unknown_items.jsonl", *out_dir.glob("part-*"),
                    *(out_dir / RECORDS).glob("part-*.json"), *(out_dir / DATA).glob("**/part-*")]:  # fmt: skip
            old.unlink(missing_ok=True)
        for bucket in (out_dir / DATA).glob("user_bucket=*/"):
            if not any(bucket.iterdir()):
                bucket.rmdir()  # another bucket count's folders go with their files
        return
    if manifest.is_file():
        try:
            previous = json.loads(manifest.read_text(encoding="utf-8")).get("fingerprint", {})
        except (OSError, ValueError):
            raise DataError(f"{manifest} is unreadable; use another --out, or --overwrite to start over") from None
        differs = sorted(k for k in set(previous) | set(fingerprint) if previous.get(k) != fingerprint.get(k))
        if differs:
            raise DataError(
                f"{out_dir} holds a batch run with other settings ({', '.join(differs)}); use another --out, or --overwrite to start over"
            )
