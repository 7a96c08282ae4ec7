"""Is a difference between two evaluated methods more than noise? A paired comparison.

    .venv/bin/python eval/compare.py runs/ml-ft-allpos:genrec+sasrec-bce runs/ml-ft-allpos:sasrec-bce
    .venv/bin/python eval/compare.py runs/ml-ft-allpos:genrec runs/ml-ft-perwindow:genrec --metrics NDCG@10,HR@10

Each side is RUN_DIR:METHOD (a folder written by eval/run.py). Both must hold the same rows
(same dataset, users and seed). Prints, per metric, the mean difference (first minus second),
a paired bootstrap interval, a sign-flip p-value and how many rows each side wins.

``--by-user``: pair the rows by user and target instead of by row number, over the rows both runs
hold (a ``--only new`` run against the same rows of an all-rows run, say); a user and target
that occur twice in a run are left out (and counted), not guessed at.

``--and FIRST SECOND`` (repeatable): pool more pairs of runs into one comparison (the same two
methods on other datasets, say): each pair's rows are matched as above, then all are tested
together.

``--overlap K``: also how alike the two lists of each row are: the mean share of the first's top
K that the second holds, and how many rows have the same top K in the same order (an approximate
mode against the exact one, say).

``--cluster``: rows of one dataset with the same user and target (the same row in runs of several
seeds, say) are resampled and sign-flipped together, as one piece of evidence: pooled seeded runs
repeat rows, and counting each copy as independent makes the interval too narrow.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

from genrec.errors import DataError, GenrecError
from genrec.evaluation import load_results, paired_comparison
from genrec.ranking.metrics import UserResult


def _side(text: str) -> tuple[Path, str]:
    run, sep, method = text.rpartition(":")
    if not sep or not run or not method:
        raise argparse.ArgumentTypeError(f"{text!r}: expected RUN_DIR:METHOD, e.g. runs/ml:genrec")
    return Path(run), method


def _common_rows(first: list[UserResult], second: list[UserResult]) -> tuple[list[UserResult], list[UserResult], int]:
    """The rows both hold, matched by (user, target) and numbered alike, and how many rows were
    left out because their user and target occur more than once in a run (no pairing is sure)."""
    counts = [Counter((r.user_id, r.target) for r in results) for results in (first, second)]
    ambiguous = {key for c in counts for key, n in c.items() if n > 1}
    keyed = [{(r.user_id, r.target): r for r in results} for results in (first, second)]
    common = sorted((set(keyed[0]) & set(keyed[1])) - ambiguous)
    if not common:
        raise DataError("the two runs hold no row with the same user and target")
    pairs = tuple([replace(k[key], row=n) for n, key in enumerate(common)] for k in keyed)
    return pairs[0], pairs[1], len(set(keyed[0]) & set(keyed[1]) & ambiguous)


def _dataset_key(run: Path) -> str:
    """What a run read (its dataset and data options): rows of runs with the same key are rows of one dataset."""
    path = run / "run_config.json"
    if not path.is_file():
        raise DataError(f"{run}: no run_config.json, so --cluster cannot tell which dataset its rows are of")
    config = json.loads(path.read_text(encoding="utf-8"))
    return json.dumps([config.get("dataset"), config.get("data")], sort_keys=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("first", type=_side, help="RUN_DIR:METHOD")
    p.add_argument("second", type=_side, help="RUN_DIR:METHOD")
    p.add_argument("--metrics", default="NDCG@10,HR@10,NDCG@20", help="comma-separated, NDCG@k / HR@k / MRR@k")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--by-user", action="store_true", help="pair rows by user and target, over the rows both runs hold")
    p.add_argument("--and", dest="more", nargs=2, action="append", default=[], metavar=("FIRST", "SECOND"),
                   help="another pair of RUN_DIR:METHOD pooled into the comparison (repeatable)")  # fmt: skip
    p.add_argument("--cluster", action="store_true", help="rows of one dataset with the same user and target count as one")
    p.add_argument("--overlap", type=int, metavar="K", help="also the top-K overlap of each row's two lists")
    args = p.parse_args(argv)
    try:
        (run_a, a), (run_b, b) = args.first, args.second
        first, second, clusters = [], [], []
        for side_a, side_b in [(args.first, args.second)] + [(_side(x), _side(y)) for x, y in args.more]:
            one, two = load_results(*side_a), load_results(*side_b)
            if args.by_user:
                one, two, left_out = _common_rows(one, two)
                print(f"{side_a[0]}: {len(one)} rows paired by user and target ({left_out} whose user and target occur twice left out)")
            else:
                one, two = sorted(one, key=lambda r: r.row), sorted(two, key=lambda r: r.row)
                if [r.row for r in one] != [r.row for r in two]:
                    raise DataError(f"{side_a[0]} and {side_b[0]} hold different rows: pool them --by-user")
            if args.cluster:
                dataset = _dataset_key(side_a[0])
                clusters += [(dataset, r.user_id, r.target) for r in one]
            first += [replace(r, row=len(first) + n) for n, r in enumerate(one)]
            second += [replace(r, row=len(second) + n) for n, r in enumerate(two)]
        names = (f"{a} ({run_a})", f"{b} ({run_b})")
        rows = []
        for metric in (m.strip() for m in args.metrics.split(",") if m.strip()):
            c = paired_comparison(
                first, second, names=names, metric=metric, resamples=args.resamples, confidence=args.confidence, seed=args.seed,
                clusters=clusters if args.cluster else None,
            )  # fmt: skip
            rows.append(
                f"| {c.metric} | {c.rows} | {c.mean:.4f} | {c.against_mean:.4f} | {c.difference:+.4f} | "
                f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}] | {c.p_text} | {c.better} / {c.worse} |"
            )
        if args.cluster:
            print(f"{len(set(clusters))} clusters (distinct dataset, user and target) among {len(first)} rows")
        print(f"| metric | rows | {a} | {b} | difference | {args.confidence:.0%} CI | p | better / worse rows |")
        print("|---|---:|---:|---:|---:|---|---:|---|")
        print("\n".join(rows))
        if args.overlap:
            k = args.overlap
            shares = [len(set(x.items[:k]) & set(y.items[:k])) / k for x, y in zip(first, second)]
            same = sum(x.items[:k] == y.items[:k] for x, y in zip(first, second))
            print(f"top-{k} overlap: {sum(shares) / len(shares):.3f} on average; the same top-{k} on {same} of {len(first)} rows")
    except GenrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
