from __future__ import annotations

import random

import pytest
import torch
from transformers import GenerationConfig, LogitsProcessorList

from genrec import Catalog, CatalogError, LimitError
from genrec.decoding import PrefixCache, TitleConstraint, TrieLogitsProcessor, beam_search

from helpers import TITLES, catalog_of


def random_titles(n, seed=0):
    rng = random.Random(seed)
    words = ["Star", "Night", "Love", "War", "The", "Dark", "City", "Blue", "Last", "Man", "Dog", "Moon", "Red", "Sun"]
    out = set()
    while len(out) < n:
        out.add(" ".join(rng.choice(words) for _ in range(rng.randint(1, 4))) + f" ({rng.randint(1950, 2020)})")
    return sorted(out)


def hf_reference(model, prompt_ids, index, beams, end_id, length_penalty=0.0):
    """transformers' own beam search with a GENRE-style dict trie as prefix_allowed_tokens_fn."""
    trie: dict = {}
    for n in range(index.n_titles):
        node = trie
        for tok in index.sequence(n):
            node = node.setdefault(tok, {})
    prompt_len = len(prompt_ids)

    def allowed(batch_id, input_ids):
        node = trie
        for tok in input_ids[prompt_len:].tolist():
            if tok not in node:
                return [end_id]
            node = node[tok]
        return list(node) or [end_id]

    config = GenerationConfig(
        num_beams=beams,
        num_return_sequences=beams,
        do_sample=False,
        length_penalty=length_penalty,
        early_stopping=False,
        max_new_tokens=index.max_depth,
        eos_token_id=end_id,
        pad_token_id=end_id,
        return_dict_in_generate=True,
        output_scores=True,
    )
    ids = torch.tensor([prompt_ids])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config, prefix_allowed_tokens_fn=allowed)
    results = []
    for seq, score in zip(out.sequences, out.sequences_scores):
        gen = seq[prompt_len:].tolist()
        if end_id not in gen or score < -1e8:
            continue
        tokens = gen[: gen.index(end_id) + 1]
        results.append((index.titles_at(index.walk(tokens)), float(score)))
    return results


@pytest.mark.parametrize("titles", [TITLES, random_titles(300)], ids=["tricky", "random300"])
@pytest.mark.parametrize("history", [[], ["i0", "i3"]])
def test_same_topk_as_transformers_prefix_allowed_tokens_fn(make_rec, tiny_model, titles, history):
    rec = make_rec(catalog_of(titles))
    job = rec.pipeline.prepare(history, "next_item", exclude_history=False)
    index = rec.pipeline.index(job.ctx)
    beams = 6
    ours = beam_search(tiny_model, [job.prompt_ids], num_beams=beams, num_return=beams, index=index)[0]
    theirs = hf_reference(tiny_model, job.prompt_ids, index, beams, rec.end_ids[0])
    assert len(ours) == beams
    # ours stops once the top k are final; theirs runs on and may finish more beams behind them
    assert [index.titles_at(h.node) for h in ours] == [t for t, _ in theirs[: len(ours)]]
    assert [h.score for h in ours] == pytest.approx([s for _, s in theirs[: len(ours)]], abs=1e-4)


def test_trie_logits_processor_in_generate(make_rec, tiny_model):
    rec = make_rec(catalog_of(TITLES))
    job = rec.pipeline.prepare([], "next_item", exclude_history=False)
    index = rec.pipeline.index(job.ctx)
    end = rec.end_ids[0]
    ids = torch.tensor([job.prompt_ids])
    config = GenerationConfig(
        num_beams=4, num_return_sequences=4, do_sample=False, length_penalty=0.0, max_new_tokens=index.max_depth,
        eos_token_id=end, pad_token_id=end, return_dict_in_generate=True, output_scores=True,
    )
    out = tiny_model.generate(
        ids, attention_mask=torch.ones_like(ids), generation_config=config,
        logits_processor=LogitsProcessorList([TrieLogitsProcessor(index, len(job.prompt_ids))]),
    )
    ours = beam_search(tiny_model, [job.prompt_ids], num_beams=4, num_return=4, index=index)[0]
    got = []
    for seq in out.sequences:
        gen = seq[len(job.prompt_ids):].tolist()
        got.append(index.titles_at(index.walk(gen[: gen.index(end) + 1])))
    assert got == [index.titles_at(h.node) for h in ours]


def test_every_output_is_a_distinct_catalog_item_not_in_history(make_rec):
    catalog = catalog_of(random_titles(400, seed=1))
    rec = make_rec(catalog)
    rng = random.Random(0)
    for _ in range(5):
        history = rng.sample(catalog.ids, 4)
        recs = rec.recommend(history, k=10)
        ids = [r.item_id for r in recs]
        assert len(ids) == 10 and len(set(ids)) == 10
        assert all(i in catalog for i in ids)
        assert not set(ids) & set(history)
        assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)
        assert all(catalog.title_of(r.item_id) == r.title for r in recs)


