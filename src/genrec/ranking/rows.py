"""Each row's ranked list as a ``UserResult``, under the protocol: a scored baseline's top k of the
full catalog, or a Recommender's decoded list (through ``genrec batch``'s path, so one process or
a pool of Ray actors give the same lists). ``genrec_ndcg`` is the validation metric the harness
tunes on and training selects checkpoints by."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..baselines.fit import log_scores
from ..baselines.scored import ScoredMethod
from ..catalog import Catalog
from ..data.datasets import Example
from ..decoding import DEFAULT_FAMILY_SHARE
from ..errors import DataError
from .metrics import UserResult, mean_ndcg, top_k
from .protocol import Protocol

__all__ = ["row_result", "protocol_list", "evaluate_scored", "evaluate_genrec", "genrec_ndcg"]


def evaluate_scored(
    method: ScoredMethod,
    examples: Sequence[tuple[int, Example]],
    *,
    protocol: Protocol,
    on_batch: Callable[[list[UserResult]], None],
    batch_size: int = 256,
    progress: bool = True,
    name: str | None = None,
) -> None:
    """Each row's top-k of the full catalog minus its exclusions, by ``method``'s scores."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(examples), desc=name or method.name, unit="user", disable=not progress)
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        t0 = time.perf_counter()
        scores = method.score([e.history for _, e in batch])
        results = []
        for n, (row, example) in enumerate(batch):
            items = protocol_list(method.catalog, scores[n], example, protocol)
            results.append(row_result(row, example, items, protocol.credit(example.target, items), n_outputs=len(items)))
        per_user = (time.perf_counter() - t0) / len(batch)
        for r in results:
            r.latency_s = per_user
        on_batch(results)
        bar.update(len(batch))
    bar.close()


def protocol_list(catalog: Catalog, scores: np.ndarray, example: Example, protocol: Protocol) -> list[str]:
    """The top-k item IDs of one row's catalog ``scores`` by the protocol (its exclusions and tie order)."""
    return [catalog.ids[i] for i in top_k(scores, protocol.excluded_mask(example.history), protocol.ties, protocol.k)]


def row_result(row: int, example: Example, items: list[str], rank: int | None, **counts: Any) -> UserResult:
    history = set(example.history)
    return UserResult(
        user_id=example.user_id,
        target=example.target,
        items=items,
        rank=rank,
        n_outputs=counts.pop("n_outputs"),
        n_duplicates=counts.pop("n_duplicates", len(items) - len(set(items))),
        n_history_repeats=counts.pop("n_history_repeats", sum(i in history for i in items)),
        row=row,
        **counts,
    )


def evaluate_genrec(
    rec: Any,
    examples: Sequence[tuple[int, Example]],
    *,
    protocol: Protocol,
    constrained: bool,
    max_history: int,
    template: str,
    batch_size: int,
    on_batch: Callable[[list[UserResult]], None],
    progress: bool = True,
    name: str = "genrec",
    prior: ScoredMethod | None = None,
    prior_weight: float = 0.0,
    prior_aggregation: str | None = None,
    workers: int = 1,
    ray_address: str | None = None,
    model: str | None = None,
    dtype: str | None = None,
    runtime: str = "torch",
    search: str = "beam",
) -> None:
    """Prompt the model with the last ``max_history`` items; the whole history is excluded
    (genrec bans by title, as the protocol does); IDs sharing a title follow the tie order.
    ``prior``: a fitted baseline mixed into beam search with ``prior_weight`` and
    ``prior_aggregation`` (its scores see the whole history). Each batch of ``batch_size`` users
    is one part of ``genrec batch``'s path: decoded here (``workers=1``), or by a pool of Ray
    actors each loading ``model`` in ``dtype`` (and ``runtime``) — the same batches, so the same lists. ``search``:
    the model's beam over the whole catalog, or the items nearest in words (``content``)."""
    from tqdm.auto import tqdm

    from ..batch import DecodeSettings, RecommenderSpec, UserJob, decode_parts

    catalog = rec.catalog
    settings = DecodeSettings(
        k=protocol.k, batch_size=batch_size, max_history=max_history, template=template, constrained=constrained,
        prior_weight=prior_weight, prior_aggregation=prior_aggregation, search=search,
    )  # fmt: skip
    batches = [list(examples[start : start + batch_size]) for start in range(0, len(examples), batch_size)]

    def parts():  # lazily: a prior row per user is a whole catalog of scores
        for number, batch in enumerate(batches):
            rows = log_scores(prior, [e.history for _, e in batch]) if prior is not None and prior_weight > 0 else None
            yield number, [
                UserJob(str(row), list(e.history), exclude=list(e.history), prior=rows[n] if rows is not None else None)
                for n, (row, e) in enumerate(batch)
            ]

    # the workers' Recommenders decode as this one does
    spec = RecommenderSpec(
        catalog, model=model, dtype=dtype, runtime=runtime, num_beams=getattr(rec, "num_beams", RecommenderSpec.num_beams),
        max_per_family=getattr(rec, "max_per_family", None), family_share=getattr(rec, "family_share", DEFAULT_FAMILY_SHARE),
    )  # fmt: skip
    bar = tqdm(total=len(examples), desc=name, unit="user", disable=not progress)
    for outcome in decode_parts(spec, settings, parts(), workers=workers, ray_address=ray_address, rec=rec):
        batch = batches[outcome.part]
        if outcome.failures:
            raise DataError(f"{name}: user row {next(iter(outcome.failures))}: {next(iter(outcome.failures.values()))}")
        per_user = outcome.seconds / len(batch)
        on_batch([
            _genrec_result(row, example, outcome.recommendations[str(row)], protocol, constrained, catalog, per_user)
            for row, example in batch
        ])  # fmt: skip
        bar.update(len(batch))
    bar.close()


def genrec_ndcg(
    rec: Any, examples: Sequence[tuple[int, Example]], *, progress: bool = False, name: str = "validation", **decoding: Any
) -> float:
    """Mean NDCG@10 of ``rec``'s lists on ``examples`` (validation rows: the harness's tuning and
    training's checkpoint selection); ``decoding`` is what ``evaluate_genrec`` takes beside them."""
    found: list[UserResult] = []
    evaluate_genrec(rec, examples, on_batch=found.extend, progress=progress, name=name, **decoding)
    return mean_ndcg(r.rank for r in found)


def _genrec_result(
    row: int, example: Example, recs: Any, protocol: Protocol, constrained: bool, catalog: Catalog, latency_s: float
) -> UserResult:
    items = protocol.order_ties([r.item_id for r in recs], [r.score for r in recs])
    if constrained:
        counts = {"n_outputs": len(items), "n_invalid": sum(i not in catalog for i in items)}
    else:
        distinct_titles = len({r.title for r in recs})
        n_out = len(recs.outputs)
        counts = {
            "n_outputs": n_out,
            "n_invalid": len(recs.ungrounded),
            "n_history_repeats": len(recs.history_repeats),
            "n_duplicates": max(n_out - len(recs.ungrounded) - len(recs.history_repeats) - distinct_titles, 0),
        }
    result = row_result(row, example, items, protocol.credit(example.target, items), **counts)
    result.latency_s = latency_s
    result.extra = {"history_dropped": recs.history_dropped}
    return result
