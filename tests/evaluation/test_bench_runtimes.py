"""eval/bench_runtimes.py's mixed-precision copy: bf16 matrix products in the blocks, the rest float32."""

from __future__ import annotations

import torch

from conftest import REPO
from helpers import load_script


def _bench():
    return load_script(REPO / "eval" / "bench_runtimes.py")


def test_the_mixed_copy_multiplies_in_bf16_and_keeps_the_rest_float32(tiny_model):
    mixed = _bench()._mixed(tiny_model)
    linears = [m for m in mixed.base_model.layers.modules() if hasattr(m, "weight") and m.weight.dim() == 2]
    assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
    assert all(p.dtype == torch.float32 for p in tiny_model.parameters())  # the original untouched
    assert mixed.base_model.norm.weight.dtype == torch.float32
    ids = torch.randint(0, 1000, (2, 7))
    with torch.inference_mode():
        exact = tiny_model.base_model(input_ids=ids).last_hidden_state
        approx = mixed.base_model(input_ids=ids).last_hidden_state
    assert approx.dtype == torch.float32
    distance = float((approx - exact).norm() / exact.norm())
    assert 0.0 < distance < 0.05  # bf16's rounding, no more
