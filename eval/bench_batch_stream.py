"""The driver's memory of ``genrec batch`` as its input grows: a synthetic interaction log of N
rows (Parquet files written here, never committed), read and grouped by user inside Ray Data
(``--stream``), against reading it into one DataFrame as a single file (the in-memory path).

Each measurement runs in a fresh process, so its peak RSS is its own. The streamed stage stops
where decoding would begin: each part's users go to a counting function on the workers, as they
would go to the decoding actors, so no part passes through the driver.

    .venv/bin/python eval/bench_batch_stream.py --rows 1e6,1e7,5e7 --out runs/bench-stream
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROWS_PER_USER = 20
FILE_ROWS = 2_000_000


def write_log(folder: Path, rows: int, seed: int = 0) -> None:
    """``rows`` interactions of ``rows / ROWS_PER_USER`` users over 50,000 items, in Parquet
    files of ``FILE_ROWS`` rows, written a file at a time (the generator holds one file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if (folder / "_DONE").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    users = max(1, rows // ROWS_PER_USER)
    for n, start in enumerate(range(0, rows, FILE_ROWS)):
        size = min(FILE_ROWS, rows - start)
        table = pa.table({
            "user_id": pa.array(np.char.add("u", rng.integers(0, users, size).astype(str))),
            "item_id": pa.array(np.char.add("i", rng.integers(0, 50_000, size).astype(str))),
            "timestamp": pa.array(rng.integers(0, 10**9, size)),
        })  # fmt: skip
        pq.write_table(table, folder / f"part-{n:05d}.parquet")
    (folder / "_DONE").write_text("")


def measure_stream(folder: Path) -> dict:
    import ray

    from genrec.batch.stream import StreamInput, stream_parts

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    source = StreamInput.find(folder)
    parts = source.default_parts()
    started = time.perf_counter()
    counts = stream_parts(source, parts).map_batches(_count_users, batch_size=1)
    users = parts_seen = 0
    for row in counts.iter_rows():
        users += int(row["users"])
        parts_seen += 1
    seconds = time.perf_counter() - started
    ray.shutdown()
    return {"users": users, "parts": parts, "parts_with_users": parts_seen, "seconds": round(seconds, 1)}


def _count_users(batch: dict) -> dict:
    import pickle

    return {"users": np.array([len(pickle.loads(p)) for p in batch["payload"]])}


def measure_memory(file: Path) -> dict:
    from genrec.batch import read_users

    started = time.perf_counter()
    users = read_users(file)
    return {"users": len(users), "seconds": round(time.perf_counter() - started, 1)}


def _one_file(folder: Path, file: Path) -> None:
    """The same log as one Parquet file, for the in-memory path (written here, not measured)."""
    import pyarrow.parquet as pq

    if not file.exists():
        pq.write_table(pq.ParquetDataset(folder).read(), file)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="1e6,1e7", help="log sizes, comma-separated")
    p.add_argument("--out", default="runs/bench-stream")
    p.add_argument("--in-memory-up-to", type=float, default=1e7, help="largest log also read into one DataFrame")
    p.add_argument("--one", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)  # a measurement, in its own process
    args = p.parse_args()
    if args.one:
        mode, path = args.one
        result = measure_stream(Path(path)) if mode == "stream" else measure_memory(Path(path))
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(json.dumps(result))
        return
    out = Path(args.out)
    results = []
    for rows in (int(float(r)) for r in args.rows.split(",")):
        folder = out / f"log-{rows}"
        write_log(folder / "log", rows)
        modes = [("stream", folder / "log")]
        if rows <= args.in_memory_up_to:
            _one_file(folder / "log", folder / "whole.parquet")
            modes.append(("in memory", folder / "whole.parquet"))
        for mode, path in modes:
            done = subprocess.run([sys.executable, __file__, "--one", "stream" if mode == "stream" else "memory", str(path)],
                                  capture_output=True, text=True, check=True)  # fmt: skip
            result = {"rows": rows, "mode": mode, **json.loads(done.stdout.strip().splitlines()[-1])}
            results.append(result)
            print(json.dumps(result), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print("\n| interactions | users | mode | driver peak RSS (MB) | seconds |\n|---:|---:|---|---:|---:|")
    for r in results:
        print(f"| {r['rows']:,} | {r['users']:,} | {r['mode']} | {r['peak_rss_mb']:,} | {r['seconds']} |")


if __name__ == "__main__":
    main()
