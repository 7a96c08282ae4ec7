"""Where constrained decoding's time goes, with and without forced-chain lookahead: every model
call of one search (users in the call, beam rows fed, tokens fed, padded width, keys in the cache,
seconds), and the rest of the search (prefill, masks and bookkeeping).

    .venv/bin/python eval/profile_decoding.py --long-titles [--users 1]
    .venv/bin/python eval/profile_decoding.py --real-catalog ../shared/datasets/ml-100k/u.item \
        --sep '|' --encoding latin-1 --no-header [--users 8]
    .venv/bin/python eval/profile_decoding.py --long-titles --users 4 --max-chains 4,8,16   # horizons
    .venv/bin/python eval/profile_decoding.py --long-titles --ops 15 [--compile]   # by operator, and the floors
    .venv/bin/python eval/profile_decoding.py --long-titles --users 16   # a batch against its floor

Lookahead runs with the default horizon (``beam_search(max_chain=)``: forced tokens fed ahead of
each beam, topped up by every call). ``--max-chains`` times each horizon against whole chains,
each user searched alone, and checks every horizon returns the same lists (``none``: whole chains
only); ``--compile`` adds whole chains with the model's blocks through torch.compile.

Each search is also set against its floor: the seconds its linear products (the blocks' on every
prompt token, the blocks' and the output layer's on every token a call fed) would take at the best
rate this CPU gave them (each weight's product on 64-256 rows, as the decoder runs it), a call never
taking less than reading every weight once. Attention, masks and bookkeeping count nothing in it,
so no code making the same calls with the same tokens can beat it on this CPU; a search's ratio
to it bounds what faster code could still win (fewer calls or tokens are the search's own business).

The same prompts as eval/bench_decoding.py (a 5-item history, seed 0); ``--users N`` decodes N
users in one batch.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass

from synthetic import product_titles, synthetic_titles, vocabulary_words


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--titles", type=int, default=10_000)
    p.add_argument("--real-catalog")
    p.add_argument("--long-titles", action="store_true")
    p.add_argument("--sep")
    p.add_argument("--encoding", default="utf-8")
    p.add_argument("--no-header", action="store_true")
    p.add_argument("--users", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model")
    p.add_argument("--dtype", default="float32", help="as Recommender(dtype=) loads the model (bfloat16: the fast mode)")
    p.add_argument("--max-chains", help="comma-separated horizons to compare with whole chains (users searched one at a time)")
    p.add_argument("--ops", type=int, metavar="N", help="instead: torch.profiler's N costliest operators of one search, and "
                   "bare forwards of the same model beside the weights' read time")
    p.add_argument("--compile", action="store_true",
                   help="with --ops: the bare forwards through torch.compile too; with --max-chains: whole chains compiled too")
    args = p.parse_args(argv)

    from genrec import Catalog, Recommender
    from genrec.decoding import beam_search
    from genrec.decoding.lookahead import DEFAULT_MAX_CHAIN
    from genrec.decoding.search_types import ModelCall
    rec = Recommender(Catalog.demo(), model=args.model)  # for the tokenizer; rebuilt on the catalog below
    if args.real_catalog:
        catalog = Catalog.from_file(args.real_catalog, sep=args.sep, encoding=args.encoding, header=not args.no_header)
    else:
        make = product_titles if args.long_titles else synthetic_titles
        catalog = Catalog(list(map(str, range(args.titles))), make(args.titles, vocabulary_words(rec.tokenizer), args.seed))
    rec = Recommender(catalog, model=args.model, tokenizer=rec.tokenizer, search="beam", dtype=args.dtype)
    rng = random.Random(args.seed)
    jobs = [rec.pipeline.prepare(rng.sample(catalog.ids, 5), "next_item") for _ in range(args.users)]
    index = rec.pipeline.index(jobs[0].ctx)

    calls: list[ModelCall] = []

    def run(lookahead: bool, users: list | None = None, max_chain: int | None = DEFAULT_MAX_CHAIN) -> tuple[float, dict, list]:
        calls.clear()
        stats: dict = {}
        users = jobs if users is None else users
        started = time.perf_counter()
        hyps = beam_search(rec.lm.search_model, [j.prompt_ids for j in users], num_beams=10, num_return=10, index=index,
                           banned_titles=[j.banned_titles for j in users], pad_token_id=rec.pad_token_id, stats=stats,
                           lookahead=lookahead, max_chain=max_chain, on_model_call=calls.append)  # fmt: skip
        return time.perf_counter() - started, stats, [[h.tokens for h in user] for user in hyps]

    run(True)  # warm-up: prompt-prefix cache
    if args.ops:
        return operator_profile(run, rec.lm.model, args.ops, compiled=args.compile)
    if args.max_chains:
        caps = [None, *map(int, args.max_chains.split(","))] if args.max_chains != "none" else [None]
        return compare_caps(run, jobs, calls, caps, model=rec.lm.model if args.compile else None)
    print(f"{len(catalog.unique_titles)} titles, {args.users} user(s) in one batch, 10 beams")
    rates = product_rates(rec.lm.model, rec.lm.search_model)
    prompt_tokens = sum(len(j.prompt_ids) for j in jobs)
    for lookahead in (True, False):
        total, stats, _ = run(lookahead)
        model_s = sum(c.seconds for c in calls)
        print(f"\nlookahead {'on' if lookahead else 'off'}: {total:.2f} s = prefill {stats['prefill_s']:.2f} s + model calls "
              f"{model_s:.2f} s ({len(calls)} calls, {stats['steps']} steps) + masks and bookkeeping "
              f"{total - stats['prefill_s'] - model_s:.2f} s; tokens fed {sum(c.tokens for c in calls)}, "
              f"padded to {sum(c.users * c.width for c in calls)}")  # fmt: skip
        print("| call | users run / active | beam rows | tokens fed | width | keys before | s |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for n, c in enumerate(calls, 1):
            print(f"| {n} | {c.users} / {c.active} | {c.rows} | {c.tokens} | {c.width} | {c.keys} | {c.seconds:.3f} |")
        floor = search_floor(rates, prompt_tokens, [c.tokens for c in calls])
        print(f"floor: {floor:.2f} s ({floor / args.users:.2f} s a user); this search {total / floor:.2f}x it "
              f"(blocks {rates.block_s * 1e3:.2f} ms and output layer {rates.head_s * 1e3:.2f} ms a token at best, "
              f"every weight read once {rates.read_s * 1e3:.1f} ms)")  # fmt: skip
    return 0


@dataclass(frozen=True)
class ProductRates:
    block_s: float  # the blocks' linear products, seconds a token at their best
    head_s: float  # the output layer's, seconds a token
    read_s: float  # reading every weight once


def product_rates(model, decoder, rows: tuple[int, ...] = (64, 128, 256), repeats: int = 5) -> ProductRates:
    """The best this CPU does with ``model``'s linear products, run as ``decoder`` runs them (the
    lean decoder's packed or plain kernels): each weight of the first block and the output layer
    on each of ``rows`` tokens, its best time a token over them and ``repeats``; and the time to
    read every weight once."""
    import torch

    linear = decoder.linear if hasattr(decoder, "linear") else (lambda m, x: torch.nn.functional.linear(x, m.weight, m.bias))
    block = model.base_model.layers[0]
    layers = len(model.base_model.layers)

    def seconds(module) -> float:
        best = float("inf")
        with torch.inference_mode():
            for n in rows:
                x = torch.randn(n, module.in_features)
                linear(module, x)
                for _ in range(repeats):
                    started = time.perf_counter()
                    linear(module, x)
                    best = min(best, (time.perf_counter() - started) / n)
        return best

    projections = [m for m in block.modules() if isinstance(m, torch.nn.Linear)]
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return ProductRates(layers * sum(map(seconds, projections)), seconds(model.get_output_embeddings()), _read_seconds(weights))


def search_floor(rates: ProductRates, prompt_tokens: int, call_tokens: list[int]) -> float:
    """Seconds a search cannot go under: every prompt token through the blocks, and each call's
    tokens through the blocks and the output layer, or the weights' read time if that is longer."""
    per_token = rates.block_s + rates.head_s
    return prompt_tokens * rates.block_s + sum(max(tokens * per_token, rates.read_s) for tokens in call_tokens)


