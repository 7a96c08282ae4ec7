"""What ``genrec batch`` reads: users and their histories, from an interaction log or from one row
per user, checked row by row (a bad row is an error that names it, never a silently missing user).

- An interaction log (CSV, TSV or Parquet): ``user_id, item_id[, timestamp]``. Each user's items
  are put in time order (file order among equal or missing timestamps); users come in the order
  they first appear.
- One row per user (JSONL, or Parquet with a ``history`` column): ``{"user_id", "history": [...],
  "request"?}``; history entries are item IDs or titles, oldest first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError

__all__ = ["UserJob", "check_log_rows", "check_user_rows", "jsonl_rows", "log_jobs", "read_users"]

_LOG_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": ","}


@dataclass
class UserJob:
    """One user to recommend for. ``exclude`` None: the history is excluded. ``prior``: this
    user's own row of per-item log-scores (catalog order), when the caller has one."""

    user_id: str
    history: list[str]
    request: str | None = None
    exclude: list[str] | None = None
    prior: np.ndarray | None = field(default=None, repr=False)


def read_users(path: str | Path, *, sep: str | None = None) -> list[UserJob]:
    """The users of a histories file, in input order; a DataError names the file and the row."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"histories file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        users = _read_jsonl(path)
    elif suffix == ".parquet":
        table = _read_parquet(path)
        users = _user_rows(table, path) if "history" in table.columns else log_jobs(table, path, first_row=0)
    elif suffix in _LOG_SUFFIXES or sep is not None:
        users = log_jobs(_read_csv(path, sep or _LOG_SUFFIXES.get(suffix, ",")), path, first_row=2)
    else:
        raise DataError(f"{path}: unknown histories format {suffix!r} (use .csv, .tsv, .parquet or .jsonl)")
    if not users:
        raise DataError(f"{path} holds no users")
    return users


def _read_csv(path: Path, sep: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot parse as a {sep!r}-separated interaction log: {exc}") from None


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path}: cannot read as Parquet: {exc}") from None


def log_jobs(table: pd.DataFrame, path: Path | str, first_row: int) -> list[UserJob]:
    """Each user of an interaction log table and their items in time order (``path``: the source
    named in errors). Rows numbered as a person finds them: the file's line (CSV, header = line 1) or row index."""
    users, items, stamps = check_log_rows(table, path, first_row)
    order = pd.unique(users)  # users in order of first appearance in the file
    by_time = np.argsort(stamps, kind="stable")  # stable: equal (or missing) timestamps keep file order
    groups = pd.DataFrame({"user_id": users[by_time], "item_id": items[by_time]}).groupby("user_id", sort=False)["item_id"].agg(list)
    return [UserJob(user_id=str(u), history=list(groups[u])) for u in order]


def check_log_rows(table: pd.DataFrame, path: Path | str, first_row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A log's user IDs and item IDs (stripped text) and timestamps (-inf where missing: first),
    or a DataError naming the first bad row (``first_row``: the number of the table's first)."""
    missing = [c for c in ("user_id", "item_id") if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(map(str, table.columns)) or 'none'}); "
                        "an interaction log needs user_id, item_id[, timestamp]")  # fmt: skip
    ids = []
    for column in ("user_id", "item_id"):
        values = table[column].astype("string").str.strip()
        blank = (values.isna() | (values == "")).to_numpy(dtype=bool)
        if blank.any():
            raise DataError(f"{path}: row {int(np.flatnonzero(blank)[0]) + first_row} has no {column}")
        ids.append(values.to_numpy(dtype=object))
    stamps = np.full(len(table), -np.inf)
    if "timestamp" in table.columns:
        parsed = pd.to_numeric(table["timestamp"], errors="coerce")
        bad = (parsed.isna() & table["timestamp"].notna()).to_numpy(dtype=bool)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: row {row + first_row} has timestamp {table['timestamp'].iloc[row]!r}, not a number")
        stamps = parsed.fillna(-np.inf).to_numpy(dtype=np.float64)
    return ids[0], ids[1], stamps


def _user_rows(table: pd.DataFrame, path: Path) -> list[UserJob]:
    records = table.to_dict("records")
    return check_user_rows(enumerate(records), path, "row")


def _read_jsonl(path: Path) -> list[UserJob]:
    try:
        return check_user_rows(jsonl_rows(path), path, "line")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc.reason})") from None


def jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for each non-blank line; a line that is not JSON is an error."""
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {line_no} is not JSON ({exc.msg})") from None


def check_user_rows(rows: Iterable[tuple[int, Any]], path: Path, unit: str, *, repeats: bool = True) -> list[UserJob]:
    """Each (row number, row) as a UserJob, or a DataError naming the row; ``repeats`` False
    leaves the repeated-user check to the caller (a streamed input checks it per part)."""
    users: list[UserJob] = []
    seen: dict[str, Any] = {}
    for where, row in rows:
        if not isinstance(row, dict):
            raise DataError(f"{path}: {unit} {where} is not an object with user_id and history")
        user_id, history, request = row.get("user_id"), row.get("history"), row.get("request")
        if user_id is None or str(user_id).strip() == "" or (isinstance(user_id, float) and np.isnan(user_id)):
            raise DataError(f"{path}: {unit} {where} has no user_id")
        user_id = str(user_id).strip()
        if repeats and user_id in seen:
            raise DataError(f"{path}: {unit} {where} repeats user_id {user_id!r} (first at {unit} {seen[user_id]})")
        seen[user_id] = where
        if isinstance(history, np.ndarray):
            history = history.tolist()
        if history is None:
            history = []
        if not isinstance(history, list) or not all(isinstance(h, (str, int)) and not isinstance(h, bool) for h in history):
            raise DataError(f"{path}: {unit} {where} (user {user_id!r}): history must be a list of item IDs or titles")
        if request is not None and not isinstance(request, str):
            if isinstance(request, float) and np.isnan(request):
                request = None
            else:
                raise DataError(f"{path}: {unit} {where} (user {user_id!r}): request must be text")
        users.append(UserJob(user_id=user_id, history=[str(h) for h in history], request=request or None))
    return users
