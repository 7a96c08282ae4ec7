"""Grounding at catalog scale: one query against N titles, with candidate preselection, compared
with a full rapidfuzz scan on a test set of misspelt, reordered and partial titles.

    .venv/bin/python eval/bench_grounding.py --titles N --out OUTDIR [--real-catalog FILE]

Writes OUTDIR/grounding.json = {"n_titles", "p50_ms", "p95_ms", "full_scan_p50_ms", "agreement", ...}.
``agreement``: share of queries whose best fuzzy score equals the full scan's best score (the same
top match, ties aside).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

from synthetic import perturb, synthetic_titles, vocabulary_words


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--titles", type=int, default=100_000)
    p.add_argument("--real-catalog")
    p.add_argument("--sep")
    p.add_argument("--encoding", default="utf-8")
    p.add_argument("--no-header", action="store_true")
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--full-scan-queries", type=int, default=100, help="queries also timed with a full scan")
    p.add_argument("--candidates", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    from transformers import AutoTokenizer

    from genrec import Catalog
    from genrec.grounding import Grounder
    from genrec.model import default_model_dir

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.real_catalog:
        catalog = Catalog.from_file(args.real_catalog, sep=args.sep, encoding=args.encoding, header=not args.no_header)
    else:
        words = vocabulary_words(AutoTokenizer.from_pretrained(str(default_model_dir())))
        catalog = Catalog(list(map(str, range(args.titles))), synthetic_titles(args.titles, words, args.seed))
    t0 = time.perf_counter()
    grounder = Grounder(catalog, full_scan_below=1, candidates=args.candidates)  # always the indexed path
    build_s = time.perf_counter() - t0
    rng = random.Random(args.seed + 1)
    queries = [perturb(t, rng) for t in rng.sample(catalog.unique_titles, min(args.queries, len(catalog.unique_titles)))]

    grounder.ground(queries[0])  # warm-up
    times, fast_best = [], []
    for q in queries:
        t = time.perf_counter()
        grounder.ground(q, limit=1, threshold=0.0)
        times.append(time.perf_counter() - t)
        fast_best.append(grounder._fuzzy_scores(q, 1, 0.0))
    full_times, agree = [], 0
    for i, q in enumerate(queries):
        t = time.perf_counter()
        full = grounder.full_scan(q, limit=1)
        if i < args.full_scan_queries:
            full_times.append(time.perf_counter() - t)
        fast = fast_best[i]
        agree += bool(fast) and bool(full) and abs(fast[0][1] - full[0][1]) < 1e-3
    result = {
        "n_titles": len(catalog.unique_titles),
        "p50_ms": 1000 * statistics.median(times),
        "p95_ms": 1000 * sorted(times)[int(0.95 * (len(times) - 1))],
        "full_scan_p50_ms": 1000 * statistics.median(full_times),
        "agreement": agree / len(queries),
        "queries": len(queries),
        "candidates": args.candidates,
        "index_build_s": build_s,
        "source": args.real_catalog or "synthetic",
    }
    (out / "grounding.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
