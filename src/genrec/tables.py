"""Reading item tables from files: separated text (CSV, TSV, ``|``, ...) and JSONL.

Rows come back numbered as in the file, so every problem can name its row; a row that cannot be
parsed comes back as ``{"__error__": reason}`` for the catalog to report (strict) or count (lenient).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import CatalogError

__all__ = ["read_delimited", "read_jsonl", "sniff_separator", "SEPARATOR_BY_SUFFIX", "JSONL_SUFFIXES"]

SEPARATOR_BY_SUFFIX = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}


def sniff_separator(path: Path, encoding: str) -> str:
    with open(path, encoding=encoding, errors="replace", newline="") as fh:
        first = fh.readline()
    counts = {sep: first.count(sep) for sep in ("\t", "|", ",", ";")}
    best = max(counts, key=lambda s: counts[s])
    if counts[best] == 0:
        raise CatalogError(f"{path}: cannot tell the column separator from the first line; pass sep=...")
    return best


def read_delimited(
    path: Path, sep: str, encoding: str, header: bool, columns: Sequence[str] | None, quoting: bool
) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    rows: list[tuple[int, dict[str, Any]]] = []
    # surrogateescape keeps undecodable bytes so the row that holds them can be named
    with open(path, encoding=encoding, errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh, delimiter=sep, quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
        names: list[str] | None = list(columns) if columns else None
        try:
            if header:
                head = next(reader, None)
                if head is None:
                    return names or ["item_id", "title"], []
                head = [h.strip().lstrip("\ufeff") for h in head]
                names = names or head
            for fields in reader:
                line = reader.line_num
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue  # blank line
                if names is None:
                    names = [f"column_{i + 1}" for i in range(len(fields))]
                if len(fields) != len(names):
                    rows.append((line, {"__error__": f"expected {len(names)} fields, found {len(fields)}"}))
                    continue
                rows.append((line, dict(zip(names, fields))))
        except csv.Error as exc:
            raise CatalogError(f"{path}: row {reader.line_num}: unreadable ({exc})") from exc
    return names or ["item_id", "title"], rows


def read_jsonl(path: Path, encoding: str) -> Iterable[tuple[int, dict[str, Any]]]:
    with open(path, encoding=encoding, errors="surrogateescape") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield n, {"__error__": f"not valid JSON ({exc.msg} at column {exc.colno})"}
                continue
            if not isinstance(record, dict):
                yield n, {"__error__": f"expected a JSON object, found {type(record).__name__}"}
                continue
            yield n, record
