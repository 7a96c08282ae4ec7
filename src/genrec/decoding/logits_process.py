"""The title constraint as a transformers ``LogitsProcessor``, for your own ``model.generate``."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from transformers import LogitsProcessor

from .constraint import TitleConstraint
from .index import TitleIndex

__all__ = ["TrieLogitsProcessor"]


class TrieLogitsProcessor(LogitsProcessor):
    """Keeps ``generate`` inside the catalog's titles, except ``banned_titles`` (title numbers:
    a user's history, say).

    Vectorised over rows: each call walks every row's generated tokens through the index with one
    batched lookup per generated position. A row that finished a title or left the trie gets no
    allowed token at all, so its beam dies: there is no fallback to unconstrained text. Use it with
    ``eos_token_id`` set to the index's end marker.
    """

    def __init__(self, index: TitleIndex, prompt_length: int, *, banned_titles: Iterable[int] = ()):
        self.index = index
        self.prompt_length = prompt_length
        self.banned_titles = frozenset(int(t) for t in banned_titles)
        self._constraints: dict[str, TitleConstraint] = {}

    def _constraint(self, device: torch.device) -> TitleConstraint:
        key = str(device)
        if key not in self._constraints:
            self._constraints[key] = TitleConstraint(self.index, device, [self.banned_titles])
        return self._constraints[key]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        constraint = self._constraint(scores.device)
        nodes = torch.zeros(input_ids.shape[0], dtype=torch.long, device=scores.device)
        for column in range(self.prompt_length, input_ids.shape[1]):
            nodes = constraint.advance(nodes, input_ids[:, column])
        return constraint.mask(scores, nodes)
