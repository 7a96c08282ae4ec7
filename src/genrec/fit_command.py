"""``genrec fit`` on the command line: an interaction log fitted once (``Recommender.fit``) and
saved (``save_fit``), for ``--log FOLDER`` on every other command, ``genrec batch`` included.
Errors reach ``cli.main`` as GenrecErrors."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from .errors import DataError

__all__ = ["add_fit_parser", "run_fit_command"]


def add_fit_parser(sub: Any, add_catalog: Callable[[argparse.ArgumentParser], None], add_model: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("fit", help="fit the trained mixture on an interaction log once and save it (for --log FOLDER)")
    add_catalog(p)
    add_model(p)
    p.add_argument("--out", required=True, help="the folder to save the fit to (replaced whole)")
    p.add_argument("--valid", metavar="FILE",
                   help="a later period's interactions (as --log) to choose the settings on, every later interaction one "
                   "validation row (default: each user's last interaction, held back); data of overlapping windows needs it")  # fmt: skip
    p.add_argument("--epochs", type=int, default=8, help="most epochs of the item map (validation keeps the best)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-unknown-items", action="store_true", help="leave out (and count) the log's interactions with items the catalog lacks")


def run_fit_command(args: argparse.Namespace, catalog: Any) -> int:
    from .log_model import later_pairs, read_log
    from .recommender import Recommender

    if not args.log:
        raise DataError("genrec fit needs --log FILE: the interaction log to fit on")
    started = time.perf_counter()
    rec = Recommender(catalog, model=args.model, prompts_dir=args.prompts, device=args.device, dtype=args.dtype)
    sequences = read_log(args.log)
    valid = later_pairs(sequences, read_log(args.valid)) if args.valid else None
    rec.fit(sequences, valid=valid, epochs=args.epochs, seed=args.seed, lenient=args.skip_unknown_items, progress=True)
    path = rec.save_fit(args.out)
    t = rec.log_model.tuned
    print(f"fitted on {t['users']} users, {t['interactions']} interactions ({t['unknown_items_left_out']} left out) in "
          f"{time.perf_counter() - started:.0f} s: layer {t['layer']}, map epoch {t['epoch']}, item vectors' share w = {t['weight']}, "
          f"hybrid share {t['hybrid'].get('share')}, chosen on {t['valid_examples']} validation rows; saved to {path} (use --log {path})")  # fmt: skip
    return 0
