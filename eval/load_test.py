"""Load test of `genrec serve` over loopback: N concurrent clients, a fixed number of requests.

    .venv/bin/python eval/load_test.py --data-dir ../shared/datasets/ml-100k --out OUTDIR \
        [--requests 48] [--clients 1,4,16] [--model M]

Starts the server (default model, the ml-100k catalog) on a free 127.0.0.1 port, then for each
client count sends the same requests (/recommend, k=10, a user's 10 most recent films, users
sampled with a fixed seed): requests, errors, latency p50/p95/p99, requests/s. The one-client run
is the serial reference: the answers under load must equal it (same items in the same order).
Then the same server with --max-batch 1 (one request at a time) takes the largest client count:
the throughput ratio is what dynamic batching buys. Server memory (RSS) is read before and after
each phase. Bounded: every request has a timeout and the whole run --time-limit-s.
Writes OUTDIR/load.json and prints a table.

``--mix``: hostile traffic beside the valid requests. Each valid request is sent beside as many
hostile ones (in turn: a history of unknown items, a 10,000-entry history, a malformed body, a
fuzzy title the caller refuses below a score of 99), at 16 and 64 clients: the valid requests'
p50/p95/p99 with and without the hostile ones present, 5xx counts, whether every request's status
is the one it gets alone, and the server's memory over three repeated mixed rounds. Writes
OUTDIR/mixed.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="MovieLens 100K folder (u.item, u.data)")
    p.add_argument("--out", required=True)
    p.add_argument("--requests", type=int, default=48, help="requests per phase")
    p.add_argument("--clients", default="1,4,16", help="concurrent clients per phase (the first is the serial reference)")
    p.add_argument("--model", help="default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--batch-window-ms", type=float, default=5.0)
    p.add_argument("--request-timeout-s", type=float, default=600)
    p.add_argument("--time-limit-s", type=float, default=3600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mix", action="store_true", help="hostile requests beside the valid ones (see above)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), help="the server's --dtype (bfloat16: the fast mode)")
    p.add_argument("--runtime", choices=("torch", "transformers", "onnxruntime"), default="torch", help="the server's --runtime")
    p.add_argument("--search", default="auto", choices=("auto", "beam", "content"),
                   help="the server's search (its default, auto, is content search for the default model)")  # fmt: skip
    return p.parse_args(argv)


def histories(data_dir: Path, n: int, seed: int) -> list[list[str]]:
    """``n`` users' 10 most recent items (ml-100k u.data: user, item, rating, timestamp)."""
    rows = np.loadtxt(data_dir / "u.data", dtype=np.int64)
    by_user: dict[int, list[tuple[int, int]]] = {}
    for user, item, _, stamp in rows:
        by_user.setdefault(int(user), []).append((int(stamp), int(item)))
    users = sorted(by_user)
    random.Random(seed).shuffle(users)
    return [[str(item) for _, item in sorted(by_user[u], key=lambda x: x[0])[-10:]] for u in users[:n]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, args: argparse.Namespace, max_batch: int) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "genrec.cli", "serve", "--catalog", str(Path(args.data_dir) / "u.item"), "--sep", "|",
               "--encoding", "latin-1", "--no-header", "--kind", "movie", "--port", str(self.port),
               "--max-batch", str(max_batch), "--batch-window-ms", str(args.batch_window_ms), "--search", args.search]  # fmt: skip
        if args.model:
            cmd += ["--model", args.model]
        if args.dtype:
            cmd += ["--dtype", args.dtype]
        cmd += ["--runtime", args.runtime]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=sys.stderr)

    def wait_ready(self, limit_s: float = 600) -> float:
        import httpx

        started = time.perf_counter()
        while time.perf_counter() - started < limit_s:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.base}/health", timeout=5).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise SystemExit("server not ready in time")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)


