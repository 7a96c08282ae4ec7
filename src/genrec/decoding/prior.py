"""A collaborative prior inside constrained beam search (D3's "text-free assistant", made fast).

Each user brings a log-score per title (from Markov, SASRec, popularity or the caller's own
model; -inf for titles the user must not get). Every trie node gets the aggregated prior mass of
the titles below it (log-sum-exp, or max), computed once per search bottom-up, level by level, for
all users at once: the titles under a node are a contiguous subtree, so this is one segment
reduction per level. At every step, each allowed next token gets the mass of its child node,
normalised over the allowed tokens of that beam, and the search scores

    (1 - w) * log p_model(token) + w * log p_prior(token)

With log-sum-exp the prior's per-step terms telescope, so a finished title scores
``(1 - w) * log p_model(title) + w * log p_prior(title | allowed titles)``: w = 0 is the model
alone, w = 1 lets the prior decide and the model only spells the titles.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from .index import TitleIndex
from ..errors import ConfigError

__all__ = ["TitlePrior", "AGGREGATIONS"]

AGGREGATIONS = ("logsumexp", "max")


def _scatter_reduce(src: torch.Tensor, index: torch.Tensor, size: int, aggregation: str) -> torch.Tensor:
    """``out[u, j]`` = log-sum-exp (or max) of ``src[u, i]`` over the ``i`` with ``index[i] == j``."""
    users = src.shape[0]
    idx = index.view(1, -1).expand(users, -1)
    top = torch.full((users, size), float("-inf"), dtype=src.dtype, device=src.device)
    top = top.scatter_reduce(1, idx, src, reduce="amax", include_self=True)
    if aggregation == "max":
        return top
    shift = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    total = torch.zeros_like(top).scatter_add_(1, idx, torch.exp(src - shift.gather(1, idx)))
    return shift + torch.log(total)


class TitlePrior:
    """Per-user prior masses on the nodes of ``index``; ``title_scores`` is ``[users, n_titles]``."""

    def __init__(self, index: TitleIndex, title_scores: torch.Tensor, *, weight: float, aggregation: str = "logsumexp"):
        if aggregation not in AGGREGATIONS:
            raise ConfigError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        self.weight = float(weight)
        self.aggregation = aggregation
        device = title_scores.device
        scores = title_scores.to(torch.float64)
        leaf = torch.as_tensor(index.title_leaf, dtype=torch.long, device=device)
        parent = torch.as_tensor(index.parent, dtype=torch.long, device=device)
        mass = _scatter_reduce(scores, leaf, index.n_nodes, aggregation)
        levels = index.depth_ranges()
        for (plo, phi), (lo, hi) in reversed(list(zip(levels, levels[1:]))):  # deepest level first
            up = _scatter_reduce(mass[:, lo:hi], parent[lo:hi] - plo, phi - plo, aggregation)
            combine = torch.maximum if aggregation == "max" else torch.logaddexp
            mass[:, plo:phi] = combine(mass[:, plo:phi], up)
        self.mass = mass.to(torch.float32)

    def to(self, device: Any) -> TitlePrior:
        """This prior with its masses on ``device`` (itself when they are there already): beam
        search indexes them with tensors on the model's device."""
        device = torch.device(device)
        if self.mass.device == device:
            return self
        moved = copy.copy(self)  # every setting comes along; only the masses are new tensors
        moved.mass = self.mass.to(device)
        return moved

    def mix(self, logp: torch.Tensor, row: torch.Tensor, token: torch.Tensor, child: torch.Tensor, row_users: torch.Tensor) -> torch.Tensor:
        """The mixed score of each allowed entry ``(row, token)``, which leads to ``child``:
        ``(1 - w) * logp[row, token] + w * log p_prior``, the prior normalised over each row's
        allowed entries."""
        model = logp[row, token]
        if self.weight == 0.0 or len(row) == 0:
            return model
        child_mass = self.mass[row_users[row], child]
        norm = _scatter_reduce(child_mass.view(1, -1), row, logp.shape[0], "logsumexp").view(-1)
        prior = child_mass - norm[row]
        # a beam whose allowed titles all have no prior mass gets no prior term
        prior = torch.where(torch.isfinite(norm[row]), prior, torch.zeros_like(prior))
        return (1.0 - self.weight) * model + self.weight * prior

    @staticmethod
    def from_item_scores(
        index: TitleIndex, position_titles: Any, item_scores: Any, banned_titles: list[frozenset[int]], *,
        device: Any = None, **options: Any,
    ) -> TitlePrior:
        """From per-item scores ``[users, n_items]`` (catalog order): a title scores as its best
        ID; ``position_titles`` is each item's title number (``Catalog.position_titles``).
        Computed on ``device`` (the model's; default: where ``item_scores`` are)."""
        scores = torch.as_tensor(item_scores, dtype=torch.float64, device=device)
        users = scores.shape[0]
        owner = torch.as_tensor(position_titles, dtype=torch.long, device=scores.device).view(1, -1).expand(users, -1)
        titles = torch.full((users, index.n_titles), float("-inf"), dtype=torch.float64, device=scores.device)
        titles = titles.scatter_reduce(1, owner, scores, reduce="amax", include_self=True)
        for user, banned in enumerate(banned_titles):
            if banned:
                titles[user, list(banned)] = float("-inf")
        return TitlePrior(index, titles, **options)
