"""Training throughput, both modes (and precisions) in one run: next-item targets per second.

    .venv/bin/python eval/bench_training.py --dataset ml-100k --data-dir ../shared/datasets/ml-100k
    .venv/bin/python eval/bench_training.py ... --modes all-positions --precisions no,bf16
    .venv/bin/python eval/bench_training.py ... --modes all-positions --batching random,grouped
    .venv/bin/python eval/bench_training.py ... --modes all-positions --precisions auto --freeze-layers 0,10,20,25
    .venv/bin/python eval/bench_training.py ... --modes all-positions --precisions auto --drop-layers "none;14-28"
    .venv/bin/python eval/bench_training.py ... --modes all-positions --precisions auto --output-vocabularies full,catalog
    .venv/bin/python eval/bench_training.py --dataset ml-100k ... --modes all-positions --title-forms always,ambiguous
    .venv/bin/python eval/bench_training.py --dataset recbole ... --modes all-positions --title-words-forms full,6

Trains the same base model for the same number of optimizer steps (same batch size, history
length and windows) in ``per-window`` mode (one target per sequence) and ``all-positions`` mode
(every title of a window), at each precision asked for (``no``: fp32; ``bf16``: bf16 autocast),
with each batching asked for (``grouped``: sequences of similar length together; ``random``),
with the embeddings and the N lowest layers frozen for each N asked for (0: full fine-tuning),
with each set of decoder layers removed before training (``--drop-layers "none;14-28"``),
with each output vocabulary asked for (``catalog``: the softmax over the tokens of the catalog's
titles; ``full``: over the whole vocabulary), with each form of MovieLens titles asked for
(``--title-forms always,ambiguous``: the year in every title, or only where two films share one;
default: the dataset's ``--title-years``), with titles cut to each number of words asked for
(``--title-words-forms full,6``: whole titles, and titles of six words or as many more as tell them
apart; default: the dataset's ``--title-words``), and prints sequences/s, targets/s and each row's
targets/s against the first row's. The models are written to a temporary folder and deleted.
Run it on an idle machine: the rows are compared as ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from genrec.data.arguments import add_dataset_arguments, dataset_from_args
from genrec.decoding import OUTPUT_VOCABULARIES
from genrec.errors import DataError, GenrecError
from genrec.text import TITLE_YEARS
from genrec.training import MODES, PRECISIONS, TrainConfig, train


BATCHINGS = ("grouped", "random")  # TrainConfig.group_by_length True / False


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_arguments(p)
    p.add_argument("--model", help="base model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--steps", type=int, default=10, help="optimizer steps per mode")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-history", type=int, default=20)
    p.add_argument("--modes", default=",".join(reversed(MODES)), help="training modes, the reference first")
    p.add_argument("--precisions", default="no", help="mixed precisions (no = fp32, bf16, fp16, auto), comma-separated")
    p.add_argument("--batching", default="grouped",
                   help="grouped (sequences of similar length together, the default) and/or random, comma-separated")
    p.add_argument("--freeze-layers", default="0",
                   help="lowest layers kept frozen with the embeddings (0: none), comma-separated")
    p.add_argument("--drop-layers", default="none",
                   help="decoder layers removed before training, one set per row, semicolon-separated (none: keep all)")
    p.add_argument("--output-vocabularies", default="catalog",
                   help="catalog (the tokens of the catalog's titles, the default) and/or full, comma-separated")
    p.add_argument("--title-forms", default="",
                   help="MovieLens title forms to compare, comma-separated (always, ambiguous; default: --title-years)")
    p.add_argument("--title-words-forms", default="",
                   help="title cuts to compare, comma-separated: full and/or numbers of words (default: --title-words)")
    p.add_argument("--max-batch-tokens", type=int, default=4096, help="padded tokens per batch at most (0: no limit)")
    p.add_argument("--json", help="also write the numbers to this file")
    return p.parse_args(argv)


def _names(text: str, allowed: tuple[str, ...], option: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise DataError(f"{option}: unknown or missing value(s) {', '.join(unknown) or text!r} (have: {', '.join(allowed)})")
    return names


def _counts(text: str, option: str) -> list[int]:
    try:
        counts = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        raise DataError(f"{option}: {text!r} is not a comma-separated list of whole numbers") from None
    if not counts:
        raise DataError(f"{option}: no value given")
    return counts


def _layer_sets(text: str) -> list[str | None]:
    """``none;14-28`` -> ``[None, "14-28"]`` (None: every layer kept)."""
    sets = [None if n.strip() == "none" else n.strip() for n in text.split(";") if n.strip()]
    if not sets:
        raise DataError("--drop-layers: no value given")
    return sets


def _cuts(text: str) -> list[int | None]:
    """``full,6`` -> ``[None, 6]`` (None: whole titles)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise DataError("--title-words-forms: no value given")
    return [None if n == "full" else _counts(n, "--title-words-forms")[0] for n in names]


