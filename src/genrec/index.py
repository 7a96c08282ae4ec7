"""The title index: every catalog title, tokenised as the model writes it after the prompt, in a
prefix trie compiled to flat arrays.

Nodes are numbered depth by depth, and within a depth in the sorted order of the title token
sequences, so the children of every node are one contiguous run of node numbers, sorted by token.
That gives a trie as four integer arrays (no Python object per node): the allowed next tokens of a
node are ``token[first_child[n] : first_child[n] + n_children[n]]``, and the child reached by a
token is found by binary search on ``parent * vocab + token``, which is sorted over all nodes.

A 1M-title catalog compiles in seconds and is cached on disk under a key of the catalog's content,
the tokenizer and the tokenisation context, with a checksum that catches a corrupted file.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IndexCacheError, LimitError

__all__ = [
    "TitleIndex",
    "TitleContext",
    "split_prompt_context",
    "tokenize_titles",
    "build_index",
    "load_or_build_index",
    "tokenizer_fingerprint",
]

log = logging.getLogger(__name__)

INDEX_FORMAT = 2
DEFAULT_MAX_TITLE_TOKENS = 256
# peak memory of an index build per title, measured at 1M synthetic titles (eval/README.md: 446 MB)
# plus headroom for longer titles
BUILD_BYTES_PER_TITLE = 600
_CHUNK = 20_000
_ARRAYS = ("token", "parent", "first_child", "n_children", "node_title", "leaves_below", "title_leaf", "alias_leaf", "alias_title")


@dataclass(frozen=True)
class TitleContext:
    """How titles are tokenised: after ``context`` (the prompt's text since its last special token),
    starting with ``title_prefix`` (whitespace moved off the end of the prompt), closed by
    ``end_text`` (tokenised with the title, e.g. a newline for a plain-text model) and then
    ``end_ids`` (special tokens, e.g. a chat model's end-of-turn)."""

    context: str
    title_prefix: str
    end_ids: tuple[int, ...]
    end_text: str = ""


def split_prompt_context(
    prompt_text: str, special_tokens: Sequence[str], end_ids: Sequence[int], end_text: str = ""
) -> tuple[str, TitleContext]:
    """Split the model's prompt text into (text to feed, title context).

    Trailing spaces or tabs move from the prompt onto the titles: byte-level BPE attaches a space to
    the following word (" Matrix"), so a prompt ending in "Title: " must hand its space to the title
    or the title's first token can never match what the model would write.
    """
    stripped = prompt_text.rstrip(" \t")
    title_prefix = prompt_text[len(stripped) :]
    cut = 0
    for token in special_tokens:
        if token:
            position = stripped.rfind(token)
            if position >= 0:
                cut = max(cut, position + len(token))
    if cut == 0:
        # no special token: the last line (with the newline before it) is enough context for
        # the tokenizer's pre-splitting
        cut = max(stripped.rfind("\n", 0, max(len(stripped) - 1, 0)), 0)
    return stripped, TitleContext(
        context=stripped[cut:], title_prefix=title_prefix, end_ids=tuple(end_ids), end_text=end_text
    )


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of what decides how text is split into tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = backend.to_str()
    else:
        spec = json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = repr((type(tokenizer).__name__, sorted(map(str, tokenizer.all_special_tokens))))
    return hashlib.sha256((spec + extra).encode("utf-8", "surrogatepass")).hexdigest()[:16]


class _TitleEncoder:
    """Encodes titles as plain text: special-token strings inside a title stay text.

    Uses a private copy of the fast tokenizer's Rust backend with special-token splitting on,
    so the shared tokenizer (which may be encoding prompts on another thread) is never touched;
    falls back to the tokenizer's own call for slow tokenizers.
    """

    def __init__(self, tokenizer: Any):
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self.tokenizer = tokenizer
        self.backend = None
        if backend is not None:
            from tokenizers import Tokenizer

            self.backend = Tokenizer.from_str(backend.to_str())
            self.backend.encode_special_tokens = True

    def __call__(self, texts: list[str]) -> list[list[int]]:
        if self.backend is not None:
            return [e.ids for e in self.backend.encode_batch_fast(texts, add_special_tokens=False)]
        return self.tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def _pack(rows: list[list[int]], skip: int, end: list[int], width: int) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` without their first ``skip`` tokens, plus ``end``, as a -1-padded int32 array of
    at least ``width`` columns, and each packed row's length."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows)) - skip + len(end)
    out = np.full((len(rows), max(width, int(lengths.max(initial=0)))), -1, dtype=np.int32)
    flat = np.fromiter(itertools.chain.from_iterable(r[skip:] + end for r in rows), dtype=np.int32, count=int(lengths.sum()))
    row_index = np.repeat(np.arange(len(rows)), lengths)
    col_index = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[row_index, col_index] = flat
    return out, lengths


def tokenize_titles(
    tokenizer: Any,
    titles: Sequence[str],
    ctx: TitleContext,
    *,
    max_title_tokens: int = DEFAULT_MAX_TITLE_TOKENS,
) -> tuple[np.ndarray, int]:
    """Token sequences of ``titles`` as generated after ``ctx`` (end marker included), as a
    ``[n, width]`` int32 array padded with -1; and how many titles needed the fallback of
    tokenising without context (their in-context tokens would merge into the prompt)."""
    encode = _TitleEncoder(tokenizer)
    context_ids = encode([ctx.context])[0] if ctx.context else []
    n_context = len(context_ids)
    end = list(ctx.end_ids)
    out: np.ndarray | None = None
    fallbacks = 0
    for start in range(0, len(titles), _CHUNK):
        batch = titles[start : start + _CHUNK]
        rows = encode([ctx.context + ctx.title_prefix + t + ctx.end_text for t in batch])
        # a title's tokens must follow the context's tokens unchanged; those that merge into the
        # context are tokenised alone instead (counted, and logged below)
        redo = [i for i, r in enumerate(rows) if len(r) <= n_context or r[:n_context] != context_ids]
        if redo:
            fallbacks += len(redo)
            alone = encode([ctx.title_prefix + batch[i] + ctx.end_text for i in redo])
            for i, ids in zip(redo, alone):
                rows[i] = context_ids + ids
        packed, lengths = _pack(rows, n_context, end, 1 if out is None else out.shape[1])
        if lengths.max(initial=0) > max_title_tokens:
            worst = int(lengths.argmax())
            raise LimitError(
                f"title {batch[worst][:80]!r} is {int(lengths[worst])} tokens long "
                f"(limit {max_title_tokens}; raise max_title_tokens)"
            )
        if out is None:
            # the first chunk's widest title, plus a margin: widening later copies everything
            out = np.full((len(titles), packed.shape[1] + 4), -1, dtype=np.int32)
        if packed.shape[1] > out.shape[1]:  # widen what is done so far (rare after the first chunk)
            wider = np.full((len(titles), packed.shape[1]), -1, dtype=np.int32)
            wider[:, : out.shape[1]] = out
            out = wider
        out[start : start + len(batch), : packed.shape[1]] = packed
    if fallbacks:
        log.warning("%d of %d titles could not be tokenised in the prompt's context; tokenised alone", fallbacks, len(titles))
    if out is None:
        return np.full((0, 1), -1, dtype=np.int32), 0
    used = int((out >= 0).sum(axis=0).nonzero()[0].max(initial=0)) + 1  # drop unused margin columns
    return out[:, :used], fallbacks


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
    _torch: dict[str, Any] = field(default_factory=dict)

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
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = dict(self.meta, format=INDEX_FORMAT, vocab_size=self.vocab_size, max_depth=self.max_depth, checksum=self.checksum())
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, meta=np.array(json.dumps(meta)), **{name: getattr(self, name) for name in _ARRAYS})
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

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


def index_key(catalog_hash: str, tokenizer_hash: str, ctx: TitleContext) -> str:
    text = json.dumps(
        [INDEX_FORMAT, catalog_hash, tokenizer_hash, ctx.context, ctx.title_prefix, list(ctx.end_ids), ctx.end_text]
    )
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def available_memory() -> int | None:
    """Bytes of memory available now (Linux: MemAvailable, which counts reclaimable page cache;
    other Unix: free pages); None where the system does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory_for(n_titles: int, free: int | None = None) -> None:
    """A LimitError before building an index that would not fit in memory, instead of the
    operating system killing the process halfway."""
    free = available_memory() if free is None else free
    needed = n_titles * BUILD_BYTES_PER_TITLE
    if free is not None and needed > free:
        raise LimitError(
            f"a title index for {n_titles:,} titles needs about {needed / 2**20:,.0f} MB to build; "
            f"{free / 2**20:,.0f} MB are free (build it on a larger machine once: the cached index "
            f"loads in a fraction of that)"
        )


def load_or_build_index(
    titles: Sequence[str],
    tokenizer: Any,
    ctx: TitleContext,
    *,
    catalog_hash: str,
    cache_dir: Path | None,
    tokenizer_hash: str | None = None,
    vocab_size: int | None = None,
    max_title_tokens: int = DEFAULT_MAX_TITLE_TOKENS,
) -> TitleIndex:
    """The index for these titles in this context: from the disk cache when it is there and sound,
    else built (and cached when ``cache_dir`` is given). A corrupt cache file is reported and rebuilt."""
    tokenizer_hash = tokenizer_hash or tokenizer_fingerprint(tokenizer)
    vocab_size = vocab_size or len(tokenizer)
    path = cache_dir / "indexes" / f"{index_key(catalog_hash, tokenizer_hash, ctx)}.npz" if cache_dir else None
    if path is not None and path.exists():
        try:
            index = TitleIndex.load(path)
            if index.n_titles == len(titles) and index.vocab_size == vocab_size:
                return index
            log.warning("title index %s does not fit this catalog; rebuilding", path)
        except IndexCacheError as exc:
            log.warning("%s; rebuilding it", exc)
    check_memory_for(len(titles))
    sequences, fallbacks = tokenize_titles(tokenizer, titles, ctx, max_title_tokens=max_title_tokens)
    meta = {
        "catalog_hash": catalog_hash,
        "tokenizer": tokenizer_hash,
        "context": ctx.context,
        "title_prefix": ctx.title_prefix,
        "end_ids": list(ctx.end_ids),
        "end_text": ctx.end_text,
        "fallback_titles": fallbacks,
    }
    index = build_index(sequences, vocab_size, meta, in_place=True)
    del sequences
    if path is not None:
        try:
            index.save(path)
        except OSError as exc:  # a read-only cache must not stop recommendations
            log.warning("could not cache the title index in %s: %s", path, exc)
    return index
