"""An interaction log put to work: the trained mixture ``Recommender.fit(log)`` serves.

What measured best with a log (``genrec-embed+hybrid`` in the harness; eval/RESULTS.md "New
items"; this fit, as ``genrec-log``, scores MovieLens NDCG@10 0.1079 against SASRec-CE's 0.0694
on all rows with 10% of the films new, 0.1047 choosing on its own holdout): the ``hybrid`` baseline (ItemKNN where the log has seen an item,
TF-IDF over its words everywhere) mixed with the model's item vectors under a linear map trained
on the log's next-item pairs (``ItemEncoder``), each score standardised per row,
``(1 - w) * hybrid + w * vectors``. The layer read, the map's epoch, w and the hybrid's own
settings are chosen together by NDCG@10 on each user's last interaction, held back (as the harness
chooses them on its validation rows); then the chosen settings are fitted again on the whole log,
as a grid search refits its best. Or on ``valid`` pairs the caller keeps apart (a later period):
data that comes as overlapping windows of one user's history (D3 files) needs them: a window's last
item is the next window's history, so holding it back leaks. An item the log never saw is still ranked, from its words and
its vector.

The harness's ``genrec-embed`` methods train through the same ``train_mixture``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .baselines.scored import ScoredMethod, scores_ndcg
from .catalog import Catalog
from .content import standardised
from .data.datasets import Example
from .data.splits import Split
from .encoder import EncoderSettings, ItemEncoder
from .errors import DataError
from .words import WordScores, reading_layer

__all__ = ["DEPTHS", "WEIGHTS", "EncoderScores", "LogModel", "fit_log_model", "holdout_split", "later_pairs", "read_log", "refit_encoder", "train_mixture"]

log = logging.getLogger(__name__)

#: the encoder's shares of a mixture tried on validation
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
#: the layers tried, as shares of the model's depth: 8, 15 and 22 of the default model's 30
DEPTHS = (8 / 30, 15 / 30, 22 / 30)
#: validation rows read at each epoch
VALID_ROWS = 2000


class EncoderScores(ScoredMethod):
    """The encoder's scores, alone or mixed with a fitted baseline's."""

    name = "genrec-embed"

    def __init__(self, catalog: Catalog, encoder: ItemEncoder, base: ScoredMethod | None = None, weight: float = 1.0):
        super().__init__(catalog)
        self.encoder, self.base, self.weight = encoder, base, weight

    def score(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        mine = self.encoder.scores(self.positions(histories))
        if self.base is None or self.weight >= 1.0:
            return mine
        theirs = standardised(np.asarray(self.base.score(histories), dtype=np.float64))
        return theirs if self.weight <= 0.0 else (1 - self.weight) * theirs + self.weight * standardised(mine)


def train_mixture(
    catalog: Catalog, train: Mapping[str, Sequence[str]], valid: Sequence[Example], vectors: Mapping[int, np.ndarray],
    settings: EncoderSettings, base: ScoredMethod | None = None, *, progress: bool = False,
) -> tuple[ItemEncoder, dict[str, Any]]:  # fmt: skip
    """An encoder per layer of ``vectors`` trained on ``train``'s next-item pairs (known items
    only: those some training sequence holds), and the layer, the map's epoch and (with ``base``)
    the encoder's share w chosen together by the NDCG@10 of the mixture itself on ``valid`` (a
    mixture is best served by the encoder that mixes best, not by the best encoder alone)."""
    valid = list(valid)[:VALID_ROWS]
    probe = ScoredMethod(catalog)  # the catalog's index, for scoring validation rows
    histories = probe.positions(e.history for e in valid)
    # the baseline's scores do not change while the map trains: computed once
    theirs = None if base is None else standardised(np.asarray(base.score([e.history for e in valid]), dtype=np.float64))
    weights = (1.0,) if base is None else WEIGHTS
    sequences, known = _positions_and_known(catalog, train)
    trials: dict[int, tuple[float, ItemEncoder, dict[float, float]]] = {}
    for layer in vectors:
        encoder = ItemEncoder(vectors[layer], settings)
        by_epoch: list[dict[float, float]] = []  # each epoch's validation NDCG@10 for each w

        def select(encoder: ItemEncoder = encoder, by_epoch: list[dict[float, float]] = by_epoch) -> float:
            mine = standardised(encoder.scores(histories))
            by_w = {w: scores_ndcg(probe, mine if theirs is None or w >= 1.0 else (1 - w) * theirs + w * mine, valid) for w in weights}
            by_epoch.append(by_w)
            return max(by_w.values())

        encoder.train(sequences, known, select=select, progress=progress)
        epoch = kept_epoch(encoder)
        trials[layer] = (by_epoch[epoch][max(by_epoch[epoch], key=lambda w: (by_epoch[epoch][w], -w))], encoder, by_epoch[epoch])
    layer = max(trials, key=lambda n: (trials[n][0], -n))  # ties: the earlier layer
    _, encoder, by_w = trials[layer]
    tuned: dict[str, Any] = {
        "layer": layer, "epoch": kept_epoch(encoder),
        "valid_NDCG@10": {f"layer {n}": round(score, 4) for n, (score, _, _) in trials.items()},
        "epochs": [{k: round(v, 4) for k, v in h.items()} for h in encoder.history],
    }  # fmt: skip
    if base is not None:
        tuned["weight"] = max(by_w, key=lambda w: (by_w[w], -w))  # ties: the baseline's side
        tuned["mixture_valid_NDCG@10"] = {str(w): round(v, 4) for w, v in by_w.items()}
    return encoder, tuned


def _positions_and_known(catalog: Catalog, train: Mapping[str, Sequence[str]]) -> tuple[list[list[int]], np.ndarray]:
    """The sequences as catalog positions, and which items some sequence holds."""
    sequences = [[catalog.position(i) for i in sequence if i in catalog] for sequence in train.values()]
    seen = {item for sequence in train.values() for item in sequence}
    return sequences, np.array([item in seen for item in catalog.ids])


def refit_encoder(catalog: Catalog, train: Mapping[str, Sequence[str]], vectors: Mapping[int, np.ndarray], tuned: Mapping[str, Any], seed: int) -> ItemEncoder:
    """The encoder ``train_mixture`` chose (``tuned``: its layer and epoch), trained again on
    ``train`` (more than it chose on), as a grid search refits its best."""
    positions, known = _positions_and_known(catalog, train)
    return ItemEncoder(vectors[tuned["layer"]], EncoderSettings(epochs=tuned["epoch"], seed=seed)).train(positions, known)


def kept_epoch(encoder: ItemEncoder) -> int:
    """The epoch ``ItemEncoder.train`` kept: the best validation score, the earliest of equals."""
    return int(max(encoder.history, key=lambda h: (h["valid"], -h["epoch"]))["epoch"])


def read_log(log: Any) -> dict[str, list[str]]:
    """Each user's item IDs, oldest first, from ``log``: a table (pandas) or a file (CSV, TSV,
    Parquet) of ``user_id, item_id[, timestamp]`` (time order; file order among equal or missing
    timestamps), a JSONL file of ``{"user_id", "history"}`` rows, or a mapping of user to items.
    A bad row is a DataError that names it."""
    import pandas as pd

    from .batch.inputs import log_jobs, read_users

    if isinstance(log, pd.DataFrame):
        jobs = log_jobs(log, "the log table", first_row=0)
    elif isinstance(log, Mapping):
        return {str(user): [str(item) for item in items] for user, items in log.items()}
    else:
        jobs = read_users(log)
    return {job.user_id: job.history for job in jobs}


def holdout_split(sequences: Mapping[str, Sequence[str]]) -> Split:
    """Each user's last interaction held back to choose the settings (a user with one interaction
    only trains); the rest trains."""
    train: dict[str, list[str]] = {}
    valid: list[Example] = []
    for user, items in sequences.items():
        items = list(items)
        if len(items) >= 2:
            valid.append(Example(str(user), tuple(items[:-1]), items[-1]))
            items = items[:-1]
        train[str(user)] = items
    info = {"protocol": "each user's last interaction held back for validation", "users": len(train), "valid_examples": len(valid)}
    return Split(train=train, valid=valid, test=[], info=info)


def later_pairs(sequences: Mapping[str, Sequence[str]], later: Mapping[str, Sequence[str]]) -> list[tuple[list[str], str]]:
    """Validation pairs from a later period's log (``later``, each user's items oldest first):
    every later interaction, its history the user's fitted items and the later ones before it."""
    pairs = []
    for user, items in later.items():
        history = list(sequences.get(user, []))
        for item in items:
            if history:  # (a history with nothing in it ranks nothing to choose by)
                pairs.append((list(history), str(item)))
            history.append(str(item))
    return pairs


