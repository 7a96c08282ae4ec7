"""The command-line options that name a dataset, shared by ``genrec train`` and ``eval/run.py``."""

from __future__ import annotations

import argparse
from typing import Any

from ..text import TITLE_YEARS

__all__ = ["add_dataset_arguments", "dataset_from_args"]


def add_dataset_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """The data options shared by ``eval/run.py`` and ``genrec train`` (and benchmarks, where data may be optional)."""
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", required=required, choices=["ml-100k", "ml-1m", "interactions", "d3csv", "recbole"])
    g.add_argument("--data-dir", help="MovieLens folder (ml-100k, ml-1m), or the folder of RecBole atomic files")
    g.add_argument("--download", action="store_true", help="fetch MovieLens from GroupLens into --data-dir if missing")
    g.add_argument("--interactions", help="interactions CSV (user_id,item_id[,timestamp]) for --dataset interactions")
    g.add_argument("--catalog", help="catalog file for --dataset interactions / d3csv")
    g.add_argument("--test", help="D3 test CSV")
    g.add_argument("--train", help="D3 training CSV (optional)")
    g.add_argument("--title-years", choices=TITLE_YEARS, default="always",
                   help="MovieLens: a film's year in every title, or only where two films share a title "
                        "(ambiguous: half the tokens per title with SmolLM2's tokenizer, so steps cost less)")  # fmt: skip
    g.add_argument("--title-words", type=int, metavar="N",
                   help="cut every title to its first N words, or as many more as tell it from the others "
                        "(product titles run to 30+ tokens; the full title stays in the full_title attribute)")  # fmt: skip


def dataset_from_args(args: argparse.Namespace) -> tuple[Any, dict[str, str]]:
    """The dataset the options name, and the options themselves (recorded with results)."""
    from .datasets import load_dataset

    names = ("data_dir", "interactions", "catalog", "test", "train")
    given = {name: str(getattr(args, name)) for name in names if getattr(args, name, None)}
    if args.title_years != "always":  # recorded only when set, so earlier runs' records still match
        given["title_years"] = args.title_years
    if args.title_words is not None:
        given["title_words"] = str(args.title_words)
    dataset = load_dataset(
        args.dataset, args.data_dir, download=args.download,
        interactions=args.interactions, catalog=args.catalog, test=args.test, train=args.train,
        title_years=args.title_years, title_words=args.title_words,
    )  # fmt: skip
    return dataset, given
