"""How titles are tokenised: in the context the model writes them, right after the prompt.

A title tokenised alone starts with a different token than the one the model writes after
"assistant\n" or "Title: ", so every title is encoded as the prompt's last line plus the title,
and the context's tokens are cut off again. The split between prompt and title moves trailing
whitespace onto the title (byte-level BPE attaches a space to the following word).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import LimitError

__all__ = ["TitleContext", "split_prompt_context", "tokenize_titles", "tokenizer_fingerprint", "DEFAULT_MAX_TITLE_TOKENS"]

log = logging.getLogger(__name__)

DEFAULT_MAX_TITLE_TOKENS = 256
_CHUNK = 20_000


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
    or the title's first token can never match what the model would write. The context is the
    text after the last special token or newline, whichever comes later (the newline kept).
    """
    stripped = prompt_text.rstrip(" \t")
    title_prefix = prompt_text[len(stripped) :]
    cut = 0
    for token in special_tokens:
        if token:
            position = stripped.rfind(token)
            if position >= 0:
                cut = max(cut, position + len(token))
    # the last line, with the newline before it, is enough context for the tokenizer's
    # pre-splitting; and it is the same for every history when the answer lists the history one
    # title per line, so one title index serves every prompt of such a template
    cut = max(cut, stripped.rfind("\n", cut))
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
