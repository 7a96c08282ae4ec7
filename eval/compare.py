"""Is a difference between two evaluated methods more than noise? A paired comparison.

    .venv/bin/python eval/compare.py runs/ml-ft-allpos:genrec+sasrec-bce runs/ml-ft-allpos:sasrec-bce
    .venv/bin/python eval/compare.py runs/ml-ft-allpos:genrec runs/ml-ft-perwindow:genrec --metrics NDCG@10,HR@10

Each side is RUN_DIR:METHOD (a folder written by eval/run.py). Both must hold the same rows
(same dataset, users and seed). Prints, per metric, the mean difference (first minus second),
a paired bootstrap interval, a sign-flip p-value and how many rows each side wins.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genrec.errors import GenrecError
from genrec.evaluation import load_results, paired_comparison


def _side(text: str) -> tuple[Path, str]:
    run, sep, method = text.rpartition(":")
    if not sep or not run or not method:
        raise argparse.ArgumentTypeError(f"{text!r}: expected RUN_DIR:METHOD, e.g. runs/ml:genrec")
    return Path(run), method


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("first", type=_side, help="RUN_DIR:METHOD")
    p.add_argument("second", type=_side, help="RUN_DIR:METHOD")
    p.add_argument("--metrics", default="NDCG@10,HR@10,NDCG@20", help="comma-separated, NDCG@k / HR@k / MRR@k")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        (run_a, a), (run_b, b) = args.first, args.second
        first, second = load_results(run_a, a), load_results(run_b, b)
        names = (f"{a} ({run_a})", f"{b} ({run_b})")
        rows = []
        for metric in (m.strip() for m in args.metrics.split(",") if m.strip()):
            c = paired_comparison(
                first, second, names=names, metric=metric, resamples=args.resamples, confidence=args.confidence, seed=args.seed
            )
            rows.append(
                f"| {c.metric} | {c.rows} | {c.mean:.4f} | {c.against_mean:.4f} | {c.difference:+.4f} | "
                f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}] | {c.p_text} | {c.better} / {c.worse} |"
            )
        print(f"| metric | rows | {a} | {b} | difference | {args.confidence:.0%} CI | p | better / worse rows |")
        print("|---|---:|---:|---:|---:|---|---:|---|")
        print("\n".join(rows))
    except GenrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
