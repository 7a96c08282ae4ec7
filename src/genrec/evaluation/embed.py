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
slow part (minutes here), training the map takes seconds an epoch. The training and the choice
are ``genrec.log_model``'s, the one ``Recommender.fit`` serves.
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
from ..encoder import EncoderSettings, ItemEncoder
from ..log_model import EncoderScores, refit_encoder, train_mixture
from ..ranking.rows import evaluate_scored
from .context import Method, Rows, RunContext, Store

__all__ = ["EMBED", "EMBED_PREFIX", "EncoderScores", "GenrecEmbed", "item_vectors"]

EMBED = "genrec-embed"
EMBED_PREFIX = "genrec-embed+"


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
        tuning = ctx.tuning_split()
        baseline = None if base is None else ctx.baseline(base, choosing=True)
        encoder, tuned = train_mixture(ctx.catalog, tuning.train, tuning.valid, vectors, settings, baseline, progress=ctx.progress)
        if tuning.train is not ctx.split.train:  # (--tune-cold: chosen with more items new, fitted again on them all)
            encoder = refit_encoder(ctx.catalog, ctx.split.train, vectors, tuned, config.seed)
            tuned["refit"] = "chosen with --tune-cold's items made new, the map trained again on the whole training part"
        tuned["train_s"] = round(time.perf_counter() - started, 1)  # (kept: a resumed run reports it too)
        trained = {"weight": encoder.weight, "bias": encoder.bias} if encoder.weight is not None else {}
        with atomic_file(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
            np.savez(handle, tuned=json.dumps(tuned), **trained)
    ctx.shared[key] = (encoder, tuned)
    return encoder, tuned


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