def test_history_exclusion_and_option(make_rec):
    """Excluding the history removes exactly its items: with beams for the whole catalog the
    search is exhaustive, so the list without exclusion is the excluded list plus the item."""
    catalog = catalog_of(TITLES)
    rec = make_rec(catalog)
    top = rec.recommend(["i5"], k=1, exclude_history=False)[0]
    with_it = rec.recommend([top.item_id], k=len(catalog), exclude_history=False)
    without = rec.recommend([top.item_id], k=len(catalog))
    assert top.item_id in [r.item_id for r in with_it]  # allowed back in when asked
    assert top.item_id not in [r.item_id for r in without]
    assert len(with_it) == len(catalog) and len(without) == len(catalog) - 1
    kept = [r for r in with_it if r.item_id != top.item_id]
    assert [r.item_id for r in without] == [r.item_id for r in kept]
    assert [r.score for r in without] == pytest.approx([r.score for r in kept], abs=1e-4)


def test_trie_logits_processor_excludes_banned_titles(make_rec, tiny_model):
    """The LogitsProcessor shares beam search's constraint, exclusions included."""
    rec = make_rec(catalog_of(TITLES))
    job = rec.pipeline.prepare(["i0", "i5"], "next_item")
    index = rec.pipeline.index(job.ctx)
    end = rec.end_ids[0]
    ids = torch.tensor([job.prompt_ids])
    config = GenerationConfig(
        num_beams=4, num_return_sequences=4, do_sample=False, length_penalty=0.0, max_new_tokens=index.max_depth,
        eos_token_id=end, pad_token_id=end,
    )
    processor = TrieLogitsProcessor(index, len(job.prompt_ids), banned_titles=job.banned_titles)
    out = tiny_model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config,
                              logits_processor=LogitsProcessorList([processor]))  # fmt: skip
    generated = [seq[len(job.prompt_ids) :].tolist() for seq in out]
    got = [index.titles_at(index.walk(gen[: gen.index(end) + 1])) for gen in generated]
    ours = beam_search(tiny_model, [job.prompt_ids], num_beams=4, num_return=4, index=index, banned_titles=[job.banned_titles])[0]
    assert got == [index.titles_at(h.node) for h in ours]
    assert not {t for ts in got for t in ts} & job.banned_titles


def test_k_larger_than_catalog_returns_what_is_left(make_rec):
    rec = make_rec(catalog_of(["Alien", "Aliens", "Heat"]))
    recs = rec.recommend([], k=10)
    assert sorted(r.title for r in recs) == ["Alien", "Aliens", "Heat"]
    assert [r.title for r in rec.recommend(["i0"], k=10)] != [] and len(rec.recommend(["i0"], k=10)) == 2


def test_one_item_and_empty_catalogs(make_rec):
    one = make_rec(catalog_of(["Heat"]))
    assert [r.item_id for r in one.recommend([], k=5)] == ["i0"]
    assert list(one.recommend(["i0"], k=5)) == []
    with pytest.raises(CatalogError, match="has no items"):
        make_rec(Catalog.from_records([]))


def test_prefix_titles_each_reachable(make_rec):
    """'Alien' is a prefix of 'Aliens' and 'Alien 3'; each must come out as itself."""
    rec = make_rec(catalog_of(["Alien", "Aliens", "Alien 3", "Heat", "Heat 2"]))
    titles = [r.title for r in rec.recommend([], k=5)]
    assert sorted(titles) == ["Alien", "Alien 3", "Aliens", "Heat", "Heat 2"]


def test_shared_title_returns_all_ids(make_rec):
    catalog = Catalog.from_records(
        [{"item_id": "a", "title": "Heat"}, {"item_id": "b", "title": "Heat"}, {"item_id": "c", "title": "Jaws"}]
    )
    rec = make_rec(catalog)
    recs = rec.recommend([], k=3)
    assert sorted(r.item_id for r in recs) == ["a", "b", "c"]
    heat = [r for r in recs if r.title == "Heat"]
    assert heat[0].score == heat[1].score
    # a title is excluded by any of its IDs: the film was seen
    assert [r.item_id for r in rec.recommend(["a"], k=3)] == ["c"]


def test_batch_equals_one_by_one(make_rec):
    catalog = catalog_of(random_titles(200, seed=2))
    rec = make_rec(catalog)
    histories = [[], ["i1"], ["i2", "i3", "i4", "i5", "i6", "i7"], ["i9", "i8"]]
    batched = rec.recommend_batch(histories, k=5, batch_size=4)
    single = [rec.recommend(h, k=5) for h in histories]
    for b, s in zip(batched, single):
        assert [r.item_id for r in b] == [r.item_id for r in s]
        assert [r.score for r in b] == pytest.approx([r.score for r in s], abs=1e-3)


