"""``genrec batch`` on the command line: its options, and which job they run (one file read here,
or a streamed input read and grouped inside Ray Data). Errors reach ``cli.main`` as GenrecErrors."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DataError

__all__ = ["add_batch_parser", "run_batch_command"]


def add_batch_parser(sub: Any, add_catalog: Callable[[argparse.ArgumentParser], None], add_model: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("batch", help="top-k for every user of a histories file, as resumable Parquet parts")
    add_catalog(p)
    add_model(p)
    p.add_argument("--histories", required=True,
                   help="interaction log (CSV/TSV/Parquet: user_id,item_id[,timestamp]) or one row per user "
                        "(JSONL/Parquet: user_id, history, request?); a folder or a glob of such files is streamed")  # fmt: skip
    p.add_argument("--histories-sep", help="column separator of a CSV interaction log (default: from the extension)")
    p.add_argument("--stream", action="store_true",
                   help="read and group the histories inside Ray Data (genrec[ray]): no process holds the whole input "
                        "(implied by a folder or a glob)")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder (data/ part files, parts/ records, manifest.json, failures.jsonl)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--format", default="parquet", choices=["parquet", "jsonl"])
    p.add_argument("--max-history", type=int, default=50, help="most recent history items in each prompt (all are excluded)")
    p.add_argument("--template", help="prompt template (default: the one a fine-tuned --model was trained with, else next_item)")
    p.add_argument("--prior", help="collaborative prior: 'pop' (popularity in the histories file) or a .npy of per-item log-scores in catalog order")
    p.add_argument("--prior-weight", type=float, default=0.5, help="weight of --prior in [0, 1]")
    p.add_argument("--workers", type=int, default=1, help="model-holding workers (more than 1 needs genrec[ray])")
    p.add_argument("--ray-address", help="a Ray cluster to run on (default: a local Ray instance)")
    p.add_argument("--threads-per-worker", type=int, help="torch threads per worker (default: cores / workers)")
    p.add_argument("--batch-size", type=int, default=8, help="users decoded together")
    p.add_argument("--part-size", type=int, help="users per part file, in input order (one file read here; default 256)")
    p.add_argument("--parts", type=int, help="parts of a streamed input, users placed by a hash of their ID (default: one per MiB of input)")
    p.add_argument("--user-buckets", type=int, help="partition the data files by a hash of user_id: data/user_bucket=B/")
    p.add_argument("--overwrite", action="store_true", help="discard what --out holds and start over")


def _streamed(args: argparse.Namespace) -> bool:
    return bool(args.stream or Path(args.histories).is_dir() or any(ch in args.histories for ch in "*?["))


def run_batch_command(args: argparse.Namespace, catalog: Any) -> int:
    from ..recommender import trained_template
    from . import DecodeSettings, RecommenderSpec, batch_prior, file_sha, read_users, run_batch, run_batch_stream
    from .stream import StreamInput

    from ..log_model_io import is_saved_fit

    if args.log and not is_saved_fit(args.log):
        raise DataError(f"genrec batch loads a saved fit, not a log ({args.log}): fit it once with "
                        f"`genrec fit --log {args.log} --out FOLDER` (same catalog and model), then pass --log FOLDER")  # fmt: skip
    streamed = _streamed(args)
    if streamed and args.part_size is not None:
        raise DataError("--part-size slices one file read in memory; a streamed input is split by --parts")
    if not streamed and args.parts is not None:
        raise DataError("--parts splits a streamed input (--stream, a folder or a glob); one file is sliced by --part-size")
    if streamed and args.prior == "pop":
        raise DataError("--prior pop counts the histories in memory; with a streamed input give --prior FILE.npy")
    users = None if streamed else read_users(args.histories, sep=args.histories_sep)
    prior, prior_kind = batch_prior(args.prior, catalog, users or [])
    spec = RecommenderSpec(
        catalog, model=args.model, prompts_dir=args.prompts, device=args.device, dtype=args.dtype, num_beams=args.beams,
        runtime=args.runtime, prior=prior, prior_weight=args.prior_weight if prior is not None else 0.0, max_per_family=args.max_per_family,
        log_fit=os.path.abspath(args.log) if args.log else None,
    )  # fmt: skip
    settings = DecodeSettings(
        k=args.k, batch_size=args.batch_size, max_history=args.max_history,
        template=args.template or trained_template(args.model) or "next_item", search=args.search,
    )  # fmt: skip
    common = dict(fmt=args.format, workers=args.workers, ray_address=args.ray_address, threads_per_worker=args.threads_per_worker,
                  user_buckets=args.user_buckets, overwrite=args.overwrite)  # fmt: skip
    if streamed:
        summary = run_batch_stream(spec, StreamInput.find(args.histories, sep=args.histories_sep), args.out, settings, parts=args.parts, **common)
    else:
        inputs = {"histories": os.path.abspath(args.histories), "histories_sha": file_sha(args.histories), "prior_kind": prior_kind}
        summary = run_batch(spec, users, args.out, settings, part_size=args.part_size or 256, inputs=inputs, **common)
    print(summary)
    return 0
