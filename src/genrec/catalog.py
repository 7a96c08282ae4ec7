"""The item catalog: IDs, titles and any attributes, loaded from files, tables or records.

IDs are kept as strings (a file's ``50`` and a caller's ``"50"`` are the same item). Titles shared
by several IDs keep all of them: the model writes titles, so one title maps to a list of IDs.
"""

from __future__ import annotations

import codecs
import hashlib
import threading
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .catalog_rows import LoadReport, SkippedRow, as_text, clean_attribute, problem_message, row_problems
from .errors import CatalogError, UnknownItemError
from .grounding import Grounder
from .tables import JSONL_SUFFIXES, SEPARATOR_BY_SUFFIX, read_delimited, read_jsonl, sniff_separator
from .text import generation_title, short_titles

__all__ = ["Catalog", "LoadReport", "SkippedRow", "generation_title"]

class Catalog:
    """An immutable list of items. Build one with ``from_file``, ``from_dataframe``, ``from_records``
    or ``demo``.

    ``kind`` is the noun templates use for an item ("movie", "book"); ``name`` labels the catalog
    in messages and caches.
    """

    def __init__(
        self,
        ids: Sequence[Any],
        titles: Sequence[Any],
        attributes: pd.DataFrame | None = None,
        *,
        kind: str = "item",
        name: str = "catalog",
        report: LoadReport | None = None,
    ) -> None:
        self.ids: list[str] = [as_text(i) for i in ids]
        self.titles: list[str] = [as_text(t) for t in titles]
        if len(self.ids) != len(self.titles):
            raise CatalogError(f"{name}: {len(self.ids)} IDs but {len(self.titles)} titles")
        problems = row_problems(self.ids, self.titles, list(range(1, len(self.ids) + 1)))
        if problems:
            raise CatalogError(problem_message(name, problems))
        if attributes is None:
            attributes = pd.DataFrame(index=range(len(self.ids)))
        if len(attributes) != len(self.ids):
            raise CatalogError(f"{name}: {len(attributes)} attribute rows for {len(self.ids)} items")
        self.attributes = attributes.reset_index(drop=True)
        self.kind = kind
        self.name = name
        self.report = report or LoadReport(source=name, rows_read=len(self.ids), items=len(self.ids))
        self._position = {item_id: pos for pos, item_id in enumerate(self.ids)}
        groups: dict[str, list[int]] = {}
        for pos, title in enumerate(self.titles):
            groups.setdefault(generation_title(title), []).append(pos)
        #: distinct titles as the model writes them, in first-seen order
        self.unique_titles: list[str] = list(groups)
        #: for each unique title, the positions of every item that carries it
        self.title_positions: list[list[int]] = list(groups.values())
        self._title_index = {title: n for n, title in enumerate(self.unique_titles)}
        #: for each item position, the number of its title
        self.position_titles = np.empty(len(self.ids), dtype=np.int64)
        for n, positions in enumerate(self.title_positions):
            self.position_titles[positions] = n
        self._hash: str | None = None
        self._columns: list[tuple[str, np.ndarray]] | None = None
        self._lock = threading.Lock()
        self._grounder = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_records(
        cls,
        records: Iterable[Mapping[str, Any]],
        *,
        id_column: str = "item_id",
        title_column: str = "title",
        lenient: bool = False,
        kind: str = "item",
        name: str = "records",
    ) -> Catalog:
        """Items from dicts; keys other than the ID and title become attributes."""
        rows: list[tuple[int, Mapping[str, Any]]] = []
        for n, record in enumerate(records, start=1):
            if not isinstance(record, Mapping):
                rows.append((n, {}))  # reported below as a row without ID/title
                continue
            rows.append((n, record))
        return cls._from_rows(rows, id_column, title_column, lenient, kind, name, source=name)

    @classmethod
    def from_dataframe(
        cls,
        df: pd.DataFrame,
        *,
        id_column: str = "item_id",
        title_column: str = "title",
        lenient: bool = False,
        kind: str = "item",
        name: str = "dataframe",
    ) -> Catalog:
        """Items from a table; columns other than the ID and title become attributes."""
        for column in (id_column, title_column):
            if column not in df.columns:
                raise CatalogError(
                    f"{name}: no column {column!r} (columns: {', '.join(map(str, df.columns))}); "
                    f"name the right one with id_column= / title_column="
                )
        records = df.to_dict(orient="records")
        # DataFrame rows are numbered from 1 like file rows, after the header
        return cls._from_rows(list(enumerate(records, start=1)), id_column, title_column, lenient, kind, name, name)

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        id_column: str | None = None,
        title_column: str | None = None,
        sep: str | None = None,
        encoding: str = "utf-8",
        header: bool = True,
        columns: Sequence[str] | None = None,
        quoting: bool | None = None,
        lenient: bool = False,
        kind: str = "item",
    ) -> Catalog:
        """Items from a CSV, TSV, ``sep``-separated or JSONL file.

        With ``header=False`` the columns are named by ``columns`` or ``column_1``, ``column_2``, ...,
        and the ID and title default to the first two columns. MovieLens ``u.item`` loads with
        ``Catalog.from_file(path, sep="|", encoding="latin-1", header=False)``.
        ``quoting`` defaults to on for comma files and off for other separators (``u.item`` titles
        may contain quote characters).
        """
        path = Path(path)
        if not path.is_file():
            raise CatalogError(f"catalog file not found: {path}")
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise CatalogError(f"{path}: unknown encoding {encoding!r}") from None
        try:
            return cls._from_file(path, id_column, title_column, sep, encoding, header, columns, quoting, lenient, kind)
        except OSError as exc:
            raise CatalogError(f"cannot read catalog file {path}: {exc.strerror or exc}") from None

    @classmethod
    def _from_file(cls, path, id_column, title_column, sep, encoding, header, columns, quoting, lenient, kind) -> Catalog:
        if path.suffix.lower() in JSONL_SUFFIXES:
            rows = list(read_jsonl(path, encoding))
            return cls._from_rows(
                rows, id_column or "item_id", title_column or "title", lenient, kind, path.stem, str(path)
            )
        if sep is None:
            sep = SEPARATOR_BY_SUFFIX.get(path.suffix.lower()) or sniff_separator(path, encoding)
        if quoting is None:
            quoting = sep == ","
        names, rows = read_delimited(path, sep, encoding, header, columns, quoting)
        if id_column is None:
            id_column = "item_id" if header else names[0]
        if title_column is None:
            title_column = "title" if header else names[1]
        for column in (id_column, title_column):
            if column not in names:
                raise CatalogError(
                    f"{path}: no column {column!r} (columns: {', '.join(names)}); "
                    f"name the right one with id_column= / title_column="
                )
        return cls._from_rows(rows, id_column, title_column, lenient, kind, path.stem, str(path))

    @classmethod
    def demo(cls) -> Catalog:
        """The bundled demo catalog: well-known films with year and genres (facts only)."""
        with resources.as_file(resources.files("genrec") / "data" / "demo_movies.csv") as path:
            return cls.from_file(path, kind="movie")

    @classmethod
    def _from_rows(
        cls,
        rows: list[tuple[int, Mapping[str, Any]]],
        id_column: str,
        title_column: str,
        lenient: bool,
        kind: str,
        name: str,
        source: str,
    ) -> Catalog:
        report = LoadReport(source=source, rows_read=len(rows))
        unreadable = [(n, r["__error__"]) for n, r in rows if "__error__" in r]
        rows = [(n, r) for n, r in rows if "__error__" not in r]
        ids = [as_text(r.get(id_column)) for _, r in rows]
        titles = [as_text(r.get(title_column)) for _, r in rows]
        row_numbers = [n for n, _ in rows]
        problems = sorted(unreadable + row_problems(ids, titles, row_numbers, id_column, title_column))
        if problems and not lenient:
            raise CatalogError(problem_message(source, problems))
        bad_rows = {n for n, _ in problems}
        report.skipped = [SkippedRow(n, reason) for n, reason in problems]
        keep = [i for i, n in enumerate(row_numbers) if n not in bad_rows]
        attribute_rows = [
            {k: clean_attribute(v) for k, v in rows[i][1].items() if k not in (id_column, title_column)} for i in keep
        ]
        attributes = pd.DataFrame.from_records(attribute_rows) if attribute_rows else pd.DataFrame()
        if attributes.empty and keep:
            attributes = pd.DataFrame(index=range(len(keep)))
        report.items = len(keep)
        return cls(
            [ids[i] for i in keep],
            [titles[i] for i in keep],
            attributes,
            kind=kind,
            name=name,
            report=report,
        )

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: object) -> bool:
        return as_text(item_id) in self._position

    def __repr__(self) -> str:
        return f"Catalog(name={self.name!r}, kind={self.kind!r}, items={len(self)}, titles={len(self.unique_titles)})"

    def position(self, item_id: Any) -> int:
        """The row of an item; raises UnknownItemError naming the ID."""
        key = as_text(item_id)
        try:
            return self._position[key]
        except KeyError:
            raise UnknownItemError(f"unknown item ID {key!r} (not in catalog {self.name!r})", [key]) from None

    def positions(self, item_ids: Iterable[Any]) -> list[int]:
        """Rows of several items; one error lists every unknown ID."""
        keys = [as_text(i) for i in item_ids]
        unknown = [k for k in keys if k not in self._position]
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise UnknownItemError(
                f"{len(unknown)} unknown item ID(s) in catalog {self.name!r}: {shown}", unknown
            )
        return [self._position[k] for k in keys]

    def title_of(self, item_id: Any) -> str:
        return self.titles[self.position(item_id)]

    def item(self, item_id: Any) -> dict[str, Any]:
        """One item as a dict: ``item_id``, ``title`` and its attributes (what templates see)."""
        return self.item_at(self.position(item_id))

    def items(self, item_ids: Iterable[Any]) -> list[dict[str, Any]]:
        return [self.item_at(p) for p in self.positions(item_ids)]

    def item_at(self, pos: int) -> dict[str, Any]:
        """The item at catalog position ``pos`` (0-based, file order) with all its attributes."""
        record = {"item_id": self.ids[pos], "title": self.titles[pos]}
        for key, column in self._attribute_columns():
            record.setdefault(key, clean_attribute(column[pos]))
        return record

    def _attribute_columns(self) -> list[tuple[str, np.ndarray]]:
        # each column's values as an array, made on first use: a row read through pandas costs
        # 0.2 ms, most of a search from words (and a column keeps its own type: an int stays one)
        columns = self._columns
        if columns is None:
            frame = self.attributes
            columns = self._columns = [(str(key), frame.iloc[:, j].to_numpy()) for j, key in enumerate(frame.columns)]
        return columns

    def title_number(self, title: str) -> int | None:
        """Index into ``unique_titles`` of an exact title (after whitespace folding), else None."""
        return self._title_index.get(generation_title(title))

    def ids_for_title(self, title: str) -> list[str]:
        """Every ID that carries this exact title (whitespace folded); empty when none does."""
        n = self.title_number(title)
        return [] if n is None else [self.ids[p] for p in self.title_positions[n]]

    def title_number_of(self, item_id: Any) -> int:
        return int(self.position_titles[self.position(item_id)])

    def with_short_titles(self, min_words: int) -> Catalog:
        """The same items with each title cut to its first ``min_words`` words, or as many more as
        tell it from the others (``genrec.text.short_titles``): long product titles cost tokens in
        every prompt, beam and training window. Each title as it was stays in the ``full_title``
        attribute (unless there is one already)."""
        try:
            titles = short_titles(self.titles, min_words)
        except ValueError as exc:
            raise CatalogError(f"{self.name}: {exc}") from None
        attributes = self.attributes.copy()
        if "full_title" not in attributes.columns:
            attributes["full_title"] = self.titles
        return Catalog(self.ids, titles, attributes, kind=self.kind, name=self.name, report=self.report)

    def to_dataframe(self) -> pd.DataFrame:
        df = pd.DataFrame({"item_id": self.ids, "title": self.titles})
        if len(self.attributes.columns):
            attrs = self.attributes.drop(columns=[c for c in ("item_id", "title") if c in self.attributes.columns])
            df = pd.concat([df, attrs], axis=1)
        return df

    @property
    def content_hash(self) -> str:
        """A hash of the IDs and titles, for cache keys and for checking a model's training catalog."""
        if self._hash is None:
            digest = hashlib.sha256()
            for item_id, title in zip(self.ids, self.titles):
                digest.update(item_id.encode("utf-8", "surrogatepass"))
                digest.update(b"\x1f")
                digest.update(generation_title(title).encode("utf-8", "surrogatepass"))
                digest.update(b"\x1e")
            self._hash = digest.hexdigest()
        return self._hash

    @property
    def grounder(self) -> Grounder:
        """The fuzzy title matcher over this catalog, built once on first use."""
        with self._lock:
            if self._grounder is None:
                self._grounder = Grounder(self)
            return self._grounder

    def search(self, query: str, k: int = 10) -> list:
        """Catalog items whose titles best match ``query`` (fuzzy), best first."""
        return self.grounder.search(query, limit=k)

    def __getstate__(self) -> dict[str, Any]:
        # picklable for worker processes (genrec batch): the lock is per process, the grounder is rebuilt on use
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_grounder", "_columns")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock(), _grounder=None, _columns=None)