async def phase(base: str, bodies: list[dict], clients: int, timeout_s: float) -> dict:
    """``clients`` workers take the requests in order from one queue until it is empty."""
    import httpx

    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(bodies)):
        queue.put_nowait(i)
    answers: dict[int, list] = {}
    latencies: list[float] = []
    errors: list[str] = []
    statuses: dict[int, int] = {}
    latency_of: dict[int, float] = {}

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            t0 = time.perf_counter()
            try:
                r = await http.post(f"{base}/recommend", json=bodies[i], timeout=timeout_s)
                statuses[i] = r.status_code
                if r.status_code == 200:
                    answers[i] = r.json()
                else:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            latencies.append(time.perf_counter() - t0)
            latency_of[i] = latencies[-1]

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - started
    lat = np.asarray(latencies)
    return {
        "clients": clients, "requests": len(bodies), "errors": len(errors), "error_samples": errors[:3],
        "p50_s": float(np.quantile(lat, 0.5)), "p95_s": float(np.quantile(lat, 0.95)), "p99_s": float(np.quantile(lat, 0.99)),
        "requests_per_s": len(bodies) / wall, "wall_s": wall, "answers": answers, "statuses": statuses,
        "latency_of": latency_of,
    }  # fmt: skip


def same_as(reference: dict[int, list], answers: dict[int, list]) -> dict:
    common = sorted(set(reference) & set(answers))
    same_items = sum([r["item_id"] for r in reference[i]] == [r["item_id"] for r in answers[i]] for i in common)
    diffs = [abs(a["score"] - b["score"]) for i in common for a, b in zip(reference[i], answers[i])]
    return {"compared": len(common), "same_items": same_items, "max_score_diff": max(diffs) if diffs else 0.0}


def hostile_bodies(n: int, valid: list[dict]) -> list[dict]:
    """``n`` hostile requests, the four kinds in turn."""
    kinds = [
        lambda i: {"history": [f"zzz no such film {i}"], "k": 10},  # unknown items: 404
        lambda i: {"history": [valid[i % len(valid)]["history"][-1]] * 10_000, "k": 10},  # 10,000 entries: capped, 200
        lambda i: {"history": "not a list", "k": 0},  # malformed: 422
        lambda i: {"history": ["Star Wars (1977"], "k": 10, "min_match_score": 99},  # fuzzy, refused strictly: 404
    ]
    return [kinds[i % len(kinds)](i) for i in range(n)]


