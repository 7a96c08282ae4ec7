"""eval/profile_decoding.py's floor: what a search's linear products cost at their best, and the
weights' read time under every call."""

from __future__ import annotations

import pytest

from conftest import REPO
from helpers import load_script


@pytest.fixture
def profile(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "eval"))  # (the script imports its neighbour synthetic.py)
    return load_script(REPO / "eval" / "profile_decoding.py")


def test_the_floor_counts_prompt_and_fed_tokens_and_never_less_than_a_weight_read_a_call(profile):
    rates = profile.ProductRates(block_s=0.002, head_s=0.001, read_s=0.02)
    # 100 prompt tokens through the blocks (0.2 s); a 40-token call (0.12 s); a 2-token call is the read (0.02 s)
    assert profile.search_floor(rates, 100, [40, 2]) == pytest.approx(0.2 + 0.12 + 0.02)
    assert profile.search_floor(rates, 0, []) == 0.0


def test_product_rates_time_each_layer_of_a_block_and_the_output_layer_through_the_decoder(profile, tiny_model):
    import torch

    timed: list[tuple[object, int]] = []

    class Recording:  # a decoder whose products are the plain ones, noting what it was asked
        def linear(self, module, x):
            timed.append((module, x.shape[0]))
            return torch.nn.functional.linear(x, module.weight, module.bias)

    rates = profile.product_rates(tiny_model, Recording(), rows=(4, 8), repeats=2)
    projections = [m for m in tiny_model.base_model.layers[0].modules() if isinstance(m, torch.nn.Linear)]
    asked = {id(module) for module, _ in timed}
    assert asked == {id(m) for m in projections} | {id(tiny_model.get_output_embeddings())}
    assert {rows for _, rows in timed} == {4, 8}
    assert len(timed) == (len(projections) + 1) * 2 * (1 + 2)  # per layer and row count: a warm-up and the repeats
    assert rates.block_s > 0 and rates.head_s > 0 and rates.read_s > 0
    plain = profile.product_rates(tiny_model, tiny_model, rows=(8,), repeats=1)  # no ``linear``: transformers' products
    assert plain.block_s > 0 and plain.head_s > 0
