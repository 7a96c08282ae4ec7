"""Interaction datasets in their native formats: MovieLens 100K and 1M, a generic interactions CSV
with a catalog file, and the BIGRec/D3 CSV format.

Each loader returns a ``Dataset``: the catalog plus an interaction log (a DataFrame with
``user_id``, ``item_id``, ``timestamp`` and ``row``, the line order of the source file, which
breaks timestamp ties), or, for D3 files, the given test (and optional training) examples.
MovieLens is under a research licence: genrec never ships it; ``download_movielens`` fetches it
from GroupLens for users who are online.
"""

from __future__ import annotations

import ast
import csv
import os
import shutil
import urllib.request
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from ..atomic import atomic_dir
from ..catalog import Catalog
from ..errors import CatalogError, DataError
from ..text import natural_title, with_years

__all__ = [
    "Dataset",
    "Example",
    "load_dataset",
    "shorten_titles",
    "load_movielens_100k",
    "load_movielens_1m",
    "load_interactions",
    "load_d3csv",
    "download_movielens",
    "natural_title",
    "MOVIELENS_URLS",
]

MOVIELENS_URLS = {
    "ml-100k": "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
    "ml-1m": "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
}
_ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip


@dataclass(frozen=True)
class Example:
    """One prediction task: a user's history (oldest first) and the item that came next."""

    user_id: str
    history: tuple[str, ...]
    target: str


@dataclass
class Dataset:
    """A catalog with either an interaction log (split later by time) or given examples."""

    name: str
    catalog: Catalog
    interactions: pd.DataFrame | None = None
    test_examples: list[Example] = field(default_factory=list)
    train_examples: list[Example] = field(default_factory=list)
    valid_examples: list[Example] = field(default_factory=list)  # a split given with the data (RecBole)
    train_sequences: dict[str, list[str]] = field(default_factory=dict)  # each user's training sequence

    @property
    def has_log(self) -> bool:
        return self.interactions is not None


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    return path


def _log_frame(users: list[str], items: list[str], times: list[int], lines: list[int], source: str) -> pd.DataFrame:
    """The log as a table; ``row`` is each event's line in the source file (file order, and what
    error messages cite)."""
    frame = pd.DataFrame({"user_id": users, "item_id": items, "timestamp": times, "row": lines})
    if frame.empty:
        raise DataError(f"{source}: no interactions")
    return frame


def _check_items(frame: pd.DataFrame, catalog: Catalog, source: str) -> None:
    unknown = sorted(set(frame["item_id"]) - set(catalog.ids))
    if unknown:
        rows = frame.loc[frame["item_id"].isin(unknown[:3]), "row"].tolist()[:3]
        raise DataError(
            f"{source}: {len(unknown)} item IDs are not in the catalog (e.g. {', '.join(map(repr, unknown[:5]))} "
            f"at row(s) {', '.join(map(str, rows))})"
        )


def _movie_titles(raw: list[str], natural_titles: bool, title_years: str) -> list[str]:
    titles = [natural_title(t) if natural_titles else t for t in raw]
    try:
        return with_years(titles, title_years)
    except ValueError as exc:
        raise DataError(str(exc)) from None


def load_movielens_100k(data_dir: str | Path, *, natural_titles: bool = True, title_years: str = "always") -> Dataset:
    """``u.data`` (user, item, rating, time; tab-separated) and ``u.item`` (latin-1, ``|``).

    With ``natural_titles`` the catalog's titles read "The Matrix (1999)"; the file's form is kept
    in the ``movielens_title`` attribute. ``title_years="ambiguous"`` drops the year where no other
    film shares the title ("The Matrix"; see ``genrec.text.with_years``). Genres become a
    ``genres`` attribute ("Action|Sci-Fi").
    """
    data_dir = Path(data_dir)
    item_path = _require(data_dir / "u.item", "MovieLens 100K u.item")
    data_path = _require(data_dir / "u.data", "MovieLens 100K u.data")
    names = ["item_id", "title", "release_date", "video_release_date", "url", *_ML100K_GENRES]
    raw = Catalog.from_file(item_path, sep="|", encoding="latin-1", header=False, columns=names, kind="movie")
    items = [raw.item(item_id) for item_id in raw.ids]
    titles = _movie_titles([item["title"] for item in items], natural_titles, title_years)
    records = []
    for item_id, item, title in zip(raw.ids, items, titles):
        genres = "|".join(g for g in _ML100K_GENRES if item.get(g) == "1")
        records.append(
            {"item_id": item_id, "title": title, "genres": genres, "release_date": item.get("release_date") or None,
             "movielens_title": item["title"]}
        )
    catalog = Catalog.from_records(records, kind="movie", name="ml-100k")
    users, items, times, lines = [], [], [], []
    with open(data_path, encoding="latin-1") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4:
                raise DataError(f"{data_path}: row {n}: expected 4 tab-separated fields, found {len(parts)}")
            try:
                times.append(int(parts[3]))
            except ValueError:
                raise DataError(f"{data_path}: row {n}: timestamp {parts[3]!r} is not a whole number") from None
            users.append(parts[0])
            items.append(parts[1])
            lines.append(n)
    frame = _log_frame(users, items, times, lines, str(data_path))
    _check_items(frame, catalog, str(data_path))
    return Dataset(name="ml-100k", catalog=catalog, interactions=frame)


