"""Forced-chain lookahead: a beam's single-child continuation is fed in the same model call, and
the search must not change in any way (same titles, order and scores) while calling the model less."""

from __future__ import annotations

import random

import numpy as np
import pytest

from genrec.decoding import TitlePrior, beam_search
from genrec.errors import ConfigError

from helpers import catalog_of
from test_beam_search import hf_reference, random_titles


def long_titles(n, seed=0):
    """Product-like titles: long shared stretches (brand, series) with few decisions in between."""
    rng = random.Random(seed)
    brands = ["Acme Laboratory Supply", "Northwind Scientific Instruments", "Contoso Industrial"]
    kinds = ["Borosilicate Glass Beaker", "Digital Caliper Stainless Steel", "Nitrile Examination Gloves"]
    out = set()
    while len(out) < n:
        out.add(f"{rng.choice(brands)} {rng.choice(kinds)}, Pack of {rng.randint(1, 12)}, {rng.choice(['Clear', 'Blue'])}")
    return sorted(out)


def test_forced_lengths_count_single_child_runs(make_rec):
    rec = make_rec(catalog_of(random_titles(120, seed=3)))
    index = rec.index_for()
    forced = index.forced_lengths()
    for node in range(index.n_nodes - 1):
        run, at = 0, node
        while index.n_children[at] == 1:
            run, at = run + 1, int(index.first_child[at])
        assert forced[node] == run, node
    assert forced[index.sentinel] == 0


def _search(rec, model, histories, lookahead, **kw):
    jobs = [rec.pipeline.prepare(h, "next_item") for h in histories]
    index = rec.pipeline.index(jobs[0].ctx)
    stats: dict = {}
    hyps = beam_search(model, [j.prompt_ids for j in jobs], num_beams=kw.pop("beams", 6), num_return=kw.pop("k", 6),
                       index=index, banned_titles=[j.banned_titles for j in jobs], lookahead=lookahead,
                       stats=stats, **kw)  # fmt: skip
    return hyps, stats, index


@pytest.fixture
def chains_in_every_call(monkeypatch):
    """Feed forced chains in multi-user calls too (by default only calls of one user's beams do),
    so that the packing of several users' chains is exercised."""
    import importlib

    monkeypatch.setattr(importlib.import_module("genrec.decoding.lookahead"), "LOOKAHEAD_MAX_ROWS", 10_000)


@pytest.mark.parametrize("titles", [long_titles(60), random_titles(200, seed=5)], ids=["long", "random200"])
@pytest.mark.parametrize("every_call", [False, True], ids=["default", "chains-in-every-call"])
def test_lookahead_changes_nothing_but_the_model_calls(make_rec, tiny_model, titles, every_call, request):
    if every_call:
        request.getfixturevalue("chains_in_every_call")
    rec = make_rec(catalog_of(titles))
    histories = [[], ["i1"], ["i2", "i3", "i4"], ["i9", "i8"], ["i5"]]
    with_hyps, with_stats, _ = _search(rec, tiny_model, histories, True)
    without_hyps, without_stats, _ = _search(rec, tiny_model, histories, False)
    for a, b in zip(with_hyps, without_hyps):
        assert [h.node for h in a] == [h.node for h in b]
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], rel=2e-6, abs=1e-4)
    assert with_stats["steps"] == without_stats["steps"]
    assert without_stats["model_calls"] == without_stats["steps"]  # one call per step, prefill included
    if every_call:
        assert with_stats["model_calls"] < without_stats["model_calls"]
    else:  # five users at once: chains are fed only once few beam rows are left
        assert with_stats["model_calls"] <= without_stats["model_calls"]
        one_hyps, one_stats, _ = _search(rec, tiny_model, histories[2:3], True)
        assert one_stats["model_calls"] < one_stats["steps"]


@pytest.mark.parametrize("max_chain", [0, 1, 3])
def test_a_capped_chain_changes_nothing_but_the_model_calls(make_rec, tiny_model, chains_in_every_call, max_chain):
    """Feeding at most ``max_chain`` forced tokens a call: the same search, with at least as many
    calls as whole chains and at most as many as no lookahead."""
    rec = make_rec(catalog_of(long_titles(60)))
    histories = [["i1"], ["i2", "i3", "i4"], ["i5"]]
    runs = {cap: _search(rec, tiny_model, histories, True, max_chain=cap) for cap in (None, max_chain)}
    off_hyps, off_stats, _ = _search(rec, tiny_model, histories, False)
    capped_hyps, capped_stats, _ = runs[max_chain]
    for a, b in zip(capped_hyps, off_hyps):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], rel=2e-6, abs=1e-4)
    assert runs[None][1]["model_calls"] <= capped_stats["model_calls"] <= off_stats["model_calls"]
    if max_chain == 0:
        assert capped_stats["model_calls"] == off_stats["model_calls"]


