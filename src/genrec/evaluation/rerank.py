"""Reranking fusion, ``genrec-rerank+<baseline>``: the baseline proposes its top ``candidates``
items for a row (the row's exclusions and the run's tie order applied), the language model scores
each proposed title exactly, in the context beam search would write it, and the list is the top k
of

    (1 - w) * log p_model(title) + w * log p_prior(item | candidates)

the same mixture the fused beam (``genrec+<baseline>``) searches for over the whole catalog. Here
it is exact on the candidates rather than approximate over everything: at w = 1 the list is the
baseline's own, at w = 0 the model orders the baseline's candidates. The model's scores do not
depend on w, so a row is scored once and every weight of the tuning grid is read off those scores.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..tasks.rank import score_titles
from .baselines import ScoredMethod
from .datasets import Example
from .fusion import log_scores
from .metrics import top_k
from .protocol import Protocol

__all__ = ["RerankRow", "score_rows", "mixed_list"]


@dataclass(frozen=True)
class RerankRow:
    """One row's candidates (catalog positions, the baseline's order) and their two scores."""

    positions: np.ndarray
    model: np.ndarray  # log p_model(title), the quantity beam search ranks by
    prior: np.ndarray  # the baseline's log-scores normalised over the candidates
    seconds: float  # this row's scoring time, with its share of the baseline's


def score_rows(
    rec: Any,
    examples: Sequence[tuple[int, Example]],
    prior: ScoredMethod,
    *,
    protocol: Protocol,
    candidates: int,
    max_history: int,
    template: str,
    batch_size: int = 64,
    progress: bool = True,
    name: str = "rerank",
) -> list[RerankRow]:
    """Each row's ``candidates`` best items by ``prior`` (whole history seen, exclusions and tie
    order of ``protocol``), scored by ``rec``'s model after the last ``max_history`` items."""
    from tqdm.auto import tqdm

    catalog = protocol.catalog
    out: list[RerankRow] = []
    bar = tqdm(total=len(examples), desc=name, unit="user", disable=not progress)
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        t0 = time.perf_counter()
        scores = log_scores(prior, [e.history for _, e in batch])
        prior_share = (time.perf_counter() - t0) / len(batch)
        for n, (_, example) in enumerate(batch):
            t0 = time.perf_counter() - prior_share
            positions = top_k(scores[n], protocol.excluded_mask(example.history), protocol.ties, candidates)
            history = list(example.history)[-max_history:]
            model = score_titles(rec, history, [catalog.ids[p] for p in positions], template=template, k=protocol.k)
            chosen = scores[n][positions]
            log_prior = chosen - np.logaddexp.reduce(chosen) if len(chosen) else chosen
            out.append(RerankRow(positions, model, log_prior, time.perf_counter() - t0))
            bar.update(1)
    bar.close()
    return out


def mixed_list(row: RerankRow, weight: float, protocol: Protocol) -> list[str]:
    """The row's top-k item IDs by the mixture at ``weight`` (ties by the run's tie order)."""
    catalog = protocol.catalog
    mixed = np.full(len(catalog), -np.inf)
    mixed[row.positions] = (1.0 - weight) * row.model + weight * row.prior if weight < 1.0 else row.prior
    proposed = np.zeros(len(catalog), dtype=bool)
    proposed[row.positions] = True
    return [catalog.ids[p] for p in top_k(mixed, ~proposed, protocol.ties, protocol.k)]
