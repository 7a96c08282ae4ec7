"""Requests, measured: each row asks in words for one of its target's attributes, and search from
words is scored with the request and without it.

    .venv/bin/python eval/bench_requests.py --dataset ml-100k --data-dir ../shared/datasets/ml-100k \
        --attribute genres --cold-items 0.1 --seeds 0,1,2,3,4 --only new --out runs/requests-ml

No dataset here holds requests, so the rows get a simulated one, as attribute-based conversational
recommenders are measured (the simulated user names an attribute of the item it wants): one of the
target's values of ``--attribute`` (``|``-separated values: one drawn, seeded by the row), put into
``--request`` ("{value}": the value alone). A request built from the target says more than most
real ones do; what this measures is how a request is weighed against a history, not how often a
person's words name the target's genre.

Methods, on the same rows, scored by the test protocol of ``eval/run.py`` (history and title-mates
excluded, the run's tie order, credit from the top-10 list):

- ``content``: the content baseline (window and decay chosen on the validation rows), no request;
- ``content+request``: the same, the request's words in its profile (``ContentScores``), its share
  chosen on the validation rows;
- ``words``: genrec's search from words without a log (``Recommender.words()``: TF-IDF and the
  model's reading), no request;
- ``words+request@1``: the same with the request as the library takes it (its words in the TF-IDF
  profile, at ``REQUEST_SHARE``);
- ``words+request``: the same at the share chosen on the validation rows;
- ``words-read+request``: the request read by the model too (``ContentSearch(read_requests=True)``,
  the library's way until this bench), at ``REQUEST_SHARE`` and at the share chosen on validation.

With ``--beam-rows N``, a seeded sample of N test rows is also decoded by beam search with the
request in its prompt (the ``request`` template, the last 20 history items, the history
excluded), credited from the beam's own top-10, against the library's default on the same rows.

A share is one value for every seed, chosen on all seeds' validation rows together (ties: the
smaller). Rows are each seed's ``--only`` test rows (``new``: targets the training part never saw);
pooled over seeds, a row that several seeds hold counts once in the paired tests.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from genrec import Recommender
from genrec.atomic import atomic_file
from genrec.baselines.fit import fit_scored
from genrec.baselines.scored import ScoredMethod, scores_ranks
from genrec.catalog import Catalog
from genrec.content import REQUEST_SHARE
from genrec.data.arguments import add_dataset_arguments, dataset_from_args
from genrec.data.cold import cold_items, group_of, seen_items, tuning_split, without_items
from genrec.data.datasets import Example
from genrec.data.splits import split_dataset
from genrec.errors import DataError
from genrec.evaluation.significance import paired_comparison
from genrec.log_model import VALID_ROWS
from genrec.ranking.metrics import UserResult, hit_rate, mean_ndcg, rank_in_list
from genrec.ranking.protocol import Protocol
from genrec.ranking.rows import protocol_list
from genrec.words import Words

SHARES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
PARTS = ("valid", "test")
MAX_HISTORY = 20  # history items in a beam search's prompt, as eval/run.py's default


def _values(catalog: Catalog, item_id: str, attribute: str) -> list[str]:
    return [v.strip() for v in str(catalog.item(item_id).get(attribute) or "").split("|") if v.strip()]


def request_of(catalog: Catalog, example: Example, attribute: str, template: str, seed: int) -> str:
    """The row's simulated request: one of its target's ``attribute`` values, drawn by the row."""
    values = _values(catalog, example.target, attribute)
    if not values:
        raise DataError(f"item {example.target!r} has no {attribute!r} to ask for (user {example.user_id})")
    value = random.Random(f"request-{seed}-{example.user_id}-{example.target}").choice(values)
    return template.format(value=value)


class SeedRows:
    """One seed's split, its validation and test rows with their requests, and the rank each row's
    target takes in a method's scores: validation by the rule the harness tunes by, test by its
    test protocol."""

    def __init__(self, dataset, args: argparse.Namespace, seed: int) -> None:
        self.catalog, self.seed = dataset.catalog, seed
        split = split_dataset(dataset, seed=seed)
        split = without_items(split, cold_items(self.catalog, args.cold_items, seed))
        self.tuning = tuning_split(split, args.only)
        seen = seen_items(split)
        test = [e for e in split.test if args.only == "all" or group_of(e, seen) == args.only]
        rows = {"valid": self.tuning.valid[:VALID_ROWS], "test": test}
        # a row whose target has no value to ask for has no request: left out of every method, counted
        self.rows = {part: [e for e in r if _values(self.catalog, e.target, args.attribute)] for part, r in rows.items()}
        self.left_out = {part: len(r) - len(self.rows[part]) for part, r in rows.items()}
        self.requests = {
            part: [request_of(self.catalog, e, args.attribute, args.request, seed) for e in rows] for part, rows in self.rows.items()
        }  # fmt: skip
        self.probe = ScoredMethod(self.catalog)
        self.protocol = Protocol.for_run(self.catalog, 10, seed)

    def positions(self, part: str) -> list[list[int]]:
        return self.probe.positions(e.history for e in self.rows[part])

    def ranks(self, part: str, scores: np.ndarray) -> list[int | None]:
        rows = self.rows[part]
        if part == "valid":
            return scores_ranks(self.probe, scores, rows)
        return [self.protocol.credit(e.target, protocol_list(self.catalog, scores[n], e, self.protocol)) for n, e in enumerate(rows)]


def method_scores(seed_rows: SeedRows, variants: dict[str, Words], share_grid: Sequence[float]) -> dict[str, dict[str, dict]]:
    """``{method: {part: {share: ranks}}}`` for one seed (share None: no request)."""
    content = fit_scored("content", seed_rows.catalog, seed_rows.tuning, seed=seed_rows.seed, progress=False)
    out: dict[str, dict[str, dict]] = {"content": {}, **{name: {} for name in variants}}
    for part in PARTS:
        positions, requests = seed_rows.positions(part), seed_rows.requests[part]
        for share in (None, *share_grid):
            asked = None if share is None else requests
            c = content.scorer.similarities(positions, window=content.window, decay=content.decay, requests=asked,
                                            request_share=share or REQUEST_SHARE)  # fmt: skip
            out["content"].setdefault(part, {})[share] = seed_rows.ranks(part, c)
            for name, variant in variants.items():
                scored = copy.copy(variant)  # (the Recommender's own words keep their share)
                scored.request_share = share or REQUEST_SHARE
                out[name].setdefault(part, {})[share] = seed_rows.ranks(part, scored.scores(positions, asked).logits)
    return out


def beam_comparison(rec: Recommender, rows: list[Example], requests: list[str], against: list[int | None], n: int,
                    clusters: list) -> dict:  # fmt: skip
    """Beam search with each row's request in its prompt, on a seeded sample of ``n`` rows, paired
    against the ranks ``against`` (one per row) of the same rows."""
    picked = sorted(random.Random(0).sample(range(len(rows)), min(n, len(rows))))
    recs = rec.recommend_batch(
        [list(rows[i].history)[-MAX_HISTORY:] for i in picked], 10, requests=[requests[i] for i in picked],
        excludes=[list(rows[i].history) for i in picked], template="request", search="beam", batch_size=8, progress=True,
    )  # fmt: skip
    beam = [UserResult(rows[i].user_id, rows[i].target, [], rank_in_list(rows[i].target, [r.item_id for r in found][:10]), 0, row=n)
            for n, (i, found) in enumerate(zip(picked, recs))]  # fmt: skip
    words = [UserResult(rows[i].user_id, rows[i].target, [], against[i], 0, row=n) for n, i in enumerate(picked)]
    c = paired_comparison(beam, words, names=("beam+request", "words+request"), resamples=10000, clusters=[clusters[i] for i in picked])
    print(f"\nbeam+request on {len(picked)} sampled test rows: {c.mean:.4f} against the default's {c.against_mean:.4f}, "
          f"{c.difference:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}], p = {c.p_value:.3f}")  # fmt: skip
    return {"rows": len(picked), "beam+request": c.mean, "words+request": c.against_mean, "p": c.p_value}


def print_table(table: dict[str, list], ranks: dict[str, dict[str, dict]]) -> None:
    print("| method | NDCG@10 | HR@10 | validation NDCG@10 by share |")
    print("|---|---:|---:|---|")
    for name, rs in table.items():
        method = name.split("+")[0].split(" ")[0]
        valid = ranks[method]["valid"]
        grid = ", ".join(f"{s:g}: {mean_ndcg(valid[s]):.4f}" for s in SHARES) if "+" in name else f"none: {mean_ndcg(valid[None]):.4f}"
        print(f"| {name} | {mean_ndcg(rs):.4f} | {np.mean([hit_rate(r, 10) for r in rs]):.4f} | {grid} |")


def compare(table: dict[str, list], rows: list[Example], clusters: list) -> dict[str, dict]:
    """The default against content given the same request, against no request and against the
    model reading the request; the chosen shares likewise (paired, a repeated row counted once)."""
    names = list(table)
    results = {name: [UserResult(e.user_id, e.target, [], r, 0, row=n) for n, (e, r) in enumerate(zip(rows, rs))] for name, rs in table.items()}
    comparisons = {}
    print()
    for a, b in [(3, 1), (4, 1), (2, 0), (3, 2), (3, 5), (6, 4)]:
        c = paired_comparison(results[names[a]], results[names[b]], names=(names[a], names[b]), resamples=10000, clusters=clusters)
        comparisons[f"{names[a]} vs {names[b]}"] = {"difference": c.difference, "ci": [c.ci_low, c.ci_high], "p": c.p_value}
        print(f"{names[a]} vs {names[b]}: {c.difference:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}], p = {c.p_value:.3f}")
    return comparisons


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_arguments(p)
    p.add_argument("--attribute", required=True, help="the catalog attribute a request names (genres, category)")
    p.add_argument("--request", default="{value}", help="the request's words around the value")
    p.add_argument("--cold-items", type=float, default=0.0)
    p.add_argument("--only", choices=["all", "new", "known"], default="all", help="the test rows (and the validation rows tuned on)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--model", default=None)
    p.add_argument("--beam-rows", type=int, default=0, help="also decode this many sampled test rows by beam search with the request")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if "{value}" not in args.request:
        raise SystemExit("--request must hold {value}")
    dataset, data = dataset_from_args(args)
    rec = Recommender(catalog=dataset.catalog, **({"model": args.model} if args.model else {}))
    words = rec.words()  # the library's own
    rec.content_search = replace(rec.content_search, read_requests=True)
    variants = {"words": words, "words-read": rec.words()}
    ranks: dict[str, dict[str, dict]] = {}
    rows: list[Example] = []
    clusters, requests, left_out = [], [], {"valid": 0, "test": 0}
    for seed in (int(s) for s in args.seeds.split(",")):
        seed_rows = SeedRows(dataset, args, seed)
        for method, parts in method_scores(seed_rows, variants, SHARES).items():
            for part, by_share in parts.items():
                for share, r in by_share.items():
                    ranks.setdefault(method, {}).setdefault(part, {}).setdefault(share, []).extend(r)
        rows += seed_rows.rows["test"]
        requests += seed_rows.requests["test"]
        left_out = {part: n + seed_rows.left_out[part] for part, n in left_out.items()}
        clusters += [(e.user_id, e.target) for e in seed_rows.rows["test"]]
        print(f"seed {seed}: {len(seed_rows.rows['valid'])} validation rows, {len(seed_rows.rows['test'])} test rows; "
              f"e.g. {seed_rows.requests['test'][:3]}", flush=True)  # fmt: skip
    chosen = {m: max(SHARES, key=lambda s: (mean_ndcg(ranks[m]["valid"][s]), -s)) for m in ranks}
    table = {
        "content": ranks["content"]["test"][None],
        f"content+request (share {chosen['content']})": ranks["content"]["test"][chosen["content"]],
        "words": ranks["words"]["test"][None],
        f"words+request@{REQUEST_SHARE:g}": ranks["words"]["test"][REQUEST_SHARE],
        f"words+request (share {chosen['words']})": ranks["words"]["test"][chosen["words"]],
        f"words-read+request@{REQUEST_SHARE:g}": ranks["words-read"]["test"][REQUEST_SHARE],
        f"words-read+request (share {chosen['words-read']})": ranks["words-read"]["test"][chosen["words-read"]],
    }
    print(f"\n{len(rows)} test rows ({args.only}), {len(set(clusters))} distinct user and target; left out, their target "
          f"having no {args.attribute}: {left_out['test']} test and {left_out['valid']} validation rows\n")  # fmt: skip
    print_table(table, ranks)
    comparisons = compare(table, rows, clusters)
    if args.beam_rows:
        default = table[f"words+request@{REQUEST_SHARE:g}"]
        comparisons["beam+request vs words+request@1"] = beam_comparison(rec, rows, requests, default, args.beam_rows, clusters)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "data": data, "attribute": args.attribute, "request": args.request, "cold_items": args.cold_items, "only": args.only,
        "seeds": args.seeds, "rows": len(rows), "left_out": left_out, "chosen_share": chosen,
        "test_ndcg10": {name: mean_ndcg(rs) for name, rs in table.items()},
        "valid_ndcg10": {m: {str(s): mean_ndcg(r) for s, r in ranks[m]["valid"].items()} for m in ranks},
        "comparisons": comparisons,
    }  # fmt: skip
    with atomic_file(args.out / "requests.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(f"\nwrote {args.out / 'requests.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
