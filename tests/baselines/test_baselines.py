"""The baselines (genrec/baselines/) learn what they should on a chain."""

from __future__ import annotations

import numpy as np
import pytest

from genrec.baselines.sasrec import SASRec, SASRecConfig
from genrec.baselines.scored import ItemKNN, Markov, Popularity
from genrec.data.splits import leave_one_out
from genrec.ranking.metrics import full_rank, hit_rate

from helpers import chain_dataset


def hr10(method, split):
    scores = method.score([e.history for e in split.test])
    tie = np.arange(len(method.catalog))
    hits = 0
    for row, e in enumerate(split.test):
        ex = np.zeros(len(method.catalog), dtype=bool)
        ex[[method.index[i] for i in e.history]] = True
        hits += hit_rate(full_rank(scores[row], method.index[e.target], ex, tie), 1)
    return hits / len(split.test)


def test_markov_and_sasrec_learn_transitions_pop_does_not():
    ds = chain_dataset()
    split = leave_one_out(ds.interactions)
    pop, markov = Popularity(ds.catalog), Markov(ds.catalog)
    pop.fit(split)
    markov.fit(split)
    sasrec = SASRec(ds.catalog, SASRecConfig(hidden=32, max_len=20, max_epochs=60, eval_every=10, dropout=0.1), progress=False)
    sasrec.fit(split)
    assert hr10(markov, split) == 1.0  # the next item always follows the last one
    assert hr10(pop, split) < 0.2
    assert hr10(sasrec, split) > 0.5
    assert sasrec.best_valid_ndcg > 0.3 and sasrec.history[-1]["epoch"] <= 60
    ce = SASRec(ds.catalog, SASRecConfig.for_loss("ce", hidden=32, max_len=20, max_epochs=30, eval_every=5, dropout=0.1), progress=False)
    ce.fit(split)
    assert hr10(ce, split) > 0.5 and ce.tuned["loss"] == "ce"
    knn = ItemKNN(ds.catalog)
    knn.fit(split)
    assert hr10(knn, split) > hr10(pop, split)
    assert knn.tuned["neighbors"] in (*ItemKNN.NEIGHBOR_GRID[:-1], "all") and len(knn.tuned["valid_NDCG@10"]) == len(ItemKNN.NEIGHBOR_GRID)


# ---------------------------------------------------------------------- the whole harness


def test_itemknn_on_a_large_catalog_keeps_sparse_the_similarities_the_dense_one_has(monkeypatch):
    """Above DENSE_ITEMS items the similarities are a sparse matrix (an n x n array would not
    fit): the same cosines, the same kept neighbours (by value: equal values may be other items),
    the same scores."""
    import random

    from genrec import Catalog
    from genrec.baselines import scored
    from genrec.data.splits import Split

    rng = random.Random(3)
    catalog = Catalog([f"i{n}" for n in range(60)], [f"Item {n}" for n in range(60)])
    train = {f"u{u}": rng.sample(catalog.ids[: rng.choice((20, 60))], rng.randint(1, 12)) for u in range(80)}
    split = Split(train=train, valid=[], test=[])
    histories = [rng.sample(catalog.ids, 4) for _ in range(10)]
    fitted = {}
    for limit in (10**9, 0):  # dense (the reference), then sparse
        monkeypatch.setattr(scored, "DENSE_ITEMS", limit)
        fitted[limit] = [ItemKNN(catalog, neighbors=k) for k in (0, 3, 10)]
        for knn in fitted[limit]:
            knn.fit(split)
    for dense, sparse in zip(fitted[10**9], fitted[0]):
        assert isinstance(dense.sim, np.ndarray) and not isinstance(sparse.sim, np.ndarray)
        np.testing.assert_allclose(sparse.full.toarray(), dense.full, rtol=1e-6, atol=1e-7)
        kept = sparse.sim.toarray()
        for row in range(len(catalog)):
            assert sorted(kept[row][kept[row] > 0]) == pytest.approx(sorted(dense.sim[row][dense.sim[row] > 0]), rel=1e-6)
        if dense.neighbors == 0:
            np.testing.assert_allclose(sparse.score(histories), dense.score(histories), rtol=1e-6, atol=1e-7)