def load_movielens_1m(data_dir: str | Path, *, natural_titles: bool = True, title_years: str = "always") -> Dataset:
    """``ratings.dat`` (``user::item::rating::time``) and ``movies.dat`` (``item::title::genres``), latin-1;
    titles as in ``load_movielens_100k``."""
    data_dir = Path(data_dir)
    movies = _require(data_dir / "movies.dat", "MovieLens 1M movies.dat")
    ratings = _require(data_dir / "ratings.dat", "MovieLens 1M ratings.dat")
    rows = []
    with open(movies, encoding="latin-1") as fh:
        for n, line in enumerate(fh, start=1):
            parts = line.rstrip("\n").split("::")
            if len(parts) != 3:
                raise DataError(f"{movies}: row {n}: expected 3 '::'-separated fields, found {len(parts)}")
            rows.append(parts)
    titles = _movie_titles([parts[1] for parts in rows], natural_titles, title_years)
    records = [
        {"item_id": parts[0], "title": title, "genres": parts[2], "movielens_title": parts[1]}
        for parts, title in zip(rows, titles)
    ]
    catalog = Catalog.from_records(records, kind="movie", name="ml-1m")
    users, items, times, lines = [], [], [], []
    with open(ratings, encoding="latin-1") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("::")
            if len(parts) != 4 or not parts[3].isdigit():
                raise DataError(f"{ratings}: row {n}: expected user::item::rating::timestamp")
            users.append(parts[0])
            items.append(parts[1])
            times.append(int(parts[3]))
            lines.append(n)
    frame = _log_frame(users, items, times, lines, str(ratings))
    _check_items(frame, catalog, str(ratings))
    return Dataset(name="ml-1m", catalog=catalog, interactions=frame)


def load_interactions(interactions: str | Path, catalog: Catalog | str | Path, **catalog_options: Any) -> Dataset:
    """A CSV with ``user_id,item_id[,timestamp]`` (header required) and a catalog (a ``Catalog`` or a
    file read with ``Catalog.from_file(path, **catalog_options)``). Without timestamps the file's
    line order is the time order."""
    path = _require(Path(interactions), "interactions file")
    if not isinstance(catalog, Catalog):
        catalog = Catalog.from_file(catalog, **catalog_options)
    users, items, times, lines = [], [], [], []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"user_id", "item_id"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))} (have: {', '.join(reader.fieldnames or [])})")
        has_time = "timestamp" in (reader.fieldnames or [])
        for row in reader:
            n = reader.line_num
            user, item = (row.get("user_id") or "").strip(), (row.get("item_id") or "").strip()
            if not user or not item:
                raise DataError(f"{path}: row {n}: empty user_id or item_id")
            if has_time:
                try:
                    times.append(int(float(row["timestamp"])))
                except (TypeError, ValueError):
                    raise DataError(f"{path}: row {n}: timestamp {row.get('timestamp')!r} is not a number") from None
            else:
                times.append(n)
            users.append(user)
            items.append(item)
            lines.append(n)
    frame = _log_frame(users, items, times, lines, str(path))
    _check_items(frame, catalog, str(path))
    return Dataset(name=path.stem, catalog=catalog, interactions=frame)


def _parse_list(value: str, path: Path, n: int, column: str) -> list[str]:
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise DataError(f"{path}: row {n}: column {column} is not a Python list: {value[:60]!r}") from None
    if not isinstance(parsed, (list, tuple)):
        raise DataError(f"{path}: row {n}: column {column} is not a list")
    return [str(x).strip() for x in parsed]


def _read_d3_examples(path: Path, catalog: Catalog) -> list[Example]:
    examples: list[Example] = []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"user_id", "history_item_id", "item_id"}
        missing = need - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for n, row in enumerate(reader, start=2):
            history = _parse_list(row["history_item_id"], path, n, "history_item_id")
            target = str(row["item_id"]).strip()
            unknown = [i for i in [*history, target] if i not in catalog]
            if unknown:
                raise DataError(f"{path}: row {n}: item IDs not in the catalog: {', '.join(map(repr, unknown[:5]))}")
            examples.append(Example(user_id=str(row["user_id"]).strip(), history=tuple(history), target=target))
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def load_d3csv(test: str | Path, catalog: str | Path, *, train: str | Path | None = None) -> Dataset:
    """BIGRec/D3 files: CSVs with ``user_id, history_item_title, item_title, history_item_id,
    item_id`` (histories as Python-list strings) and a catalog file of
    ``SID<TAB>title<TAB>item_id`` lines."""
    catalog_path = _require(Path(catalog), "D3 catalog file")
    items = Catalog.from_file(
        catalog_path, sep="\t", header=False, columns=["sid", "title", "item_id"], id_column="item_id",
        title_column="title", quoting=False,
    )  # fmt: skip
    test_examples = _read_d3_examples(_require(Path(test), "D3 test file"), items)
    train_examples = _read_d3_examples(_require(Path(train), "D3 train file"), items) if train else []
    return Dataset(name=Path(test).stem, catalog=items, test_examples=test_examples, train_examples=train_examples)


