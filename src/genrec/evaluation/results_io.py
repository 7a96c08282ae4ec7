"""Per-row results on disk, ``OUT/users/<method>.jsonl``: one line per row, appended (and synced)
as rows finish, so a killed run resumes from the complete lines; a half-written last line is cut."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError
from ..ranking.metrics import UserResult

__all__ = ["load_results", "read_done", "parse_done", "append_results"]


def load_results(out_dir: Path, method: str) -> list[UserResult]:
    """A finished or partial run's per-row results for one method (``OUT/users/<method>.jsonl``),
    read without touching the file (a run may still be writing it)."""
    path = Path(out_dir) / "users" / f"{method}.jsonl"
    if not path.exists():
        found = sorted(p.stem for p in (Path(out_dir) / "users").glob("*.jsonl"))
        raise DataError(f"no results for {method!r} in {out_dir} (it has: {', '.join(found) or 'none'})")
    return sorted(parse_done(path)[0], key=lambda r: r.row)


def read_done(path: Path) -> list[UserResult]:
    """Results already written; a half-written last line (a kill mid-write) is cut off."""
    if not path.exists():
        return []
    done, good_bytes = parse_done(path)
    if good_bytes != path.stat().st_size:
        with open(path, "r+b") as fh:
            fh.truncate(good_bytes)
    return done


def parse_done(path: Path) -> tuple[list[UserResult], int]:
    """The complete result lines at the start of ``path``, and how many bytes they take."""
    done: list[UserResult] = []
    good_bytes = 0
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break
            try:
                done.append(UserResult.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError, KeyError):
                break
            good_bytes += len(line)
    return done, good_bytes


def append_results(path: Path, results: Sequence[UserResult]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        for r in results:
            fh.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
