"""Streamed input for ``genrec batch``: interaction logs or user-row files (one file, a folder, or
a glob of them, as a warehouse export gives them), read and grouped by user inside Ray Data, so
that no process holds the whole input.

- Each file is read in chunks of ``READ_ROWS`` rows (pyarrow's streaming readers) by a Ray task,
  every row checked where it is read: a bad row is a DataError that names its file and row.
- A row goes to part ``hash(user_id) % parts`` (``parts.user_hash``: the same on every machine),
  so the parts depend on the input alone, never on the worker count or the order files are read.
- Ray Data's ``groupby("part").map_groups`` gathers each part's rows (a hash shuffle that spills
  to disk), and puts each user's items in time order: missing timestamps first, then equal ones
  in input order (file, then row), as ``inputs.read_users`` does for one file. Users in a part go
  in ID order.

What leaves a part is one row: its number and its users (pickled ``UserJob``\\ s), which the
batch job hands to its decoding actors.
"""

from __future__ import annotations

import glob
import hashlib
import math
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from .inputs import UserJob, check_log_rows, check_user_rows, jsonl_rows
from .parts import user_hash

__all__ = ["StreamInput", "stream_parts", "READ_ROWS"]

READ_ROWS = 65_536
_SEPS = {".csv": ",", ".tsv": "\t", ".txt": ","}
_JSON = (".jsonl", ".ndjson", ".json")
_SUFFIXES = (*_SEPS, ".parquet", *_JSON)
#: bytes of input per part when the job does not say how many parts (a deterministic default)
BYTES_PER_PART = 1 << 20