def test_sampling_in_generation_config_is_ignored(make_rec, tiny_model):
    rec = make_rec(catalog_of(TITLES))
    before = [r.item_id for r in rec.recommend(["i1"], k=5)]
    saved = tiny_model.generation_config
    tiny_model.generation_config = GenerationConfig(do_sample=True, temperature=5.0, top_k=3)
    try:
        runs = [[r.item_id for r in rec.recommend(["i1"], k=5)] for _ in range(3)]
    finally:
        tiny_model.generation_config = saved
    assert runs == [before] * 3


@pytest.mark.parametrize("length_penalty", [1.0, -0.5])
def test_length_penalty_matches_transformers(make_rec, tiny_model, length_penalty):
    rec = make_rec(catalog_of(TITLES), length_penalty=length_penalty)
    job = rec.pipeline.prepare(["i3"], "next_item")
    index = rec.pipeline.index(job.ctx)
    beams = 5
    ours = beam_search(tiny_model, [job.prompt_ids], num_beams=beams, num_return=beams, index=index,
                       length_penalty=length_penalty)[0]  # fmt: skip
    theirs = hf_reference(tiny_model, job.prompt_ids, index, beams, rec.end_ids[0], length_penalty=length_penalty)
    assert [index.titles_at(h.node) for h in ours] == [t for t, _ in theirs[: len(ours)]]
    assert [h.score for h in ours] == pytest.approx([s for _, s in theirs[: len(ours)]], abs=1e-4)
    recs = rec.recommend([], k=5)
    assert len(recs) == 5 and all(r.item_id.startswith("i") for r in recs)


def test_dead_rows_get_no_allowed_token(make_rec):
    rec = make_rec(catalog_of(["Alien", "Heat"]))
    index = rec.index_for()
    logp = torch.zeros((2, index.vocab_size))
    masked = TitleConstraint(index, "cpu").mask(logp, torch.tensor([0, index.sentinel]))
    assert torch.isfinite(masked[0]).sum() == 2  # "Al..." and "He..." first tokens
    assert torch.isinf(masked[1]).all()  # never a fallback to unconstrained text


def test_invalid_k(make_rec):
    rec = make_rec(catalog_of(TITLES))
    for bad in (0, -1, 2.5, "3", True):
        with pytest.raises(LimitError):
            rec.recommend([], k=bad)
    with pytest.raises(LimitError, match="limit"):
        rec.recommend([], k=10**6)


@pytest.mark.parametrize("eos", [[2], [198, 30, 13]], ids=["rare-eos", "common-eos"])
def test_unconstrained_beam_search_matches_transformers(make_rec, tiny_model, eos):
    """Free text: the same sequences and scores as transformers' beam search without a constraint."""
    rec = make_rec(catalog_of(TITLES))
    job = rec.pipeline.prepare(["i1"], "next_item", exclude_history=False)
    hyps = beam_search(tiny_model, [job.prompt_ids], num_beams=3, num_return=3, eos_token_ids=eos, max_new_tokens=6)[0]
    assert len(hyps) == 3 and all(len(h.tokens) <= 6 for h in hyps)
    ids = torch.tensor([job.prompt_ids])
    config = GenerationConfig(
        num_beams=3, num_return_sequences=3, do_sample=False, length_penalty=0.0, max_new_tokens=6,
        eos_token_id=eos, pad_token_id=eos[0], return_dict_in_generate=True, output_scores=True,
    )
    out = tiny_model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
    theirs = []
    for seq in out.sequences.tolist():
        gen = seq[len(job.prompt_ids):]
        ends = [i for i, t in enumerate(gen) if t in eos]
        theirs.append(tuple(gen[: ends[0] + 1] if ends else gen))
    assert [h.tokens for h in hyps] == theirs
    assert [h.score for h in hyps] == pytest.approx(out.sequences_scores.tolist(), abs=1e-4)


def test_shared_prefix_cache_changes_nothing(make_rec, tiny_model):
    """Reusing the cache of the prompt text all prompts share gives the same titles and scores,
    in batches and one call at a time, as the prefix shrinks to what the prompts really share."""
    rec = make_rec(catalog_of(random_titles(150, seed=4)))
    histories = [["i1"], ["i2", "i3"], ["i4", "i5", "i6"], [], ["i7"]]
    jobs = [rec.pipeline.prepare(h, "next_item") for h in histories]
    index = rec.pipeline.index(jobs[0].ctx)

    def run(batch, cache):
        return beam_search(tiny_model, [j.prompt_ids for j in batch], num_beams=4, num_return=4, index=index,
                           banned_titles=[j.banned_titles for j in batch], prefix_cache=cache)  # fmt: skip

    plain = [run([j], None)[0] for j in jobs]
    cache = PrefixCache()
    singles = [run([j], cache)[0] for j in jobs]
    assert 8 <= len(cache.ids) < min(len(j.prompt_ids) for j in jobs)
    batched = run(jobs, PrefixCache())
    for a, b, c in zip(plain, singles, batched):
        assert [h.node for h in a] == [h.node for h in b] == [h.node for h in c]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)
        assert [h.score for h in a] == pytest.approx([h.score for h in c], abs=1e-4)
