"""Feeding a causal LM several continuations of one prompt at once: left padding, tree-shaped
attention masks, and the name this transformers version gives the cache argument."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["cache_argument", "left_pad", "tree_mask"]


def cache_argument(model: Any) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` during 5.x; use what this model takes."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


def tree_mask(prompt_keep: torch.Tensor, ancestry: torch.Tensor, fed: int, beams: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive 4D mask ``[users, 1, beams, prompt + (fed + 1) * beams]``: beam b sees the real
    prompt tokens, the keys of its ancestors' tokens, and its own new token."""
    users, prompt_len = prompt_keep.shape
    keys = prompt_len + (fed + 1) * beams
    allowed = torch.zeros((users, beams, keys), dtype=torch.bool, device=prompt_keep.device)
    allowed[:, :, :prompt_len] = prompt_keep.unsqueeze(1)
    if fed:
        allowed.scatter_(2, prompt_len + ancestry, True)
    own = prompt_len + fed * beams + torch.arange(beams, device=prompt_keep.device)
    allowed[:, torch.arange(beams, device=prompt_keep.device), own] = True
    mask = torch.zeros((users, 1, beams, keys), dtype=dtype, device=prompt_keep.device)
    return mask.masked_fill_(~allowed.unsqueeze(1), torch.finfo(dtype).min)