def download_movielens(name: str, dest: str | Path, *, url: str | None = None) -> Path:
    """Fetch and unpack a MovieLens archive from GroupLens into ``dest`` (returns the data folder).

    The archive is downloaded to a temporary file and unpacked into a temporary folder that is
    renamed into place, so an interrupted download leaves nothing half-written.
    """
    if name not in MOVIELENS_URLS:
        raise DataError(f"unknown MovieLens dataset {name!r} (have: {', '.join(MOVIELENS_URLS)})")
    dest = Path(dest)
    target = dest / name
    if target.is_dir():
        return target
    source = url or MOVIELENS_URLS[name]
    with atomic_dir(target) as tmp:
        archive, unpack = tmp / ".download.zip", tmp / ".unpack"
        try:
            with urllib.request.urlopen(source, timeout=60) as response, open(archive, "wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as exc:
            raise DataError(f"could not download {source}: {exc} (offline? put the files in {target} yourself)") from exc
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(unpack)
        except zipfile.BadZipFile as exc:
            raise DataError(f"{source} is not a valid zip archive") from exc
        inner = unpack / name
        if not inner.is_dir():
            raise DataError(f"{source} does not contain a {name}/ folder")
        for child in inner.iterdir():
            os.replace(child, tmp / child.name)
        shutil.rmtree(unpack)
        archive.unlink()
    return target


def load_dataset(name: str, data_dir: str | Path | None = None, *, download: bool = False, **options: Any) -> Dataset:
    """By name: ``ml-100k`` / ``ml-1m`` (from ``data_dir``, downloaded there when ``download``),
    ``interactions`` (``interactions=``, ``catalog=``), ``d3csv`` (``test=``, ``catalog=``, ``train=``)
    or ``recbole`` (RecBole atomic files in ``data_dir``). ``title_years`` ("always" or
    "ambiguous") is MovieLens's: see ``load_movielens_100k``. ``title_words=N`` (any dataset) cuts
    every title to its first N words, or as many more as tell it apart: see ``shorten_titles``."""
    title_words = options.pop("title_words", None)
    dataset = _load_dataset(name, data_dir, download=download, **options)
    return dataset if title_words is None else shorten_titles(dataset, title_words)


def shorten_titles(dataset: Dataset, min_words: int) -> Dataset:
    """The dataset with its catalog's titles cut (``Catalog.with_short_titles``)."""
    try:
        return replace(dataset, catalog=dataset.catalog.with_short_titles(min_words))
    except CatalogError as exc:
        raise DataError(str(exc)) from None


def _load_dataset(name: str, data_dir: str | Path | None, *, download: bool, **options: Any) -> Dataset:
    title_years = options.get("title_years") or "always"
    if name in ("ml-100k", "ml-1m"):
        if data_dir is None:
            raise DataError(f"{name} needs a data folder (--data-dir)")
        folder = Path(data_dir)
        marker = "u.data" if name == "ml-100k" else "ratings.dat"
        if not (folder / marker).is_file() and (folder / name / marker).is_file():
            folder = folder / name
        if not (folder / marker).is_file():
            if not download:
                raise DataError(f"{folder / marker} not found; pass download=True (--download) to fetch {name} from GroupLens")
            folder = download_movielens(name, data_dir)
        loader = load_movielens_100k if name == "ml-100k" else load_movielens_1m
        return loader(folder, natural_titles=options.get("natural_titles", True), title_years=title_years)
    if title_years != "always":
        raise DataError(f"title_years={title_years!r} is for MovieLens titles, whose year is part of the title; {name} has none")
    if name == "interactions":
        return load_interactions(options["interactions"], options["catalog"])
    if name == "d3csv":
        return load_d3csv(options["test"], options["catalog"], train=options.get("train"))
    if name == "recbole":
        if data_dir is None:
            raise DataError("recbole needs the folder of the atomic files (--data-dir)")
        from .recbole import load_recbole

        return load_recbole(data_dir)
    raise DataError(f"unknown dataset {name!r} (ml-100k, ml-1m, interactions, d3csv, recbole)")
