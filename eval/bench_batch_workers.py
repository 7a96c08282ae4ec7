"""Throughput of ``genrec batch`` by worker count: the same MovieLens users decoded by 1, 2 and
4 Ray actors (``--workers``; cores / workers torch threads each, at least 1), users/s per actor
and overall from each run's manifest, and the cost model for N nodes those figures give.

    .venv/bin/python eval/bench_batch_workers.py --data-dir ../shared/datasets/ml-100k --users 200 --out runs/bench-workers

``--runtime onnxruntime``: the workers' model calls in ONNX Runtime (exported into the cache first).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="the ml-100k folder (u.item, u.data)")
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--search", default="beam", choices=("beam", "content"),
                   help="genrec batch --search (beam: the model writes titles, what the figures in RESULTS.md measure)")
    p.add_argument("--runtime", default="torch", choices=("torch", "onnxruntime"), help="genrec batch --runtime")
    p.add_argument("--out", default="runs/bench-workers")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data_dir)
    log = pd.read_csv(data / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"], dtype=str)
    keep = sorted(log["user_id"].unique(), key=int)[: args.users]
    histories = out / "log.csv"
    log[log["user_id"].isin(keep)][["user_id", "item_id", "timestamp"]].to_csv(histories, index=False)
    genrec = [sys.executable, "-m", "genrec.cli", "batch", "--catalog", str(data / "u.item"), "--sep", "|", "--encoding", "latin-1",
              "--no-header", "--kind", "movie", "--histories", str(histories), "-k", "10", "--max-history", "20",
              "--batch-size", "8", "--part-size", "16", "--search", args.search, "--runtime", args.runtime]  # fmt: skip
    rows = []
    cores = os.cpu_count() or 1
    for workers in (int(w) for w in args.workers.split(",")):
        threads = max(1, cores // workers)
        target = out / f"workers-{workers}"
        extra = ["--workers", str(workers), "--threads-per-worker", str(threads)] if workers > 1 else []
        subprocess.run([*genrec, *extra, "--out", str(target), "--overwrite"], check=True)
        summary = json.loads((target / "manifest.json").read_text())["summary"]
        per_actor = [w["users_per_s"] for w in summary["workers"].values()]
        rows.append({"workers": workers, "threads": threads, "users": summary["users"], "wall_s": round(summary["wall_s"], 1),
                     "users_per_s": round(summary["users_per_s"], 3), "per_actor": [round(x, 3) for x in per_actor],
                     "peak_rss_mb": [round(w["peak_rss_mb"]) for w in summary["workers"].values()]})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print("\n| actors | torch threads each | users | wall s | users/s overall | users/s per actor | peak RSS per actor MB |")
    print("|---:|---:|---:|---:|---:|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['threads']} | {r['users']} | {r['wall_s']} | {r['users_per_s']} | "
              f"{', '.join(map(str, r['per_actor']))} | {', '.join(map(str, r['peak_rss_mb']))} |")  # fmt: skip
    best = max(rows, key=lambda r: r["users_per_s"])
    print(f"\ncost model: one {cores}-core node gives {best['users_per_s']} users/s ({best['workers']} actors); "
          f"N such nodes about N x that (parts are independent), so 10M users take about "
          f"{10_000_000 / best['users_per_s'] / 3600:,.0f} node-hours")


if __name__ == "__main__":
    main()
