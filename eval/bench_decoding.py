"""Constrained decoding at catalog scale: genrec against the tools people use today, in ONE process,
on the same model and the same prompts.

    .venv/bin/python eval/bench_decoding.py --titles N --out OUTDIR [--real-catalog FILE | --long-titles]

(a) genrec constrained top-10 (10 beams), one user at a time, with the Recommender's decoder (the
    lean one on a CPU) but without its prompt-prefix cache: every prompt computed whole, as (c)
    computes it; with lookahead (the default) and without (a model call every step);
(b) transformers generate(num_beams=10, prefix_allowed_tokens_fn=<GENRE-style dict trie>);
(c) the same model's unconstrained 10-beam generate() of the same number of new tokens (the floor);
plus genrec's own decoder without the constraint, and several users decoded in one batch;
(e) approximate modes, each timed and its top-10 set against fp32's (how many users get the same list,
    the mean overlap): with ``--int8`` the linear layers quantised to int8 (torch's dynamic
    quantisation, a measurement only); with ``--bf16`` the opt-in fast mode, the model in bfloat16
    as ``Recommender(dtype="bfloat16")`` decodes it (``bf16``) and through transformers' forward
    (``bf16_transformers``), and with ``--compile`` too, that copy compiled;
(f) exact to float rounding, each timed and its top-10 set against (a)'s: transformers' forward
    (``runtime="transformers"``, always); with ``--compile`` the blocks through torch.compile (timed
    after two searches compiled them); with ``--onnx`` the blocks in ONNX Runtime (its export and
    load timed); with ``--whole-chains`` lookahead feeding whole chains (no horizon).
Medians over users. Writes OUTDIR/bench.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
from pathlib import Path

from synthetic import product_titles, synthetic_titles, vocabulary_words


def _status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process. Not getrusage's ru_maxrss: that survives exec,
    so a spawned child would report the peak of the parent it was forked from."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _build_index_child(titles, model_dir, cache_dir, context, queue) -> None:
    """Build the title index in a fresh process, to measure its time and memory alone."""
    from transformers import AutoTokenizer

    from genrec.catalog import Catalog
    from genrec.decoding import TitleContext, load_or_build_index

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    catalog = Catalog(list(map(str, range(len(titles)))), titles)
    before = _status_mb("VmRSS")
    t0 = time.perf_counter()
    index = load_or_build_index(
        catalog.unique_titles, tokenizer, TitleContext(**context), catalog_hash=catalog.content_hash,
        cache_dir=Path(cache_dir), vocab_size=len(tokenizer),
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    peak = _status_mb("VmHWM")
    queue.put({"index_build_s": seconds, "rss_before_mb": before, "process_peak_rss_mb": peak,
               "index_nodes": index.n_nodes, "index_mb": index.nbytes() / 2**20, "max_depth": index.max_depth})  # fmt: skip


def _quantize_int8(model, *, head: bool, per_channel: bool):
    """The blocks' linear layers (and with ``head`` the output head) as torch's dynamic int8 ones:
    int8 weights, activations quantised per call. A measurement, not a library mode: its top-10
    agreement with float32 decides whether it may become one (eval/notes/2026-12-07-int8.md)."""
    import warnings

    import torch

    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig if per_channel else torch.ao.quantization.default_dynamic_qconfig
    head_module = model.get_output_embeddings()
    spec = {name: qconfig for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and (head or module is not head_module)}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao's eager quantisation announces its move to torchao
        return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)


def dict_trie(index):
    trie: dict = {}
    for n in range(index.n_titles):
        node = trie
        for tok in index.sequence(n):
            node = node.setdefault(tok, {})
    return trie


def node_path(index, node: int) -> list[int]:
    path = []
    while node > 0:
        path.append(int(index.token[node]))
        node = int(index.parent[node])
    return path[::-1]


def forced_token_share(index) -> float:
    """Of all title tokens, the share written at a trie node with a single child (no decision)."""
    import numpy as np

    nodes = np.arange(1, index.n_nodes - 1)
    through = index.leaves_below[nodes].astype(np.float64)  # titles whose path has this token
    forced = index.n_children[index.parent[nodes]] == 1
    return float((through * forced).sum() / through.sum())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--titles", type=int, default=10_000)
    p.add_argument("--real-catalog", help="a catalog file instead of synthetic titles")
    p.add_argument("--long-titles", action="store_true", help="synthetic product-like titles of 30-60 tokens")
    p.add_argument("--sep")
    p.add_argument("--encoding", default="utf-8")
    p.add_argument("--no-header", action="store_true")
    p.add_argument("--out", required=True)
    p.add_argument("--users", type=int, default=16)
    p.add_argument("--history", type=int, default=5)
    p.add_argument("--beams", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", help="default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--skip-hf", action="store_true", help="skip (b), the slow reference")
    p.add_argument("--compile", action="store_true",
                   help="(f) also decode with the blocks through torch.compile (genrec.model.compile_blocks)")
    p.add_argument("--onnx", action="store_true", help="(f) also decode with the blocks in ONNX Runtime (runtime='onnxruntime')")
    p.add_argument("--int8", action="store_true", help="(e) also decode with the linear layers quantised to int8 (a measurement; no library mode)")
    p.add_argument("--int8-head", action="store_true", help="with --int8, the output head quantised too")
    p.add_argument("--int8-per-channel", action="store_true", help="with --int8, one weight scale per output channel")
    p.add_argument("--bf16", action="store_true", help="(e) also decode with a bfloat16 copy (the fast mode); with --compile, compiled too")
    p.add_argument("--whole-chains", action="store_true", help="(f) also decode feeding whole chains at once (max_chain=None)")
    args = p.parse_args(argv)

    import torch
    from transformers import AutoTokenizer, GenerationConfig

    from genrec import Catalog, Recommender
    from genrec.decoding import beam_search
    from genrec.decoding.lookahead import DEFAULT_MAX_CHAIN
    from genrec.decoding.runtime import with_runtime
    from genrec.model import LoadedModel, cache_root, default_model_dir

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = str(args.model or default_model_dir())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if args.real_catalog:
        catalog = Catalog.from_file(args.real_catalog, sep=args.sep, encoding=args.encoding, header=not args.no_header)
    else:
        make = product_titles if args.long_titles else synthetic_titles
        catalog = Catalog(list(map(str, range(args.titles))), make(args.titles, vocabulary_words(tokenizer), args.seed))
    n_titles = len(catalog.unique_titles)
    cache_dir = cache_root()
    print(f"{n_titles} titles; threads={torch.get_num_threads()}", flush=True)

    rec = Recommender(catalog, model=args.model, cache_dir=cache_dir, search="beam")
    rng = random.Random(args.seed)
    histories = [rng.sample(catalog.ids, args.history) for _ in range(args.users)]
    # the tokenisation context, from a rendered prompt, without building the index here
    ctx = rec.pipeline.split(rec.pipeline.render("next_item", catalog.items(histories[0]), None, k=1), "next_item")[1]

    # index: built in a child process from an empty cache, so time and memory are its own
    from genrec.decoding.index_cache import index_key, tokenizer_fingerprint

    key = index_key(catalog.content_hash, tokenizer_fingerprint(tokenizer), ctx)
    (cache_dir / "indexes" / f"{key}.npz").unlink(missing_ok=True)
    queue = mp.get_context("spawn").Queue()
    child = mp.get_context("spawn").Process(
        target=_build_index_child,
        args=(catalog.unique_titles, model_dir, str(cache_dir),
              {"context": ctx.context, "title_prefix": ctx.title_prefix, "end_ids": ctx.end_ids, "end_text": ctx.end_text}, queue),
    )  # fmt: skip
    child.start()
    build = queue.get()
    child.join()
    t0 = time.perf_counter()
    index = rec.pipeline.index(ctx)  # loaded from the cache the child wrote (with its checksum verified)
    index_load_s = time.perf_counter() - t0
    jobs = [rec.pipeline.prepare(h, "next_item") for h in histories]
    print(f"index: built in {build['index_build_s']:.1f}s, +{build['process_peak_rss_mb'] - build['rss_before_mb']:.0f} MB "
          f"peak, loaded in {index_load_s:.2f}s, {build['index_nodes']} nodes", flush=True)  # fmt: skip

    model, searcher = rec.lm.model, rec.lm.search_model  # transformers' model; what the Recommender decodes with
    end = rec.end_ids[0]
    k = 10

    def genrec_one(job, lookahead=True, lm=searcher, max_chain=DEFAULT_MAX_CHAIN):
        stats: dict = {}
        t = time.perf_counter()
        hyps = beam_search(lm, [job.prompt_ids], num_beams=args.beams, num_return=k, index=index,
                           banned_titles=[job.banned_titles], pad_token_id=rec.pad_token_id, stats=stats,
                           lookahead=lookahead, max_chain=max_chain)[0]  # fmt: skip
        seconds = time.perf_counter() - t
        return seconds, [index.titles_at(h.node)[0] for h in hyps], [h.score for h in hyps], stats["steps"], stats["model_calls"]

    def hf_generate(job, new_tokens, allowed=None):
        ids = torch.tensor([job.prompt_ids])
        config = GenerationConfig(
            num_beams=args.beams, num_return_sequences=k if allowed else 1, do_sample=False, length_penalty=0.0,
            max_new_tokens=new_tokens, min_new_tokens=None if allowed else new_tokens, eos_token_id=end,
            pad_token_id=end, return_dict_in_generate=True, output_scores=True,
        )  # fmt: skip
        t = time.perf_counter()
        with torch.inference_mode():
            result = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config, prefix_allowed_tokens_fn=allowed)
        return time.perf_counter() - t, result

    def engine_floor(job, steps):
        t = time.perf_counter()
        beam_search(searcher, [job.prompt_ids], num_beams=args.beams, num_return=1, index=None, eos_token_ids=(),
                    max_new_tokens=steps, pad_token_id=rec.pad_token_id)  # fmt: skip
        return time.perf_counter() - t

    import copy

    approx: dict = {}  # (e) approximate modes, by name: a model each
    if args.int8:
        approx["int8"] = _quantize_int8(copy.deepcopy(model), head=args.int8_head, per_channel=args.int8_per_channel)
    if args.bf16:  # as Recommender(dtype="bfloat16") decodes (the lean decoder), and through transformers' forward
        approx["bf16_transformers"] = copy.deepcopy(model).to(torch.bfloat16)
        approx["bf16"] = with_runtime(LoadedModel(approx["bf16_transformers"], None, "bf16", "cpu"), "torch", cache_dir).search_model
    exact: dict = {"transformers": (model, 0.0)}  # (f) exact to float rounding, by name: a model each, and its set-up seconds
    if args.whole_chains:  # the same decoder, max_chain=None
        exact["whole_chains"] = (searcher, 0.0)
    if args.compile:  # the blocks compiled (a copy: eager runs stay eager)
        from genrec.model import compile_blocks

        compiled = compile_blocks(copy.deepcopy(model))
        if args.bf16:
            approx["bf16_compiled"] = compile_blocks(copy.deepcopy(approx["bf16_transformers"]))
        started = time.perf_counter()
        for job in jobs[:2]:  # the first searches compile
            genrec_one(job, lm=compiled)
        exact["compiled"] = (compiled, time.perf_counter() - started)
        print(f"(f) compiling the blocks: {exact['compiled'][1]:.0f} s in the first two searches", flush=True)
    if args.onnx:
        import tempfile

        from genrec.decoding.onnx_runtime import OnnxDecoder
        from genrec.encoder import model_fingerprint

        started = time.perf_counter()  # exported into a fresh folder: the export is part of the cost
        with tempfile.TemporaryDirectory(dir=out) as fresh:  # (the session holds the graph once loaded)
            onnx_lm = OnnxDecoder.from_model(model, model_fingerprint(model), Path(fresh))
        exact["onnx"] = (onnx_lm, time.perf_counter() - started)
        for job in jobs[:2]:
            genrec_one(job, lm=onnx_lm)
        print(f"(f) ONNX Runtime: exported and loaded in {exact['onnx'][1]:.0f} s", flush=True)
    for lm in approx.values():
        for job in jobs[:2]:
            genrec_one(job, lm=lm)
    genrec_one(jobs[0])  # warm-up
    genrec_one(jobs[0], lookahead=False)
    # user by user, the methods back to back: drift in machine speed hits them alike
    genrec_runs, plain_runs, floor, engine = [], [], [], []
    approx_runs: dict = {name: [] for name in approx}
    exact_runs: dict = {name: [] for name in exact}
    for job in jobs:
        run = genrec_one(job)
        genrec_runs.append(run)
        plain_runs.append(genrec_one(job, lookahead=False))
        floor.append(hf_generate(job, run[3])[0])  # (c) the same number of new tokens, no constraint
        engine.append(engine_floor(job, run[3]))
        for name, lm in approx.items():
            approx_runs[name].append(genrec_one(job, lm=lm))
        for name, (lm, _) in exact.items():
            exact_runs[name].append(genrec_one(job, lm=lm, max_chain=None if name == "whole_chains" else DEFAULT_MAX_CHAIN))
    genrec_s = statistics.median(r[0] for r in genrec_runs)
    plain_s = statistics.median(r[0] for r in plain_runs)
    unconstrained_s = statistics.median(floor)
    same_lookahead = [a[1] == b[1] for a, b in zip(genrec_runs, plain_runs)]
    print(f"(a) genrec: {genrec_s:.3f} s/user (median), steps {[r[3] for r in genrec_runs]}, "
          f"model calls {[r[4] for r in genrec_runs]}", flush=True)  # fmt: skip
    print(f"    without lookahead: {plain_s:.3f} s/user, model calls {[r[4] for r in plain_runs]} "
          f"({plain_s / genrec_s:.2f}x); same top-10: {all(same_lookahead)}", flush=True)  # fmt: skip
    print(f"(c) unconstrained generate: {unconstrained_s:.3f} s/user; genrec engine unconstrained "
          f"{statistics.median(engine):.3f}", flush=True)  # fmt: skip

    result = {
        "n_titles": n_titles, "genrec_s": genrec_s, "max_chain": DEFAULT_MAX_CHAIN,
        "genrec_no_lookahead_s": plain_s,
        "lookahead_speedup": plain_s / genrec_s,
        "model_calls_per_user": statistics.median(r[4] for r in genrec_runs),
        "model_calls_per_user_no_lookahead": statistics.median(r[4] for r in plain_runs),
        "same_topk_lookahead": all(same_lookahead),
        "hf_prefix_fn_s": None,
        "unconstrained_s": unconstrained_s,
        "unconstrained_genrec_engine_s": statistics.median(engine),
        "same_topk": None,
        "index_build_s": build["index_build_s"], "index_peak_rss_mb": build["process_peak_rss_mb"] - build["rss_before_mb"],
        "index_process_peak_rss_mb": build["process_peak_rss_mb"],
        "index_load_s": index_load_s, "index_nodes": build["index_nodes"],
        "index_max_depth": build["max_depth"],
        "users": args.users, "beams": args.beams, "history_items": args.history,
        "prompt_tokens_median": statistics.median(len(j.prompt_ids) for j in jobs),
        "genrec_steps_median": statistics.median(r[3] for r in genrec_runs),
        "threads": torch.get_num_threads(),
        "source": args.real_catalog or ("synthetic product-like titles" if args.long_titles else "synthetic"),
        "forced_token_share": forced_token_share(index),
        "title_tokens_median": statistics.median(len(index.sequence(t)) for t in range(min(index.n_titles, 5000))),
    }
    for name, runs in exact_runs.items():
        result[f"{name}_s"] = statistics.median(r[0] for r in runs)
        result[f"{name}_vs_unconstrained"] = result[f"{name}_s"] / unconstrained_s
        result[f"{name}_setup_s"] = exact[name][1]
        result[f"{name}_same_top10"] = all(a[1] == b[1] for a, b in zip(runs, genrec_runs))
        result[f"{name}_score_max_abs_diff"] = max(max(abs(x - y) for x, y in zip(a[2], b[2])) for a, b in zip(runs, genrec_runs))
        print(f"(f) {name}: {result[f'{name}_s']:.3f} s/user ({result[f'{name}_vs_unconstrained']:.3f}x unconstrained, "
              f"(a) {genrec_s / unconstrained_s:.3f}x); same top-10 for every user: {result[f'{name}_same_top10']}", flush=True)  # fmt: skip
    for name, runs in approx_runs.items():
        result[f"{name}_s"] = statistics.median(r[0] for r in runs)
        result[f"{name}_vs_unconstrained"] = result[f"{name}_s"] / unconstrained_s
        result[f"{name}_same_top10_users"] = sum(a[1] == b[1] for a, b in zip(runs, genrec_runs)) / len(jobs)
        result[f"{name}_top10_overlap"] = statistics.mean(len(set(a[1]) & set(b[1])) / k for a, b in zip(runs, genrec_runs))
        print(f"(e) {name}: {result[f'{name}_s']:.3f} s/user ({result[f'{name}_vs_unconstrained']:.3f}x unconstrained fp32, "
              f"fp32 genrec {genrec_s / unconstrained_s:.3f}x); same top-10 {result[f'{name}_same_top10_users']:.2f} of users, "
              f"overlap@10 {result[f'{name}_top10_overlap']:.2f}", flush=True)  # fmt: skip

    # (b) transformers with a GENRE-style nested-dict trie
    if not args.skip_hf:
        t0 = time.perf_counter()
        trie = dict_trie(index)
        result["hf_trie_build_s"] = time.perf_counter() - t0
        runs, same = [], []
        for job, mine in zip(jobs, genrec_runs):
            start = len(job.prompt_ids)
            # the same exclusion as genrec: never enter a subtree whose titles are all in the history
            dead_children: dict[tuple, set] = {}
            for node in index.dead_nodes(job.banned_titles).tolist():
                path = node_path(index, node)
                dead_children.setdefault(tuple(path[:-1]), set()).add(path[-1])

            def allowed(batch_id, input_ids, start=start, dead_children=dead_children):
                node = trie
                generated = input_ids[start:].tolist()
                for tok in generated:
                    node = node.get(tok)
                    if node is None:
                        return [end]
                dead = dead_children.get(tuple(generated), ())
                options = [t for t in node if t not in dead]
                return options or [end]

            seconds, out_hf = hf_generate(job, index.max_depth, allowed)
            runs.append(seconds)
            titles = []
            for seq, score in zip(out_hf.sequences, out_hf.sequences_scores):
                gen = seq[start:].tolist()
                if end in gen and score > -1e8:
                    leaf = index.walk(gen[: gen.index(end) + 1])
                    titles.append((index.titles_at(leaf)[0] if leaf >= 0 else -1, float(score)))
            mine_scores = dict(zip(mine[1], mine[2]))
            theirs = [t for t, _ in titles[:k]]
            # equal lists, or differences only among titles whose scores tie
            same.append(theirs == mine[1] or sorted(theirs) == sorted(mine[1]) and all(
                abs(s - mine_scores.get(t, 1e9)) < 1e-3 for t, s in titles[:k]))  # fmt: skip
        result["hf_prefix_fn_s"] = statistics.median(runs)
        # genrec (lookahead on) against transformers, and against genrec without lookahead
        result["same_topk"] = all(same) and all(same_lookahead)
        result["same_topk_hf"] = all(same)
        print(f"(b) transformers prefix_allowed_tokens_fn: {result['hf_prefix_fn_s']:.3f} s/user; same top-10: {same}", flush=True)

    # several users in one batch, with and without lookahead
    for lookahead, name in ((True, "users_per_s_batched"), (False, "users_per_s_batched_no_lookahead")):
        rec.lookahead = lookahead
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            rec.recommend_batch(histories, k=k, batch_size=len(histories), num_beams=args.beams)
            times.append(time.perf_counter() - t0)
        result[name] = len(histories) / min(times)
    rec.lookahead = True
    result["users_per_s_one_at_a_time"] = 1.0 / genrec_s
    if args.bf16:  # the fast mode's batching, through the library's own bfloat16 load
        fast = Recommender(catalog, model=args.model, cache_dir=cache_dir, search="beam", dtype="bfloat16")
        fast.recommend_batch(histories[:2], k=k, batch_size=2, num_beams=args.beams)
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            fast.recommend_batch(histories, k=k, batch_size=len(histories), num_beams=args.beams)
            times.append(time.perf_counter() - t0)
        result["bf16_users_per_s_batched"] = len(histories) / min(times)
        result["bf16_users_per_s_one_at_a_time"] = 1.0 / result["bf16_s"]
        print(f"bf16 batched: {result['bf16_users_per_s_batched']:.2f} users/s vs "
              f"{result['bf16_users_per_s_one_at_a_time']:.2f} one at a time", flush=True)  # fmt: skip
    print(f"batched: {result['users_per_s_batched']:.2f} users/s ({result['users_per_s_batched_no_lookahead']:.2f} without "
          f"lookahead) vs {result['users_per_s_one_at_a_time']:.2f} one at a time", flush=True)  # fmt: skip
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
