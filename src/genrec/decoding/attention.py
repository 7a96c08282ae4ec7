"""Feeding a causal LM several continuations of one prompt at once: left padding, tree-shaped
attention masks (each beam sees the prompt and its own tokens only, whichever call fed them), and
the name this transformers version gives the cache argument."""

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


def tree_mask(
    prompt_keep: torch.Tensor,
    earlier: torch.Tensor,
    q_user: torch.Tensor,
    column: torch.Tensor,
    q_start: torch.Tensor,
    n_keys: int,
    width: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Additive 4D mask ``[users, 1, width, prompt + n_keys + width]`` for feeding several beams'
    tokens of each user at once, after a cache holding the prompt and ``n_keys`` generated keys.

    Query ``i`` sits at ``(q_user[i], column[i])``; it sees the real prompt positions, the keys of
    its beam's earlier tokens (``earlier[i]``: their slots among the generated keys; -1 pads) and its own
    beam's new tokens from ``q_start[i]`` up to itself. Columns no query was given (padding) see
    the prompt only, and their keys are never in anyone's ``earlier``: no query ever sees them.
    """
    n_users, prompt_len = prompt_keep.shape
    device = column.device
    new = prompt_len + n_keys
    allowed = torch.zeros((n_users, width, new + width), dtype=torch.bool, device=device)
    allowed[:, :, :prompt_len] = prompt_keep.unsqueeze(1)
    if earlier.shape[1]:
        seen = earlier >= 0
        at = seen.nonzero(as_tuple=True)
        allowed[q_user[at[0]], column[at[0]], prompt_len + earlier[at]] = True
    within = torch.arange(width, device=device).view(1, -1)
    allowed[q_user, column, new:] = (within >= q_start.view(-1, 1)) & (within <= column.view(-1, 1))
    mask = torch.zeros((n_users, 1, width, new + width), dtype=dtype, device=device)
    return mask.masked_fill_(~allowed.unsqueeze(1), torch.finfo(dtype).min)