def mixed(args: argparse.Namespace, out: Path) -> int:
    """The hostile mix (see the module docstring)."""
    valid = [{"history": h, "k": 10} for h in histories(Path(args.data_dir), args.requests, args.seed)]
    hostile = hostile_bodies(args.requests, valid)
    mixed_bodies = [b for pair in zip(valid, hostile) for b in pair]  # valid requests at even positions
    server = Server(args, args.max_batch)
    result: dict = {"requests_valid": len(valid), "requests_hostile": len(hostile), "startup_s": server.wait_ready(), "phases": []}
    asyncio.run(phase(server.base, valid[:2], 1, args.request_timeout_s))  # warm-up: prompt caches
    alone = asyncio.run(phase(server.base, mixed_bodies, 1, args.request_timeout_s))["statuses"]  # each request alone
    result["alone_statuses"] = {str(s): sum(1 for v in alone.values() if v == s) for s in sorted(set(alone.values()))}
    plan = [(16, "valid only"), (16, "mixed"), (64, "valid only"), (64, "mixed"), (64, "mixed"), (64, "mixed")]
    for clients, kind in plan:
        bodies = valid if kind == "valid only" else mixed_bodies
        before = rss_mb(server.proc.pid)
        p = asyncio.run(phase(server.base, bodies, clients, args.request_timeout_s))
        on_valid = [p["latency_of"][i] for i in range(len(bodies)) if (kind == "valid only" or i % 2 == 0) and i in p["latency_of"]]
        expected = alone if kind == "mixed" else {i: alone[2 * i] for i in range(len(valid))}
        row = {
            "clients": clients, "traffic": kind, "requests": len(bodies),
            "valid_p50_s": float(np.quantile(on_valid, 0.5)), "valid_p95_s": float(np.quantile(on_valid, 0.95)),
            "valid_p99_s": float(np.quantile(on_valid, 0.99)), "requests_per_s": p["requests_per_s"],
            "status_5xx": sum(1 for s in p["statuses"].values() if s >= 500),
            "same_status_as_alone": sum(p["statuses"].get(i) == expected[i] for i in expected), "compared": len(expected),
            "rss_before_mb": before, "rss_after_mb": rss_mb(server.proc.pid),
        }  # fmt: skip
        result["phases"].append(row)
        print(f"{kind}, {clients} clients: valid p50 {row['valid_p50_s']:.2f}s, 5xx {row['status_5xx']}, "
              f"same status {row['same_status_as_alone']}/{row['compared']}", flush=True)  # fmt: skip
    result["exit_code"] = server.stop()
    (out / "mixed.json").write_text(json.dumps(result, indent=2))
    print("\n| clients | traffic | requests | valid p50 s | valid p95 s | valid p99 s | requests/s | 5xx | status as alone | RSS before MB | RSS after MB |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for r in result["phases"]:
        print(f"| {r['clients']} | {r['traffic']} | {r['requests']} | {r['valid_p50_s']:.2f} | {r['valid_p95_s']:.2f} | {r['valid_p99_s']:.2f} | "
              f"{r['requests_per_s']:.2f} | {r['status_5xx']} | {r['same_status_as_alone']}/{r['compared']} | "
              f"{r['rss_before_mb']:.0f} | {r['rss_after_mb']:.0f} |")  # fmt: skip
    print(f"alone: {result['alone_statuses']}; wrote {out / 'mixed.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.mix:
        return mixed(args, out)
    deadline = time.perf_counter() + args.time_limit_s
    bodies = [{"history": h, "k": 10} for h in histories(Path(args.data_dir), args.requests, args.seed)]
    clients = [int(c) for c in args.clients.split(",")]
    result: dict = {"requests_per_phase": args.requests, "max_batch": args.max_batch, "batch_window_ms": args.batch_window_ms,
                    "threads": os.cpu_count(), "phases": []}  # fmt: skip

    server = Server(args, args.max_batch)
    result["startup_s"] = server.wait_ready()
    asyncio.run(phase(server.base, bodies[:2], 1, args.request_timeout_s))  # warm-up: prompt caches
    reference = None
    for n in clients:
        if time.perf_counter() > deadline:
            print("time limit reached", file=sys.stderr)
            break
        before = rss_mb(server.proc.pid)
        p = asyncio.run(phase(server.base, bodies, n, args.request_timeout_s))
        p.update(mode="dynamic batching", rss_before_mb=before, rss_after_mb=rss_mb(server.proc.pid))
        if reference is None:
            reference = p["answers"]
        p["same_as_serial"] = same_as(reference, p["answers"])
        result["phases"].append(p)
        print(f"batching, {n:>2} clients: {p['requests_per_s']:.2f} req/s, p50 {p['p50_s']:.2f}s, errors {p['errors']}", flush=True)
    result["exit_code_batching"] = server.stop()

    if time.perf_counter() < deadline:
        single = Server(args, 1)
        single.wait_ready()
        asyncio.run(phase(single.base, bodies[:2], 1, args.request_timeout_s))
        before = rss_mb(single.proc.pid)
        p = asyncio.run(phase(single.base, bodies, max(clients), args.request_timeout_s))
        p.update(mode="one at a time", rss_before_mb=before, rss_after_mb=rss_mb(single.proc.pid))
        p["same_as_serial"] = same_as(reference or {}, p["answers"])
        result["phases"].append(p)
        result["exit_code_one_at_a_time"] = single.stop()
        print(f"one at a time, {max(clients)} clients: {p['requests_per_s']:.2f} req/s", flush=True)
        batched = [q for q in result["phases"] if q["mode"] == "dynamic batching" and q["clients"] == max(clients)]
        if batched:
            result["batching_speedup"] = batched[0]["requests_per_s"] / p["requests_per_s"]

    for p in result["phases"]:
        for key in ("answers", "statuses", "latency_of"):
            p.pop(key)
    (out / "load.json").write_text(json.dumps(result, indent=2))
    print("\n| mode | clients | requests | errors | p50 s | p95 s | p99 s | requests/s | same items as serial | RSS before MB | RSS after MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for p in result["phases"]:
        s = p["same_as_serial"]
        print(f"| {p['mode']} | {p['clients']} | {p['requests']} | {p['errors']} | {p['p50_s']:.2f} | {p['p95_s']:.2f} | {p['p99_s']:.2f} | "
              f"{p['requests_per_s']:.2f} | {s['same_items']}/{s['compared']} (max score diff {s['max_score_diff']:.1e}) | "
              f"{p['rss_before_mb']:.0f} | {p['rss_after_mb']:.0f} |")  # fmt: skip
    if "batching_speedup" in result:
        print(f"\ndynamic batching / one at a time at {max(clients)} clients: {result['batching_speedup']:.2f}x")
    print(f"wrote {out / 'load.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
