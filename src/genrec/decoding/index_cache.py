"""Title indexes on disk and in memory: one per catalog, tokenizer and tokenisation context.

A 1M-title catalog compiles in seconds and is cached on disk under a key of the catalog's content,
the tokenizer and the context; a corrupt file is reported and rebuilt, and a build that would not
fit in memory is refused before it starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import IndexCacheError, LimitError
from .index import INDEX_FORMAT, TitleIndex, build_index
from .tokenization import DEFAULT_MAX_TITLE_TOKENS, TitleContext, tokenize_titles, tokenizer_fingerprint

__all__ = ["load_or_build_index", "index_key", "available_memory", "check_memory_for", "TitleIndexes", "BUILD_BYTES_PER_TITLE"]

log = logging.getLogger(__name__)

# peak memory of an index build per title, measured at 1M synthetic titles (eval/notes/2026-11-28-decoding-speed.md)
# plus headroom for longer titles
BUILD_BYTES_PER_TITLE = 600


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


class TitleIndexes:
    """The title indexes of one catalog and tokenizer, one per tokenisation context (a template),
    loaded or built on first use. Safe to share between threads: an index is built under a lock
    and never modified afterwards."""

    def __init__(
        self,
        titles: Sequence[str],
        tokenizer: Any,
        *,
        catalog_hash: str,
        vocab_size: int,
        cache_dir: Path | None,
    ) -> None:
        self.titles = titles
        self.tokenizer = tokenizer
        self.catalog_hash = catalog_hash
        self.vocab_size = vocab_size
        self.cache_dir = cache_dir
        self.tokenizer_hash = tokenizer_fingerprint(tokenizer)
        self._built: dict[TitleContext, TitleIndex] = {}
        self._lock = threading.Lock()

    def get(self, ctx: TitleContext) -> TitleIndex:
        with self._lock:
            index = self._built.get(ctx)
            if index is None:
                index = load_or_build_index(
                    self.titles,
                    self.tokenizer,
                    ctx,
                    catalog_hash=self.catalog_hash,
                    cache_dir=self.cache_dir,
                    tokenizer_hash=self.tokenizer_hash,
                    vocab_size=self.vocab_size,
                )
                self._built[ctx] = index
            return index
