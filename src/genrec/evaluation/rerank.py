"""Reranking fusion, ``genrec-rerank+<baseline>``: the baseline proposes its top ``candidates``
items for a row (the row's exclusions and the run's tie order applied), the language model scores
each proposed title exactly, in the context beam search would write it, and the list is the top k
of

    (1 - w) * log p_model(title) + w * log p_prior(item | candidates)

the same mixture the fused beam (``genrec+<baseline>``) searches for over the whole catalog. Here
it is exact on the candidates rather than approximate over everything: at w = 1 the list is the
baseline's own, at w = 0 the model orders the baseline's candidates. The model's scores do not
depend on w, so a row is scored once and every weight of the tuning grid is read off those scores,
for every mixture: that product of the two experts; their sum
``log((1 - w) p_model(title) + w p_prior(item))`` (the prior's softmax over the whole catalog), in
which an item either expert is sure of stays high however little the other gives it; and the
product with the model's log-probability per title token, ``log p_model(title) / n_tokens``. A
title's log-probability falls with every token it has, so between candidates it mostly says how
long their titles are (its spread over a row's candidates is tens of nats, the prior's about one),
which buries the model's opinion in the product unless w is within a hair of 1; per token it is an
opinion on a comparable scale. (Beam search still ranks by the total: there the per-token score
would favour long titles, D3's finding; here the candidates are given, whatever their length.)
``pmi`` mixes in the model's pointwise mutual information instead, ``log p_model(title | history)
- log p_model(title | no history)``: what the history adds to the title's odds, with what the model
would write for anyone (short titles, familiar words) taken out; the surface-form competition
correction of zero-shot scoring, and the one of the four that does not depend on how often the
model has seen a title (a new item's words are as likely after any history).

``genrec-union+<baseline>`` adds the model's own top k titles (constrained beam search, whose
scores are the same log-probabilities) to the candidates, so the list can hold items the baseline
ranks below its top ``candidates``. Below those the baseline's order is not trusted: an added item
counts for the prior as its last candidate does (an unseen pair's similarity of 0 would otherwise
bury every item only the model finds, and a prior's far tail is mostly such near-zero guesses).
At w = 1 the list is still the baseline's own (a tie goes to the baseline's candidate); at w = 0
it is the model's order of the union, so the beam's own list whenever the beam found the model's best.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_file
from ..baselines.fit import log_scores
from ..baselines.scored import ScoredMethod
from ..data.datasets import Example
from ..ranking.metrics import UserResult, top_k
from ..ranking.protocol import Protocol
from ..ranking.rows import row_result
from ..tasks.rank import score_titles, title_lengths
from ..errors import ConfigError

__all__ = ["MIXTURES", "RerankRow", "BaseScores", "score_rows", "mixed_list", "with_lengths", "save_rows", "load_rows", "evaluate_rerank"]

#: how the two scores combine: ``product`` (of experts) adds the log-scores, so an item must
#: please both; ``sum`` (a mixture of experts) adds the probabilities, so either may vouch for it;
#: ``per-token`` is the product with the model's log-probability per title token; ``pmi`` the
#: product with the model's log-probability less the one it gives the title after no history
MIXTURES = ("product", "sum", "per-token", "pmi")


@dataclass(frozen=True)
class RerankRow:
    """One row's candidates (catalog positions: the baseline's, in its order, then any the beam
    added) and their two scores."""

    positions: np.ndarray
    model: np.ndarray  # log p_model(title), the quantity beam search ranks by
    prior: np.ndarray  # the baseline's log-scores normalised over the candidates
    # the baseline's log-probabilities over the whole catalog (its softmax over the items the row
    # may recommend): what the ``sum`` mixture adds to the model's, both being distributions there
    prior_full: np.ndarray
    # how many tokens the model writes for each title there (None: rows kept before lengths were)
    tokens: np.ndarray | None
    seconds: float  # this row's scoring time, with its share of the baseline's
    proposed: int  # how many of ``positions`` the baseline proposed
    # log p_model(title) after the same prompt with no history (None: not scored; ``pmi`` needs it)
    base: np.ndarray | None = None


class BaseScores:
    """Each title's log-probability after the prompt with no history, scored once per item for a
    whole run: it does not depend on the row."""

    def __init__(self, rec: Any, protocol: Protocol, template: str) -> None:
        self.rec, self.protocol, self.template = rec, protocol, template
        self.scores: dict[int, float] = {}

    def of(self, positions: Sequence[int], chunk: int = 64) -> np.ndarray:
        missing = list(dict.fromkeys(int(p) for p in positions if int(p) not in self.scores))
        ids = self.protocol.catalog.ids
        for start in range(0, len(missing), chunk):
            part = missing[start : start + chunk]
            scored = score_titles(self.rec, [], [ids[p] for p in part], template=self.template, k=self.protocol.k)
            self.scores.update(zip(part, scored.tolist()))
        return np.asarray([self.scores[int(p)] for p in positions], dtype=np.float64)

    def add_to(self, rows: Sequence[RerankRow]) -> list[RerankRow]:
        """``rows`` with their ``base`` scores (rows kept before they were, or scored without)."""
        return [row if row.base is not None else replace(row, base=self.of(row.positions)) for row in rows]


def score_rows(
    rec: Any,
    examples: Sequence[tuple[int, Example]],
    prior: ScoredMethod,
    *,
    protocol: Protocol,
    candidates: int,
    max_history: int,
    template: str,
    beam: bool = False,
    batch_size: int = 64,
    decode_batch_size: int = 8,
    progress: bool = True,
    name: str = "rerank",
    base: BaseScores | None = None,
) -> list[RerankRow]:
    """Each row's ``candidates`` best items by ``prior`` (whole history seen, exclusions and tie
    order of ``protocol``), scored by ``rec``'s model after the last ``max_history`` items (and,
    given ``base``, after no history);
    ``beam``: with the model's own top k titles added (decoded ``decode_batch_size`` users at a
    time), the union's order being the baseline's candidates, then the beam's others."""
    from tqdm.auto import tqdm

    catalog = protocol.catalog
    out: list[RerankRow] = []
    bar = tqdm(total=len(examples), desc=name, unit="user", disable=not progress)
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        histories = [list(e.history) for _, e in batch]
        t0 = time.perf_counter()
        scores = log_scores(prior, histories)
        found = (
            rec.recommend_batch([h[-max_history:] for h in histories], protocol.k, excludes=histories, template=template,
                                batch_size=decode_batch_size, search="beam")  # fmt: skip
            if beam else [[] for _ in batch]
        )  # fmt: skip
        shared = (time.perf_counter() - t0) / len(batch)
        for n, history in enumerate(histories):
            t0 = time.perf_counter() - shared
            excluded = protocol.excluded_mask(history)
            proposed = top_k(scores[n], excluded, protocol.ties, candidates)
            # the beam's scores are the log-probabilities score_titles computes: its titles are not scored twice
            by_beam = {p: r.score for r in found[n] if not excluded[p := catalog.position(r.item_id)]}
            union = proposed.tolist()
            known = set(union)
            union += [p for p in by_beam if p not in known]
            unscored = [p for p in union if p not in by_beam]
            scored = dict(zip(unscored, score_titles(
                rec, history[-max_history:], [catalog.ids[p] for p in unscored], template=template, k=protocol.k
            )))  # fmt: skip
            positions = np.asarray(union, dtype=np.int64)
            model = np.asarray([by_beam[p] if p in by_beam else scored[p] for p in union], dtype=np.float64)
            tokens = title_lengths(rec, history[-max_history:], [catalog.ids[p] for p in union], template=template, k=protocol.k)
            chosen = scores[n][positions]
            if len(proposed):  # below its candidates the prior's order is not trusted
                chosen = np.maximum(chosen, scores[n][proposed].min())
            log_prior = chosen - np.logaddexp.reduce(chosen) if len(chosen) else chosen
            full = scores[n][positions] - np.logaddexp.reduce(scores[n][~excluded]) if len(positions) else chosen
            base_scores = base.of(positions) if base is not None else None
            out.append(RerankRow(positions, model, log_prior, full, tokens, time.perf_counter() - t0, len(proposed), base_scores))
            bar.update(1)
    bar.close()
    return out