@dataclass
class LogModel:
    """The fitted mixture (``scores``) and what was chosen and counted fitting it (``tuned``)."""

    scores: EncoderScores
    tuned: dict[str, Any]
    sequences: dict[str, list[str]] = field(default_factory=dict, repr=False)  # the log fitted on (what a saved fit refits)
    model_fingerprint: str = ""  # of the model whose reading of the items the encoder maps

    def save(self, path: str | Path) -> Path:
        """The fit, kept in folder ``path`` (``genrec.log_model_io``): loading it takes seconds
        where fitting took minutes."""
        from .log_model_io import save_log_model

        return save_log_model(self, path)

    def word_scores(self, histories: Sequence[Sequence[int]]) -> WordScores:
        """Every item's score for each history (catalog positions), in the form content search
        ranks by; a history with nothing in it has nothing near it (beam search's turn)."""
        ids = self.scores.catalog.ids
        logits = self.scores.score([[ids[p] for p in history] for history in histories])
        profiled = np.array([len(h) > 0 for h in histories])
        return WordScores(np.asarray(logits, dtype=np.float64), np.broadcast_to(profiled[:, None], logits.shape))


def fit_log_model(
    catalog: Catalog, sequences: Mapping[str, Sequence[str]], read: Callable[[Sequence[int]], Mapping[int, np.ndarray]],
    n_layers: int, *, valid: Sequence[tuple[Sequence[str], str]] | None = None, epochs: int = 8, seed: int = 0,
    lenient: bool = False, progress: bool = False, model_fingerprint: str = "",
) -> LogModel:  # fmt: skip
    """The mixture fitted on ``sequences`` (each user's items, oldest first); ``read(layers)``: the
    model's item vectors at those layers; ``n_layers``: the model's depth. ``valid``: (history,
    target) pairs to choose the settings on, kept apart from ``sequences`` by the caller (a later
    period, say); None: each user's last interaction, held back, then everything refitted. An item
    ID the catalog lacks is a DataError naming it, or with ``lenient`` left out and counted.
    ``model_fingerprint``: the reading model's, recorded for a saved fit."""
    from .baselines.content import Hybrid  # (scikit-learn, imported only when a log is fitted)

    unknown = [(user, item) for user, items in sequences.items() for item in items if item not in catalog]
    if unknown and not lenient:
        user, item = unknown[0]
        raise DataError(f"the log's item {item!r} (user {user!r}) is not in catalog {catalog.name!r}; "
                        f"{len(unknown)} interaction(s) name items it lacks (lenient=True leaves them out, counted)")  # fmt: skip
    if unknown:
        log.warning("%d interaction(s) of the log name items the catalog lacks: left out", len(unknown))
        sequences = {user: [item for item in items if item in catalog] for user, items in sequences.items()}
    if valid is None:
        split = holdout_split(sequences)
    else:
        examples = [Example(f"valid {n}", tuple(map(str, history)), str(target)) for n, (history, target) in enumerate(valid)]
        strays = [(n, e.target) for n, e in enumerate(examples) if e.target not in catalog]
        if strays and not lenient:
            raise DataError(f"valid pair {strays[0][0]}'s target {strays[0][1]!r} is not in catalog {catalog.name!r} "
                            f"({len(strays)} such pair(s); lenient=True leaves them out)")  # fmt: skip
        examples = [e for e in examples if e.target in catalog]
        split = Split(train={user: list(items) for user, items in sequences.items()}, valid=examples, test=[])
    if not split.valid:
        raise DataError("the log has no user with two interactions or more (and no valid pairs): nothing to choose the settings on")
    hybrid = Hybrid(catalog)
    hybrid.fit(split)
    layers = sorted({reading_layer(depth, n_layers) for depth in DEPTHS})
    vectors = read(layers)
    encoder, tuned = train_mixture(catalog, split.train, split.valid, vectors, EncoderSettings(epochs=epochs, seed=seed), hybrid, progress=progress)
    tuned["hybrid"] = hybrid.tuned
    if valid is None:
        # what was chosen, fitted again on the whole log (as a grid search refits its best): the
        # last interactions are the most recent, too good to leave out of what serves
        hybrid.fit(Split(train=dict(sequences), valid=[], test=[]))  # (its chosen settings stay)
        encoder = refit_encoder(catalog, sequences, vectors, tuned, seed)
    tuned.update(
        users=len(split.train), interactions=sum(len(s) for s in sequences.values()), new_items=int(hybrid.new.sum()),
        unknown_items_left_out=len(unknown), valid_examples=len(split.valid),
    )  # fmt: skip
    sequences = {str(user): [str(item) for item in items] for user, items in sequences.items()}
    return LogModel(EncoderScores(catalog, encoder, hybrid, tuned["weight"]), tuned, sequences, model_fingerprint)
