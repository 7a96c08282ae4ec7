"""The lean decoder (runtime="torch", the default on a CPU): beam search through it must find what
transformers' own forward finds (the same titles in the same order, scores to float rounding) on
every path of the search, follow the model when it changes (weights trained in place, layers cut,
layers replaced by adapters), and refuse the models it does not cover, naming why."""

from __future__ import annotations

import copy

import pytest
import torch

from genrec.decoding.attention import cache_argument
from genrec.decoding.lean import LeanDecoder, _packing_is_close, _packing_is_exact, lean_support
from genrec.errors import ConfigError
from genrec.model import LoadedModel
from genrec.training.layers import drop_layers

from helpers import catalog_of
from test_beam_search import random_titles
from test_lookahead import long_titles
from test_onnx_runtime import HISTORIES, _assert_same, _search


@pytest.mark.parametrize("titles", [long_titles(60), random_titles(200, seed=5)], ids=["long", "random200"])
@pytest.mark.parametrize("lookahead", [True, False])
def test_search_is_transformers(make_rec, tiny_model, titles, lookahead):
    rec = make_rec(catalog_of(titles), runtime="transformers")
    lean = LeanDecoder(tiny_model)
    for histories in (HISTORIES[:1], HISTORIES):  # one user, and several (left padding, users finishing apart)
        reference = _search(rec, tiny_model, histories, lookahead)
        assert all(len(user) == 6 for user in reference)
        _assert_same(_search(rec, lean, histories, lookahead), reference)


def test_recommender_default_is_lean_and_gives_transformers_lists(make_rec):
    catalog = catalog_of(long_titles(60))
    lean_rec, reference_rec = make_rec(catalog), make_rec(catalog, runtime="transformers")
    assert isinstance(lean_rec.lm.search_model, LeanDecoder) and reference_rec.lm.search_model is reference_rec.lm.model
    for rec in (lean_rec, reference_rec):
        rec.warm()  # the template's shared prompt prefix, cached by the decoder each runs
    ours = lean_rec.recommend_batch(HISTORIES, k=5, batch_size=2)
    theirs = reference_rec.recommend_batch(HISTORIES, k=5, batch_size=2)
    assert [[r.item_id for r in user] for user in ours] == [[r.item_id for r in user] for user in theirs]
    assert [r.score for user in ours for r in user] == pytest.approx([r.score for user in theirs for r in user], rel=1e-5, abs=1e-4)


def _logits(net, ids):
    with torch.inference_mode():
        return net(input_ids=ids, logits_to_keep=0).logits.float()


def test_bf16_packed_weights_are_the_plain_products(make_rec, tiny_model):
    bf16 = copy.deepcopy(tiny_model).to(torch.bfloat16)
    weight = bf16.model.layers[0].self_attn.q_proj.weight
    if not _packing_is_exact(weight):
        pytest.skip("this CPU's torch has no packed bf16 kernels equal to the plain ones: the decoder does not pack")
    packed, plain = LeanDecoder(bf16), LeanDecoder(bf16, pack=False)
    assert packed.pack and not plain.pack
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    assert torch.equal(_logits(packed, ids), _logits(plain, ids))
    rec = make_rec(catalog_of(long_titles(60)), runtime="transformers")
    assert _search(rec, packed, HISTORIES, True) == _search(rec, plain, HISTORIES, True)
    # a weight changed in place (a training step, a reload) is packed again, not served stale
    with torch.no_grad():
        weight.mul_(1.5)
    assert torch.equal(_logits(packed, ids), _logits(plain, ids))
    # a weight replaced by another takes its place, not a second entry beside the stale one
    entries = len(packed._packed)
    bf16.model.layers[0].self_attn.q_proj.weight = torch.nn.Parameter(weight.detach() * 0.5)
    assert torch.equal(_logits(packed, ids), _logits(plain, ids)) and len(packed._packed) == entries


@pytest.mark.parametrize("vendor", ["GenuineIntel", "AuthenticAMD", None])
def test_float32_packs_on_amd_cpus_only(tiny_model, monkeypatch, vendor):
    """MKL's float32 products ran at half oneDNN's speed on an AMD EPYC, level on an Intel Xeon."""
    from genrec.decoding import lean

    monkeypatch.setattr(lean, "cpu_vendor", lambda: vendor)
    usable = _packing_is_close(tiny_model.model.layers[0].self_attn.q_proj.weight)
    assert LeanDecoder(tiny_model).pack is (vendor == "AuthenticAMD" and usable)
    assert LeanDecoder(copy.deepcopy(tiny_model).to(torch.float16)).pack is False


@pytest.mark.parametrize("min_weights", [0, None], ids=["every-layer", "larger-layers"])
def test_float32_packed_search_is_transformers(make_rec, tiny_model, monkeypatch, min_weights):
    """oneDNN's float32 products: transformers' lists, scores to float rounding; the small layers
    (all of the tiny model's blocks, by default) keep the plain products."""
    from genrec.decoding import lean

    if not _packing_is_close(tiny_model.model.layers[0].self_attn.q_proj.weight):
        pytest.skip("this CPU's torch has no packed float32 kernels")
    if min_weights is not None:
        monkeypatch.setattr(lean, "_FP32_PACK_MIN_WEIGHTS", min_weights)
    rec = make_rec(catalog_of(long_titles(60)), runtime="transformers")
    packed = LeanDecoder(tiny_model, pack=True)
    for lookahead in (True, False):
        _assert_same(_search(rec, packed, HISTORIES, lookahead), _search(rec, tiny_model, HISTORIES, lookahead))
    packed_layers = 1 if min_weights is None else 7 * len(tiny_model.model.layers) + 1  # the output layer, and the blocks'
    assert id(tiny_model.get_output_embeddings()) in packed._packed and len(packed._packed) == packed_layers