def mixed_list(row: RerankRow, weight: float, protocol: Protocol, mixture: str = "product") -> list[str]:
    """The row's top-k item IDs by the ``mixture`` at ``weight``; on a tie the baseline's candidates
    come before the beam's additions, then the run's tie order. ``product``:
    ``(1 - w) log p_model + w log p_prior(. | candidates)``; ``sum``:
    ``log((1 - w) p_model + w p_prior)``, the prior's probability over the whole catalog;
    ``per-token``: ``(1 - w) log p_model / n_tokens + w log p_prior(. | candidates)``; ``pmi``:
    ``(1 - w) (log p_model - log p_model(. | no history)) + w log p_prior(. | candidates)``."""
    if mixture not in MIXTURES:
        raise ConfigError(f"unknown mixture {mixture!r}: one of {', '.join(MIXTURES)}")
    if mixture == "per-token" and row.tokens is None:
        raise ConfigError("these rows were kept without their title lengths: add them with with_lengths")
    if mixture == "pmi" and row.base is None:
        raise ConfigError("these rows were scored without the model's no-history scores: add them with BaseScores.add_to")
    model = row.model / row.tokens if mixture == "per-token" else row.model - row.base if mixture == "pmi" else row.model
    if weight >= 1.0:
        mixed = row.prior_full if mixture == "sum" else row.prior
    elif weight <= 0.0:
        mixed = model
    elif mixture != "sum":
        mixed = (1.0 - weight) * model + weight * row.prior
    else:
        mixed = np.logaddexp(np.log1p(-weight) + row.model, np.log(weight) + row.prior_full)
    added = np.arange(len(row.positions)) >= row.proposed
    order = np.lexsort((protocol.ties[row.positions], added, -mixed))
    return [protocol.catalog.ids[p] for p in row.positions[order[: protocol.k]]]