@pytest.mark.parametrize("every_call", [False, True], ids=["one-user", "chains-in-every-call"])
def test_topping_up_chains_saves_calls_and_changes_nothing(make_rec, tiny_model, monkeypatch, every_call, request):
    """Every call also feeds the next stretch of the chains other live beams stand on: the same
    search as without top-ups, in fewer calls than a beam running out of its stretch would make."""
    import importlib

    if every_call:
        request.getfixturevalue("chains_in_every_call")
    rec = make_rec(catalog_of(long_titles(60)))
    histories = [["i1"], ["i2", "i3", "i4"], ["i5"]] if every_call else [["i2", "i3", "i4"]]
    topped_hyps, topped_stats, _ = _search(rec, tiny_model, histories, True, max_chain=2)
    whole_stats = _search(rec, tiny_model, histories, True, max_chain=None)[1]
    monkeypatch.setattr(importlib.import_module("genrec.decoding.lookahead"), "top_up", lambda *args: None)
    plain_hyps, plain_stats, _ = _search(rec, tiny_model, histories, True, max_chain=2)
    for a, b in zip(topped_hyps, plain_hyps):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], rel=2e-6, abs=1e-4)
    assert whole_stats["model_calls"] <= topped_stats["model_calls"] < plain_stats["model_calls"]


def test_a_negative_chain_cap_is_refused(make_rec, tiny_model):
    rec = make_rec(catalog_of(long_titles(20)))
    with pytest.raises(ConfigError, match="max_chain"):
        _search(rec, tiny_model, [["i1"]], True, max_chain=-1)


def test_lookahead_matches_transformers_on_long_titles(make_rec, tiny_model):
    rec = make_rec(catalog_of(long_titles(40, seed=1)))
    job = rec.pipeline.prepare(["i3"], "next_item", exclude_history=False)
    index = rec.pipeline.index(job.ctx)
    stats: dict = {}
    ours = beam_search(tiny_model, [job.prompt_ids], num_beams=5, num_return=5, index=index, lookahead=True, stats=stats)[0]
    theirs = hf_reference(tiny_model, job.prompt_ids, index, 5, rec.end_ids[0])
    assert stats["compactions"] >= 1  # the keys of pruned beams were dropped along the way
    assert [index.titles_at(h.node) for h in ours] == [t for t, _ in theirs[: len(ours)]]
    # sums of ~40 float32 log-probabilities near -300: equal to float32 rounding
    assert [h.score for h in ours] == pytest.approx([s for _, s in theirs[: len(ours)]], rel=2e-6, abs=1e-4)


def test_lookahead_with_a_prior_and_exhaustive_beams(make_rec, tiny_model, chains_in_every_call):
    """Every title reachable (beams = titles): each finished title's score is exact, with a prior
    mixed in, whichever way the model is called."""
    titles = long_titles(24, seed=2)
    rec = make_rec(catalog_of(titles))
    histories = [["i1"], ["i4", "i6"]]
    scores = np.random.default_rng(0).normal(size=(2, len(titles)))
    jobs = [rec.pipeline.prepare(h, "next_item") for h in histories]
    index = rec.pipeline.index(jobs[0].ctx)
    results = []
    for lookahead in (True, False):
        prior = TitlePrior.from_item_scores(index, rec.catalog.position_titles, scores, [j.banned_titles for j in jobs],
                                            weight=0.6, aggregation="logsumexp")  # fmt: skip
        hyps, stats, _ = _search(rec, tiny_model, histories, lookahead, beams=len(titles), k=len(titles) - 2, prior=prior)
        results.append((hyps, stats))
    (a_hyps, a_stats), (b_hyps, b_stats) = results
    for a, b in zip(a_hyps, b_hyps):
        assert sorted((h.node, round(h.score, 3)) for h in a) == sorted((h.node, round(h.score, 3)) for h in b)
    assert a_stats["model_calls"] < b_stats["model_calls"]


def test_recommender_lookahead_switch_changes_nothing(make_rec):
    catalog = catalog_of(long_titles(50, seed=3))
    on, off = make_rec(catalog), make_rec(catalog, lookahead=False)
    for history in ([], ["i2", "i7"]):
        a, b = on.recommend(history, k=5), off.recommend(history, k=5)
        assert [r.item_id for r in a] == [r.item_id for r in b]
        assert [r.score for r in a] == pytest.approx([r.score for r in b], rel=2e-6, abs=1e-4)


def test_the_step_hook_sees_every_model_call(make_rec, tiny_model):
    """``on_model_call`` receives each call after the prefill, as the profile tabulates them: with
    lookahead fewer calls, each feeding its beams' last tokens and their chains; without, one
    token per live beam. The hook changes nothing about the search."""
    rec = make_rec(catalog_of(long_titles(40)))
    for lookahead in (True, False):
        plain, _, _ = _search(rec, tiny_model, [[rec.catalog.ids[0]]], lookahead)
        calls = []
        hyps, stats, _ = _search(rec, tiny_model, [[rec.catalog.ids[0]]], lookahead, on_model_call=calls.append)
        assert hyps == plain
        assert len(calls) == stats["model_calls"] - 1  # the prefill is not a step's call
        assert all(c.users == 1 and c.active == 1 and 1 <= c.rows <= 6 and c.seconds >= 0 for c in calls)
        prompt = len(rec.pipeline.prepare([rec.catalog.ids[0]], "next_item").prompt_ids)
        assert calls and calls[0].keys == prompt and all(c.keys >= prompt for c in calls)  # the prompt, then beams
        if lookahead:
            assert sum(c.tokens for c in calls) > sum(c.rows for c in calls)  # chains rode along
        else:
            assert all(c.tokens == c.rows == c.width for c in calls)