def _read_seconds(n_bytes: int) -> float:
    """Seconds to read ``n_bytes`` of float32 once (this machine's memory bandwidth)."""
    import torch

    block = torch.ones(n_bytes // 4, dtype=torch.float32)
    block.sum()
    started = time.perf_counter()
    for _ in range(5):
        block.sum()
    return (time.perf_counter() - started) / 5


def _bare_forward(model, tokens: int, keep: int) -> float:
    """Median seconds of ``model`` on ``tokens`` new tokens after a 200-token prompt (a copy of
    its cache each time), with logits for the last position (``keep`` 1) or every one (0)."""
    import copy

    import torch

    with torch.inference_mode():
        out = model(input_ids=torch.randint(100, 1000, (1, 200)), use_cache=True)
        times = []
        for _ in range(6):  # the first compiles, for a compiled model
            cache = copy.deepcopy(out.past_key_values)
            fed = torch.randint(100, 1000, (1, tokens))
            started = time.perf_counter()
            model(input_ids=fed, past_key_values=cache, use_cache=True, logits_to_keep=keep)
            times.append(time.perf_counter() - started)
    return sorted(times[1:])[2]


def operator_profile(run, model, n: int, compiled: bool = False) -> int:
    """Where a search's seconds go by operator, and two floors to hold a model call against: reading
    every weight once (this machine's memory bandwidth) and bare forwards of 1-40 tokens after a
    200-token prompt (no tree mask, no lookahead bookkeeping), eager and, with ``compiled``,
    through torch.compile (dynamic shapes; the first call compiles)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        total, stats, _ = run(True)
    print(f"one search: {total:.2f} s, {stats['model_calls']} model calls")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=n))
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    read_s = _read_seconds(weights)
    print(f"reading {weights / 1e6:.0f} MB of weights once: {read_s * 1e3:.1f} ms ({weights / read_s / 1e9:.1f} GB/s)")
    for label, forward in (("eager", model), *((("torch.compile", torch.compile(model, dynamic=True)),) if compiled else ())):
        for tokens, keep in ((1, 1), (10, 1), (10, 0), (40, 1)):
            seconds = _bare_forward(forward, tokens, keep)
            what = "its last position's logits" if keep else "every position's logits"
            print(f"bare forward ({label}) of {tokens} tokens after 200, {what}: {seconds * 1e3:.1f} ms (median of 5)")
    return 0


def compare_caps(run, jobs: list, calls: list, caps: list, model=None) -> int:
    """Each cap's seconds, calls and tokens per user (users one at a time), beside whole chains;
    with ``model``, whole chains again with its blocks through torch.compile (after one user's
    search has compiled them)."""
    print("| max chain | s/user | model calls s/user | calls/user | tokens fed/user | same lists as whole chains |")
    print("|---|---:|---:|---:|---:|---|")
    reference: list = []

    def row(label: str, cap: int | None) -> None:
        seconds = model_s = n_calls = n_tokens = 0.0
        lists = []
        for job in jobs:
            total, _, hyps = run(True, [job], cap)
            seconds, model_s = seconds + total, model_s + sum(c.seconds for c in calls)
            n_calls, n_tokens = n_calls + len(calls), n_tokens + sum(c.tokens for c in calls)
            lists.append(hyps)
        reference[:] = reference or lists
        n = len(jobs)
        print(f"| {label} | {seconds / n:.2f} | {model_s / n:.2f} | {n_calls / n:.1f} | {n_tokens / n:.0f} | "
              f"{lists == reference} |", flush=True)  # fmt: skip

    for cap in caps:
        row("whole" if cap is None else str(cap), cap)
    if model is not None:
        import torch

        prefix = model.base_model_prefix
        setattr(model, prefix, torch.compile(getattr(model, prefix), dynamic=True))
        started = time.perf_counter()
        run(True, jobs[:1], None)
        print(f"(compiling the blocks: {time.perf_counter() - started:.0f} s in the first search)")
        row("whole, torch.compile", None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
