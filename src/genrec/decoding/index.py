"""The title index: every catalog title, tokenised as the model writes it after the prompt, in a
prefix trie compiled to flat arrays.

Nodes are numbered depth by depth, and within a depth in the sorted order of the title token
sequences, so the children of every node are one contiguous run of node numbers, sorted by token.
That gives a trie as four integer arrays (no Python object per node): the allowed next tokens of a
node are ``token[first_child[n] : first_child[n] + n_children[n]]``, and the child reached by a
token is found by binary search on ``parent * vocab + token``, which is sorted over all nodes.
Files carry a checksum that catches corruption (``index_cache`` decides where they live).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_file
from ..errors import IndexCacheError

__all__ = ["TitleIndex", "build_index", "INDEX_FORMAT"]

INDEX_FORMAT = 2
_ARRAYS = ("token", "parent", "first_child", "n_children", "node_title", "leaves_below", "title_leaf", "alias_leaf", "alias_title")


@dataclass
class TitleIndex:
    """A prefix trie over title token sequences, as flat arrays. Node 0 is the root; the last node
    is a sentinel with no children, where dead beams are parked."""

    token: np.ndarray  # int32: token on the edge into each node (-1: root, sentinel)
    parent: np.ndarray  # int32
    first_child: np.ndarray  # int32
    n_children: np.ndarray  # int32
    node_title: np.ndarray  # int32: title number ending at this node, -1 if none
    leaves_below: np.ndarray  # int32: how many titles end at or below each node
    title_leaf: np.ndarray  # int32: the node where each title ends
    alias_leaf: np.ndarray  # int32: leaves shared by several titles (identical token sequences) ...
    alias_title: np.ndarray  # int32: ... and the extra titles ending there
    vocab_size: int
    max_depth: int
    meta: dict[str, Any] = field(default_factory=dict)
    _keys: np.ndarray | None = None
    _depth_ranges: list[tuple[int, int]] | None = None
    _torch: dict[str, Any] = field(default_factory=dict)
    _families: dict[float, np.ndarray] = field(default_factory=dict)
    _tokens: np.ndarray | None = None

    @property
    def n_nodes(self) -> int:
        return len(self.token)

    @property
    def n_titles(self) -> int:
        return len(self.title_leaf)

    @property
    def sentinel(self) -> int:
        return len(self.token) - 1

    @property
    def keys(self) -> np.ndarray:
        """``parent * vocab + token`` per node (root and sentinel get -1 and int64 max): sorted."""
        if self._keys is None:
            keys = self.parent.astype(np.int64) * self.vocab_size + self.token.astype(np.int64)
            keys[0] = -1
            keys[-1] = np.iinfo(np.int64).max
            self._keys = keys
        return self._keys

    def tokens(self) -> np.ndarray:
        """The distinct tokens on the trie's edges (int64, sorted): every token a title is written
        with, its closing separator included."""
        if self._tokens is None:
            self._tokens = np.unique(self.token[1:-1].astype(np.int64))
        return self._tokens

    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in _ARRAYS) + self.keys.nbytes

    # ---------------------------------------------------------------- queries (numpy, for tests and tools)
    def allowed(self, node: int) -> np.ndarray:
        start = self.first_child[node]
        return self.token[start : start + self.n_children[node]]

    def child(self, node: int, token: int) -> int:
        """The node reached from ``node`` by ``token``, or -1."""
        key = np.int64(node) * self.vocab_size + token
        pos = int(np.searchsorted(self.keys, key))
        return pos if pos < len(self.keys) and self.keys[pos] == key else -1

    def walk(self, tokens: Iterable[int]) -> int:
        node = 0
        for tok in tokens:
            node = self.child(node, int(tok))
            if node < 0:
                return -1
        return node

    def titles_at(self, node: int) -> list[int]:
        """Title numbers that end exactly at ``node`` (usually zero or one)."""
        if node < 0 or self.node_title[node] < 0:
            return []
        extra = self.alias_title[self.alias_leaf == node].tolist() if len(self.alias_leaf) else []
        return [int(self.node_title[node]), *extra]

    def sequence(self, title: int) -> list[int]:
        """The token sequence of title number ``title`` (end marker included)."""
        node = int(self.title_leaf[title])
        out: list[int] = []
        while node > 0:
            out.append(int(self.token[node]))
            node = int(self.parent[node])
        return out[::-1]

    def depth_ranges(self) -> list[tuple[int, int]]:
        """``(first, end)`` node numbers of each depth, root first: nodes are numbered depth by
        depth, and the children of a depth's nodes are one contiguous run."""
        if self._depth_ranges is None:
            ranges = [(0, 1)]
            while True:
                lo, hi = ranges[-1]
                start = int(self.first_child[lo])
                end = int(self.first_child[hi - 1] + self.n_children[hi - 1])
                if end <= start:
                    break
                ranges.append((start, end))
            self._depth_ranges = ranges
        return self._depth_ranges

    def forced_lengths(self) -> np.ndarray:
        """For each node, how many single-child edges follow it in a row: the tokens a beam at
        that node must take whatever the model says (computed from the deepest depth up)."""
        forced = np.zeros(self.n_nodes, dtype=np.int32)
        for lo, hi in reversed(self.depth_ranges()):
            nodes = np.arange(lo, hi)
            single = nodes[self.n_children[lo:hi] == 1]
            forced[single] = 1 + forced[self.first_child[single]]
        forced[self.sentinel] = 0
        return forced

    def families(self, share: float) -> np.ndarray:
        """For each node, the family it lies in (the family's top node), or -1 above every family.

        Titles are variants of one product (colours, sizes, pack counts of an otherwise identical
        title) when they share most of their tokens: a family is the subtree of a node at least
        ``share`` of the way into the longest title below it. Going down a path the node gets
        deeper and its longest title no longer, so the first node that qualifies starts the family
        of every title under it: families are disjoint subtrees, and two titles are in one family
        exactly when their common prefix qualifies. Titles with no close variant form a family of one.
        """
        if share not in self._families:
            ranges = self.depth_ranges()
            depth = np.zeros(self.n_nodes, dtype=np.int32)
            for d, (lo, hi) in enumerate(ranges):
                depth[lo:hi] = d
            longest = np.zeros(self.n_nodes, dtype=np.int32)  # the longest title ending at or below
            longest[self.title_leaf] = depth[self.title_leaf]
            for lo, hi in reversed(ranges[1:]):
                np.maximum.at(longest, self.parent[lo:hi], longest[lo:hi])
            starts = (depth >= 1) & (depth >= share * longest)
            family = np.full(self.n_nodes, -1, dtype=np.int32)
            for lo, hi in ranges[1:]:
                inherited = family[self.parent[lo:hi]]
                family[lo:hi] = np.where(inherited >= 0, inherited, np.where(starts[lo:hi], np.arange(lo, hi), -1))
            self._families[share] = family
        return self._families[share]

    def dead_nodes(self, banned_titles: Iterable[int]) -> np.ndarray:
        """Nodes under which every title is banned: decoding must not enter them.

        Walking up from each banned title's leaf costs O(banned x depth), independent of catalog size.
        """
        banned_count: dict[int, int] = {}
        for title in set(int(t) for t in banned_titles):
            node = int(self.title_leaf[title])
            while node > 0:
                banned_count[node] = banned_count.get(node, 0) + 1
                node = int(self.parent[node])
        dead = [n for n, c in banned_count.items() if c >= self.leaves_below[n]]
        return np.array(sorted(dead), dtype=np.int64)

    def torch_arrays(self, device: Any) -> dict[str, Any]:
        """The arrays decoding needs, as tensors on ``device`` (made once per device). On the CPU
        they share the numpy arrays' memory: a million-title index is not held twice."""
        import torch

        key = str(device)
        if key not in self._torch:
            names = ("token", "first_child", "n_children", "node_title")
            arrays = {name: torch.from_numpy(np.ascontiguousarray(getattr(self, name))) for name in names}
            arrays["keys"] = torch.from_numpy(self.keys)
            arrays["forced"] = torch.from_numpy(self.forced_lengths())
            arrays["columns"] = torch.from_numpy(self.tokens())
            self._torch[key] = {name: t.to(device) for name, t in arrays.items()}
        return self._torch[key]

    # ---------------------------------------------------------------- persistence
    def checksum(self) -> str:
        digest = hashlib.sha256()
        for name in _ARRAYS:
            digest.update(memoryview(np.ascontiguousarray(getattr(self, name))).cast("B"))
        digest.update(f"{self.vocab_size}:{self.max_depth}".encode())
        return digest.hexdigest()

    def save(self, path: Path) -> None:
        """Write atomically: a temporary file in the same folder, then a rename."""
        meta = dict(self.meta, format=INDEX_FORMAT, vocab_size=self.vocab_size, max_depth=self.max_depth, checksum=self.checksum())
        with atomic_file(path, suffix=".npz") as tmp:
            np.savez(tmp, meta=np.array(json.dumps(meta)), **{name: getattr(self, name) for name in _ARRAYS})

    @classmethod
    def load(cls, path: Path) -> TitleIndex:
        """Read an index file; raises IndexCacheError if it is truncated, altered or of another format."""
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = {name: data[name] for name in _ARRAYS}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            raise IndexCacheError(f"title index {path} is unreadable ({type(exc).__name__}: {exc})") from exc
        if meta.get("format") != INDEX_FORMAT:
            raise IndexCacheError(f"title index {path} has format {meta.get('format')}, expected {INDEX_FORMAT}")
        index = cls(**arrays, vocab_size=int(meta["vocab_size"]), max_depth=int(meta["max_depth"]), meta=meta)
        if index.checksum() != meta.get("checksum"):
            raise IndexCacheError(f"title index {path} does not match its checksum (corrupted)")
        return index


