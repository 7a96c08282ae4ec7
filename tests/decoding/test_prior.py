"""The collaborative prior inside constrained beam search: exact where it can be checked exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genrec import PriorError
from genrec.decoding import TitlePrior, score_continuations

from helpers import TITLES, catalog_of


def log_softmax(x: np.ndarray) -> np.ndarray:
    return x - np.logaddexp.reduce(x)


@pytest.fixture
def rec(make_rec):
    return make_rec(catalog_of(TITLES))


def random_prior(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 3.0, n)


def test_node_masses_are_the_log_sum_of_the_titles_below(rec):
    index = rec.index_for()
    scores = torch.tensor(np.stack([random_prior(index.n_titles, 1), random_prior(index.n_titles, 2)]))
    prior = TitlePrior(index, scores, weight=0.5)
    maxed = TitlePrior(index, scores, weight=0.5, aggregation="max")
    for node in range(index.n_nodes - 1):  # the sentinel holds nothing
        below = [t for t in range(index.n_titles) if node in _path(index, t)]
        for user in range(2):
            values = scores[user, below].numpy()
            assert prior.mass[user, node].item() == pytest.approx(np.logaddexp.reduce(values), abs=1e-4)
            assert maxed.mass[user, node].item() == pytest.approx(values.max(), abs=1e-4)


def _path(index, title):
    node, out = int(index.title_leaf[title]), []
    while node >= 0:
        out.append(node)
        node = int(index.parent[node]) if node > 0 else -1
    return out


def test_weight_zero_is_the_model_alone(rec):
    prior = random_prior(len(rec.catalog))
    rec.recommend(["i1"], k=8)  # fills the prompt-prefix cache: both calls below then take one path
    plain = rec.recommend(["i1"], k=8)
    mixed = rec.recommend(["i1"], k=8, prior=prior, prior_weight=0.0)
    assert [(r.item_id, r.score) for r in mixed] == [(r.item_id, r.score) for r in plain]


@pytest.mark.parametrize("weight", [0.3, 0.7, 1.0])
def test_finished_titles_score_the_weighted_mix_of_model_and_prior(rec, weight):
    """With log-sum-exp the prior's per-step terms telescope: a title scores exactly
    (1 - w) log p_model(title) + w log p_prior(title | the titles not excluded). Beams for the
    whole catalog make the search exhaustive, so the order is that of the mixed scores."""
    catalog = rec.catalog
    prior = random_prior(len(catalog), 3)
    history = ["i0", "i5"]
    recs = rec.recommend(history, k=len(catalog) - 2, prior=prior, prior_weight=weight)
    job = rec.pipeline.prepare(history, "next_item")
    index = rec.pipeline.index(job.ctx)
    allowed = [p for p in range(len(catalog)) if catalog.ids[p] not in history]
    lm = score_continuations(rec.lm.model, job.prompt_ids, [index.sequence(rec.pipeline.title_number(p)) for p in allowed])
    expected = dict(zip((catalog.ids[p] for p in allowed), (1 - weight) * np.array(lm) + weight * log_softmax(prior[allowed])))
    assert {r.item_id for r in recs} == set(expected)
    assert [r.score for r in recs] == pytest.approx([expected[r.item_id] for r in recs], abs=1e-3)
    assert [r.item_id for r in recs] == sorted(expected, key=lambda i: -expected[i])


def test_weight_one_follows_the_prior(rec):
    prior = random_prior(len(rec.catalog), 4)
    recs = rec.recommend(["i2"], k=5, prior=prior, prior_weight=1.0)
    best = [rec.catalog.ids[p] for p in np.argsort(-prior) if rec.catalog.ids[p] != "i2"][:5]
    assert [r.item_id for r in recs] == best


def test_batches_callables_and_defaults(make_rec):
    catalog = catalog_of(TITLES)
    seen: list = []

    def markovish(histories):
        seen.append(histories)
        out = np.zeros((len(histories), len(catalog)))
        for row, history in enumerate(histories):
            nxt = (int(history[-1][1:]) + 1) % len(catalog) if history else 0
            out[row, nxt] = 20.0
        return out

    rec = make_rec(catalog, prior=markovish, prior_weight=0.95)
    histories = [["i1"], ["i4", "i6"], []]
    batched = rec.recommend_batch(histories, k=4)
    assert [h for call in seen for h in call] == histories  # the resolved histories, oldest first
    single = [rec.recommend(h, k=4) for h in histories]
    for b, s in zip(batched, single):
        assert [r.item_id for r in b] == [r.item_id for r in s]
        assert [r.score for r in b] == pytest.approx([r.score for r in s], abs=1e-3)
    assert [b[0].item_id for b in batched] == ["i2", "i7", "i0"]  # the prior's favourite leads
    assert rec.recommend(["i1"], k=4, prior_weight=0.0)[0].score != batched[0][0].score


def test_rank_and_chat_mix_the_same_way(rec):
    prior = random_prior(len(rec.catalog), 5)
    candidates = ["i3", "i6", "i9", "i12"]
    model = {r.item_id: r.score for r in rec.rank(["i1"], candidates)}
    mixed = rec.rank(["i1"], candidates, prior=prior, prior_weight=0.4)
    positions = [rec.catalog.position(c) for c in candidates]
    log_prior = dict(zip(candidates, log_softmax(prior[positions])))
    for r in mixed:
        assert r.score == pytest.approx(0.6 * model[r.item_id] + 0.4 * log_prior[r.item_id], abs=1e-4)
    reply = rec.chat([{"role": "user", "content": "I loved Alien"}], k=3, prior=prior, prior_weight=1.0)
    best = [rec.catalog.ids[p] for p in np.argsort(-prior) if rec.catalog.titles[p] != "Alien"][:3]
    assert [r.item_id for r in reply.items] == best


@pytest.mark.parametrize(
    "prior, weight, problem",
    [
        (np.zeros(3), 0.5, "shape"),
        (np.zeros((2, len(TITLES))), 0.5, "shape"),
        (np.full(len(TITLES), np.nan), 0.5, "NaN or infinite"),
        (np.r_[np.zeros(len(TITLES) - 1), np.inf], 0.5, "NaN or infinite"),
        (np.zeros(len(TITLES)), 1.5, "from 0 to 1"),
        (np.zeros(len(TITLES)), -0.1, "from 0 to 1"),
        (np.zeros(len(TITLES)), "half", "from 0 to 1"),
        ("not numbers", 0.5, "not an array of numbers"),
        (lambda histories: np.zeros((len(histories) + 1, len(TITLES))), 0.5, "shape"),
    ],
)
def test_bad_priors_are_clear_errors(rec, prior, weight, problem):
    with pytest.raises(PriorError, match=problem):
        rec.recommend(["i1"], k=3, prior=prior, prior_weight=weight)


def test_a_prior_needs_constrained_decoding(rec):
    from genrec import LimitError

    with pytest.raises(LimitError, match="constrained"):
        rec.recommend(["i1"], k=3, constrained=False, prior=np.zeros(len(TITLES)), prior_weight=0.5)


def test_the_aggregation_per_call_is_the_recommenders_setting(make_rec):
    catalog = catalog_of(TITLES)
    prior = random_prior(len(catalog), 6)
    default, maxed = make_rec(catalog), make_rec(catalog, prior_aggregation="max")
    per_call = default.recommend_batch([["i1"], ["i5"]], k=5, prior=prior, prior_weight=0.7, prior_aggregation="max")
    built = maxed.recommend_batch([["i1"], ["i5"]], k=5, prior=prior, prior_weight=0.7)
    for a, b in zip(per_call, built):
        assert [(r.item_id, round(r.score, 4)) for r in a] == [(r.item_id, round(r.score, 4)) for r in b]
    # the two aggregations score prefixes differently, so finished titles differ too
    summed = default.recommend(["i1"], k=5, prior=prior, prior_weight=0.7)
    assert [r.score for r in summed] != pytest.approx([r.score for r in per_call[0]], abs=1e-4)
    with pytest.raises(PriorError, match="prior_aggregation must be one of logsumexp, max, got 'mean'"):
        default.recommend(["i1"], k=3, prior=prior, prior_weight=0.5, prior_aggregation="mean")
    with pytest.raises(PriorError, match="got 'sum'"):
        make_rec(catalog, prior_aggregation="sum")


def test_a_prior_moves_to_the_models_device(rec, monkeypatch):
    """Beam search indexes the prior's masses with tensors on the model's device: a prior built
    elsewhere (the CPU, from numpy scores, while the model is on a GPU) moves there first (seen
    on a GPU: 'indices should be either on cpu or on the same device'). ``meta`` stands in for a
    second device on a CPU-only machine."""
    index = rec.index_for("next_item")
    scores = torch.as_tensor(np.stack([random_prior(index.n_titles, s) for s in (0, 1)]))
    prior = TitlePrior(index, scores, weight=0.5)
    assert prior.to("cpu") is prior
    moved = prior.to("meta")
    assert moved.mass.device.type == "meta" and moved.mass.shape == prior.mass.shape
    assert (moved.weight, moved.aggregation) == (prior.weight, prior.aggregation)
    assert prior.mass.device.type == "cpu"  # the original is left as it was
    built = TitlePrior.from_item_scores(index, rec.catalog.position_titles, np.stack([random_prior(len(rec.catalog))] * 2),
                                        [frozenset(), frozenset()], weight=0.5, device="meta")  # fmt: skip
    assert built.mass.device.type == "meta"
    # and decoding puts it on the model's device
    moves = []
    real_to = TitlePrior.to
    monkeypatch.setattr(TitlePrior, "to", lambda self, device: moves.append(torch.device(device)) or real_to(self, device))
    rec.recommend(["i1"], k=3, prior=random_prior(len(rec.catalog)), prior_weight=0.5)
    assert moves == [next(rec.lm.model.parameters()).device]


def test_one_prior_value_from_the_facade_to_every_task(make_rec):
    """A prior is one value (scores, weight, aggregation), checked once where it is made: given
    whole or as loose arguments, to recommend, rank and chat alike, with the Recommender's default
    filling what a call leaves out; its parts stay readable and settable as attributes."""
    from genrec import Prior

    catalog = catalog_of(TITLES)
    scores = random_prior(len(catalog), 3)
    loose = make_rec(catalog).recommend(["i1"], k=5, prior=scores, prior_weight=0.6, prior_aggregation="max")
    whole = make_rec(catalog).recommend(["i1"], k=5, prior=Prior(scores, 0.6, "max"))
    default = make_rec(catalog, prior=Prior(scores, 0.6, "max")).recommend(["i1"], k=5)
    assert [r.item_id for r in loose] == [r.item_id for r in whole] == [r.item_id for r in default]
    assert [r.score for r in loose] == pytest.approx([r.score for r in default], abs=1e-5)
    rec = make_rec(catalog, prior=scores, prior_weight=0.6)
    assert (rec.prior is scores, rec.prior_weight, rec.prior_aggregation) == (True, 0.6, "logsumexp")
    assert rec.default_prior.override(weight=0.2) == Prior(scores, 0.2, "logsumexp")  # the call's weight, the default's rest
    assert rec.default_prior.override(Prior(None, 0.9)).active is False  # a whole value replaces the default
    rec.prior_aggregation = "max"
    assert rec.default_prior == Prior(scores, 0.6, "max")
    with pytest.raises(PriorError, match="from 0 to 1"):
        rec.prior_weight = 2
    with pytest.raises(PriorError, match="got 'mean'"):
        Prior(scores, 0.5, "mean")
    # rank mixes the same weight exactly; chat takes the aggregation too
    ranked = rec.rank(["i1"], ["i2", "i3", "i4"], prior=Prior(scores, 1.0))
    positions = [catalog.position(i) for i in ("i2", "i3", "i4")]
    log_prior = scores[positions] - np.logaddexp.reduce(scores[positions])
    assert [r.score for r in ranked] == pytest.approx(sorted(log_prior, reverse=True), abs=1e-5)
    talk = [{"role": "user", "content": "I liked " + catalog.title_of("i1")}]
    assert [r.item_id for r in rec.chat(talk, k=3, prior_weight=1.0).items] == [
        r.item_id for r in rec.chat(talk, k=3, prior=Prior(scores, 1.0, "max")).items
    ]
