"""Fused methods, ``genrec+<baseline>``: the language model with a baseline as its collaborative
prior inside beam search, the prior weight tuned on validation targets only;
``genrec-rerank+<baseline>``: the same mixture, exact on the baseline's top candidates; and
``genrec-union+<baseline>``: exact on those candidates together with the beam's own titles
(both in ``rerank.py``).

The baseline's scores become log-scores (SASRec's are logits already; counts and similarities
are logged). The weight is chosen from ``EvalConfig.prior_grid``, the aggregation from
``EvalConfig.prior_aggregations`` and, when the run gives several, the history length shown
from ``EvalConfig.history_grid`` (which tunes ``genrec`` alone too), by NDCG@10 on a seeded
sample of validation rows under the run's own protocol; the test rows are decoded once with the
choice (a reranking method tunes its mixture, ``EvalConfig.rerank_mixtures``, instead of the
aggregation). The grid and what each setting scored are kept in ``tuning/<method>.json`` (a rerun
reuses them) and in ``results.json`` under the method's ``tuned``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..errors import DataError

__all__ = ["FUSED_PREFIX", "RERANK_PREFIX", "UNION_PREFIX", "is_fused", "is_rerank", "is_union", "prior_of", "tune_on_validation", "describe_tuning"]

FUSED_PREFIX = "genrec+"
RERANK_PREFIX = "genrec-rerank+"
UNION_PREFIX = "genrec-union+"
_PREFIXES = (FUSED_PREFIX, RERANK_PREFIX, UNION_PREFIX)
# what a tuning file written before its second setting was tuned tried: the default
_UNTUNED = {"prior_aggregation": "logsumexp", "mixture": "product"}


def is_fused(name: str) -> bool:
    """A method that mixes the model with a baseline (in the beam, or reranking)."""
    return name.startswith(_PREFIXES)


def is_rerank(name: str) -> bool:
    """A method that scores a candidate list exactly (the baseline's top items, or those and the
    beam's titles) rather than mixing the prior into the beam."""
    return name.startswith((RERANK_PREFIX, UNION_PREFIX))


def is_union(name: str) -> bool:
    return name.startswith(UNION_PREFIX)


def prior_of(name: str) -> str:
    """The baseline a fused method uses as its prior."""
    return name[len(next(p for p in _PREFIXES if name.startswith(p))) :]


def tune_on_validation(
    validation_ndcg: Callable[[float, str, int], float],
    path: Path,
    valid_rows: int,
    *,
    histories: Sequence[int],
    weights: Sequence[float] = (0.0,),
    aggregations: Sequence[str] = ("logsumexp",),
    alone: dict[int, float] | None = None,
    weighted: bool = False,
    setting: str = "prior_aggregation",
) -> dict[str, Any]:
    """The best decoding settings by ``validation_ndcg(weight, aggregation, history)`` on
    ``valid_rows`` validation rows, over every history length x aggregation x weight; kept in
    ``path`` so a rerun does not decode them again.

    Weight 0 is the model alone, whatever the aggregation: decoded once per history length, and
    shared through ``alone`` (history -> score) with every other method tuned in the same run (a
    file read back fills it too).
    ``weighted``: the method mixes a prior even when the grid is only weight 0 (a reranking
    method, whose weight 0 is not the model alone, and depends on the mixture: per token or not).
    ``setting``: what ``aggregations`` are, as the records name it (``prior_aggregation`` for the
    beam, ``mixture`` for a reranking method).
    Ties go to the smaller weight, then the longer history (on MovieLens, 10 items tied 20 on 50
    validation rows and lost to it on the 943 test rows), then the earlier aggregation.
    The result holds the chosen ``max_history``, ``valid_rows`` and the whole ``grid`` tried (one
    record per setting); with a prior (a non-zero weight in ``weights``) also ``prior_weight``,
    ``prior_aggregation`` and ``valid_NDCG@10``, the chosen history and aggregation's scores by
    weight (``valid_NDCG@10_by_aggregation``, or ``_by_mixture``, too when several were tried); without
    one, ``valid_NDCG@10_by_history``.
    """
    if path.exists():
        tuned = json.loads(path.read_text(encoding="utf-8"))
        # files written before aggregations and history lengths were tuned tried only the defaults
        if "prior_weight" in tuned:
            tuned.setdefault(setting, _UNTUNED[setting])
        tuned.setdefault("max_history", histories[0])
        if alone is not None:  # a resumed run's other methods need not decode the model alone again
            alone.update({r["max_history"]: r["valid_NDCG@10"] for r in tuned.get("grid", []) if not r.get("prior_weight")})
        return tuned
    if not histories or any(h < 1 for h in histories):
        raise DataError(f"history lengths to tune must be at least 1, got {', '.join(map(str, histories)) or 'none'}")
    alone = {} if alone is None else alone
    partial = path.with_name(path.stem + ".partial.jsonl")
    done = _read_partial(partial, valid_rows, setting)
    for (history, _, weight), value in done.items():
        if weight == 0.0 and not weighted:
            alone.setdefault(history, value)

    def score(history: int, aggregation: str, weight: float) -> float:
        if (history, aggregation, weight) not in done:
            value = round(validation_ndcg(weight, aggregation, history), 5)
            done[history, aggregation, weight] = value
            record = {"max_history": history, setting: aggregation, "prior_weight": weight,
                      "valid_rows": valid_rows, "valid_NDCG@10": value}  # fmt: skip
            partial.parent.mkdir(parents=True, exist_ok=True)
            with partial.open("a", encoding="utf-8") as f:  # a killed run keeps every setting it finished
                f.write(json.dumps(record) + "\n")
        return done[history, aggregation, weight]

    scores: dict[tuple[int, str, float], float] = {}
    for history in histories:
        for aggregation in aggregations:
            for weight in weights:
                if weight == 0.0 and not weighted:
                    if history not in alone:
                        alone[history] = score(history, aggregation, 0.0)
                    scores[history, aggregation, weight] = alone[history]
                else:
                    scores[history, aggregation, weight] = score(history, aggregation, weight)
    h_order, a_order = list(histories), list(aggregations)
    history, aggregation, weight = max(scores, key=lambda s: (scores[s], -s[2], s[0], -a_order.index(s[1])))
    with_prior = weighted or any(w != 0.0 for w in weights)
    grid = [
        {"max_history": h, **({setting: a, "prior_weight": w} if with_prior else {}), "valid_NDCG@10": v}
        for (h, a, w), v in scores.items()
    ]
    tuned: dict[str, Any] = {"max_history": history}
    if with_prior:
        tuned["prior_weight"] = weight
        tuned[setting] = aggregation
        tuned["valid_NDCG@10"] = {f"{w:g}": scores[history, aggregation, w] for w in weights}
        if len(a_order) > 1:
            tuned[f"valid_NDCG@10_by_{setting.removeprefix('prior_')}"] = {
                a: {f"{w:g}": scores[history, a, w] for w in weights} for a in a_order
            }
    else:
        tuned["valid_NDCG@10_by_history"] = {str(h): scores[h, a_order[0], 0.0] for h in h_order}
    tuned["valid_rows"] = valid_rows
    tuned["grid"] = grid
    atomic_write_text(path, json.dumps(tuned, indent=2))
    partial.unlink(missing_ok=True)
    return tuned


def _read_partial(path: Path, valid_rows: int, setting: str) -> dict[tuple[int, str, float], float]:
    """The settings an interrupted tuning finished (on the same number of rows); a line cut off
    by the kill is ignored."""
    if not path.exists():
        return {}
    done: dict[tuple[int, str, float], float] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
            key = (int(r["max_history"]), str(r[setting]), float(r["prior_weight"]))
            if r["valid_rows"] == valid_rows:
                done[key] = float(r["valid_NDCG@10"])
        except (ValueError, KeyError, TypeError):
            continue
    return done


def describe_tuning(tuned: dict[str, Any]) -> str:
    """The grid tried and what it chose, as lines for a terminal or a report."""
    chosen = ", ".join(f"{k} = {tuned[k]}" for k in ("max_history", "prior_aggregation", "mixture", "prior_weight") if k in tuned)
    lines = [f"tuned on {tuned['valid_rows']} validation rows: {chosen}"]
    for record in tuned.get("grid", []):
        setting = ", ".join(f"{k} {v}" for k, v in record.items() if k != "valid_NDCG@10")
        lines.append(f"  {setting}: NDCG@10 {record['valid_NDCG@10']:.4f}")
    return "\n".join(lines)
