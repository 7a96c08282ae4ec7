"""What the family cap costs in decoding time, and what it changes in the lists, in one run.

    .venv/bin/python eval/bench_family.py --dataset recbole --data-dir ../shared/datasets/amazon-scientific \
        --model runs/sci-allpos --users 48 --max-per-family 2

The same seeded test users (the harness's split and sample), in batches of ``--batch-size``,
each batch decoded without the cap and with it back to back (so drift in machine speed hits both
alike). Prints seconds per user of each, their ratio, how many list places go to a family's
variants past the cap, and the distinct items over all lists; writes --out (JSON) when given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter


def main(argv: list[str] | None = None) -> int:
    from genrec.data.arguments import add_dataset_arguments, dataset_from_args
    from genrec.errors import GenrecError

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_arguments(p)
    p.add_argument("--model", help="default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--users", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-history", type=int, default=20)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--max-per-family", type=int, default=2)
    p.add_argument("--out")
    args = p.parse_args(argv)
    try:
        rows = run(args, dataset_from_args(args)[0])
    except GenrecError as exc:
        print(f"bench_family: error: {exc}", file=sys.stderr)
        return 2
    print("| cap | users | s/user | vs no cap | places past the cap | lists with places past it | distinct items |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['cap']} | {r['users']} | {r['s_per_user']:.2f} | {r['ratio']:.2f}x | {r['past_cap']} | {r['lists_past_cap']} | {r['distinct_items']} |")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
    return 0


def run(args: argparse.Namespace, dataset) -> list[dict]:
    from genrec import Recommender
    from genrec.decoding import DEFAULT_FAMILY_SHARE, check_family_cap
    from genrec.data.splits import sample_examples, split_dataset
    from genrec.recommender import trained_template

    check_family_cap(args.max_per_family)
    split = split_dataset(dataset, seed=args.seed)
    examples = sample_examples(split.test, args.users, args.seed)
    template = trained_template(args.model) or "next_item"
    plain = Recommender(dataset.catalog, model=args.model, num_beams=args.k, search="beam")
    capped = Recommender(  # the same loaded model: the two differ in the cap only
        dataset.catalog, model=plain.lm.model, tokenizer=plain.tokenizer, num_beams=args.k, max_per_family=args.max_per_family,
        search="beam",
    )
    index = plain.index_for(template)
    family = index.families(DEFAULT_FAMILY_SHARE)
    title_number = {t: n for n, t in enumerate(dataset.catalog.unique_titles)}
    seconds = {"none": 0.0, str(args.max_per_family): 0.0}
    lists: dict[str, list] = {name: [] for name in seconds}
    for rec in (plain, capped):  # warm-up: the index and the prompt-prefix cache
        rec.recommend_batch([examples[0].history[-args.max_history :]], k=args.k, template=template)
    for start in range(0, len(examples), args.batch_size):
        batch = [e.history[-args.max_history :] for e in examples[start : start + args.batch_size]]
        excludes = [e.history for e in examples[start : start + args.batch_size]]
        for name, rec in zip(seconds, (plain, capped)):
            t0 = time.perf_counter()
            lists[name] += rec.recommend_batch(batch, k=args.k, excludes=excludes, template=template)
            seconds[name] += time.perf_counter() - t0
    rows = []
    for name in seconds:
        past, lists_past, items = 0, 0, set()
        for recs in lists[name]:
            counts = Counter(int(family[index.title_leaf[title_number[r.title]]]) for r in recs)
            over = sum(max(0, n - args.max_per_family) for f, n in counts.items() if f >= 0)
            past += over
            lists_past += over > 0
            items.update(r.item_id for r in recs)
        rows.append({
            "cap": name, "users": len(examples), "s_per_user": seconds[name] / len(examples),
            "ratio": seconds[name] / seconds["none"], "past_cap": past, "lists_past_cap": lists_past,
            "distinct_items": len(items),
        })  # fmt: skip
    return rows


if __name__ == "__main__":
    sys.exit(main())
