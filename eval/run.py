"""Evaluate recommenders side by side on a real dataset.

    .venv/bin/python eval/run.py --dataset ml-100k --data-dir ../shared/datasets/ml-100k \\
        --methods pop,markov,itemknn,sasrec-bce,sasrec-ce,genrec --out OUTDIR [--users N --seed S] [--model M] [-k 20]
    .venv/bin/python eval/run.py --dataset recbole --data-dir ../shared/datasets/amazon-scientific ...

Writes OUTDIR/results.json, OUTDIR/report.md, plots, and per-user results in OUTDIR/users/
(appended as users finish: run the same command again to resume a killed run).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from genrec.data.arguments import add_dataset_arguments, dataset_from_args
from genrec.errors import DataError, GenrecError
from genrec.evaluation import METHODS, EvalConfig, results_table, run_evaluation
from genrec.evaluation.fusion import describe_tuning
from genrec.evaluation.config import DTYPES
from genrec.recommender import trained_template


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_arguments(p)
    p.add_argument("--methods", default="pop,markov,itemknn,sasrec-ce,genrec",
                   help=f"comma-separated, of: {', '.join(METHODS)} (sasrec = sasrec-ce), genrec+<baseline> "
                        "(the baseline as a prior inside the beam), genrec-rerank+<baseline> (the model reranks the "
                        "baseline's top --rerank-candidates), genrec-union+<baseline> (those and the beam's own top k)")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--users", type=int, help="evaluate a random sample of this many users")
    p.add_argument("--seed", type=int, default=0, help="user sample, tie order and SASRec seed")
    p.add_argument("--tie-break", default="file_order", choices=["file_order", "item_id", "random"])
    p.add_argument("--model", help="model for genrec methods (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--template", help="genrec's template (default: the one a fine-tuned --model was trained with, else next_item)")
    p.add_argument("-k", type=int, default=20, help="list length, at least 10 (metrics at the cut-offs 1, 5, 10, 20 up to k)")
    p.add_argument("--max-history", type=int, default=20, help="history items shown in prompts")
    p.add_argument("--batch-size", type=int, default=8, help="users decoded together by genrec")
    p.add_argument("--workers", type=int, default=1, help="decode genrec methods on N Ray actors (genrec[ray]); same metrics as 1")
    p.add_argument("--ray-address", help="a Ray cluster for --workers (default: a local Ray instance)")
    p.add_argument("--sasrec-epochs", type=int, default=200)
    p.add_argument("--tune-users", type=int, default=EvalConfig.tune_users, help="validation rows that tune genrec+<baseline>'s prior weight")
    p.add_argument("--prior-grid", default=",".join(map(str, EvalConfig.prior_grid)), help="genrec+<baseline>'s prior weights tried on validation (a beam search each)")
    p.add_argument("--prior-aggregations", default="logsumexp",
                   help="how a title prefix gathers its titles' prior scores, tried on validation with every weight: "
                        "logsumexp, max, or both (logsumexp,max)")  # fmt: skip
    p.add_argument("--history-grid", default="",
                   help="history lengths shown to genrec methods, tried on validation (e.g. 5,10,20; default: --max-history only)")  # fmt: skip
    p.add_argument("--dtype", choices=[d for d in DTYPES if d],
                   help="genrec's weights (default: float32 on a CPU, bf16 on a GPU; float32 on a GPU decodes as a CPU run does)")
    p.add_argument("--num-beams", type=int, default=EvalConfig.num_beams,
                   help="genrec's beam width; a search keeps max(this, k) beams (default: %(default)s)")
    p.add_argument("--max-per-family", type=int,
                   help="genrec lists hold at most N variants of one product (titles sharing half their tokens; default: no cap)")  # fmt: skip
    p.add_argument("--rerank-candidates", type=int, default=EvalConfig.rerank_candidates,
                   help="genrec-rerank+ and genrec-union+<baseline>: how many of the baseline's top items the model scores")
    p.add_argument("--rerank-grid", default=",".join(map(str, EvalConfig.rerank_grid)),
                   help="genrec-rerank+ and genrec-union+<baseline>'s weights tried on validation (one scoring pass for all; default: %(default)s)")
    p.add_argument("--rerank-mixtures", default=",".join(EvalConfig.rerank_mixtures),
                   help="how they combine the two scores, tried with every weight: product (log-scores added), "
                        "sum (probabilities added), per-token (the product with the model's log-probability per title token) "
                        "(default: %(default)s)")
    p.add_argument("--reuse", metavar="DIR",
                   help="take the fitted SASRecs and validation tuning of the run in DIR (every setting but "
                        "--methods and --users must match) instead of computing them again")
    p.add_argument("--overwrite", action="store_true", help="discard results already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _numbers(text: str, option: str, kind: type = int) -> tuple:
    try:
        return tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError:
        what = "whole numbers" if kind is int else "numbers"
        raise DataError(f"{option} takes comma-separated {what}, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        dataset, data = dataset_from_args(args)
        config = EvalConfig(
            dataset=args.dataset,
            methods=list(_names(args.methods)),
            k=args.k,
            users=args.users,
            seed=args.seed,
            tie_break=args.tie_break,
            max_history=args.max_history,
            model=args.model,
            template=args.template or trained_template(args.model) or "next_item",
            batch_size=args.batch_size,
            sasrec_epochs=args.sasrec_epochs,
            data=data,
            tune_users=args.tune_users,
            prior_grid=_numbers(args.prior_grid, "--prior-grid", float),
            prior_aggregations=_names(args.prior_aggregations),
            history_grid=_numbers(args.history_grid, "--history-grid"),
            max_per_family=args.max_per_family,
            dtype=args.dtype,
            num_beams=args.num_beams,
            rerank_candidates=args.rerank_candidates,
            rerank_grid=_numbers(args.rerank_grid, "--rerank-grid", float),
            rerank_mixtures=_names(args.rerank_mixtures),
        )
        results = run_evaluation(
            dataset, config, args.out, progress=not args.quiet, overwrite=args.overwrite, workers=args.workers,
            ray_address=args.ray_address, reuse=args.reuse,
        )  # fmt: skip
    except GenrecError as exc:
        print(f"eval/run.py: error: {exc}", file=sys.stderr)
        return 2
    for name, method in results["methods"].items():
        if "grid" in method.get("tuned", {}):
            print(f"{name}: {describe_tuning(method['tuned'])}")
    print(results_table(results))
    print(f"\nwrote {os.path.join(args.out, 'results.json')} and report.md")
    print(json.dumps(results["split"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
