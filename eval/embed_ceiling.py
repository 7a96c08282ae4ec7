"""How much room a run's ``genrec-embed+<baseline>`` choice had: every encoder its folder keeps
(each layer untrained, and the map the mixture kept), mixed with the baseline at every w, scored on
the validation rows it chose on and on the test rows. A diagnostic for explaining a result after
the run: its table reads test rows, so nothing in it chooses a setting.

    .venv/bin/python eval/embed_ceiling.py runs/ml-joint-new [--base content]
    .venv/bin/python eval/embed_ceiling.py RUN RUN ... --pool

``--pool`` asks what the model's vectors add to the baseline from words alone (the untrained
encoder: no log read): the one layer and w chosen on all the runs' validation rows together (and
on nothing else), then tested on all their test rows against the baseline, paired (a row that
several seeded runs hold counts as one: ``paired_comparison``'s clusters).

The run's own split, cold items, tuning rows (``--tune-on``) and test rows (``--only``) are rebuilt
from its ``run_config.json``; the maps of the epochs and layers the run did not keep are not saved,
so those candidates are missing here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from genrec.baselines.fit import fit_scored
from genrec.baselines.scored import ScoredMethod, scores_ranks
from genrec.data.arguments import dataset_from_args
from genrec.data.cold import cold_items, group_of, seen_items, tuning_split, without_items
from genrec.data.splits import split_dataset
from genrec.encoder import EncoderSettings, ItemEncoder
from genrec.content import standardised
from genrec.log_model import VALID_ROWS, WEIGHTS
from genrec.evaluation.significance import paired_comparison
from genrec.ranking.metrics import UserResult, mean_ndcg
from genrec.ranking.protocol import Protocol
from genrec.ranking.rows import protocol_list


def _rows(run: Path) -> tuple[dict, object, dict[str, list]]:
    config = json.loads((run / "run_config.json").read_text(encoding="utf-8"))
    if config.get("tune_cold"):
        raise SystemExit(f"{run}: chosen with --tune-cold, then fitted again; this diagnostic rebuilds runs without it")
    names = ("data_dir", "interactions", "catalog", "test", "train")
    args = argparse.Namespace(
        dataset=config["dataset"], download=False, title_years=config["data"].get("title_years", "always"),
        title_words=int(config["data"]["title_words"]) if "title_words" in config["data"] else None,
        **{name: config["data"].get(name) for name in names},
    )  # fmt: skip
    dataset, _ = dataset_from_args(args)
    split = split_dataset(dataset, tie_break=config["tie_break"], seed=config["seed"], holdout=config["holdout"])
    split = without_items(split, cold_items(dataset.catalog, config["cold_items"], config["seed"]))
    tuning = tuning_split(split, config["tune_on"])  # (the harness's own rule; --tune-cold runs refused above)
    seen = seen_items(split)
    test = list(split.test) if config["only"] == "all" else [e for e in split.test if group_of(e, seen) == config["only"]]
    rows = {"valid": tuning.valid[:VALID_ROWS], "test": test}
    return config, (dataset, tuning), rows


class RunScores:
    """One run's rows and its baseline's standardised scores on them, and the rank each row's
    target takes in any mixture: on validation rows by the rule the run chose by
    (``scores_ndcg``'s: history excluded, catalog order for ties), on test rows by the test
    protocol (title-mates excluded, the run's tie order, credit from the list)."""

    def __init__(self, run: Path, base: str) -> None:
        self.config, (dataset, tuning), self.rows = _rows(run)
        self.catalog = dataset.catalog
        fitted = fit_scored(base, self.catalog, tuning, seed=self.config["seed"], sasrec_epochs=self.config["sasrec_epochs"],
                            saved_dir=run, progress=False)  # fmt: skip
        self.probe = ScoredMethod(self.catalog)
        self.protocol = Protocol.for_run(self.catalog, self.config["k"], self.config["seed"])
        self.theirs = {k: standardised(np.asarray(fitted.score([e.history for e in r]), dtype=np.float64)) for k, r in self.rows.items()}
        self.vectors = np.load(run / "item_vectors.npz")

    def mine(self, encoder: ItemEncoder) -> dict[str, np.ndarray]:
        return {k: standardised(encoder.scores(self.probe.positions(e.history for e in r))) for k, r in self.rows.items()}

    def ranks(self, part: str, scores: np.ndarray) -> list[int | None]:
        rows = self.rows[part]
        if part == "valid":
            return scores_ranks(self.probe, scores, rows)
        return [self.protocol.credit(e.target, protocol_list(self.catalog, scores[n], e, self.protocol)) for n, e in enumerate(rows)]


def ceiling(run: Path, base: str) -> int:
    """Every encoder ``run`` keeps, mixed with ``base`` at every w: validation / test NDCG@10."""
    scores = RunScores(run, base)
    config, rows = scores.config, scores.rows
    with np.load(run / f"item_encoder+{base}.npz") as kept:
        tuned = json.loads(str(kept["tuned"]))
        trained = (kept["weight"], kept["bias"]) if "weight" in kept else None
    candidates = [(int(layer), None) for layer in scores.vectors.files]
    if trained is not None:
        candidates.append((tuned["layer"], trained))
    print(f"{run}: {len(rows['valid'])} validation rows ({config['tune_on']}), {len(rows['test'])} test rows "
          f"({config['only']}); the run chose layer {tuned['layer']}, epoch {tuned['epoch']}, w = {tuned.get('weight')}")  # fmt: skip
    print("NDCG@10 validation (as the run chose) / test (as the run ranked); w = 0 is the baseline alone\n")
    print("| encoder | " + " | ".join(f"w = {w}" for w in WEIGHTS) + " |")
    print("|---|" + "---:|" * len(WEIGHTS))
    for layer, mapping in sorted(candidates, key=lambda c: (c[1] is not None, c[0])):
        encoder = ItemEncoder(scores.vectors[str(layer)], EncoderSettings())
        if mapping is not None:
            encoder.weight, encoder.bias = mapping
        mine = scores.mine(encoder)
        cells = []
        for w in WEIGHTS:
            mixed = {k: (1 - w) * scores.theirs[k] + w * mine[k] for k in rows}
            cells.append(" / ".join(f"{mean_ndcg(scores.ranks(k, mixed[k])):.4f}" for k in ("valid", "test")))
        name = f"layer {layer}, " + (f"map of epoch {tuned['epoch']}" if mapping is not None else "untrained")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    return 0


def pooled_untrained(runs: list[Path], base: str) -> int:
    """The untrained encoder (no interaction log read) mixed with ``base``: the one (layer, w) with
    the best NDCG@10 over all ``runs``' validation rows together, then its test rows against the
    base alone (w = 0), paired over every run's test rows."""
    valid: dict[tuple[int, float], list] = {}
    test: dict[tuple[int, float], list] = {}
    offset, clusters = 0, []  # rows of one dataset with the same user and target are one (seeded runs repeat rows)
    for run in runs:
        scores = RunScores(run, base)
        layers = sorted(int(layer) for layer in scores.vectors.files)
        for layer in layers:
            mine = scores.mine(ItemEncoder(scores.vectors[str(layer)], EncoderSettings()))
            for w in WEIGHTS:
                mixed = {k: (1 - w) * scores.theirs[k] + w * mine[k] for k in scores.rows}
                valid.setdefault((layer, w), []).extend(scores.ranks("valid", mixed["valid"]))
                test.setdefault((layer, w), []).extend(
                    UserResult(e.user_id, e.target, [], rank, 0, row=offset + n)
                    for n, (e, rank) in enumerate(zip(scores.rows["test"], scores.ranks("test", mixed["test"])))
                )  # fmt: skip
        offset += len(scores.rows["test"])
        dataset = json.dumps([scores.config["dataset"], scores.config["data"]], sort_keys=True)
        clusters += [(dataset, e.user_id, e.target) for e in scores.rows["test"]]
        print(f"{run}: {len(scores.rows['valid'])} validation rows, {len(scores.rows['test'])} test rows", flush=True)
    by_key = {key: mean_ndcg(ranks) for key, ranks in valid.items()}
    layer, w = max(by_key, key=lambda key: (by_key[key], -key[1], -key[0]))  # ties: less of the encoder, earlier layer
    alone = next(key for key in test if key[1] == 0.0)
    print("\npooled validation NDCG@10 by layer / w: " + ", ".join(f"{k[0]}/{k[1]} {v:.4f}" for k, v in sorted(by_key.items())))
    print(f"chosen on validation: layer {layer}, untrained, w = {w}")
    c = paired_comparison(
        test[(layer, w)], test[alone], names=(f"untrained layer {layer}, w = {w}", base), resamples=10000, clusters=clusters
    )  # fmt: skip
    print(f"test, {c.rows} rows ({c.clusters} distinct dataset, user and target): {c.mean:.4f} against {base} "
          f"{c.against_mean:.4f}, {c.difference:+.4f} "
          f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}], p = {c.p_value:.3f}")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--base", default="content", help="the mixture's baseline (its item_encoder+<base>.npz)")
    p.add_argument("--pool", action="store_true", help="the untrained encoder's (layer, w) chosen on every run's validation rows together")
    args = p.parse_args(argv)
    if args.pool:
        return pooled_untrained(args.runs, args.base)
    for run in args.runs:
        ceiling(run, args.base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
