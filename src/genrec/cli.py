"""The ``genrec`` command. Errors genrec raises on purpose become one clean line and exit code 2."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .errors import DataError, GenrecError, LimitError
from .data.arguments import add_dataset_arguments, dataset_from_args
from .decoding.runtime import RUNTIMES
from .options import add_options, options_from_args
from .tasks.content_search import SEARCHES
from .training.config import TrainConfig

__all__ = ["main", "build_parser", "DEMO_HISTORY"]

#: the demo's history: five well-known science-fiction films from the demo catalog
DEMO_HISTORY = ["The Matrix", "Star Wars", "Alien", "Blade Runner", "The Terminator"]


def _add_catalog_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("catalog")
    g.add_argument("--catalog", required=required, help="CSV, TSV, JSONL or separated file of items")
    g.add_argument("--id-column", help="column holding item IDs (default item_id, or column 1 without header)")
    g.add_argument("--title-column", help="column holding titles (default title, or column 2 without header)")
    g.add_argument("--sep", help="column separator (default: from the file extension)")
    g.add_argument("--encoding", default="utf-8")
    g.add_argument("--no-header", action="store_true", help="the file has no header row")
    g.add_argument("--columns", help="the columns' names, comma-separated, in place of a header (0/1 columns read as their names)")
    g.add_argument("--kind", default="item", help='what an item is, for prompts ("movie", "book")')
    g.add_argument("--lenient", action="store_true", help="skip bad rows (they are counted and reported)")
    g.add_argument("--title-words", type=int, metavar="N",
                   help="cut every title to its first N words, or as many more as tell it from the others "
                        "(as the model was trained with genrec train --title-words N)")  # fmt: skip


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", help="transformers model id or local directory (default: embedded SmolLM2-135M-Instruct)")
    g.add_argument("--prompts", help="folder of .jinja templates that override or add to the built-in ones")
    g.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: a GPU when there is one)")
    g.add_argument("--beams", type=int, default=10, help="beam width (at least k)")
    g.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                   help="the model's weights (default: float32 on a CPU, bf16 on a GPU); bfloat16 on a CPU with AMX or "
                   "AVX512-BF16 is the fast mode: about 1.8x faster beam search, most of the same top-10, not all")  # fmt: skip
    g.add_argument("--runtime", choices=RUNTIMES, default="torch",
                   help="torch (default): beam search's model calls through genrec's lean loop over a Llama or Qwen2 "
                   "model's blocks on a CPU (transformers' forward for other models); transformers: always transformers' "
                   "forward; onnxruntime: in ONNX Runtime (float32, CPU; exported once into the cache, about 10 s; "
                   "0.65 GB more memory; pip install 'genrec[onnx]'). The same lists, to float rounding")  # fmt: skip
    g.add_argument("--max-per-family", type=int,
                   help="at most N variants of one product per list (titles sharing half their tokens; default: no cap)")  # fmt: skip
    g.add_argument("--log", metavar="FILE",
                   help="an interaction log (CSV/TSV/Parquet of user_id,item_id[,timestamp]) to fit the trained mixture on "
                   "(Recommender.fit), or a folder `genrec fit` saved one to (loaded in seconds); search auto then ranks by it")  # fmt: skip
    g.add_argument("--search", default="auto", choices=SEARCHES,
                   help="beam: the model writes titles over the whole catalog; content: the items nearest the history "
                   "(and request) in words, TF-IDF mixed with the model's reading of each item; log: the mixture fitted "
                   "on --log; auto (default): log when --log is given, beam for a genrec-fine-tuned model, else content")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genrec", description="Prompt-based generative recommendation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("recommend", help="top-k items for a history")
    _add_catalog_options(p)
    _add_model_options(p)
    p.add_argument("--history", default="", help="comma-separated item IDs or titles, oldest first")
    p.add_argument("--item", action="append", default=[], help="one more history entry (for titles with commas)")
    p.add_argument("--request", help="free-text request, e.g. 'something funny'")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--free", action="store_true", help="generate unconstrained and ground the text")
    p.add_argument("--include-history", action="store_true", help="allow items from the history")
    p.add_argument("--json", action="store_true", help="print a JSON list of {item_id, title, score}")

    p = sub.add_parser("ground", help="map free text onto catalog items")
    _add_catalog_options(p)
    p.add_argument("text")
    p.add_argument("--limit", type=int, default=5)
    p.add_argument("--list", action="store_true", help="the text is a list answer: ground each piece")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("rank", help="order candidate items for a history")
    _add_catalog_options(p)
    _add_model_options(p)
    p.add_argument("--history", default="", help="comma-separated item IDs or titles, oldest first")
    p.add_argument("--candidates", required=True, help="comma-separated item IDs or titles to rank")
    p.add_argument("--request")
    p.add_argument("--length-normalize", action="store_true", help="score per token instead of per title")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("explain", help="why an item fits a history")
    _add_catalog_options(p)
    _add_model_options(p)
    p.add_argument("--history", default="", help="comma-separated item IDs or titles, oldest first")
    p.add_argument("--item", required=True, help="the item ID or title to explain")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--seed", type=int)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("chat", help="recommend from a conversation (JSON list of {role, content})")
    _add_catalog_options(p)
    _add_model_options(p)
    p.add_argument("--messages", required=True, help="a JSON file of messages, or - for standard input")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("mcp", help="serve the tools over MCP on stdio (needs genrec[mcp])")
    _add_catalog_options(p)
    _add_model_options(p)

    p = sub.add_parser("serve", help="serve the tools over HTTP (needs genrec[serve])")
    _add_catalog_options(p)
    _add_model_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key-env", help="name of an environment variable holding the API key every request must carry")
    p.add_argument("--batch-window-ms", type=float, default=5.0, help="how long a recommend request waits to be batched")
    p.add_argument("--max-batch", type=int, default=16, help="most recommend requests decoded together")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000)
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting for or holding the model; one more gets 503 at once")
    p.add_argument("--request-timeout", type=float, default=60.0, help="seconds after which a queued or decoding request gets 504")
    p.add_argument("--max-history-items", type=int, default=50, help="newest history items read into a prompt (the rest still excluded)")
    p.add_argument("--max-prompt-tokens", type=int, default=1024, help="tokens a prompt may take (the oldest history items are cut first)")
    p.add_argument("--max-batch-tokens", type=int, default=4096, help="padded prompt tokens one decode may take (long prompts apart from short ones)")

    p = sub.add_parser("train", help="fine-tune the model on an interaction log (full or LoRA)")
    add_dataset_arguments(p)
    p.add_argument("--out", required=True, help="the model directory to write")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    add_options(p, TrainConfig)

    from .batch.command import add_batch_parser
    from .fit_command import add_fit_parser

    add_fit_parser(sub, _add_catalog_options, _add_model_options)
    add_batch_parser(sub, _add_catalog_options, _add_model_options)

    p = sub.add_parser("demo", help="top-10 on the bundled demo catalog with the default model")
    _add_model_options(p)
    p.add_argument("--history", default=",".join(DEMO_HISTORY))
    p.add_argument("--request")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--json", action="store_true")
    return parser


def _load_catalog(args: argparse.Namespace):
    from .catalog import Catalog

    catalog = Catalog.from_file(
        args.catalog,
        id_column=args.id_column,
        title_column=args.title_column,
        sep=args.sep,
        encoding=args.encoding,
        header=not args.no_header,
        columns=args.columns.split(",") if args.columns else None,
        lenient=args.lenient,
        kind=args.kind,
    )
    if catalog.report.skipped:
        print(str(catalog.report), file=sys.stderr)
    return catalog if args.title_words is None else catalog.with_short_titles(args.title_words)


def _recommender(args: argparse.Namespace, catalog: Any):
    from .recommender import Recommender

    rec = Recommender(
        catalog, model=args.model, prompts_dir=args.prompts, device=args.device, dtype=args.dtype, num_beams=args.beams,
        max_per_family=args.max_per_family, search=args.search, runtime=args.runtime,
    )  # fmt: skip
    if not args.log:
        return rec
    from .log_model_io import is_saved_fit

    return rec.load_fit(args.log, progress=True) if is_saved_fit(args.log) else rec.fit(args.log, progress=True)


def _history(args: argparse.Namespace) -> list[str]:
    entries = [h.strip() for h in args.history.split(",") if h.strip()] if args.history else []
    return entries + list(getattr(args, "item", []) or [])


def _print_table(rows: Sequence[Any], header: str) -> None:
    print(header)
    if not rows:
        print("(no items)")
        return
    width_id = max(len("item_id"), *(len(r.item_id) for r in rows))
    width_title = max(len("title"), *(len(r.title) for r in rows))
    print(f"{'#':>3}  {'item_id':<{width_id}}  {'title':<{width_title}}  {'score':>9}")
    for n, r in enumerate(rows, start=1):
        print(f"{n:>3}  {r.item_id:<{width_id}}  {r.title:<{width_title}}  {r.score:>9.3f}")


def _cmd_recommend(args: argparse.Namespace, catalog: Any) -> int:
    rec = _recommender(args, catalog)
    history = _history(args)
    recs = rec.recommend(
        history,
        k=args.k,
        request=args.request,
        constrained=not getattr(args, "free", False),
        exclude_history=not getattr(args, "include_history", False),
    )
    if recs.history_dropped:
        print(f"note: the {recs.history_dropped} oldest history items did not fit the context window", file=sys.stderr)
    if recs.ungrounded:
        print(f"note: {len(recs.ungrounded)} generated outputs matched no catalog item", file=sys.stderr)
    if args.json:
        print(json.dumps(recs.to_dicts(), ensure_ascii=False, indent=2))
    else:
        shown = ", ".join(rec.catalog.title_of(i) for i in rec.resolve(history)) or "(none)"
        header = f"top-{args.k} for history: {shown}" + (f"\nrequest: {args.request}" if args.request else "")
        _print_table(recs, header)
    return 0


def _cmd_ground(args: argparse.Namespace) -> int:
    from .grounding import DEFAULT_THRESHOLD

    catalog = _load_catalog(args)
    if args.list:
        mentions = catalog.grounder.ground_list(args.text, threshold=DEFAULT_THRESHOLD)
        data = [{"text": m.text, "matches": [x.to_dict() for x in m.matches]} for m in mentions]
        if args.json:
            print(json.dumps(data, ensure_ascii=False, indent=2))
        else:
            for m in mentions:
                found = ", ".join(f"{x.item_id} {x.title} ({x.score:.0f})" for x in m.matches) or "(not in catalog)"
                print(f"{m.text!r} -> {found}")
        return 0
    matches = catalog.grounder.ground(args.text, limit=args.limit)
    if args.json:
        print(json.dumps([m.to_dict() for m in matches], ensure_ascii=False, indent=2))
    else:
        _print_table(matches, f"matches for {args.text!r}" + ("" if matches else " (none above the threshold)"))
    return 0


def _split_refs(text: str) -> list[str]:
    return [h.strip() for h in text.split(",") if h.strip()]


def _cmd_rank(args: argparse.Namespace, rec: Any) -> int:
    recs = rec.rank(_split_refs(args.history), _split_refs(args.candidates), request=args.request,
                    length_normalize=args.length_normalize)  # fmt: skip
    if args.json:
        print(json.dumps(recs.to_dicts(), ensure_ascii=False, indent=2))
    else:
        _print_table(recs, "candidates, best first")
    return 0


def _cmd_explain(args: argparse.Namespace, rec: Any) -> int:
    explanation = rec.explain(_split_refs(args.history), args.item, do_sample=args.sample, seed=args.seed)
    if args.json:
        print(json.dumps(explanation.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(f"{explanation.title}: {explanation.text}")
    return 0


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from None


def _cmd_chat(args: argparse.Namespace, rec: Any) -> int:
    raw = sys.stdin.read() if args.messages == "-" else _read_text(args.messages, "--messages file")
    try:
        messages = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise LimitError(f"--messages is not valid JSON: {exc}") from None
    response = rec.chat(messages, k=args.k)
    print(json.dumps(response.to_dict(), ensure_ascii=False, indent=2) if args.json else response.text)
    return 0


def _cmd_mcp(args: argparse.Namespace, rec: Any) -> int:
    from .serving.mcp_server import serve_stdio

    serve_stdio(rec)
    return 0


def _cmd_serve(args: argparse.Namespace, rec: Any) -> int:
    from .serving.http import ServeConfig, serve

    key = None
    if args.api_key_env:
        key = os.environ.get(args.api_key_env, "")
        if not key:
            raise DataError(f"--api-key-env {args.api_key_env}: that environment variable is not set or empty")
    if args.max_batch < 1 or args.batch_window_ms < 0 or args.max_queue < 1 or not args.request_timeout > 0:
        raise LimitError("--max-batch and --max-queue must be at least 1, --batch-window-ms at least 0, --request-timeout above 0")
    # what one request may cost: its history and prompt are cut before any token is computed
    rec.limits = replace(rec.limits, max_history_items=args.max_history_items, max_prompt_tokens=args.max_prompt_tokens)
    config = ServeConfig(
        batch_window_ms=args.batch_window_ms, max_batch=args.max_batch, max_body_bytes=args.max_body_bytes, api_key=key,
        max_queue=args.max_queue, request_timeout_s=args.request_timeout, max_batch_tokens=args.max_batch_tokens,
    )  # fmt: skip
    serve(rec, config, host=args.host, port=args.port, log_level="info" if args.verbose else "warning")
    return 0


_TASKS = {"rank": _cmd_rank, "explain": _cmd_explain, "chat": _cmd_chat, "mcp": _cmd_mcp, "serve": _cmd_serve}


def _cmd_train(args: argparse.Namespace) -> int:
    from .training import train

    dataset, data = dataset_from_args(args)
    config = options_from_args(TrainConfig, args, lora_alpha=2 * args.lora_r, dataset=args.dataset, data=data)
    result = train(dataset, args.out, config, resume=args.resume)
    print(f"wrote {result.out_dir}: {result.steps} steps, {result.samples_seen} sequences, {result.targets_seen} "
          f"next-item targets ({result.targets_per_s:.2f}/s), final loss {result.final_loss:.3f}")  # fmt: skip
    if "selected_step" in result.record:
        by_step = ", ".join(f"{s} {v:.4f}" for s, v in result.record["valid_NDCG_by_step"].items())
        print(f"kept step {result.record['selected_step']} (validation NDCG@10 on {result.record['valid_rows']} rows by step: {by_step})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not args.verbose:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    try:
        if args.command == "recommend":
            return _cmd_recommend(args, _load_catalog(args))
        if args.command == "ground":
            return _cmd_ground(args)
        if args.command == "train":
            return _cmd_train(args)
        if args.command == "fit":
            from .fit_command import run_fit_command

            return run_fit_command(args, _load_catalog(args))
        if args.command == "batch":
            from .batch.command import run_batch_command

            return run_batch_command(args, _load_catalog(args))
        if args.command in _TASKS:
            return _TASKS[args.command](args, _recommender(args, _load_catalog(args)))
        if args.command == "demo":
            from .catalog import Catalog

            args.free = False
            args.include_history = False
            return _cmd_recommend(args, Catalog.demo())
        parser.error(f"unknown command {args.command}")
    except GenrecError as exc:
        print(f"genrec: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genrec: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
