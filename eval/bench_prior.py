"""What the collaborative prior costs inside beam search, against what the model costs.

    .venv/bin/python eval/bench_prior.py --titles 1000 100000 [--users 8 --history 10 --k 10]

For each catalog size (synthetic titles from the tokenizer's vocabulary): one batch of users
decoded with constrained beam search without a prior and with one (weight 0.5), the same prompts;
the prior's own costs timed apart: building the per-node masses once per search, and mixing
them into one step for all beams. Prints a table and writes --out (JSON) when given.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np
import torch

from synthetic import synthetic_titles, vocabulary_words


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--titles", type=int, nargs="+", default=[1000, 100_000])
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--history", type=int, default=10)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")
    args = p.parse_args()

    from genrec import Catalog, Recommender
    from genrec.decoding import TitleConstraint, TitlePrior, beam_search
    from genrec.model import default_model_dir

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(default_model_dir()))
    rows = []
    for n in args.titles:
        titles = synthetic_titles(n, vocabulary_words(tokenizer), args.seed)
        catalog = Catalog.from_records([{"item_id": str(i), "title": t} for i, t in enumerate(titles)])
        rec = Recommender(catalog, search="beam")
        rng = random.Random(args.seed)
        histories = [rng.sample(catalog.ids, args.history) for _ in range(args.users)]
        jobs = [rec.pipeline.prepare(h, "next_item") for h in histories]
        index = rec.pipeline.index(jobs[0].ctx)
        scores = np.random.default_rng(args.seed).normal(0, 2, (args.users, len(catalog)))
        banned = [job.banned_titles for job in jobs]

        def search(prior):
            stats: dict = {}
            t0 = time.perf_counter()
            beam_search(rec.lm.model, [j.prompt_ids for j in jobs], num_beams=args.k, num_return=args.k, index=index,
                        banned_titles=banned, pad_token_id=rec.pad_token_id, stats=stats, prior=prior)  # fmt: skip
            return time.perf_counter() - t0, stats["steps"]

        search(None)  # warm-up
        plain_s, steps = search(None)
        t0 = time.perf_counter()
        prior = TitlePrior.from_item_scores(index, catalog.position_titles, scores, banned, weight=0.5)
        build_s = time.perf_counter() - t0
        prior_s, prior_steps = search(prior)
        # one step's mixing, for every beam of every user at the root's children
        constraint = TitleConstraint(index, "cpu", banned)
        nodes = torch.zeros(args.users * args.k, dtype=torch.long)
        row_users = torch.arange(args.users).repeat_interleave(args.k)
        logp = torch.log_softmax(torch.randn(args.users * args.k, index.vocab_size), -1)
        row, token, child = constraint.allowed(nodes, row_users)
        t0 = time.perf_counter()
        for _ in range(20):
            constraint.keep(logp, row, token, prior.mix(logp, row, token, child, row_users))
        mix_s = (time.perf_counter() - t0) / 20
        step_s = plain_s / max(steps, 1)
        rows.append({
            "titles": len(catalog.unique_titles), "users": args.users, "beams": args.k, "nodes": index.n_nodes,
            "search_s": round(plain_s, 3), "search_with_prior_s": round(prior_s, 3), "steps": steps, "steps_with_prior": prior_steps,
            "prior_build_s": round(build_s, 4), "prior_mix_per_step_s": round(mix_s, 5), "model_step_s": round(step_s, 4),
            "mix_share_of_step": round(mix_s / step_s, 4), "build_share_of_search": round(build_s / plain_s, 4),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    head = "| titles | trie nodes | users x beams | search s | with prior s | prior build s | mix s/step | model s/step | mix / step | build / search |"
    print("\n" + head + "\n|" + "---:|" * 10)
    for r in rows:
        print(f"| {r['titles']:,} | {r['nodes']:,} | {r['users']} x {r['beams']} | {r['search_s']:.2f} | {r['search_with_prior_s']:.2f} | "
              f"{r['prior_build_s']:.3f} | {r['prior_mix_per_step_s']:.4f} | {r['model_step_s']:.3f} | "
              f"{r['mix_share_of_step']:.1%} | {r['build_share_of_search']:.1%} |")  # fmt: skip
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