def _form_name(years: str, cut: int | None) -> str:
    if cut is None:
        return years
    return f"{cut}+ words" if years == "always" else f"{years}, {cut}+ words"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        years = _names(args.title_forms, TITLE_YEARS, "--title-forms") if args.title_forms else [args.title_years]
        cuts = _cuts(args.title_words_forms) if args.title_words_forms else [args.title_words]
        datasets = {
            _form_name(year, cut): dataset_from_args(argparse.Namespace(**{**vars(args), "title_years": year, "title_words": cut}))[0]
            for year in years
            for cut in cuts
        }
        forms = list(datasets)
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            settings = [
                (form, precision, mode, batching, frozen, dropped, vocabulary)
                for form in forms
                for precision in _names(args.precisions, PRECISIONS, "--precisions")
                for mode in _names(args.modes, MODES, "--modes")
                for batching in _names(args.batching, BATCHINGS, "--batching")
                for frozen in _counts(args.freeze_layers, "--freeze-layers")
                for dropped in _layer_sets(args.drop_layers)
                for vocabulary in _names(args.output_vocabularies, OUTPUT_VOCABULARIES, "--output-vocabularies")
            ]
            for form, precision, mode, batching, frozen, dropped, vocabulary in settings:
                config = TrainConfig(
                    model=args.model, mode=mode, max_steps=args.steps, batch_size=args.batch_size,
                    max_batch_tokens=args.max_batch_tokens or None, group_by_length=batching == "grouped",
                    max_history=args.max_history, samples_per_user=4, save_every=10**9, warmup_ratio=0.0,
                    mixed_precision=precision, freeze_layers=frozen, drop_layers=dropped, output_vocabulary=vocabulary,
                )  # fmt: skip
                out = Path(tmp) / f"{form}-{mode}-{precision}-{batching}-{frozen}-{dropped}-{vocabulary}"
                result = train(datasets[form], out, config, progress=True)
                rows.append({
                    "titles": form, "mode": mode, "precision": result.record["mixed_precision"], "batching": batching, "frozen": frozen,
                    "layers": result.record["layers"], "vocabulary": vocabulary,
                    "trained_parameters": result.record["trained_parameters"],
                    "template": result.record["template"], "steps": result.steps, "sequences": result.samples_seen,
                    "targets": result.targets_seen, "elapsed_s": round(result.record["elapsed_s"], 1),
                    "sequences_per_s": round(result.samples_per_s, 3), "targets_per_s": round(result.targets_per_s, 2),
                    "vs_first": round(result.targets_per_s / (rows[0]["targets_per_s"] if rows else result.targets_per_s), 2),
                })  # fmt: skip
    except GenrecError as exc:
        print(f"eval/bench_training.py: error: {exc}", file=sys.stderr)
        return 2
    print(f"\n{'titles':<20}{'mode':<15}{'precision':<10}{'batching':<9}{'frozen':>7}{'layers':>7}{'vocab':>8}{'trained':>12} {'template':<11}{'steps':>6}{'sequences':>10}{'targets':>9}"
          f"{'s':>8}{'seq/s':>8}{'targets/s':>11}{'vs first':>9}")  # fmt: skip
    for r in rows:
        print(f"{r['titles']:<20}{r['mode']:<15}{r['precision']:<10}{r['batching']:<9}{r['frozen']:>7}{r['layers']:>7}{r['vocabulary']:>8}{r['trained_parameters']:>12,} {r['template']:<11}{r['steps']:>6}{r['sequences']:>10}"
              f"{r['targets']:>9}{r['elapsed_s']:>8}{r['sequences_per_s']:>8}{r['targets_per_s']:>11}{r['vs_first']:>8}x")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