@dataclass(frozen=True)
class StreamInput:
    """The files of one input, in a fixed order, all interaction logs or all user rows."""

    files: tuple[str, ...]
    user_rows: bool
    sep: str | None = None

    @classmethod
    def find(cls, where: str | Path, sep: str | None = None) -> StreamInput:
        """One file, every input file under a folder (names starting with ``.`` or ``_`` skipped,
        as warehouse writers mark their temporaries and metadata), or a glob."""
        text = str(where)
        path = Path(text)
        if path.is_dir():
            found = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _SUFFIXES and not p.name.startswith((".", "_"))]
        elif any(ch in text for ch in "*?["):
            found = [Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file()]
        elif path.is_file():
            found = [path]
        else:
            raise DataError(f"histories {text} does not exist")
        if not found:
            raise DataError(f"histories {text}: no input files there (.csv, .tsv, .parquet, .jsonl)")
        files = tuple(str(p.resolve()) for p in sorted(found))
        unknown = [f for f in files if Path(f).suffix.lower() not in _SUFFIXES and sep is None]
        if unknown:
            raise DataError(f"{unknown[0]}: unknown histories format (use .csv, .tsv, .parquet or .jsonl, or give the separator)")
        kinds = {f: _holds_user_rows(Path(f)) for f in files}
        if len(set(kinds.values())) > 1:
            rows = next(f for f, k in kinds.items() if k)
            log = next(f for f, k in kinds.items() if not k)
            raise DataError(f"histories {text} mixes user rows ({rows}) with an interaction log ({log}); give one kind")
        return cls(files=files, user_rows=next(iter(kinds.values())), sep=sep)

    def identity(self) -> dict[str, Any]:
        """What the job's fingerprint records of its input: the files, their sizes and times (a
        changed file is another input; its bytes are not read twice to say so)."""
        digest = hashlib.sha256()
        for f in self.files:
            stat = Path(f).stat()
            digest.update(f"{f}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode("utf-8", "surrogatepass"))
        return {"histories": self.files[0] if len(self.files) == 1 else f"{len(self.files)} files under {os.path.commonpath(self.files)}",
                "histories_sha": digest.hexdigest()[:16], "histories_kind": "user rows" if self.user_rows else "log"}  # fmt: skip

    def default_parts(self) -> int:
        return max(1, math.ceil(sum(Path(f).stat().st_size for f in self.files) / BYTES_PER_PART))


def _holds_user_rows(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in _JSON:
        return True
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return "history" in pq.read_schema(path).names
        except Exception as exc:  # pyarrow raises several unrelated types for a bad file
            raise DataError(f"{path}: cannot read as Parquet: {exc}") from None
    return False


def stream_parts(source: StreamInput, parts: int, skip: frozenset[int] = frozenset()) -> Any:
    """A Ray Dataset of one row per non-empty part not in ``skip``: ``part`` and ``payload`` (its
    users, pickled). Ray must be initialised."""
    import ray
    import ray.data

    from ray.data.context import ShuffleStrategy

    context = ray.data.DataContext.get_current()
    saved = context.shuffle_strategy
    # the sort-based shuffle: Ray's default hash shuffle starts 200 aggregator actors, which
    # costs a minute before a small job's first part (measured: 39 s against 1.2 s here)
    context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    try:
        files = ray.data.from_items([{"file": n} for n in range(len(source.files))], override_num_blocks=len(source.files))
        rows = files.map_batches(_read_files, batch_size=1, fn_kwargs={"source": source, "parts": parts, "skip": skip})
        shuffle = max(1, min(parts, int(ray.cluster_resources().get("CPU", 1))))  # one partition per core, at most one per part
        return rows.groupby("part", num_partitions=shuffle).map_groups(_part_users, batch_format="pandas", fn_kwargs={"source": source})
    finally:
        context.shuffle_strategy = saved


def _read_files(batch: dict[str, np.ndarray], source: StreamInput, parts: int, skip: frozenset[int]) -> Iterator[dict[str, Any]]:
    for file_no in batch["file"]:
        path = Path(source.files[int(file_no)])
        for chunk in _chunks(path, source):
            part = (user_hash(chunk["user_id"]) % np.uint64(parts)).astype(np.int64)
            keep = ~np.isin(part, list(skip)) if skip else np.ones(len(part), dtype=bool)
            if keep.any():
                yield {"part": part[keep], "file": np.full(int(keep.sum()), int(file_no)), **{k: np.asarray(v)[keep] for k, v in chunk.items()}}


def _chunks(path: Path, source: StreamInput) -> Iterator[dict[str, Any]]:
    """The file's checked rows, ``READ_ROWS`` at a time: ``row`` (as a person finds it: the line
    for text files, the row index for Parquet), ``user_id`` and either ``item_id`` and ``ts``
    (a log) or ``payload`` (a user row's pickled UserJob)."""
    suffix = path.suffix.lower()
    if suffix in _JSON:
        yield from _jsonl_chunks(path)
        return
    first_row = 0 if suffix == ".parquet" else 2  # a text file's header is line 1
    for start, table in _tables(path, suffix, source.sep):
        if source.user_rows:
            yield _user_chunk([(start + n, r) for n, r in enumerate(table.to_dict("records"))], path, "row")
        else:
            yield _log_chunk(table, path, start + first_row)


def _tables(path: Path, suffix: str, sep: str | None) -> Iterator[tuple[int, pd.DataFrame]]:
    """The file as DataFrames of text columns (a log's IDs are never read as numbers), with the
    index of each one's first row."""
    import pyarrow as pa

    start = 0
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            batches: Iterator[Any] = pq.ParquetFile(path).iter_batches(batch_size=READ_ROWS)
        else:
            import pyarrow.csv as pcsv

            delimiter = sep or _SEPS.get(suffix, ",")
            header = _header(path, delimiter)
            batches = iter(pcsv.open_csv(
                path, read_options=pcsv.ReadOptions(block_size=1 << 22),
                parse_options=pcsv.ParseOptions(delimiter=delimiter),
                convert_options=pcsv.ConvertOptions(column_types={name: pa.string() for name in header}, null_values=[""],
                                                    strings_can_be_null=True),
            ))  # fmt: skip
        for batch in batches:
            table = pa.Table.from_batches([batch]).to_pandas()
            yield start, table
            start += len(table)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read (after row {start}): {exc}") from None


def _header(path: Path, delimiter: str) -> list[str]:
    import csv

    with open(path, encoding="utf-8", newline="") as fh:
        header = next(csv.reader(fh, delimiter=delimiter), None)
    if not header:
        raise DataError(f"{path} is empty")
    return header


def _log_chunk(table: pd.DataFrame, path: Path, first_row: int) -> dict[str, Any]:
    """A log's rows, checked as ``inputs`` checks one file."""
    users, items, stamps = check_log_rows(table, path, first_row)
    return {"row": np.arange(first_row, first_row + len(table)), "user_id": users, "item_id": items, "ts": stamps}


def _user_chunk(rows: list[tuple[int, Any]], path: Path, unit: str) -> dict[str, Any]:
    """Numbered user rows, each checked into a UserJob (a bad one is a DataError naming it)."""
    users = check_user_rows(iter(rows), path, unit, repeats=False)
    return {
        "row": np.array([number for number, _ in rows]), "user_id": np.array([u.user_id for u in users], dtype=object),
        "payload": np.array([pickle.dumps(u) for u in users], dtype=object),
    }  # fmt: skip


def _jsonl_chunks(path: Path) -> Iterator[dict[str, Any]]:
    pending: list[tuple[int, Any]] = []
    try:
        for row in jsonl_rows(path):
            pending.append(row)
            if len(pending) == READ_ROWS:
                yield _user_chunk(pending, path, "line")
                pending = []
        if pending:
            yield _user_chunk(pending, path, "line")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc.reason})") from None


def _part_users(group: pd.DataFrame, source: StreamInput) -> pd.DataFrame:
    """One part's rows -> its users in ID order, each history in time order (ties: file, row)."""
    part = int(group["part"].iloc[0])
    if source.user_rows:
        group = group.sort_values(["user_id", "file", "row"], kind="stable")
        repeated = group["user_id"].duplicated(keep="first").to_numpy()
        if repeated.any():
            again = group.iloc[int(np.flatnonzero(repeated)[0])]
            first = group[group["user_id"] == again["user_id"]].iloc[0]
            raise DataError(f"{source.files[int(again['file'])]}: row {int(again['row'])} repeats user_id {again['user_id']!r} "
                            f"(first at {source.files[int(first['file'])]}, row {int(first['row'])})")  # fmt: skip
        users = [pickle.loads(payload) for payload in group["payload"]]
    else:
        group = group.sort_values(["user_id", "ts", "file", "row"], kind="stable")
        items = group.groupby("user_id", sort=True)["item_id"].agg(list)
        users = [UserJob(user_id=str(u), history=list(h)) for u, h in items.items()]
    return pd.DataFrame({"part": [part], "payload": [pickle.dumps(users)]})
