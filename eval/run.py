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
from genrec.errors import GenrecError
from genrec.evaluation import METHODS, EvalConfig, results_table, run_evaluation
from genrec.evaluation.fusion import describe_tuning
from genrec.options import add_options, options_from_args
from genrec.recommender import trained_template


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_arguments(p)
    p.add_argument("--methods", default="pop,markov,itemknn,sasrec-ce,genrec",
                   help=f"comma-separated, of: {', '.join(METHODS)} (sasrec = sasrec-ce), genrec+<baseline> "
                        "(the baseline as a prior inside the beam), genrec-rerank+<baseline> (the model reranks the "
                        "baseline's top --rerank-candidates), genrec-union+<baseline> (those and the beam's own top k), "
                        "genrec-embed+<baseline> (the model's item vectors mixed with the baseline's scores)")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--template", help="genrec's template (default: the one a fine-tuned --model was trained with, else next_item)")
    p.add_argument("--workers", type=int, default=1, help="decode genrec methods on N Ray actors (genrec[ray]); same metrics as 1")
    p.add_argument("--ray-address", help="a Ray cluster for --workers (default: a local Ray instance)")
    add_options(p, EvalConfig)
    p.add_argument("--reuse", metavar="DIR",
                   help="take the fitted SASRecs and validation tuning of the run in DIR (every setting but "
                        "--methods, --users and --only must match) instead of computing them again")
    p.add_argument("--overwrite", action="store_true", help="discard results already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        dataset, data = dataset_from_args(args)
        config = options_from_args(
            EvalConfig, args, dataset=args.dataset, methods=list(_names(args.methods)), data=data,
            template=args.template or trained_template(args.model) or "next_item",
        )  # fmt: skip
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
