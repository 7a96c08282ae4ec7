"""One model call of the search, in each CPU runtime genrec could use: the default model's blocks on
1, 10, 40 and 160 new tokens after a 200-token cache (one user's beams fed one token, lookahead's
chains, a batch of 16 users), timed the same way in each and compared with torch float32's output.

    .venv/bin/python eval/bench_runtimes.py [--out runs/bench-runtimes]

Runtimes (each timed only if it is installed): ``torch`` (float32, transformers' forward),
``torch-lean`` (the same weights through genrec's lean loop, the default: ``decoding/lean.py``;
``torch-lean-plain`` and ``torch-lean-packed`` force its products, whatever this CPU's default),
``onnxruntime`` (the export ``runtime="onnxruntime"`` uses), ``openvino`` (the same ONNX graph,
float32 precision asked for: OpenVINO otherwise runs bf16 on CPUs with AMX), ``torch-bf16`` (the
fast mode's weights, transformers' forward), ``torch-lean-bf16`` (the fast mode as genrec runs
it), ``torch-mixed`` (bf16 matrix products, every other step and the residual stream in float32)
and ``openvino-bf16``. Medians of 6 calls after one warm-up, one after another
in one process: compare them as ratios, on an idle machine. ``--head``: each call also applies the
output layer to every position, as lookahead's calls do (ONNX Runtime's with torch's layer, as genrec). ``openvino`` is not a genrec
dependency: ``pip install openvino`` to time it.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
import time
from pathlib import Path

WIDTHS = (1, 10, 40, 160)


def _median_ms(call, repeats: int = 7) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - started)
    return sorted(times[1:])[len(times[1:]) // 2] * 1000, out


def _mixed(model):
    """``model`` with each block's linear layers in bf16 and everything else float32."""
    import torch
    import torch.nn.functional as F

    class Bf16Linear(torch.nn.Module):
        def __init__(self, linear):
            super().__init__()
            self.weight = torch.nn.Parameter(linear.weight.detach().bfloat16(), requires_grad=False)
            self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach().bfloat16(), requires_grad=False)

        def forward(self, x):
            return F.linear(x.to(torch.bfloat16), self.weight, self.bias).to(x.dtype)

    mixed = copy.deepcopy(model)
    for layer in mixed.base_model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear):
                    setattr(parent, name, Bf16Linear(child))
    return mixed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="folder for runtimes.json")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--head", action="store_true", help="time the output layer over every position too")
    args = p.parse_args(argv)

    import numpy as np
    import torch
    from transformers import DynamicCache

    from genrec.decoding.lean import LeanDecoder
    from genrec.decoding.onnx_runtime import _array
    from genrec.decoding.runtime import with_runtime
    from genrec.decoding.stand_in import full_mask
    from genrec.model import cache_root, load_model

    torch.set_num_threads(args.threads)
    lm = load_model()
    model = lm.model
    torch.manual_seed(0)
    with torch.inference_mode():
        prompt = model(input_ids=torch.randint(100, 1000, (1, 200)), use_cache=True).past_key_values
    cached = [(layer.keys.clone(), layer.values.clone()) for layer in prompt.layers]

    def torch_call(net, dtype):
        def run(ids, mask, positions, feed):
            cache = DynamicCache(config=model.config)
            for i, (k, v) in enumerate(cached):
                cache.update(k.to(dtype), v.to(dtype), i)
            out = net.base_model(input_ids=ids, attention_mask=mask.to(dtype), position_ids=positions, use_cache=True, past_key_values=cache)
            return _head(net, out.last_hidden_state).float().numpy()
        return run

    def _head(net, hidden):
        return net.get_output_embeddings()(hidden) if args.head else hidden

    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    runtimes = {"torch": torch_call(model, torch.float32), "torch-lean": torch_call(LeanDecoder(model), torch.float32),
                "torch-lean-plain": torch_call(LeanDecoder(model, pack=False), torch.float32),
                "torch-lean-packed": torch_call(LeanDecoder(model, pack=True), torch.float32)}
    graph = None
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        decoder = with_runtime(lm, "onnxruntime", cache_root()).decoder
        graph = next((cache_root() / "onnx").rglob("decoder.onnx"), None)
        runtimes["onnxruntime"] = lambda ids, mask, positions, feed: _head(model, torch.from_numpy(decoder.session.run(["hidden"], feed)[0])).numpy()
    runtimes["torch-bf16"] = torch_call(bf16, torch.bfloat16)
    runtimes["torch-lean-bf16"] = torch_call(LeanDecoder(bf16), torch.bfloat16)
    runtimes["torch-mixed"] = torch_call(_mixed(model), torch.float32)
    if graph is not None and importlib.util.find_spec("openvino"):
        import openvino as ov

        core = ov.Core()
        for name, precision in (("openvino", "f32"), ("openvino-bf16", "bf16")):
            config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": str(args.threads)}
            compiled = core.compile_model(str(graph), "CPU", config)
            request = compiled.create_infer_request()
            runtimes[name] = lambda ids, mask, positions, feed, r=request, c=compiled: _head(model, torch.from_numpy(r.infer(feed)[c.output("hidden")])).numpy()

    rows = []
    with torch.inference_mode():
        for width in WIDTHS:
            ids = torch.randint(100, 1000, (1, width), generator=torch.Generator().manual_seed(width))
            mask, positions = full_mask(ids, None, None, 200)
            feed = {"input_ids": _array(ids), "position_ids": _array(positions), "mask": _array(mask)}
            for i, (k, v) in enumerate(cached):
                feed[f"past_keys_{i}"], feed[f"past_values_{i}"] = _array(k), _array(v)
            reference = None
            for name, run in runtimes.items():
                ms, out = _median_ms(lambda run=run: run(ids, mask, positions, feed))
                reference = out if reference is None else reference
                error = float(np.abs(np.asarray(out) - reference).max())
                rows.append({"tokens": width, "runtime": name, "ms": round(ms, 1), "max_abs_diff_vs_torch": error})
    names = list(runtimes)
    print("| tokens fed | " + " | ".join(f"{n} ms" for n in names) + " |")
    print("|---:|" + "---:|" * len(names))
    for width in WIDTHS:
        cells = {r["runtime"]: r for r in rows if r["tokens"] == width}
        print(f"| {width} | " + " | ".join(f"{cells[n]['ms']} ({cells[n]['max_abs_diff_vs_torch']:.0e})" for n in names) + " |")
    print(f"(in brackets: the largest difference from torch float32's {'logits' if args.head else 'hidden states'})")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "runtimes.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
