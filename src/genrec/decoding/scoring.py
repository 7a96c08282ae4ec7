"""Scoring known titles: the log-probability of each candidate after one prompt, in one pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache

from .attention import cache_argument
from .vocabulary import OutputVocabulary
from ..errors import ConfigError

__all__ = ["score_continuations"]


@torch.inference_mode()
def score_continuations(
    model: Any,
    prompt: Sequence[int],
    continuations: Sequence[Sequence[int]],
    *,
    chunk_tokens: int = 2048,
    vocabulary: OutputVocabulary | None = None,
) -> list[float]:
    """Log-probability of each continuation (a title's tokens) right after ``prompt``.

    One pass per chunk of candidates: the prompt comes once, then every candidate's tokens, and a
    tree-shaped attention mask lets each candidate token see the prompt and the earlier tokens of
    its own candidate only. Logits are computed only where they predict a candidate token.
    ``vocabulary``: normalise over these tokens alone, as beam search does with it (``vocabulary.py``).
    """
    if not continuations:
        return []
    if any(len(c) == 0 for c in continuations):
        raise ConfigError("empty continuation")
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    cache_arg = cache_argument(model)
    cache = DynamicCache(config=model.config)
    prompt_ids = torch.tensor([list(prompt)], device=device)
    out = model(input_ids=prompt_ids, use_cache=True, logits_to_keep=1, **{cache_arg: cache})
    normalise = vocabulary.to(device).log_softmax if vocabulary is not None else (lambda x: torch.log_softmax(x, dim=-1))
    first_logp = normalise(out.logits[0, -1].float())
    prompt_len = len(prompt)
    prompt_layers = [(layer.keys, layer.values) for layer in cache.layers]
    scores: list[float] = []
    start = 0
    while start < len(continuations):
        # as many candidates as fit the chunk (always at least one)
        end, total = start, 0
        while end < len(continuations) and (end == start or total + len(continuations[end]) <= chunk_tokens):
            total += len(continuations[end])
            end += 1
        batch = [list(c) for c in continuations[start:end]]
        scores.extend(_score_chunk(model, batch, prompt_layers, prompt_len, first_logp, normalise, cache_arg, device, dtype))
        start = end
    return scores


def _score_chunk(model, batch, prompt_layers, prompt_len, first_logp, normalise, cache_arg, device, dtype) -> list[float]:
    tokens = [t for c in batch for t in c]
    n = len(tokens)
    owner = torch.tensor([i for i, c in enumerate(batch) for _ in c], device=device)
    offset = torch.tensor([j for c in batch for j in range(len(c))], device=device)
    # candidate token q may see candidate token k when both belong to the same candidate and k <= q
    allowed = (owner.view(-1, 1) == owner.view(1, -1)) & (offset.view(1, -1) <= offset.view(-1, 1))
    allowed = torch.cat([torch.ones((n, prompt_len), dtype=torch.bool, device=device), allowed], dim=1)
    mask = torch.zeros((1, 1, n, prompt_len + n), dtype=dtype, device=device).masked_fill_(~allowed.view(1, 1, n, -1), torch.finfo(dtype).min)
    cache = DynamicCache(config=model.config)
    for layer_idx, (keys, values) in enumerate(prompt_layers):
        cache.update(keys, values, layer_idx)
    # positions that predict a next token of the same candidate: all but each candidate's last
    predicts = torch.tensor([k for k in range(n) if k + 1 < n and owner[k + 1] == owner[k]], dtype=torch.long, device=device)
    out = model(
        input_ids=torch.tensor([tokens], device=device),
        attention_mask=mask,
        position_ids=(prompt_len + offset).view(1, -1),
        use_cache=True,
        logits_to_keep=predicts if len(predicts) else 1,
        **{cache_arg: cache},
    )
    totals = [float(first_logp[c[0]]) for c in batch]
    if len(predicts):
        logp = normalise(out.logits[0].float())
        nxt = torch.tensor(tokens, device=device)[predicts + 1]
        gained = logp.gather(1, nxt.view(-1, 1)).view(-1)
        per_candidate = torch.zeros(len(batch), device=device).index_add_(0, owner[predicts], gained)
        totals = [a + float(b) for a, b in zip(totals, per_candidate)]
    return totals
