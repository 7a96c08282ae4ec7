"""Score-based baselines on the same split: most popular, first-order transitions, item-KNN.

A baseline scores every catalog item for a history; ranking, history exclusion and tie-breaking
are shared with every other scored method (see ``metrics.full_rank`` / ``metrics.top_k``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..catalog import Catalog
from ..data.datasets import Example
from ..data.splits import Split
from ..ranking.metrics import ndcg, rank_in_list, top_k

__all__ = ["ScoredMethod", "Popularity", "Markov", "ItemKNN", "scores_ndcg", "scores_ranks", "validation_ndcg"]


class ScoredMethod:
    """A method that scores every catalog item for each history."""

    name = "scored"

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.index = {item_id: n for n, item_id in enumerate(catalog.ids)}
        self.fit_s = 0.0  # training time, set by whoever fits it
        self.tuned: dict = {}  # settings chosen on validation data, for the report

    def fit(self, split: Split) -> None:
        raise NotImplementedError

    def score(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """``[len(histories), len(catalog)]`` scores, higher is better."""
        raise NotImplementedError

    def positions(self, histories: Iterable[Sequence[str]]) -> list[list[int]]:
        """Each history as catalog positions, oldest first (an ID the catalog lacks left out)."""
        return [[self.index[i] for i in history if i in self.index] for history in histories]

    def _popularity(self, split: Split) -> np.ndarray:
        counts = np.zeros(len(self.catalog), dtype=np.float64)
        for item, count in split.popularity().items():
            if item in self.index:
                counts[self.index[item]] = count
        return counts


class Popularity(ScoredMethod):
    """The items most interacted with in the training data, the same list for everyone."""

    name = "pop"

    def fit(self, split: Split) -> None:
        self.counts = self._popularity(split)

    def score(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(histories), len(self.counts))).copy()


class Markov(ScoredMethod):
    """First-order transitions: how often each item followed the user's last item in training
    sequences. Items never seen after it are ordered by popularity (scaled below one transition,
    so popularity only breaks ties)."""

    name = "markov"

    def fit(self, split: Split) -> None:
        counts = self._popularity(split)
        self.prior = counts / (counts.max() + 1.0) if counts.size else counts
        self.transitions: dict[int, dict[int, int]] = {}
        for sequence in split.train.values():
            idx = [self.index[i] for i in sequence if i in self.index]
            for prev, nxt in zip(idx, idx[1:]):
                row = self.transitions.setdefault(prev, {})
                row[nxt] = row.get(nxt, 0) + 1

    def score(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        out = np.tile(self.prior, (len(histories), 1))
        for row, history in enumerate(histories):
            if not history or history[-1] not in self.index:
                continue
            for nxt, count in self.transitions.get(self.index[history[-1]], {}).items():
                out[row, nxt] += count
        return out


class ItemKNN(ScoredMethod):
    """Item-based nearest neighbours: cosine similarity of items' user sets in the training
    sequences; a history scores each item by the summed similarity of its items to it, each
    item keeping only its ``neighbors`` most similar items. ``neighbors`` (None) is chosen on
    the validation examples from ``NEIGHBOR_GRID``."""

    name = "itemknn"
    NEIGHBOR_GRID = (10, 20, 50, 100, 200, 0)  # 0: all

    def __init__(self, catalog: Catalog, neighbors: int | None = None):
        super().__init__(catalog)
        self.neighbors = neighbors

    def fit(self, split: Split) -> None:
        n = len(self.catalog)
        rows, cols = [], []
        for u, sequence in enumerate(split.train.values()):
            for item in set(sequence):
                if item in self.index:
                    rows.append(u)
                    cols.append(self.index[item])
        self.full = self._dense_similarity(rows, cols, len(split.train), n) if n <= DENSE_ITEMS else _sparse_similarity(rows, cols, n)
        self.prior = self._popularity(split)
        self.prior = (self.prior / (self.prior.max() + 1.0) * 1e-6).astype(np.float32)  # breaks exact ties only
        if self.neighbors is None and split.valid:
            scores = {}
            for neighbors in self.NEIGHBOR_GRID:
                self._prune(neighbors)
                scores[neighbors] = validation_ndcg(self, split.valid)
            best = max(scores, key=lambda m: (scores[m], -m))
            self.tuned = {"neighbors": best or "all", "valid_NDCG@10": {str(m or "all"): round(v, 4) for m, v in scores.items()}}
            self.neighbors = best
        self._prune(self.neighbors or 0)

    @staticmethod
    def _dense_similarity(rows: list[int], cols: list[int], n_users: int, n: int) -> np.ndarray:
        import torch

        users = torch.sparse_coo_tensor(
            torch.tensor([rows, cols], dtype=torch.long), torch.ones(len(rows)), (max(n_users, 1), n), check_invariants=True,
        ).coalesce()
        co = torch.sparse.mm(users.t().coalesce(), users.to_dense()).numpy()  # item x item co-occurrence
        norms = np.sqrt(np.diag(co)).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            sim = co / np.outer(norms, norms)
        sim = np.nan_to_num(sim, nan=0.0, posinf=0.0).astype(np.float32)
        np.fill_diagonal(sim, 0.0)
        return sim

    def _prune(self, neighbors: int) -> None:
        sim = self.full
        if not isinstance(sim, np.ndarray):
            self.sim = _sparse_top(sim, neighbors)
        elif neighbors and neighbors < sim.shape[0]:
            keep = np.argpartition(-sim, neighbors - 1, axis=1)[:, :neighbors]
            pruned = np.zeros_like(sim)
            np.put_along_axis(pruned, keep, np.take_along_axis(sim, keep, axis=1), axis=1)
            self.sim = pruned
        else:
            self.sim = sim

    def score(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        out = np.tile(self.prior, (len(histories), 1))
        for row, history in enumerate(histories):
            idx = [self.index[i] for i in history if i in self.index]
            if idx:
                out[row] += np.asarray(self.sim[idx].sum(axis=0)).reshape(-1)
        return out


#: catalogs up to this many items keep ItemKNN's similarities dense (n x n float32: 1.6 GB at the
#: limit); larger ones sparse, where only co-occurring pairs take memory
DENSE_ITEMS = 20_000


def _sparse_similarity(rows: list[int], cols: list[int], n: int) -> Any:
    """``_dense_similarity`` as a scipy CSR matrix: the cosine of two items' user sets, for the
    pairs some user shares (the rest are 0 in both)."""
    from scipy import sparse

    users = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(max(max(rows, default=0) + 1, 1), n))
    co = (users.T @ users).tocsr()
    norms = np.sqrt(co.diagonal())
    inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    sim = (sparse.diags(inverse) @ co @ sparse.diags(inverse)).tocsr()
    sim.setdiag(0.0)
    sim.eliminate_zeros()
    return sim.astype(np.float32)


def _sparse_top(sim: Any, neighbors: int) -> Any:
    """Each row's ``neighbors`` largest similarities (0: all), as ``ItemKNN._prune`` keeps them."""
    if not neighbors:
        return sim
    pruned = sim.copy()
    for row in range(pruned.shape[0]):
        start, end = pruned.indptr[row], pruned.indptr[row + 1]
        if end - start > neighbors:
            values = pruned.data[start:end]
            values[np.argpartition(-values, neighbors - 1)[neighbors:]] = 0.0
    pruned.eliminate_zeros()
    return pruned