def build_index(
    sequences: np.ndarray, vocab_size: int, meta: dict[str, Any] | None = None, *, in_place: bool = False
) -> TitleIndex:
    """Compile padded token sequences (one row per title, -1 padding) into a TitleIndex.

    ``in_place=True`` sorts ``sequences`` itself instead of a copy (for a caller that no longer
    needs it: a million-title build then holds one copy of the tokens, not two).
    """
    n_titles, width = sequences.shape
    if n_titles == 0:
        empty = np.zeros(0, dtype=np.int32)
        return TitleIndex(
            token=np.array([-1, -1], dtype=np.int32),
            parent=np.array([-1, -1], dtype=np.int32),
            first_child=np.array([1, 1], dtype=np.int32),
            n_children=np.zeros(2, dtype=np.int32),
            node_title=np.array([-1, -1], dtype=np.int32),
            leaves_below=np.zeros(2, dtype=np.int32),
            title_leaf=empty,
            alias_leaf=empty,
            alias_title=empty,
            vocab_size=vocab_size,
            max_depth=0,
            meta=dict(meta or {}),
        )
    if sequences.max() >= vocab_size:
        raise IndexCacheError(f"a title token id {int(sequences.max())} is outside the vocabulary ({vocab_size})")
    lengths = (sequences >= 0).sum(axis=1)
    # lexsort sorts by the last key first: give it the columns last-to-first. Padding (-1) sorts
    # before every token, so a title comes right before the titles it is a prefix of.
    order = np.lexsort(sequences.T[::-1]).astype(np.int32)
    if in_place:
        for column in range(width):  # column by column: no second full copy of the tokens
            sequences[:, column] = sequences[order, column]
        ordered = sequences
    else:
        ordered = sequences[order]
    ordered_len = lengths[order]
    del lengths
    first_diff = np.zeros(n_titles, dtype=np.int32)
    for lo in range(1, n_titles, 1 << 18):  # in slices: a [titles x width] boolean at once is big
        hi = min(n_titles, lo + (1 << 18))
        differs = ordered[lo:hi] != ordered[lo - 1 : hi - 1]
        first_diff[lo:hi] = np.where(differs.any(axis=1), differs.argmax(axis=1), width)

    # a row opens new nodes from its first differing column to its end: that many nodes in all
    n_nodes = 2 + int(np.maximum(ordered_len - first_diff, 0).sum())  # root + ... + sentinel
    token = np.full(n_nodes, -1, dtype=np.int32)
    parent = np.full(n_nodes, -1, dtype=np.int32)
    depth_start = [0, 1]
    node_of_row = np.zeros(n_titles, dtype=np.int32)  # node at the previous depth; root first
    title_leaf = np.zeros(n_titles, dtype=np.int32)
    next_id = 1
    for depth in range(width):
        rows = np.nonzero(ordered[:, depth] >= 0)[0]
        if len(rows) == 0:
            break
        starts = first_diff[rows] <= depth
        ids = (next_id + np.cumsum(starts, dtype=np.int64) - 1).astype(np.int32)
        new_rows = rows[starts]
        token[next_id : next_id + len(new_rows)] = ordered[new_rows, depth]
        parent[next_id : next_id + len(new_rows)] = node_of_row[new_rows]
        node_of_row[rows] = ids
        ending = rows[ordered_len[rows] == depth + 1]
        title_leaf[order[ending]] = node_of_row[ending]
        next_id += int(starts.sum())
        depth_start.append(next_id)
    max_depth = len(depth_start) - 2
    sentinel = n_nodes - 1
    if next_id != sentinel:
        raise IndexCacheError(f"title index build counted {sentinel - 1} nodes but made {next_id - 1}")

    n_children = np.bincount(parent[1:sentinel], minlength=n_nodes).astype(np.int32)
    n_children[sentinel] = 0
    # children are numbered contiguously in parent order (depth-major, sorted rows), so node p's
    # children start right after those of nodes 0..p-1: 1 + an exclusive running sum
    first_child = np.empty(n_nodes, dtype=np.int32)
    first_child[0] = 1
    np.cumsum(n_children[:-1], out=first_child[1:])
    first_child[1:] += 1

    # Two titles can share a token sequence (a tokenizer that maps unknown characters to <unk>):
    # the lowest title number owns the leaf, the others are recorded as aliases of it.
    none = np.iinfo(np.int32).max
    owners = np.full(n_nodes, none, dtype=np.int32)
    np.minimum.at(owners, title_leaf, np.arange(n_titles, dtype=np.int32))
    node_title = np.where(owners == none, -1, owners).astype(np.int32)
    extra = np.nonzero(owners[title_leaf] != np.arange(n_titles))[0]
    alias_leaf = title_leaf[extra]
    alias_title = extra

    leaves_below = np.zeros(n_nodes, dtype=np.int32)
    np.add.at(leaves_below, title_leaf, 1)
    for depth in range(max_depth, 0, -1):
        lo, hi = depth_start[depth], depth_start[depth + 1]
        np.add.at(leaves_below, parent[lo:hi], leaves_below[lo:hi])

    return TitleIndex(
        token=token,
        parent=parent,
        first_child=first_child,
        n_children=n_children,
        node_title=node_title,
        leaves_below=leaves_below,
        title_leaf=title_leaf.astype(np.int32),
        alias_leaf=np.asarray(alias_leaf, dtype=np.int32),
        alias_title=np.asarray(alias_title, dtype=np.int32),
        vocab_size=vocab_size,
        max_depth=max_depth,
        meta=dict(meta or {}),
    )
