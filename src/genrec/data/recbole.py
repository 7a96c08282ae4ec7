"""RecBole atomic files, the format most sequential-recommendation datasets ship in.

A folder holds ``NAME.train.inter``, ``NAME.valid.inter`` and ``NAME.test.inter`` (tab-separated,
header ``user_id:token  item_id_list:token_seq  item_id:token``: one row per prediction, the
history as space-separated item tokens), and the item text in ``NAME.text`` (``item_id:token
text:token_seq``) or a ``NAME.item`` file with a ``title`` field. ``NAME.item2index`` (tab-separated
``original-id index``) maps the text's item IDs onto the integer tokens of the ``.inter`` files.
The files' own split is kept.

Amazon datasets processed for UniSRec store ``title. <root category> <category path>. brand.`` in
the text field: the title is the text before ``. <root category>``, the root being the phrase that
follows ". " in most texts. Items whose title is a scraping placeholder get ``brand category`` as
their title, with their original ID appended when that is shared by several of them.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

from ..catalog import Catalog
from ..errors import DataError
from .datasets import Dataset, Example

__all__ = ["load_recbole", "split_item_text"]

_SPLITS = ("train", "valid", "test")
_PLACEHOLDER = re.compile(r"^\s*(?:/>)?\s*$")


def _name(folder: Path, name: str | None) -> str:
    if name:
        return name
    found = sorted(p.name[: -len(".train.inter")] for p in folder.glob("*.train.inter"))
    if not found:
        raise DataError(f"{folder}: no NAME.train.inter file (RecBole atomic files)")
    if len(found) > 1:
        raise DataError(f"{folder}: several datasets ({', '.join(found)}); name one")
    return found[0]


def _fields(header: list[str], path: Path) -> dict[str, int]:
    columns = {h.split(":", 1)[0].strip().lstrip("\ufeff"): n for n, h in enumerate(header)}
    missing = {"user_id", "item_id_list", "item_id"} - set(columns)
    if missing:
        raise DataError(f"{path}: missing field(s) {', '.join(sorted(missing))} (header: {' '.join(header)})")
    return columns


def _read_inter(path: Path) -> list[Example]:
    if not path.is_file():
        raise DataError(f"RecBole file not found: {path}")
    examples: list[Example] = []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        columns = _fields(next(reader, []), path)
        for fields in reader:
            if not fields or not "".join(fields).strip():
                continue
            if len(fields) <= max(columns.values()):
                raise DataError(f"{path}: row {reader.line_num}: expected {len(columns)} fields, found {len(fields)}")
            history = tuple(fields[columns["item_id_list"]].split())
            examples.append(Example(fields[columns["user_id"]].strip(), history, fields[columns["item_id"]].strip()))
    if not examples:
        raise DataError(f"{path}: no rows")
    return examples


def _read_pairs(path: Path) -> dict[str, str]:
    """A two-column tab-separated file (with or without a ``field:type`` header)."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        for n, line in enumerate(fh, start=1):
            parts = line.rstrip("\r\n").split("\t", 1)
            if len(parts) != 2 or (n == 1 and ":" in parts[0] and ":" in parts[1]):
                continue
            out[parts[0].strip()] = parts[1]
    return out


def _category_root(texts: list[str], share: float = 0.8, max_words: int = 5) -> str | None:
    """The longest phrase that follows ". " in at least ``share`` of the texts."""
    counts: Counter[str] = Counter()
    for text in texts:
        phrases = set()
        for match in re.finditer(r"\. ", text):
            words = text[match.end() :].split(" ")
            phrases.update(" ".join(words[:n]) for n in range(1, max_words + 1) if len(words) >= n)
        counts.update(phrases)
    common = [p for p, c in counts.items() if p and c >= share * len(texts)]
    return max(common, key=lambda p: (len(p.split()), len(p))) if common else None


def split_item_text(text: str, root: str | None) -> tuple[str, str, str]:
    """``(title, category, brand)`` of a UniSRec-style item text; without a root, the whole
    text is the title."""
    text = " ".join(text.split())
    if not root or f". {root}" not in text:
        return text.rstrip(" ."), "", ""
    title, _, rest = text.partition(f". {root}")
    rest = rest.strip().rstrip(".")
    category, _, brand = rest.rpartition(". ")
    if not category:  # no brand part
        category, brand = brand, ""
    title = title.strip()
    title = title[:-2].rstrip() if title.endswith("/>") else title
    if title == root:  # a scraping placeholder: no title, only the root category
        title = ""
    return title, category.strip(), brand.strip()


def _catalog(folder: Path, name: str, item_ids: set[str]) -> Catalog:
    text_path, item_path = folder / f"{name}.text", folder / f"{name}.item"
    if text_path.is_file():
        texts = _read_pairs(text_path)
    elif item_path.is_file():
        texts = _read_item_titles(item_path)
    else:
        raise DataError(f"{folder}: no {name}.text or {name}.item file with the item titles")
    index_path = folder / f"{name}.item2index"
    original = {index: key for key, index in _read_pairs(index_path).items()} if index_path.is_file() else {}
    missing = sorted((i for i in item_ids if original.get(i, i) not in texts), key=lambda i: (len(i), i))
    if missing:
        raise DataError(f"{folder}: {len(missing)} item(s) of the .inter files have no text: {', '.join(missing[:10])}")
    root = _category_root(list(texts.values()))
    records = []
    for item in sorted(item_ids, key=lambda i: (len(i), i)):
        key = original.get(item, item)
        title, category, brand = split_item_text(texts[key], root)
        records.append({"item_id": item, "title": title, "category": category, "brand": brand, "source_id": key})
    placeholders = [r for r in records if _PLACEHOLDER.match(r["title"])]
    built = Counter(" ".join(filter(None, (r["brand"], r["category"]))) for r in placeholders)
    for r in placeholders:
        title = " ".join(filter(None, (r["brand"], r["category"]))) or r["source_id"]
        r["title"] = f"{title} ({r['source_id']})" if built[title] > 1 else title
    return Catalog.from_records(records, name=name)


def _read_item_titles(path: Path) -> dict[str, str]:
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.split(":", 1)[0] for h in next(reader, [])]
        if "item_id" not in header or "title" not in header:
            raise DataError(f"{path}: needs item_id and title fields (header: {' '.join(header)})")
        i, t = header.index("item_id"), header.index("title")
        return {row[i]: row[t] for row in reader if len(row) > max(i, t)}


def load_recbole(data_dir: str | Path, name: str | None = None) -> Dataset:
    """The dataset in ``data_dir`` (the name taken from the file names unless given)."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise DataError(f"RecBole data folder not found: {folder}")
    name = _name(folder, name)
    train, valid, test = (_read_inter(folder / f"{name}.{part}.inter") for part in _SPLITS)
    items = {i for part in (train, valid, test) for e in part for i in (*e.history, e.target)}
    catalog = _catalog(folder, name, items)
    # each user's training sequence: the longest training row, history and target
    sequences: dict[str, list[str]] = {}
    for example in train:
        sequence = [*example.history, example.target]
        if len(sequence) > len(sequences.get(example.user_id, ())):
            sequences[example.user_id] = sequence
    return Dataset(
        name=name,
        catalog=catalog,
        test_examples=test,
        train_examples=train,
        valid_examples=valid,
        train_sequences=sequences,
    )