def validation_ndcg(method: ScoredMethod, examples: Sequence[Example], limit: int = 2000) -> float:
    """Mean NDCG@10 over (up to ``limit``) validation examples, for early stopping and tuning: full
    catalog minus the history's IDs (title-mates are not excluded here, unlike the test protocol),
    a target inside the history is a miss, ties by catalog order."""
    examples = list(examples)[:limit]
    return scores_ndcg(method, method.score([e.history for e in examples]), examples) if examples else 0.0


def scores_ndcg(method: ScoredMethod, scores: np.ndarray, examples: Sequence[Example]) -> float:
    """``validation_ndcg`` of ``scores`` already computed for ``examples`` (a tuning loop that tries
    many mixtures of the same scores computes them once)."""
    ranks = scores_ranks(method, scores, examples)
    return sum(ndcg(rank, 10) for rank in ranks) / len(ranks) if ranks else 0.0


def scores_ranks(method: ScoredMethod, scores: np.ndarray, examples: Sequence[Example]) -> list[int | None]:
    """Each example's target rank in the top 10 of its ``scores`` by ``validation_ndcg``'s rule."""
    ties = np.arange(len(method.catalog))
    ranks = []
    for row, example in enumerate(examples):
        excluded = np.zeros(len(method.catalog), dtype=bool)
        excluded[[method.index[i] for i in example.history if i in method.index]] = True
        best = top_k(scores[row], excluded, ties, 10)
        ranks.append(rank_in_list(example.target, [method.catalog.ids[i] for i in best]))
    return ranks

