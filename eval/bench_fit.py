"""A fitted log saved and loaded again: what ``Recommender.load_fit`` saves against fitting at every
start, and whether it serves the same lists.

    .venv/bin/python eval/bench_fit.py --dataset ml-100k --data-dir ../shared/datasets/ml-100k --out runs/bench-fit

A seeded ``--added`` fraction of the catalog is left out of the catalog the fit sees, with every
interaction with it (the catalog as it stood at fitting time). Then, each step in this process and
timed: the fit on the log (the item vectors read into a fresh cache in OUT, so reading the catalog
counts), ``save_fit``, ``load_fit`` into a fresh Recommender on the same catalog (its top-10 for
``--users`` histories set against the fitted one's: they must be the same lists), and
``load_fit`` on the whole catalog, the added items read by the model at load. Writes OUT/bench_fit.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from genrec import Catalog, Recommender
from genrec.data.arguments import add_dataset_arguments, dataset_from_args


def _timed(step):
    started = time.perf_counter()
    out = step()
    return out, round(time.perf_counter() - started, 2)


def _lists(rec: Recommender, histories: list[list[str]]) -> list[list[str]]:
    return [[r.item_id for r in recs] for recs in rec.recommend_batch(histories, k=10)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_arguments(p)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--added", type=float, default=0.1, help="catalog fraction listed after the fit")
    p.add_argument("--users", type=int, default=100, help="histories whose lists are compared")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    dataset, _ = dataset_from_args(args)
    if dataset.interactions is None:
        p.error("the dataset needs an interaction log (ml-100k, ml-1m, interactions)")
    full = dataset.catalog
    added = set(random.Random(args.seed).sample(list(full.ids), round(len(full) * args.added)))
    frame = full.to_dataframe()
    before = Catalog.from_dataframe(frame[~frame["item_id"].isin(added)].reset_index(drop=True), kind=full.kind, name="before")
    log = dataset.interactions[~dataset.interactions["item_id"].isin(added)][["user_id", "item_id", "timestamp"]]
    sequences = log.sort_values("timestamp", kind="stable").groupby("user_id", sort=False)["item_id"].apply(list)
    histories = [seq[-20:] for seq in list(sequences)[: args.users]]
    cache = args.out / "cache"
    report: dict = {"items_before": len(before), "items_added": len(added), "interactions": len(log), "users_compared": len(histories)}

    rec, report["model_load_s"] = _timed(lambda: Recommender(before, cache_dir=cache))
    _, report["fit_s"] = _timed(lambda: rec.fit(log, progress=True))
    _, report["save_s"] = _timed(lambda: rec.save_fit(args.out / "fit"))
    fitted = _lists(rec, histories)
    loaded, report["load_s"] = _timed(lambda: Recommender(before, cache_dir=cache).load_fit(args.out / "fit"))
    report["same_lists"] = sum(a == b for a, b in zip(fitted, _lists(loaded, histories)))
    grown, report["load_grown_s"] = _timed(lambda: Recommender(full, cache_dir=cache).load_fit(args.out / "fit"))
    report["items_read_at_load"] = grown.log_model.tuned["items_read_at_load"]
    lists = _lists(grown, histories)
    report["added_in_top10"] = sum(item in added for items in lists for item in items) / max(len(lists), 1)
    report["tuned"] = {k: rec.log_model.tuned[k] for k in ("layer", "epoch", "weight")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_fit.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