@pytest.mark.parametrize("vendor", ["GenuineIntel", "AuthenticAMD"])
def test_ranking_calls_the_lean_decoder_and_gives_transformers_order(make_rec, monkeypatch, vendor):
    """Scoring given titles (``rank``) runs through the decoder the search uses: transformers' order,
    scores to float rounding, with plain products and with oneDNN's."""
    from genrec.decoding import lean

    monkeypatch.setattr(lean, "cpu_vendor", lambda: vendor)
    catalog = catalog_of(long_titles(60))
    ours, reference = make_rec(catalog), make_rec(catalog, runtime="transformers")
    calls = []
    blocks = LeanDecoder.blocks
    monkeypatch.setattr(LeanDecoder, "blocks", lambda self, *args: calls.append(len(args[0][0])) or blocks(self, *args))
    candidates = [f"i{n}" for n in range(0, 60, 4)]
    ranked, expected = ours.rank(HISTORIES[1], candidates), reference.rank(HISTORIES[1], candidates)
    assert calls and max(calls) > 1  # the prompt, then the candidates' tokens in one pass
    assert [r.item_id for r in ranked] == [r.item_id for r in expected]
    assert [r.score for r in ranked] == pytest.approx([r.score for r in expected], rel=1e-5, abs=1e-4)


def test_packing_is_probed_on_the_decoding_thread(tiny_model, monkeypatch):
    """Not at construction: AMX products from the thread that built the decoder and then from the
    one that decodes (a server's) slowed both."""
    from genrec.decoding import lean

    probes = []
    monkeypatch.setattr(lean, "_packing_is_exact", lambda weight: probes.append(weight) or False)
    decoder = LeanDecoder(copy.deepcopy(tiny_model).to(torch.bfloat16))
    assert probes == []
    _logits(decoder, torch.tensor([[5, 6, 7]]))
    _logits(decoder, torch.tensor([[5, 6, 7]]))
    assert len(probes) == 1 and decoder.pack is False


def test_follows_the_model_when_it_changes(tiny_model):
    model = copy.deepcopy(tiny_model)
    lean = LeanDecoder(model)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    assert torch.allclose(_logits(lean, ids), _logits(model, ids), atol=1e-5)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.mul_(-1.0)  # trained in place
    assert torch.allclose(_logits(lean, ids), _logits(model, ids), atol=1e-5)
    drop_layers(model, "0")  # a layer cut: the decoder runs the blocks the model has now
    assert torch.allclose(_logits(lean, ids), _logits(model, ids), atol=1e-5)

    class Adapter(torch.nn.Linear):  # a layer replaced in place, as LoRA does: transformers' forward runs it
        def forward(self, x):
            return super().forward(x) * 2.0

    old = model.model.layers[0].self_attn.v_proj
    adapter = Adapter(old.in_features, old.out_features, bias=False)
    adapter.weight = old.weight
    model.model.layers[0].self_attn.v_proj = adapter
    assert lean_support(model) is not None
    assert torch.allclose(_logits(lean, ids), _logits(model, ids), atol=1e-5)


def test_qwen2_with_its_biases():
    from transformers import DynamicCache, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, initializer_range=0.5)  # fmt: skip
    model = Qwen2ForCausalLM(config).eval()
    assert model.model.layers[0].self_attn.q_proj.bias is not None and lean_support(model) is None
    lean = LeanDecoder(model)
    ids, more = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]]), torch.tensor([[13, 14], [15, 16]])
    with torch.inference_mode():
        ours, theirs = DynamicCache(config=config), DynamicCache(config=config)
        first = (lean(ids, cache=ours).logits, model(ids, **{cache_argument(model): theirs}).logits)
        second = (lean(more, cache=ours).logits, model(more, **{cache_argument(model): theirs}).logits)
    for a, b in (first, second):  # a prompt, then tokens after its cache
        assert torch.allclose(a, b, atol=1e-5)


def test_a_replaced_model_is_searched_itself(tiny_model, tokenizer):
    lm = LoadedModel(model=tiny_model, tokenizer=tokenizer, name="tiny", device=torch.device("cpu"), decoder=LeanDecoder(tiny_model))
    assert isinstance(lm.search_model, LeanDecoder)
    lm.model = copy.deepcopy(tiny_model)  # wrapped or swapped after the decoder was made (training wraps it in adapters)
    assert lm.search_model is lm.model


def test_refusals_name_the_reason(tiny_model):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=100))
    assert "model type 'gpt2'" in lean_support(gpt2)
    eager = copy.deepcopy(tiny_model)
    eager.config._attn_implementation = "eager"
    assert "attention implementation 'eager'" in lean_support(eager)
    with pytest.raises(ConfigError, match="no lean decoder for this model: model type 'gpt2'"):
        LeanDecoder(gpt2)
