"""How long the model takes to read a catalog's items (what the search from words and the item
vectors need once per catalog, before the first recommendation): ``genrec.encoder.embed_texts``
against a reference that reads them as it did before, through the whole model and its output
layer, keeping every layer's states. Both on the same texts, one after the other; the vectors must
come out identical.

    .venv/bin/python eval/bench_reading.py --data-dir ../shared/datasets/ml-100k --items 512 [--layers 8 8,15,22]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def reference(model, tokenizer, texts, layers):
    """The reading before: the whole causal LM (every block, logits for every token), then the
    mean of the asked layers' states over each text's tokens, in embed_texts' batches."""
    import numpy as np
    import torch

    from genrec.encoder import text_batches

    out = {layer: np.zeros((len(texts), model.config.hidden_size), dtype=np.float32) for layer in layers}
    with torch.inference_mode():
        for batch, tokens, mask in text_batches(tokenizer, texts):
            states = model(input_ids=tokens, attention_mask=mask, output_hidden_states=True).hidden_states
            weights = mask.unsqueeze(-1).float()
            for layer in layers:
                out[layer][batch] = ((states[layer].float() * weights).sum(1) / weights.sum(1)).numpy()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="MovieLens 100K folder (its films' titles and genres are read)")
    p.add_argument("--items", type=int, default=512)
    p.add_argument("--layers", nargs="+", default=["8", "8,15,22"], help="comma-separated layers per case")
    p.add_argument("--out", help="folder for reading.json")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from genrec.content import catalog_texts
    from genrec.data.datasets import load_movielens_100k
    from genrec.encoder import embed_texts
    from genrec.model import load_model

    lm = load_model()
    texts = catalog_texts(load_movielens_100k(args.data_dir).catalog)[: args.items]
    print(f"{len(texts)} items; threads={torch.get_num_threads()}")
    print("| layers | whole model s | embed_texts s | speed-up | identical |")
    print("|---|---:|---:|---:|---|")
    rows = []
    for case in args.layers:
        layers = [int(x) for x in case.split(",")]
        started = time.perf_counter()
        before = reference(lm.model, lm.tokenizer, texts, layers)
        whole = time.perf_counter() - started
        started = time.perf_counter()
        now = embed_texts(lm.model, lm.tokenizer, texts, layers=layers)
        fast = time.perf_counter() - started
        same = all(np.array_equal(before[layer], now[layer]) for layer in layers)
        rows.append({"layers": layers, "whole_model_s": round(whole, 2), "embed_texts_s": round(fast, 2), "identical": same})
        print(f"| {case} | {whole:.2f} | {fast:.2f} | {whole / fast:.2f}x | {same} |", flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "reading.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
