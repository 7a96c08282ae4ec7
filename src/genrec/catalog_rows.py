"""Catalog rows as files and tables give them: each cell made text (IDs) or a plain value
(attributes), each row checked (empty ID or title, duplicate ID, bytes not in the encoding), and
what a load kept and skipped (``LoadReport``): a strict load names the bad rows, a lenient one
counts them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SkippedRow", "LoadReport", "as_text", "clean_attribute", "row_problems", "problem_message"]

_MAX_LISTED_PROBLEMS = 5


@dataclass(frozen=True)
class SkippedRow:
    row: int
    reason: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.reason}"


@dataclass
class LoadReport:
    """What a load read, kept and skipped. Lenient loads skip bad rows; none is dropped silently."""

    source: str
    rows_read: int = 0
    items: int = 0
    skipped: list[SkippedRow] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"{self.source}: {self.rows_read} rows read, {self.items} items, {len(self.skipped)} skipped"
        if self.skipped:
            text += "\n" + "\n".join(f"  {s}" for s in self.skipped[:20])
            if len(self.skipped) > 20:
                text += f"\n  ... and {len(self.skipped) - 20} more"
        return text


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def as_text(value: Any) -> str:
    if _is_missing(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # an ID column pandas read as float: 12.0 -> "12"
    return str(value).strip()


def clean_attribute(value: Any) -> Any:
    if _is_missing(value):
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()  # numpy scalar -> Python scalar, so templates and JSON see plain values
    return value


def row_problems(
    ids: list[str],
    titles: list[str],
    row_numbers: list[int],
    id_column: str = "item_id",
    title_column: str = "title",
) -> list[tuple[int, str]]:
    problems: list[tuple[int, str]] = []
    first_row: dict[str, int] = {}
    for item_id, title, n in zip(ids, titles, row_numbers):
        if not item_id:
            problems.append((n, f"empty {id_column}"))
            continue
        if _has_undecodable(item_id) or _has_undecodable(title):
            problems.append((n, "bytes that are not valid in the file's encoding (pass encoding=...)"))
            continue
        if not title:
            problems.append((n, f"empty {title_column} for {id_column} {item_id!r}"))
            continue
        if item_id in first_row:
            problems.append((n, f"duplicate {id_column} {item_id!r} (first at row {first_row[item_id]})"))
            continue
        first_row[item_id] = n
    return problems


def _has_undecodable(text: str) -> bool:
    # surrogateescape turns each undecodable byte into a lone surrogate U+DC80..U+DCFF
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def problem_message(source: str, problems: list[tuple[int, str]]) -> str:
    lines = [f"{source}: {len(problems)} bad row(s)"]
    lines += [f"  row {n}: {reason}" for n, reason in problems[:_MAX_LISTED_PROBLEMS]]
    if len(problems) > _MAX_LISTED_PROBLEMS:
        lines.append(f"  ... and {len(problems) - _MAX_LISTED_PROBLEMS} more")
    lines.append("pass lenient=True (CLI: --lenient) to skip bad rows and count them in the load report")
    return "\n".join(lines)
