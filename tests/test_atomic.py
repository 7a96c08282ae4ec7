"""The one atomic-write helper: a kill or an error never leaves a half-written file or folder."""

from __future__ import annotations

import os
import time

import pytest

from genrec.atomic import atomic_dir, atomic_file, atomic_write_text, clean_stale


def test_atomic_file_replaces_only_when_complete(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "first")
    with pytest.raises(RuntimeError):
        with atomic_file(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed midway")
    assert path.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temporary file left
    atomic_write_text(path, "second")
    assert path.read_text() == "second"


def test_atomic_file_keeps_the_suffix_libraries_expect(tmp_path):
    with atomic_file(tmp_path / "a.npz", suffix=".npz") as tmp:
        assert tmp.suffix == ".npz" and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert (tmp_path / "a.npz").read_bytes() == b"x"


def test_atomic_dir_swaps_whole_folders(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "weights").write_text("v2-partial")
            raise ValueError("conversion failed")
    assert (target / "weights").read_text() == "v1"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_clean_stale_spares_young_leftovers(tmp_path):
    old, young = tmp_path / ".tmp-old", tmp_path / ".tmp-young"
    old.mkdir()
    young.write_text("")
    past = time.time() - 7200
    os.utime(old, (past, past))
    clean_stale(tmp_path, older_than_s=3600)
    assert not old.exists() and young.exists()
