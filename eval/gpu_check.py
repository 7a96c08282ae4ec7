"""A device check ready to run when a GPU is lent: decoding throughput and memory by batch size, on
the default model and on randomly initialised Qwen2-shaped models, the default model's top-10
against the CPU in float32, and one ``genrec batch`` run. No network, a few minutes.

    .venv/bin/python eval/gpu_check.py --out OUTDIR                     # on the GPU machine
    .venv/bin/python eval/gpu_check.py --out OUTDIR --device cpu --dtype float32 --shapes tiny --batches 1,2 --users 4

Constrained beam search (``search="beam"``, 10 beams, k = 10) over the demo catalog (429 films),
seeded random histories of 10 films. For each model shape and batch size: users/s over the
batch's users after one warm-up batch, and the device's peak memory. The random models (Qwen2
layout, the default model's tokenizer and vocabulary: about 0.5B and 1.5B parameters less
Qwen2's larger embedding) say what a bigger model costs, never what it recommends. Writes
OUTDIR/gpu_check.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

#: Qwen2 layouts (hidden, layers, heads, key/value heads, MLP width); ``tiny`` for CPU tests
SHAPES = {
    "qwen2-0.5b": (896, 24, 14, 2, 4864),
    "qwen2-1.5b": (1536, 28, 12, 2, 8960),
    "tiny": (64, 2, 4, 2, 128),
}


def random_qwen2(shape: str, vocab_size: int, dtype, device: str):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    hidden, layers, heads, kv_heads, mlp = SHAPES[shape]
    config = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, intermediate_size=mlp, max_position_embeddings=4096,
                         tie_word_embeddings=True)  # fmt: skip
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).to(device=device, dtype=dtype).eval()


def _peak_mb(device: str) -> float | None:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return None


def throughput(rec, histories: list[list[str]], batches: list[int], device: str) -> list[dict]:
    """users/s and peak memory at each batch size (one warm-up batch first)."""
    import torch

    rows = []
    for size in batches:
        users = histories[:size]
        rec.recommend_batch(users, k=10, batch_size=size, search="beam")  # warm-up: index, prefix cache, kernels
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        rec.recommend_batch(users, k=10, batch_size=size, search="beam")
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        rows.append({"batch": size, "users": len(users), "seconds": seconds, "users_per_s": len(users) / seconds,
                     "peak_mb": _peak_mb(device)})  # fmt: skip
        print(f"  batch {size:>4}: {len(users) / seconds:8.2f} users/s  peak {rows[-1]['peak_mb'] or 0:.0f} MB", flush=True)
    return rows


def top10(model: str | None, histories: list[list[str]], device: str, dtype: str) -> list[list[str]]:
    from genrec import Catalog, Recommender

    rec = Recommender(Catalog.demo(), model=model, device=device, dtype=dtype, search="beam")
    return [[r.item_id for r in recs] for recs in rec.recommend_batch(histories, k=10, batch_size=len(histories), search="beam")]


def same_top10(model: str | None, histories: list[list[str]], device: str, dtype: str) -> dict:
    """The default model's lists on the device against float32 on the CPU, for the same users."""
    here, reference = top10(model, histories, device, dtype), top10(model, histories, "cpu", "float32")
    return {
        "users": len(histories),
        "identical_lists": sum(a == b for a, b in zip(here, reference)),
        "mean_top10_overlap": sum(len(set(a) & set(b)) / 10 for a, b in zip(here, reference)) / len(histories),
    }


def batch_run(model: str | None, out: Path, histories: list[list[str]], device: str, dtype: str) -> dict:
    """One ``genrec batch`` run on the device, as a user would start it."""
    from genrec import Catalog

    items = out / "catalog.csv"
    Catalog.demo().to_dataframe().to_csv(items, index=False)
    log = out / "histories.csv"
    log.write_text("user_id,item_id,timestamp\n" + "".join(
        f"u{u},{item},{t}\n" for u, history in enumerate(histories) for t, item in enumerate(history)
    ))  # fmt: skip
    cmd = [sys.executable, "-m", "genrec.cli", "batch", "--catalog", str(items), "--histories", str(log), "--out",
           str(out / "batch"), "-k", "10", "--device", device, "--dtype", dtype, "--search", "beam", "--overwrite"]  # fmt: skip
    if model:
        cmd += ["--model", model]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    return {"returncode": done.returncode, "seconds": time.perf_counter() - t0, "users": len(histories),
            "stderr_tail": done.stderr[-2000:]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default=None, help="default: cuda when there is one, else cpu")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on a GPU, float32 on the CPU")
    p.add_argument("--model", help="the default-model slot (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--shapes", default="qwen2-0.5b,qwen2-1.5b", help=f"random models besides the default: {', '.join(SHAPES)}")
    p.add_argument("--batches", default="1,16,64,256")
    p.add_argument("--users", type=int, default=16, help="users whose lists are compared with the CPU's")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch

    from genrec import Catalog, Recommender

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    batches = [int(b) for b in args.batches.split(",")]
    catalog = Catalog.demo()
    rng = random.Random(args.seed)
    histories = [rng.sample(catalog.ids, 10) for _ in range(max(batches + [args.users]))]
    report: dict = {"device": device, "dtype": dtype, "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None, "models": {}}  # fmt: skip

    print(f"default model on {device} in {dtype}", flush=True)
    rec = Recommender(catalog, model=args.model, device=device, dtype=dtype, search="beam")
    report["models"]["default"] = {"parameters": sum(p.numel() for p in rec.lm.model.parameters()),
                                   "throughput": throughput(rec, histories, batches, device)}  # fmt: skip
    for shape in [s for s in args.shapes.split(",") if s]:
        model = random_qwen2(shape, len(rec.tokenizer), getattr(torch, dtype), device)
        print(f"{shape} (random, {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters)", flush=True)
        big = Recommender(catalog, model=model, tokenizer=rec.tokenizer, search="beam")
        report["models"][shape] = {"parameters": sum(p.numel() for p in model.parameters()),
                                   "throughput": throughput(big, histories, batches, device)}  # fmt: skip
        del big, model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    report["same_top10_as_cpu_fp32"] = same_top10(args.model, histories[: args.users], device, dtype)
    print(f"top-10 against the CPU in float32: {report['same_top10_as_cpu_fp32']}", flush=True)
    report["genrec_batch"] = batch_run(args.model, out, histories[: args.users], device, dtype)
    print(f"genrec batch: exit {report['genrec_batch']['returncode']} in {report['genrec_batch']['seconds']:.1f} s", flush=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    return 0 if report["genrec_batch"]["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
