"""Fitting a baseline by name, as the harness and distillation (``genrec train --teacher``) both
do, and its scores as log-scores (the form a prior in the beam or a reranking mixture takes)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..atomic import atomic_file
from ..catalog import Catalog
from ..data.splits import Split
from ..errors import ConfigError
from .scored import ItemKNN, Markov, Popularity, ScoredMethod

__all__ = ["SCORED", "SASREC_EPOCHS", "fit_scored", "log_scores"]

#: the baselines fitted by name (``sasrec`` is the harness's alias of ``sasrec-ce``)
SCORED = ("pop", "markov", "itemknn", "sasrec-bce", "sasrec-ce", "content", "hybrid")
SASREC_EPOCHS = 200  # the most a SASRec trains; validation stops it earlier
_FLOOR = 1e-6  # a count or similarity of 0 is unlikely, not impossible


def fit_scored(
    name: str,
    catalog: Catalog,
    split: Split,
    *,
    seed: int,
    sasrec_epochs: int = SASREC_EPOCHS,
    saved_dir: Path | None = None,
    progress: bool = True,
) -> ScoredMethod:
    """Baseline ``name`` trained on the split's training part (tuned on its validation part).
    A SASRec's weights are kept as ``saved_dir/<name>.pt`` and loaded from there when present."""
    if name in ("sasrec-bce", "sasrec-ce"):
        return _fit_sasrec(name, catalog, split, seed=seed, epochs=sasrec_epochs, saved_dir=saved_dir, progress=progress)
    if name not in SCORED:
        raise ConfigError(f"unknown baseline {name!r} (have: {', '.join(SCORED)})")
    from .content import Content, Hybrid  # (scikit-learn, imported only when a run asks for them)

    method = {"pop": Popularity, "markov": Markov, "itemknn": ItemKNN, "content": Content, "hybrid": Hybrid}[name](catalog)
    started = time.perf_counter()
    method.fit(split)
    method.fit_s = time.perf_counter() - started
    return method


def _fit_sasrec(
    name: str, catalog: Catalog, split: Split, *, seed: int, epochs: int, saved_dir: Path | None, progress: bool
) -> ScoredMethod:
    import torch

    from .sasrec import SASRec, SASRecConfig

    settings = SASRecConfig.for_loss(name.split("-")[1], seed=seed, max_epochs=epochs)
    method = SASRec(catalog, settings, progress=progress)
    saved = Path(saved_dir) / f"{name}.pt" if saved_dir is not None else None
    if saved is not None and saved.exists():
        method.load_state(torch.load(saved, weights_only=False))
        return method
    started = time.perf_counter()
    method.fit(split)
    method.fit_s = time.perf_counter() - started
    if saved is not None:
        with atomic_file(saved, suffix=".pt") as tmp:
            torch.save(method.state(), tmp)
    return method


def log_scores(method: ScoredMethod, histories: Sequence[Sequence[str]]) -> np.ndarray:
    """The baseline's scores for these histories as log-scores, one row per history."""
    scores = np.asarray(method.score([list(h) for h in histories]), dtype=np.float64)
    if getattr(method, "scores_are_logits", False):
        return scores
    return np.log(np.maximum(scores, 0.0) + _FLOOR)
