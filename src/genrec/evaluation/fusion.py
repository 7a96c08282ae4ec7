"""Fused methods, ``genrec+<baseline>``: the language model with a baseline as its collaborative
prior inside beam search, the prior weight tuned on validation targets only.

The baseline's scores become log-scores (SASRec's are logits already; counts and similarities
are logged), the weight is chosen from ``EvalConfig.prior_grid`` by NDCG@10 on a seeded sample of
validation rows under the run's own protocol, and the test rows are decoded once with it. The
grid and what each weight scored are kept in ``tuning/<method>.json`` (a rerun reuses them) and in
``results.json`` under the method's ``tuned``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from .baselines import ScoredMethod

__all__ = ["FUSED_PREFIX", "is_fused", "prior_of", "log_scores", "tune_prior_weight"]

FUSED_PREFIX = "genrec+"
_FLOOR = 1e-6  # a count or similarity of 0 is unlikely, not impossible


def is_fused(name: str) -> bool:
    return name.startswith(FUSED_PREFIX)


def prior_of(name: str) -> str:
    """The baseline a fused method uses as its prior."""
    return name[len(FUSED_PREFIX) :]


def log_scores(method: ScoredMethod, histories: Sequence[Sequence[str]]) -> np.ndarray:
    """The baseline's scores for these histories as log-scores, one row per history."""
    scores = np.asarray(method.score([list(h) for h in histories]), dtype=np.float64)
    if getattr(method, "scores_are_logits", False):
        return scores
    return np.log(np.maximum(scores, 0.0) + _FLOOR)


def tune_prior_weight(
    validation_ndcg: Callable[[float], float], grid: Sequence[float], path: Path, valid_rows: int
) -> dict[str, Any]:
    """The grid's best weight by ``validation_ndcg(weight)`` on ``valid_rows`` validation rows
    (ties: the smaller weight), and the grid's scores; kept in ``path`` so a rerun does not decode
    them again."""
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    scored = {f"{weight:g}": round(validation_ndcg(weight), 5) for weight in grid}
    best = max(grid, key=lambda w: (scored[f"{w:g}"], -w))
    tuned = {"prior_weight": best, "valid_NDCG@10": scored, "valid_rows": valid_rows}
    atomic_write_text(path, json.dumps(tuned, indent=2))
    return tuned