def with_lengths(
    rows: Sequence[RerankRow], rec: Any, examples: Sequence[tuple[int, Example]], *, protocol: Protocol, max_history: int,
    template: str,
) -> list[RerankRow]:
    """``rows`` (scored for ``examples`` by ``score_rows`` with these settings) with their titles'
    token counts, for rows kept without them: counting needs no model pass."""
    ids = protocol.catalog.ids
    return [
        row if row.tokens is not None else replace(row, tokens=title_lengths(
            rec, list(e.history)[-max_history:], [ids[p] for p in row.positions], template=template, k=protocol.k
        ))  # fmt: skip
        for (_, e), row in zip(examples, rows)
    ]


_ARRAYS = ("positions", "model", "prior", "prior_full", "tokens", "base")


def save_rows(path: Path, rows: Sequence[RerankRow]) -> None:
    """``rows`` in one ``.npz`` (each array concatenated, with every row's length), written whole
    or not at all, so another grid or mixture is tried on them later without scoring again."""
    arrays = {
        name: np.concatenate([getattr(r, name) for r in rows]) if rows else np.zeros(0)
        for name in _ARRAYS if all(getattr(r, name) is not None for r in rows)
    }
    with atomic_file(path, suffix=".npz") as tmp:
        np.savez(tmp, lengths=np.asarray([len(r.positions) for r in rows], dtype=np.int64),
                 seconds=np.asarray([r.seconds for r in rows]), proposed=np.asarray([r.proposed for r in rows], dtype=np.int64),
                 **arrays)  # fmt: skip


def load_rows(path: Path) -> list[RerankRow]:
    """The rows ``save_rows`` wrote."""
    with np.load(path) as saved:
        data = {name: saved[name] for name in saved.files}
    bounds = np.concatenate([[0], np.cumsum(data["lengths"])])
    return [
        RerankRow(**{name: data[name][a:b] if name in data else None for name in _ARRAYS}, seconds=float(data["seconds"][n]),
                  proposed=int(data["proposed"][n]))  # fmt: skip
        for n, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))
    ]


def evaluate_rerank(
    rec: Any,
    examples: Sequence[tuple[int, Example]],
    prior: ScoredMethod,
    *,
    weight: float,
    mixture: str = "product",
    protocol: Protocol,
    candidates: int,
    max_history: int,
    template: str,
    on_batch: Callable[[list[UserResult]], None],
    beam: bool = False,
    batch_size: int = 8,
    progress: bool = True,
    name: str = "genrec-rerank",
) -> None:
    """Each row's list: ``prior``'s top ``candidates`` (with ``beam``, and the model's own top k)
    reordered by the ``mixture`` at ``weight`` (see ``rerank.py``); results are handed over
    ``batch_size`` rows at a time."""
    from tqdm.auto import tqdm

    base = BaseScores(rec, protocol, template) if mixture == "pmi" else None
    bar = tqdm(total=len(examples), desc=name, unit="user", disable=not progress)
    for start in range(0, len(examples), batch_size):
        batch = list(examples[start : start + batch_size])
        rows = score_rows(
            rec, batch, prior, protocol=protocol, candidates=candidates, max_history=max_history, template=template,
            beam=beam, decode_batch_size=batch_size, progress=False, base=base,
        )  # fmt: skip
        results = []
        for (row, example), scored in zip(batch, rows):
            items = mixed_list(scored, weight, protocol, mixture)
            result = row_result(row, example, items, protocol.credit(example.target, items), n_outputs=len(items))
            result.latency_s = scored.seconds
            results.append(result)
        on_batch(results)
        bar.update(len(batch))
    bar.close()
