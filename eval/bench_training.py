"""Training throughput, both modes in one run: next-item targets per second.

    .venv/bin/python eval/bench_training.py --dataset ml-100k --data-dir ../shared/datasets/ml-100k

Trains the same base model for the same number of optimizer steps (same batch size, history
length and windows) in ``per-window`` mode (one target per sequence) and ``all-positions`` mode
(every title of a window), and prints sequences/s, targets/s and their ratio. The models are
written to a temporary folder and deleted. Run it on an idle machine: the modes are compared as a
ratio within one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from genrec.cli import add_dataset_arguments, dataset_from_args
from genrec.errors import GenrecError
from genrec.training import MODES, TrainConfig, train


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_arguments(p)
    p.add_argument("--model", help="base model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--steps", type=int, default=10, help="optimizer steps per mode")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-history", type=int, default=20)
    p.add_argument("--json", help="also write the numbers to this file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        dataset, _ = dataset_from_args(args)
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for mode in reversed(MODES):  # per-window first: the reference
                config = TrainConfig(
                    model=args.model, mode=mode, max_steps=args.steps, batch_size=args.batch_size,
                    max_history=args.max_history, samples_per_user=4, save_every=10**9, warmup_ratio=0.0,
                )  # fmt: skip
                result = train(dataset, Path(tmp) / mode, config, progress=True)
                elapsed = result.record["elapsed_s"]
                rows.append({
                    "mode": mode, "template": result.record["template"], "steps": result.steps,
                    "sequences": result.samples_seen, "targets": result.targets_seen, "elapsed_s": round(elapsed, 1),
                    "sequences_per_s": round(result.samples_per_s, 3), "targets_per_s": round(result.targets_per_s, 2),
                })  # fmt: skip
    except GenrecError as exc:
        print(f"eval/bench_training.py: error: {exc}", file=sys.stderr)
        return 2
    print(f"\n{'mode':<15}{'template':<11}{'steps':>6}{'sequences':>10}{'targets':>9}{'s':>8}{'seq/s':>8}{'targets/s':>11}")
    for r in rows:
        print(f"{r['mode']:<15}{r['template']:<11}{r['steps']:>6}{r['sequences']:>10}{r['targets']:>9}"
              f"{r['elapsed_s']:>8}{r['sequences_per_s']:>8}{r['targets_per_s']:>11}")  # fmt: skip
    speedup = rows[1]["targets_per_s"] / rows[0]["targets_per_s"]
    print(f"all-positions / per-window, targets per second: {speedup:.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "targets_per_s_ratio": round(speedup, 2)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
