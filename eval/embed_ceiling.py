"""How much room a run's ``genrec-embed+<baseline>`` choice had: every encoder its folder keeps
(each layer untrained, and the map the mixture kept), mixed with the baseline at every w, scored on
the validation rows it chose on and on the test rows. A diagnostic for explaining a result after
the run: it reads test rows, so nothing here ever chooses a setting.

    .venv/bin/python eval/embed_ceiling.py runs/ml-joint-new [--base content]

The run's own split, cold items, tuning rows (``--tune-on``) and test rows (``--only``) are rebuilt
from its ``run_config.json``; the maps of the epochs and layers the run did not keep are not saved,
so those candidates are missing here.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from genrec.baselines.fit import fit_scored
from genrec.baselines.scored import ScoredMethod, scores_ndcg
from genrec.data.arguments import dataset_from_args
from genrec.data.cold import cold_items, group_of, seen_items, without_items
from genrec.data.splits import split_dataset
from genrec.encoder import EncoderSettings, ItemEncoder
from genrec.evaluation.embed import VALID_ROWS, WEIGHTS, _standardised
from genrec.ranking.metrics import ndcg, top_k
from genrec.ranking.protocol import Protocol


def _rows(run: Path) -> tuple[dict, object, dict[str, list]]:
    config = json.loads((run / "run_config.json").read_text(encoding="utf-8"))
    names = ("data_dir", "interactions", "catalog", "test", "train")
    args = argparse.Namespace(
        dataset=config["dataset"], download=False, title_years=config["data"].get("title_years", "always"),
        title_words=int(config["data"]["title_words"]) if "title_words" in config["data"] else None,
        **{name: config["data"].get(name) for name in names},
    )  # fmt: skip
    dataset, _ = dataset_from_args(args)
    split = split_dataset(dataset, tie_break=config["tie_break"], seed=config["seed"], holdout=config["holdout"])
    split = without_items(split, cold_items(dataset.catalog, config["cold_items"], config["seed"]))
    seen = seen_items(split)

    def group(rows: list, name: str) -> list:
        return list(rows) if name == "all" else [e for e in rows if group_of(e, seen) == name]

    tuning = replace(split, valid=group(split.valid, config["tune_on"]))
    rows = {"valid": tuning.valid[:VALID_ROWS], "test": group(split.test, config["only"])}
    return config, (dataset, tuning), rows


def protocol_ndcg(catalog: object, scores: np.ndarray, rows: list, protocol: Protocol) -> float:
    """Mean NDCG@10 of ``scores`` by the test protocol (title-mates excluded, the run's tie order,
    credit checked), as the run ranked its test rows."""
    total = 0.0
    for n, example in enumerate(rows):
        items = [catalog.ids[i] for i in top_k(scores[n], protocol.excluded_mask(example.history), protocol.ties, protocol.k)]
        total += ndcg(protocol.credit(example.target, items), 10)
    return total / len(rows) if rows else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--base", default="content", help="the mixture's baseline (its item_encoder+<base>.npz)")
    args = p.parse_args(argv)
    config, (dataset, tuning), rows = _rows(args.run)
    catalog = dataset.catalog
    base = fit_scored(args.base, catalog, tuning, seed=config["seed"], sasrec_epochs=config["sasrec_epochs"],
                      saved_dir=args.run, progress=False)  # fmt: skip
    probe = ScoredMethod(catalog)
    protocol = Protocol.for_run(catalog, config["k"], config["seed"])
    ndcg_of = {"valid": lambda scores: scores_ndcg(probe, scores, rows["valid"]),  # as the run chose
               "test": lambda scores: protocol_ndcg(catalog, scores, rows["test"], protocol)}  # as the run ranked
    theirs = {k: _standardised(np.asarray(base.score([e.history for e in r]), dtype=np.float64)) for k, r in rows.items()}
    with np.load(args.run / f"item_encoder+{args.base}.npz") as kept:
        tuned = json.loads(str(kept["tuned"]))
        trained = (kept["weight"], kept["bias"]) if "weight" in kept else None
    vectors = np.load(args.run / "item_vectors.npz")
    candidates = [(int(layer), None) for layer in vectors.files]
    if trained is not None:
        candidates.append((tuned["layer"], trained))
    print(f"{args.run}: {len(rows['valid'])} validation rows ({config['tune_on']}), {len(rows['test'])} test rows "
          f"({config['only']}); the run chose layer {tuned['layer']}, epoch {tuned['epoch']}, w = {tuned.get('weight')}")  # fmt: skip
    print("NDCG@10 validation (as the run chose) / test (as the run ranked); w = 0 is the baseline alone\n")
    print("| encoder | " + " | ".join(f"w = {w}" for w in WEIGHTS) + " |")
    print("|---|" + "---:|" * len(WEIGHTS))
    for layer, mapping in sorted(candidates, key=lambda c: (c[1] is not None, c[0])):
        encoder = ItemEncoder(vectors[str(layer)], EncoderSettings())
        if mapping is not None:
            encoder.weight, encoder.bias = mapping
        mine = {k: _standardised(encoder.scores(probe.positions(e.history for e in r))) for k, r in rows.items()}
        cells = []
        for w in WEIGHTS:
            mixed = {k: (1 - w) * theirs[k] + w * mine[k] for k in rows}
            cells.append(" / ".join(f"{ndcg_of[k](mixed[k]):.4f}" for k in ("valid", "test")))
        name = f"layer {layer}, " + (f"map of epoch {tuned['epoch']}" if mapping is not None else "untrained")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
