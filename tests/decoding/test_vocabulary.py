"""The catalog output vocabulary: log-probabilities normalised over the tokens of the catalog's
titles, against a naive reference that runs the model on each whole title."""

from __future__ import annotations

import pytest
import torch

from genrec import VocabularyError
from genrec.decoding import OutputVocabulary, beam_search, score_continuations
from genrec.decoding.vocabulary import CatalogHead, catalog_head
from genrec.tasks.rank import score_titles

from helpers import TITLES, catalog_of


def naive_scores(model, prompt_ids, index, tokens=None):
    """Each title's log-probability after the prompt, one full forward pass per title, the
    softmax over ``tokens`` only (all tokens when None)."""
    scores = []
    with torch.no_grad():
        for n in range(index.n_titles):
            title = index.sequence(n)
            logits = model(input_ids=torch.tensor([list(prompt_ids) + title])).logits[0].float()
            steps = logits[len(prompt_ids) - 1 : len(prompt_ids) - 1 + len(title)]
            if tokens is not None:
                steps = torch.full_like(steps, -torch.inf).index_copy_(1, tokens, steps[:, tokens])
            logp = torch.log_softmax(steps, dim=-1)
            scores.append(float(logp[torch.arange(len(title)), torch.tensor(title)].sum()))
    return scores


def test_of_tokens_sorts_and_maps_and_refuses_what_is_not_a_token():
    vocab = OutputVocabulary.of_tokens([7, 3, 7, 0], 10)
    assert vocab.tokens.tolist() == [0, 3, 7] and vocab.size == 3
    assert vocab.slot.tolist() == [0, -1, -1, 1, -1, -1, -1, 2, -1, -1]
    assert vocab.slots_of(torch.tensor([7, 0])).tolist() == [2, 0]
    with pytest.raises(VocabularyError, match=r"\[4\]"):
        vocab.slots_of(torch.tensor([3, 4]))
    with pytest.raises(VocabularyError, match="outside"):
        OutputVocabulary.of_tokens([3, 10], 10)
    with pytest.raises(VocabularyError, match="at least one"):
        OutputVocabulary.of_tokens([], 10)


def test_log_softmax_renormalises_over_the_vocabulary_only():
    logits = torch.randn(4, 12)
    vocab = OutputVocabulary.of_tokens([1, 5, 6, 11], 12)
    logp = vocab.log_softmax(logits)
    assert torch.isinf(logp[:, [0, 2, 3, 4, 7, 8, 9, 10]]).all()
    assert torch.allclose(logp[:, vocab.tokens].exp().sum(-1), torch.ones(4))
    assert torch.allclose(logp[:, 5] - logp[:, 1], logits[:, 5] - logits[:, 1])  # ratios kept
    assert torch.equal(vocab.spread(torch.ones(2, 4), 0.0).sum(-1), torch.tensor([4.0, 4.0]))


def test_catalog_head_computes_those_columns_and_trains_those_rows(tiny_model):
    head = tiny_model.get_output_embeddings()
    tokens = torch.tensor([5, 17, 300, 1000])
    hidden = torch.randn(3, head.weight.shape[1])
    restricted = CatalogHead(head, tokens)
    assert torch.allclose(restricted(hidden), head(hidden)[:, tokens], atol=1e-5)
    assert restricted.weight is head.weight  # shared: training it trains the model's own rows
    assert "tokens" not in restricted.state_dict()  # never saved into a model
    vocab = OutputVocabulary.of_tokens(tokens, head.weight.shape[0])
    with catalog_head(tiny_model, vocab):
        logits = tiny_model(input_ids=torch.tensor([[1, 2, 3]])).logits
        assert logits.shape[-1] == 4
        logits.sum().backward()
    assert tiny_model.get_output_embeddings() is head
    grad = head.weight.grad
    changed = (grad != 0).any(dim=1).nonzero().view(-1).tolist()
    head.weight.grad = None
    # the output rows of the vocabulary, plus the input embeddings of the three tokens fed (tied weights)
    assert set(tokens.tolist()) <= set(changed) <= set(tokens.tolist()) | {1, 2, 3}


def test_catalog_head_refuses_a_model_without_a_linear_output_layer(tiny_model, monkeypatch):
    monkeypatch.setattr(tiny_model, "get_output_embeddings", lambda: torch.nn.Identity())
    with pytest.raises(VocabularyError, match="linear output layer"):
        with catalog_head(tiny_model, OutputVocabulary.of_tokens([1], 10)):
            pass


@pytest.mark.parametrize("lookahead", [True, False])
def test_exhaustive_beam_search_and_scoring_equal_the_naive_reference(make_rec, tiny_model, lookahead):
    rec = make_rec(catalog_of(TITLES))
    job = rec.pipeline.prepare(["i3"], "next_item", exclude_history=False)
    index = rec.pipeline.index(job.ctx)
    vocab = OutputVocabulary.of_index(index)
    assert vocab.tokens.tolist() == sorted({t for n in range(index.n_titles) for t in index.sequence(n)})
    reference = naive_scores(tiny_model, job.prompt_ids, index, vocab.tokens)
    full = naive_scores(tiny_model, job.prompt_ids, index)
    assert all(r > f for r, f in zip(reference, full))  # a smaller normaliser: every title gains
    hyps = beam_search(tiny_model, [job.prompt_ids], num_beams=index.n_titles, num_return=index.n_titles, index=index,
                       lookahead=lookahead, vocabulary=vocab)[0]  # fmt: skip
    assert sorted((index.titles_at(h.node)[0], round(h.score, 3)) for h in hyps) == [
        (n, round(s, 3)) for n, s in enumerate(reference)
    ]
    sequences = [index.sequence(n) for n in range(index.n_titles)]
    assert score_continuations(tiny_model, job.prompt_ids, sequences, vocabulary=vocab) == pytest.approx(reference, abs=1e-3)


def test_the_recommender_decodes_and_scores_with_its_output_vocabulary(make_rec, tiny_model):
    catalog = catalog_of(TITLES)
    rec = make_rec(catalog, output_vocabulary="catalog", num_beams=8)
    assert make_rec(catalog).output_vocabulary == "full"  # a model genrec did not train: its own softmax
    job = rec.pipeline.prepare(["i0"], "next_item", k=3)
    index = rec.pipeline.index(job.ctx)
    reference = naive_scores(tiny_model, job.prompt_ids, index, OutputVocabulary.of_index(index).tokens)
    allowed = sorted((s for n, s in enumerate(reference) if n not in job.banned_titles), reverse=True)
    assert [r.score for r in rec.recommend(["i0"], k=3)] == pytest.approx(allowed[:3], abs=1e-3)
    scored = score_titles(rec, ["i0"], ["i5", "i6"], k=3)
    assert scored.tolist() == pytest.approx([reference[catalog.title_number_of(i)] for i in ("i5", "i6")], abs=1e-3)


def test_an_unknown_output_vocabulary_is_refused(make_rec):
    with pytest.raises(VocabularyError, match="output_vocabulary"):
        make_rec(catalog_of(TITLES), output_vocabulary="titles")


def test_free_text_needs_the_whole_vocabulary(make_rec, tiny_model):
    with pytest.raises(ValueError, match="free text"):
        beam_search(tiny_model, [[1, 2]], num_beams=2, num_return=2, max_new_tokens=3, vocabulary=OutputVocabulary.of_tokens([1], 10))
