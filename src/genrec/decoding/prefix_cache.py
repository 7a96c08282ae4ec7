"""The key/value cache of the prompt text every prompt of a template starts with."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

__all__ = ["PrefixCache"]


@dataclass
class PrefixCache:
    """The key/value cache of the tokens every prompt starts with (a template's instructions),
    computed once and reused by every later call whose prompts start the same way.

    The prefix is the longest common token prefix of the prompts seen, so it is exact whatever the
    tokenizer does; when a prompt differs earlier, the stored prefix shrinks, and a shorter prefix
    is a slice of the stored tensors (attention is causal). Safe to share between threads: stored
    tensors are never modified, only replaced.
    """

    min_tokens: int = 8
    ids: tuple[int, ...] = ()
    layers: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    last_prompt: tuple[int, ...] = ()
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get(self, model: Any, prompts: Sequence[Sequence[int]], cache_arg: str) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]]]:
        """``(length, per-layer (keys, values) for one row)`` of a prefix shared by all ``prompts``
        (every prompt keeps at least one token after it), or ``(0, [])``."""
        with self._lock:
            known = [tuple(p) for p in prompts] + ([self.last_prompt] if self.last_prompt else [])
            self.last_prompt = tuple(prompts[0])
            room = min(len(p) for p in prompts) - 1
            if self.ids:
                shared = _common_prefix([self.ids, *map(tuple, prompts)])
                if shared >= self.min_tokens:
                    shared = min(shared, room)
                    if shared < len(self.ids):
                        # a shorter prefix is a slice of the stored one
                        self.ids = self.ids[:shared]
                        self.layers = [(k[:, :, :shared], v[:, :, :shared]) for k, v in self.layers]
                    return len(self.ids), self.layers
            shared = min(_common_prefix(known), room)
            if shared < self.min_tokens or len(known) < 2:
                return 0, []
            ids = tuple(prompts[0][:shared])
            cache = DynamicCache(config=model.config)
            device = next(model.parameters()).device
            model(input_ids=torch.tensor([ids], device=device), use_cache=True, logits_to_keep=1, **{cache_arg: cache})
            self.ids = ids
            self.layers = [(layer.keys, layer.values) for layer in cache.layers]
            return shared, self.layers


def _common_prefix(sequences: Sequence[Sequence[int]]) -> int:
    first = sequences[0]
    n = min(len(s) for s in sequences)
    for i in range(n):
        token = first[i]
        if any(s[i] != token for s in sequences[1:]):
            return i
    return n
