"""The model's item vectors (genrec.encoder): reading texts, scoring histories, and a map trained on
known items only."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from genrec.content import catalog_texts
from genrec.encoder import EncoderSettings, ItemEncoder, embed_texts, training_pairs
from genrec.errors import ConfigError


def test_a_texts_vector_does_not_depend_on_the_texts_read_beside_it(tiny_model, tokenizer):
    texts = ["Alien", "The Terminator and a much longer title that pads the short ones", "Brazil (1985)"]
    together = embed_texts(tiny_model, tokenizer, texts, layers=(1, 2), batch_size=3)
    for n, text in enumerate(texts):
        alone = embed_texts(tiny_model, tokenizer, [text], layers=(1, 2))
        for layer in (1, 2):
            np.testing.assert_allclose(together[layer][n], alone[layer][0], rtol=1e-4, atol=1e-4)
    assert together[1].shape == (3, tiny_model.config.hidden_size)
    assert not np.allclose(together[1], together[2])  # each layer its own states
    assert embed_texts(tiny_model, tokenizer, [""], layers=(2,))[2].shape == (1, tiny_model.config.hidden_size)


def test_a_shallow_layer_is_read_without_the_blocks_above_it_and_the_same(tiny_model, tokenizer):
    import torch

    texts = ["Alien", "Brazil (1985) Comedy Sci-Fi"]
    read = embed_texts(tiny_model, tokenizer, texts, layers=(0, 1), batch_size=2)
    ran = []
    hook = tiny_model.base_model.layers[-1].register_forward_hook(lambda *args: ran.append(1))
    try:
        embed_texts(tiny_model, tokenizer, texts, layers=(0, 1))
        assert not ran  # the last block is never run for layer 1 (block 0's output)
        embed_texts(tiny_model, tokenizer, texts, layers=(2,))
        assert ran  # the last layer needs every block
    finally:
        hook.remove()
    assert len(tiny_model.base_model.layers) == tiny_model.config.num_hidden_layers  # the model keeps its blocks
    for n, text in enumerate(texts):
        ids = tokenizer(" " + text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            states = tiny_model(input_ids=ids, output_hidden_states=True).hidden_states
        for layer in (0, 1):
            # (to float rounding: read two texts at once, which MKL sums in another order on some CPUs)
            np.testing.assert_allclose(read[layer][n], states[layer][0].mean(0).numpy(), rtol=1e-4, atol=1e-5)


def test_reading_before_the_models_first_call_leaves_its_hidden_states_as_they_were(tokenizer):
    import torch
    from conftest import make_tiny_model

    model = make_tiny_model(len(tokenizer))  # never called yet
    embed_texts(model, tokenizer, ["Alien"], layers=(1,))
    states = model(input_ids=torch.tensor([[100, 200]]), output_hidden_states=True).hidden_states
    assert len(states) == model.config.num_hidden_layers + 1  # each state recorded once


def test_layers_outside_the_model_are_refused_by_name(tiny_model, tokenizer):
    with pytest.raises(ConfigError, match="0..2"):
        embed_texts(tiny_model, tokenizer, ["Alien"], layers=(8,))


def test_untrained_scores_are_cosines_with_the_decayed_profile():
    rng = np.random.default_rng(0)
    encoder = ItemEncoder(rng.normal(size=(6, 4)), EncoderSettings(window=2, decay=0.5))
    v = encoder.vectors
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    profile = v[3] + 0.5 * v[1]  # the newest item counts fully; one older than the window not at all
    expected = v @ (profile / np.linalg.norm(profile))
    np.testing.assert_allclose(encoder.scores([[0, 1, 3]])[0], expected, atol=1e-6)
    assert not encoder.scores([[]]).any()


def test_a_new_map_or_new_features_change_the_scores_at_once():
    # the unit vectors are kept between calls; a map replaced (training, a saved fit) must not
    # leave the old ones in use
    rng = np.random.default_rng(1)
    encoder = ItemEncoder(rng.normal(size=(5, 3)), EncoderSettings(window=2, decay=1.0))
    before = encoder.scores([[0, 2]])
    assert encoder.vectors is encoder.vectors  # kept
    encoder.weight, encoder.bias = np.diag([1.0, -1.0, 2.0]).astype(np.float32), np.ones(3, dtype=np.float32)
    mapped = encoder.features @ encoder.weight.T + encoder.bias
    v = mapped / np.linalg.norm(mapped, axis=1, keepdims=True)
    profile = v[0] + v[2]
    np.testing.assert_allclose(encoder.scores([[0, 2]])[0], v @ (profile / np.linalg.norm(profile)), atol=1e-6)
    encoder.weight = encoder.bias = None
    np.testing.assert_array_equal(encoder.scores([[0, 2]]), before)
    encoder.features = rng.normal(size=(5, 3)).astype(np.float32)
    assert not np.allclose(encoder.scores([[0, 2]]), before)


def test_training_pairs_keep_each_items_window():
    histories, targets = training_pairs([[1, 2, 3, 4]], window=2)
    assert histories == [[1], [1, 2], [2, 3]] and targets == [2, 3, 4]


def chain_sequences(n_items: int, known: np.ndarray, n: int = 60, length: int = 6):
    rng = np.random.default_rng(1)
    out = []
    for _ in range(n):
        start = int(rng.integers(0, n_items))
        out.append([p for p in ((start + t) % n_items for t in range(length)) if known[p]])
    return out


def chain_problem(n_items: int, new: list[int], seed: int = 0, **chain) -> tuple[np.ndarray, list[list[int]], np.ndarray]:
    """The known-item mask (``new`` items unknown), chain sequences over the known ones and random 8-d vectors."""
    known = np.ones(n_items, dtype=bool)
    known[new] = False
    return known, chain_sequences(n_items, known, **chain), np.random.default_rng(seed).normal(size=(n_items, 8))


def test_the_map_learns_transitions_and_never_reads_a_new_item():
    known, sequences, features = chain_problem(12, [4, 9])
    settings = EncoderSettings(epochs=30, lr=0.05, batch_size=32, window=3)
    trained = ItemEncoder(features, settings).train(sequences, known)
    losses = [h["loss"] for h in trained.history[1:]]
    assert losses[-1] < losses[0]
    # a new item's vector, changed in any way, changes nothing the training did
    other = ItemEncoder(features, settings)
    other.features[[4, 9]] = np.random.default_rng(5).normal(size=(2, 8))
    other.train(sequences, known)
    np.testing.assert_allclose(trained.weight, other.weight)
    np.testing.assert_allclose(trained.bias, other.bias)


def test_a_sample_holding_every_known_item_trains_as_the_full_softmax():
    n_items = 30
    known, sequences, features = chain_problem(n_items, [3, 17], seed=1)
    settings = EncoderSettings(epochs=3, lr=0.05, batch_size=16, window=4)
    full = ItemEncoder(features, settings).train(sequences, known)
    sampled = ItemEncoder(features, replace(settings, full_softmax_items=0, negatives=n_items)).train(sequences, known)
    np.testing.assert_allclose(sampled.weight, full.weight, rtol=1e-4, atol=1e-6)
    assert [h["loss"] for h in sampled.history[1:]] == pytest.approx([h["loss"] for h in full.history[1:]], rel=1e-4)


def test_above_the_threshold_each_step_ranks_a_sample_and_still_learns(monkeypatch):
    import genrec.encoder as encoder_module

    n_items, negatives = 120, 8
    known, sequences, features = chain_problem(n_items, [4, 9], n=300, length=6)
    steps = []
    real = encoder_module._step_items

    def spy(items, targets, known_items, k):
        rows = real(items, targets, known_items, k)
        steps.append((len(rows), set(targets.tolist()) | set(items[items >= 0].tolist()) <= set(rows.tolist())))
        return rows

    monkeypatch.setattr(encoder_module, "_step_items", spy)
    settings = EncoderSettings(epochs=25, lr=0.05, batch_size=8, window=3, full_softmax_items=50, negatives=negatives)
    trained = ItemEncoder(features, settings).train(sequences, known)
    assert steps and all(held for _, held in steps) and max(n for n, _ in steps) < n_items
    losses = [h["loss"] for h in trained.history[1:]]
    assert losses[-1] < losses[0]
    # a new item is never drawn, so its vector changes nothing
    other = ItemEncoder(features, settings)
    other.features[[4, 9]] = 7.0
    np.testing.assert_allclose(other.train(sequences, known).weight, trained.weight)


def test_the_sampled_softmax_corrects_for_how_often_an_item_is_in_a_step():
    import torch

    from genrec.encoder import _log_inclusion

    targets = torch.tensor([0] * 90 + [1] * 10)  # item 0 is nine targets in ten; item 2 never one
    log_q = _log_inclusion(targets, n_items=3, batch_size=4, n_known=3, negatives=1).exp()
    assert log_q[0] == pytest.approx(1 - 0.1**4 * (2 / 3))
    assert log_q[1] == pytest.approx(1 - 0.9**4 * (2 / 3))
    assert log_q[2] == pytest.approx(1 / 3)  # only the uniform draw brings it
    assert _log_inclusion(targets, 3, 4, n_known=3, negatives=3).tolist() == [0.0, 0.0, 0.0]  # every item drawn


def test_validation_keeps_the_best_epoch_and_the_untrained_encoder_is_one():
    n_items = 10
    known = np.ones(n_items, dtype=bool)
    sequences = chain_sequences(n_items, known)
    features = np.random.default_rng(0).normal(size=(n_items, 6))
    settings = EncoderSettings(epochs=3, lr=0.05, batch_size=32)
    calls = iter([1.0, 0.5, 0.2, 0.1])  # epoch 0 (untrained) scores best
    encoder = ItemEncoder(features, settings).train(sequences, known, select=lambda: next(calls))
    assert encoder.weight is None and [h["epoch"] for h in encoder.history] == [0, 1, 2, 3]
    calls = iter([0.1, 0.2, 0.9, 0.3])  # epoch 2
    picked = ItemEncoder(features, settings).train(sequences, known, select=lambda: next(calls))
    last = ItemEncoder(features, EncoderSettings(epochs=2, lr=0.05, batch_size=32)).train(sequences, known)
    np.testing.assert_allclose(picked.weight, last.weight)


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError):
        EncoderSettings(decay=0.0).check()
    with pytest.raises(ConfigError, match="shape"):
        ItemEncoder(np.zeros(5))


def test_a_recommenders_item_vectors_are_read_once_then_kept(make_rec, tiny_model, tmp_path, monkeypatch):
    import genrec.encoder as encoder_module
    from helpers import catalog_of

    reads: list[tuple[int, ...]] = []
    real = encoder_module.embed_texts

    def counting(model, tokenizer, texts, *, layers, **kw):
        reads.append(tuple(layers))
        return real(model, tokenizer, texts, layers=layers, **kw)

    monkeypatch.setattr(encoder_module, "embed_texts", counting)
    catalog = catalog_of(["Alien", "Brazil", "The Terminator"])
    first = make_rec(catalog).item_vectors(layers=(1, 2))
    assert reads == [(1, 2)] and first[1].shape == (3, tiny_model.config.hidden_size)
    np.testing.assert_allclose(first[2], real(tiny_model, make_rec(catalog).tokenizer, catalog_texts(catalog), layers=(2,))[2], atol=1e-6)
    # another Recommender on the same model and catalog reads them from disk; a new layer alone is read
    again = make_rec(catalog).item_vectors(layers=(2, 0))
    assert reads == [(1, 2), (0,)]
    np.testing.assert_array_equal(again[2], first[2])
    make_rec(catalog).item_vectors(layers=(0, 1, 2))
    assert len(reads) == 2
    # another catalog, a model trained further, or no disk cache: read again
    make_rec(catalog_of(["Alien", "Brazil", "Aliens"])).item_vectors(layers=(1,))
    assert len(reads) == 3
    make_rec(catalog, use_disk_cache=False).item_vectors(layers=(1,))
    assert len(reads) == 4
    import torch

    norm = tiny_model.model.norm.weight
    saved = norm.detach().clone()
    with torch.no_grad():
        norm.add_(1.0)
    try:
        make_rec(catalog).item_vectors(layers=(1,))
    finally:
        with torch.no_grad():
            norm.copy_(saved)  # the session's model, exactly as it was
    assert len(reads) == 5


def test_an_unreadable_or_mismatched_vectors_file_is_read_again(make_rec, caplog):
    from helpers import catalog_of

    catalog = catalog_of(["Alien", "Brazil", "The Terminator"])
    rec = make_rec(catalog)
    first = rec.item_vectors(layers=(1,))[1]
    (kept,) = list((rec.cache_dir / "item_vectors").glob("item-vectors-*.npz"))
    kept.write_bytes(b"not a numpy archive")
    with caplog.at_level("WARNING", logger="genrec.encoder"):
        np.testing.assert_allclose(make_rec(catalog).item_vectors(layers=(1,))[1], first, atol=1e-6)
    assert "unreadable" in caplog.text
    np.savez(kept, **{"1": first[:2]})  # a file that holds another number of rows
    with caplog.at_level("WARNING", logger="genrec.encoder"):
        assert make_rec(catalog).item_vectors(layers=(1,))[1].shape == first.shape
    assert "do not hold 3 rows" in caplog.text
