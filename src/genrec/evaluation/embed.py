"""``genrec-embed`` and ``genrec-embed+<baseline>``: the language model reading items
(``genrec.encoder``) as a method of the harness.

- ``genrec-embed``: every catalog item scored by the cosine of its model vector with the
  history's profile; the layer read and the map's epoch chosen on validation (the untrained
  encoder, epoch 0, among them). It scores a new item from its words, like ``content``.
- ``genrec-embed+<baseline>``: that and a baseline's scores, each standardised per row, mixed
  ``(1 - w) * baseline + w * encoder``; w chosen on validation together with the layer and the
  epoch, each mixture training its own map (w = 0 is the baseline's list).

Both score the full catalog, so they rank by the same protocol as the scored baselines. The
items' vectors are kept in the run's folder (``item_vectors.npz``): reading a catalog is the
slow part (minutes here), training the map takes seconds an epoch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_file
from ..baselines.fit import SCORED
from ..baselines.scored import ScoredMethod, scores_ndcg
from ..catalog import Catalog
from ..content import standardised
from ..data.cold import seen_items
from ..encoder import EncoderSettings, ItemEncoder
from ..ranking.rows import evaluate_scored
from .context import Method, Rows, RunContext, Store

__all__ = ["EMBED", "EMBED_PREFIX", "EncoderScores", "GenrecEmbed", "item_vectors"]

EMBED = "genrec-embed"
EMBED_PREFIX = "genrec-embed+"
#: the encoder's shares of a mixture tried on validation
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
#: validation rows read at each epoch (``validation_ndcg``'s limit)
VALID_ROWS = 2000


class EncoderScores(ScoredMethod):
    """The encoder's scores, alone or mixed with a fitted baseline's."""

    name = EMBED

    def __init__(self, catalog: Catalog, encoder: ItemEncoder, base: ScoredMethod | None = None, weight: float = 1.0):
        super().__init__(catalog)
        self.encoder, self.base, self.weight = encoder, base, weight

    def score(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        mine = self.encoder.scores(self.positions(histories))
        if self.base is None or self.weight >= 1.0:
            return mine
        theirs = standardised(np.asarray(self.base.score(histories), dtype=np.float64))
        return theirs if self.weight <= 0.0 else (1 - self.weight) * theirs + self.weight * standardised(mine)


def item_vectors(ctx: RunContext, layers: Sequence[int]) -> dict[int, np.ndarray]:
    """Each catalog item's mean hidden state at ``layers``, read by the run's model once
    (``Recommender.item_vectors``, kept in the model's cache) and kept in the run's folder too."""
    path = Path(ctx.out_dir) / "item_vectors.npz"
    if path.exists():
        with np.load(path) as kept:
            if all(str(layer) in kept for layer in layers):
                return {layer: kept[str(layer)] for layer in layers}
    vectors = ctx.recommender().item_vectors(layers, progress=ctx.progress)  # (the model's cache, shared by runs)
    with atomic_file(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **{str(layer): v for layer, v in vectors.items()})
    return vectors


def fitted_encoder(ctx: RunContext, base: str | None = None) -> tuple[ItemEncoder, dict[str, Any]]:
    """The encoder of ``genrec-embed`` (``base`` None) or of ``genrec-embed+<base>``, fitted once
    per run: each of ``embed_layers`` trained on the training part, and the layer, the map's epoch
    and (with a base) the encoder's share w chosen together, by the validation NDCG@10 of the method
    itself (a mixture is best served by the encoder that mixes best, not by the best encoder
    alone). Kept in the run's folder (``item_encoder.npz``, ``item_encoder+<base>.npz``) for a
    resumed or extended run."""
    key = EMBED if base is None else EMBED_PREFIX + base
    if key in ctx.shared:
        return ctx.shared[key]
    config = ctx.config
    path = Path(ctx.out_dir) / ("item_encoder.npz" if base is None else f"item_encoder+{base}.npz")
    vectors = item_vectors(ctx, config.embed_layers)
    settings = EncoderSettings(epochs=config.embed_epochs, seed=config.seed)
    if path.exists():
        with np.load(path) as kept:
            tuned = json.loads(str(kept["tuned"]))
            encoder = ItemEncoder(vectors[tuned["layer"]], settings)
            if "weight" in kept:
                encoder.weight, encoder.bias = kept["weight"], kept["bias"]
    else:
        started = time.perf_counter()
        encoder, tuned = _train_layers(ctx, vectors, settings, base)
        tuned["train_s"] = round(time.perf_counter() - started, 1)  # (kept: a resumed run reports it too)
        trained = {"weight": encoder.weight, "bias": encoder.bias} if encoder.weight is not None else {}
        with atomic_file(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
            np.savez(handle, tuned=json.dumps(tuned), **trained)
    ctx.shared[key] = (encoder, tuned)
    return encoder, tuned


def _train_layers(
    ctx: RunContext, vectors: dict[int, np.ndarray], settings: EncoderSettings, base: str | None
) -> tuple[ItemEncoder, dict[str, Any]]:
    catalog = ctx.catalog
    valid = list(ctx.tuning_split().valid)[:VALID_ROWS]
    probe = ScoredMethod(catalog)  # the catalog's index, for scoring validation rows
    histories = probe.positions(e.history for e in valid)
    # the baseline's scores do not change while the map trains: computed once
    theirs = None if base is None else standardised(np.asarray(ctx.baseline(base).score([e.history for e in valid]), dtype=np.float64))
    weights = (1.0,) if base is None else WEIGHTS
    sequences = [[catalog.position(i) for i in sequence if i in catalog] for sequence in ctx.split.train.values()]
    seen = seen_items(ctx.split)
    known = np.array([item in seen for item in catalog.ids])
    trials: dict[int, tuple[float, ItemEncoder, dict[float, float]]] = {}
    for layer in ctx.config.embed_layers:
        encoder = ItemEncoder(vectors[layer], settings)
        by_epoch: list[dict[float, float]] = []  # each epoch's validation NDCG@10 for each w

        def select(encoder: ItemEncoder = encoder, by_epoch: list[dict[float, float]] = by_epoch) -> float:
            mine = standardised(encoder.scores(histories))
            by_w = {w: scores_ndcg(probe, mine if theirs is None or w >= 1.0 else (1 - w) * theirs + w * mine, valid) for w in weights}
            by_epoch.append(by_w)
            return max(by_w.values())

        encoder.train(sequences, known, select=select, progress=ctx.progress)
        epoch = _kept_epoch(encoder)
        trials[layer] = (by_epoch[epoch][max(by_epoch[epoch], key=lambda w: (by_epoch[epoch][w], -w))], encoder, by_epoch[epoch])
    layer = max(trials, key=lambda n: (trials[n][0], -n))  # ties: the earlier layer
    _, encoder, by_w = trials[layer]
    tuned: dict[str, Any] = {
        "layer": layer, "epoch": _kept_epoch(encoder),
        "valid_NDCG@10": {f"layer {n}": round(score, 4) for n, (score, _, _) in trials.items()},
        "epochs": [{k: round(v, 4) for k, v in h.items()} for h in encoder.history],
    }  # fmt: skip
    if base is not None:
        tuned["weight"] = max(by_w, key=lambda w: (by_w[w], -w))  # ties: the baseline's side
        tuned["mixture_valid_NDCG@10"] = {str(w): round(v, 4) for w, v in by_w.items()}
    return encoder, tuned


def _kept_epoch(encoder: ItemEncoder) -> int:
    """The epoch ``ItemEncoder.train`` kept: the best validation score, the earliest of equals."""
    return int(max(encoder.history, key=lambda h: (h["valid"], -h["epoch"]))["epoch"])


class GenrecEmbed(Method):
    """The harness's face of ``EncoderScores`` (see the module docstring)."""

    @classmethod
    def accepts(cls, name: str) -> bool:
        return name == EMBED or (name.startswith(EMBED_PREFIX) and name[len(EMBED_PREFIX) :] in SCORED)

    @property
    def base(self) -> str | None:
        return self.name[len(EMBED_PREFIX) :] if self.name.startswith(EMBED_PREFIX) else None

    def fit(self, ctx: RunContext) -> None:
        started = time.perf_counter()
        encoder, self.tuned = fitted_encoder(ctx, self.base)
        base = None if self.base is None else ctx.baseline(self.base)
        self.scored = EncoderScores(ctx.catalog, encoder, base, self.tuned.get("weight", 1.0))
        self.fit_s = time.perf_counter() - started

    def tune(self, ctx: RunContext) -> dict[str, Any] | None:
        return self.tuned

    def evaluate(self, ctx: RunContext, rows: Rows, tuned: dict[str, Any] | None, store: Store) -> None:
        evaluate_scored(self.scored, rows, protocol=ctx.protocol, on_batch=store, progress=ctx.progress, name=self.name)

    def describe(self, ctx: RunContext, tuned: dict[str, Any] | None) -> dict[str, Any]:
        mixed = f", mixed with {self.base}'s scores (encoder's share w = {self.scored.weight})" if self.base else ""
        return {
            "mode": f"the model's item vectors (layer {self.tuned['layer']}, map epoch {self.tuned['epoch']}){mixed}",
            "fit_s": round(self.fit_s, 2), "tuned": self.tuned,  # fit_s: this run's; tuned.train_s: the map's training
        }  # fmt: skip
