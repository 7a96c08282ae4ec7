"""The output vocabulary: which tokens the next-token distribution is normalised over.

``full`` is the model's own softmax over its whole vocabulary. ``catalog`` normalises over the
tokens the catalog's titles are written with (the tokens of the title index, the separators that
close a title included): every other token is impossible. Constrained decoding only ever takes
such tokens, so a model trained this way spends nothing on telling titles from the rest of the
language; and its output layer is a matrix product with those rows of the output embeddings only
(2,945 of SmolLM2's 49,152 on MovieLens): 1.51x the training targets/s of the full vocabulary on
a 2-core CPU, at the same quality (eval/notes/2026-12-01-movielens-cpu-recipes.md).

A model must be decoded with the vocabulary it was trained with: log-probabilities normalised
over another set rank beams differently. ``genrec.json`` records it, and ``Recommender`` follows it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import VocabularyError
from .index import TitleIndex

__all__ = [
    "OUTPUT_VOCABULARIES", "OutputVocabulary", "CatalogHead", "check_output_vocabulary", "catalog_head", "finish_logits", "head_logits",
]  # fmt: skip

OUTPUT_VOCABULARIES = ("full", "catalog")


def check_output_vocabulary(value: str) -> str:
    if value not in OUTPUT_VOCABULARIES:
        raise VocabularyError(f"output_vocabulary must be one of {', '.join(OUTPUT_VOCABULARIES)}; got {value!r}")
    return value


@dataclass(frozen=True)
class OutputVocabulary:
    """A subset of the model's vocabulary (sorted token ids) the next-token softmax runs over."""

    tokens: torch.Tensor  # int64 [m], sorted, distinct
    slot: torch.Tensor  # int64 [vocab]: each token's place in ``tokens``, -1 for the tokens left out

    @classmethod
    def of_tokens(cls, tokens: Any, vocab_size: int, device: Any = "cpu") -> OutputVocabulary:
        ids = np.unique(np.asarray(tokens, dtype=np.int64))
        if len(ids) == 0:
            raise VocabularyError("an output vocabulary needs at least one token")
        if ids[0] < 0 or ids[-1] >= vocab_size:
            raise VocabularyError(f"output vocabulary token {int(ids[0] if ids[0] < 0 else ids[-1])} is outside the model's {vocab_size} tokens")
        slot = np.full(vocab_size, -1, dtype=np.int64)
        slot[ids] = np.arange(len(ids))
        return cls(torch.from_numpy(ids).to(device), torch.from_numpy(slot).to(device))

    @classmethod
    def of_index(cls, index: TitleIndex, device: Any = "cpu") -> OutputVocabulary:
        """The tokens ``index``'s titles are written with (their closing separators included)."""
        return cls.of_tokens(index.tokens(), index.vocab_size, device)

    @property
    def size(self) -> int:
        return len(self.tokens)

    def to(self, device: Any) -> OutputVocabulary:
        if self.tokens.device == torch.device(device):
            return self
        return OutputVocabulary(self.tokens.to(device), self.slot.to(device))

    def slots_of(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Each token's column in this vocabulary's logits; a token outside it is an error (its
        probability is zero by construction, so a loss on it would be infinite)."""
        slots = self.slot[token_ids]
        if bool((slots < 0).any()):
            outside = sorted({int(t) for t in token_ids[slots < 0].tolist()})[:5]
            raise VocabularyError(f"tokens {outside} are not in the output vocabulary ({self.size} catalog tokens)")
        return slots

    def log_softmax(self, logits: torch.Tensor) -> torch.Tensor:
        """Full-width log-probabilities from full-width logits: -inf outside the vocabulary."""
        out = torch.full_like(logits, -torch.inf)
        out[..., self.tokens] = torch.log_softmax(logits[..., self.tokens], dim=-1)
        return out

    def spread(self, values: torch.Tensor, fill: float = -torch.inf) -> torch.Tensor:
        """``[n, m]`` values over this vocabulary as ``[n, vocab]`` rows, ``fill`` elsewhere."""
        out = values.new_full((values.shape[0], len(self.slot)), fill)
        out[:, self.tokens] = values
        return out


class CatalogHead(torch.nn.Module):
    """An output layer over some rows of another one: logits for ``tokens`` only, from the very
    weight (and bias) of ``head``, so training it trains those rows of the model's own (tied)
    output embeddings."""

    def __init__(self, head: torch.nn.Linear, tokens: torch.Tensor) -> None:
        super().__init__()
        self.weight = head.weight
        self.bias = head.bias
        self.register_buffer("tokens", tokens.to(head.weight.device), persistent=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        bias = self.bias[self.tokens] if self.bias is not None else None
        return torch.nn.functional.linear(hidden, self.weight[self.tokens], bias)


@contextmanager
def catalog_head(model: Any, vocabulary: OutputVocabulary | None) -> Iterator[None]:
    """Within the block, ``model``'s forward computes logits over ``vocabulary`` only (its columns
    in ``vocabulary.tokens`` order); the model's own output layer is back afterwards. With None,
    nothing changes. The swap keeps the model's forward itself (autocast, distributed wrappers)."""
    if vocabulary is None:
        yield
        return
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        raise VocabularyError(f"a catalog output vocabulary needs a linear output layer; {type(model).__name__} has {type(head).__name__}")
    model.set_output_embeddings(CatalogHead(head, vocabulary.tokens))
    try:
        yield
    finally:
        model.set_output_embeddings(head)


def finish_logits(config: Any, logits: torch.Tensor) -> torch.Tensor:
    """What a causal LM's forward does after its output layer, for the models that do anything
    (Cohere's logit scale, Gemma 2's soft-capping): used where genrec applies the LM head itself."""
    scale = getattr(config, "logit_scale", None)
    if scale:
        logits = logits * scale
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def head_logits(model: Any, hidden: torch.Tensor, vocabulary: OutputVocabulary | None) -> torch.Tensor:
    """Float logits of ``hidden`` rows: over the whole vocabulary, or over ``vocabulary`` only
    (``[n, vocabulary.size]``, its rows of the output layer alone)."""
    head = model.get_output_embeddings()
    if vocabulary is not None:
        head = CatalogHead(head, vocabulary.tokens)
    return finish_logits(model.config, head(hidden).float())
