"""The item-vector map's training at catalog scale: the full softmax against the sampled one.

    .venv/bin/python eval/bench_encoder_scale.py --items 20000,100000 --synthetic-interactions 200000 --out runs/bench-encoder-scale

Synthetic data, so that sizes can grow past the datasets here: items in clusters of 50 whose
vectors (576 numbers, the default model's width) are the cluster's centre plus noise; each user
walks from item to item, staying in the cluster with probability 0.7, else jumping to an item
drawn by a Zipf popularity. Each user's last item is held back. For each catalog size, one
epoch of ``ItemEncoder.train`` (the defaults: window 20, batches of 512) with the full softmax
(every known item mapped and ranked at every step) and with the sampled one (the step's targets,
histories' items and 8,192 drawn items), from the same untrained map: seconds, peak memory, and
NDCG@10 of the held-back items over the whole catalog (their histories' items excluded).
``--full-batches N`` times only the first N steps of the full softmax where a whole epoch of it
would take too long, and gives the epoch's estimate (marked so) instead of its NDCG.

    .venv/bin/python eval/bench_encoder_scale.py --dataset recbole --data-dir ../shared/datasets/amazon-scientific \
        --vectors runs/sci-joint-all/item_vectors.npz --negatives 350 --out runs/bench-encoder-sampled-sci

With ``--dataset`` (the harness's data options) and ``--vectors`` (a run's ``item_vectors.npz``),
a real catalog instead: the harness's split, the map trained on its training part by
``log_model.train_mixture`` (the encoder alone, every layer) with the full softmax and with the
sampled one (``--negatives`` drawn items a step: the share of the catalog 8,192 is of 100,000,
about 8%, keeps the comparison at the scale the sample is for), and each epoch's NDCG@10 on the
same validation rows. Validation rows only: nothing is chosen here, no test row is read.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def synthetic(n_items: int, interactions: int, dim: int, seed: int) -> tuple[np.ndarray, list[list[int]]]:
    rng = np.random.default_rng(seed)
    clusters = np.arange(n_items) // 50
    centres = rng.normal(size=(clusters.max() + 1, dim))
    features = centres[clusters] + 0.8 * rng.normal(size=(n_items, dim))
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    popularity = rng.permutation(popularity / popularity.sum())
    sequences, total = [], 0
    while total < interactions:
        length = int(rng.integers(5, 30))
        item = int(rng.choice(n_items, p=popularity))
        walk = [item]
        for _ in range(length - 1):
            if rng.random() < 0.7:
                base = (item // 50) * 50
                item = int(base + rng.integers(0, min(50, n_items - base)))
            else:
                item = int(rng.choice(n_items, p=popularity))
            walk.append(item)
        sequences.append(walk)
        total += length
    return features.astype(np.float32), sequences


def ndcg(encoder, histories: list[list[int]], targets: list[int], k: int = 10, chunk: int = 200) -> float:
    total = 0.0
    for start in range(0, len(targets), chunk):  # [users, items] in float64: a chunk at a time
        scores = encoder.scores(histories[start : start + chunk])
        for row, (history, target) in enumerate(zip(histories[start : start + chunk], targets[start : start + chunk])):
            scores[row, history] = -np.inf
            rank = int((scores[row] > scores[row, target]).sum())
            total += 1.0 / np.log2(rank + 2) if rank < k else 0.0
    return total / len(targets)


def real_catalog(args: argparse.Namespace, out: Path) -> None:
    from genrec.data.arguments import dataset_from_args
    from genrec.data.splits import split_dataset
    from genrec.encoder import EncoderSettings
    from genrec.log_model import train_mixture

    dataset, _ = dataset_from_args(args)
    split = split_dataset(dataset, seed=args.seed)  # the harness's defaults
    with np.load(args.vectors) as stored:
        vectors = {int(layer): stored[layer] for layer in stored.files}
    rows = []
    for name, settings in (("full", EncoderSettings()), ("sampled", EncoderSettings(full_softmax_items=0, negatives=args.negatives))):
        started = time.perf_counter()
        _, tuned = train_mixture(dataset.catalog, split.train, split.valid, vectors, settings)
        rows.append({"softmax": name, "seconds": round(time.perf_counter() - started, 1), "valid_NDCG@10 by layer": tuned["valid_NDCG@10"],
                     "kept": {"layer": tuned["layer"], "epoch": tuned["epoch"]}, "epochs": tuned["epochs"]})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print("\n| softmax | every layer trained, s | best validation NDCG@10 by layer | kept |")
    print("|---|---:|---|---|")
    for r in rows:
        layers = ", ".join(f"{k}: {v}" for k, v in r["valid_NDCG@10 by layer"].items())
        print(f"| {r['softmax']} | {r['seconds']} | {layers} | layer {r['kept']['layer']}, epoch {r['kept']['epoch']} |")


def main() -> None:
    from genrec.data.arguments import add_dataset_arguments
    from genrec.encoder import EncoderSettings, ItemEncoder

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", default="20000,100000")
    p.add_argument("--synthetic-interactions", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=576)
    p.add_argument("--valid-users", type=int, default=2000)
    p.add_argument("--full-batches", type=int, default=0, help="time only this many steps of the full softmax (0: a whole epoch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--vectors", help="with --dataset: a run's item_vectors.npz (the model's reading of that catalog)")
    p.add_argument("--negatives", type=int, default=350, help="with --dataset: items drawn a sampled step")
    add_dataset_arguments(p, required=False)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.vectors:
        real_catalog(args, out)
        return
    rows = []
    for n_items in (int(x) for x in args.items.split(",")):
        features, sequences = synthetic(n_items, args.synthetic_interactions, args.dim, args.seed)
        train = [s[:-1] for s in sequences]
        held = list(range(min(args.valid_users, len(sequences))))
        histories, targets = [sequences[u][:-1] for u in held], [sequences[u][-1] for u in held]
        known = np.ones(n_items, dtype=bool)
        base = EncoderSettings(epochs=1)
        untrained = ndcg(ItemEncoder(features, base), histories, targets)
        for name, settings in (("sampled", replace(base, full_softmax_items=0)), ("full", replace(base, full_softmax_items=n_items))):
            encoder = ItemEncoder(features, settings)
            pairs = sum(len(s) - 1 for s in train)
            batches = -(-pairs // settings.batch_size)
            partial = name == "full" and args.full_batches and args.full_batches < batches
            started = time.perf_counter()
            if partial:  # the first steps only: every step of the full softmax costs the same
                encoder.train(_first_pairs(train, args.full_batches * settings.batch_size), known)
                seconds = (time.perf_counter() - started) / args.full_batches * batches
            else:
                encoder.train(train, known)
                seconds = time.perf_counter() - started
            row = {
                "items": n_items, "softmax": name, "pairs": pairs, "batches": batches,
                "epoch_s": round(seconds, 1), "estimated": bool(partial),
                "valid_ndcg10": None if partial else round(ndcg(encoder, histories, targets), 4), "untrained_ndcg10": round(untrained, 4),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print("\n| items | softmax | training pairs | one epoch s | NDCG@10 (untrained) | peak RSS MB, the process so far |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        seconds = f"{r['epoch_s']} (estimated)" if r["estimated"] else r["epoch_s"]
        quality = "" if r["valid_ndcg10"] is None else f"{r['valid_ndcg10']} ({r['untrained_ndcg10']})"
        print(f"| {r['items']:,} | {r['softmax']} | {r['pairs']:,} | {seconds} | {quality} | {r['peak_rss_mb']:,} |")


def _first_pairs(sequences: list[list[int]], n_pairs: int) -> list[list[int]]:
    kept, total = [], 0
    for s in sequences:
        if total >= n_pairs:
            break
        kept.append(s[: n_pairs - total + 1])
        total += len(kept[-1]) - 1
    return kept


if __name__ == "__main__":
    main()
