"""Writes that a kill cannot leave half done: everything goes to a temporary sibling first
and is renamed into place once complete (a rename within one folder is atomic).

Used for converted models, title indexes, training checkpoints and final model directories,
evaluation results, saved baselines and plots.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_file", "atomic_write_text", "atomic_dir", "discard_dir", "clean_stale"]

TMP_PREFIX = ".tmp-"
_FILE_MODE, _DIR_MODE = 0o644, 0o755


@contextmanager
def atomic_file(path: str | Path, *, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path beside ``path``; when the block ends normally it replaces ``path``,
    when it raises it is removed. ``suffix`` keeps libraries that add an extension from adding one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes files private; results are ordinary files
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = False) -> None:
    """``path.write_text(text)``, atomically."""
    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())


def discard_dir(directory: Path) -> None:
    """Move a directory out of the way (one rename), then delete it: no reader sees it half gone."""
    trash = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}old-", dir=directory.parent))
    os.replace(directory, trash / directory.name)
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def atomic_dir(target: str | Path, *, tmp: Path | None = None) -> Iterator[Path]:
    """Yields a temporary folder beside ``target`` (or ``tmp``, made by the caller); when the
    block ends normally it takes ``target``'s place (an existing ``target`` is discarded first),
    when it raises it is deleted. A block may leave ``target`` in place itself and return early
    by deleting nothing: if ``target`` exists and the yielded folder is gone, nothing happens."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if tmp is None:
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=target.parent))
    else:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, _DIR_MODE)  # mkdtemp makes folders private; a model folder is shared
            if target.exists():
                discard_dir(target)
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def clean_stale(parent: Path, *, older_than_s: float = 0.0, pattern: str = f"{TMP_PREFIX}*") -> None:
    """Delete temporary leftovers of killed writers in ``parent`` (those older than ``older_than_s``:
    a younger one may belong to a writer that is still running)."""
    if not parent.is_dir():
        return
    now = time.time()
    for leftover in parent.glob(pattern):
        try:
            if now - leftover.stat().st_mtime < older_than_s:
                continue
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        except OSError:
            pass
