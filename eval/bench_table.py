"""Markdown tables from benchmark outputs.

    .venv/bin/python eval/bench_table.py runs/bench-* runs/ground-*

Reads every bench.json (bench_decoding.py) and grounding.json (bench_grounding.py) under the
given folders and prints one table for each, rows ordered by catalog size.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(folders: list[str], name: str) -> list[dict]:
    rows = [json.loads((Path(f) / name).read_text()) for f in folders if (Path(f) / name).is_file()]
    return sorted(rows, key=lambda r: (r.get("source") != "synthetic", r["n_titles"]))


def _catalog(r: dict) -> str:
    return "product-like" if "product" in r["source"] else Path(r["source"]).name


def _markdown(header: str, align: str, lines: list[str]) -> str:
    return "\n".join([header, align, *lines])


def decoding_table(rows: list[dict]) -> str:
    header, align = (
        "| titles | catalog | genrec s/user | transformers prefix fn s/user | unconstrained generate s/user | genrec / unconstrained | speed-up vs prefix fn | same top-10 as transformers | genrec decoder, no constraint s/user | index build s | index peak RSS MB | index load s | batched users/s | one-at-a-time users/s | batched / one |",
        "|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    )
    lines = []
    for r in rows:
        hf = r.get("hf_prefix_fn_s")
        hf_cells = f"{hf:.2f} | " if hf else "- | "
        vs_hf = f"{hf / r['genrec_s']:.2f}x" if hf else "-"
        lines.append(
            f"| {r['n_titles']:,} | {_catalog(r)} | {r['genrec_s']:.2f} | {hf_cells}{r['unconstrained_s']:.2f} | "
            f"{r['genrec_s'] / r['unconstrained_s']:.2f} | {vs_hf} | {r['same_topk']} | "
            f"{r['unconstrained_genrec_engine_s']:.2f} | {r['index_build_s']:.1f} | {r['index_peak_rss_mb']:.0f} | "
            f"{r['index_load_s']:.2f} | {r['users_per_s_batched']:.2f} | {r['users_per_s_one_at_a_time']:.2f} | "
            f"{r['users_per_s_batched'] / r['users_per_s_one_at_a_time']:.1f}x |"
        )
    return _markdown(header, align, lines)


def lookahead_table(rows: list[dict]) -> str:
    """Forced-chain lookahead against the same decoder calling the model at every step."""
    header = "| titles | catalog | title tokens (median) | forced tokens | genrec s/user | no lookahead s/user | speed-up | model calls/user | no lookahead | same top-10 | batched users/s | no lookahead |"
    lines = [
        f"| {r['n_titles']:,} | {_catalog(r)} | {r['title_tokens_median']:.0f} | {r['forced_token_share']:.0%} | "
        f"{r['genrec_s']:.2f} | {r['genrec_no_lookahead_s']:.2f} | {r['lookahead_speedup']:.2f}x | "
        f"{r['model_calls_per_user']:.1f} | {r['model_calls_per_user_no_lookahead']:.1f} | {r['same_topk_lookahead']} | "
        f"{r['users_per_s_batched']:.2f} | {r['users_per_s_batched_no_lookahead']:.2f} |"
        for r in rows
    ]
    return _markdown(header, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|", lines)


def grounding_table(rows: list[dict]) -> str:
    lines = [
        f"| {r['n_titles']:,} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['full_scan_p50_ms']:.1f} | "
        f"{r['agreement']:.3f} | {r['queries']} | {r['index_build_s']:.1f} |"
        for r in rows
    ]
    header = "| titles | p50 ms | p95 ms | full scan p50 ms | agreement with full scan | queries | index build s |"
    return _markdown(header, "|---:|---:|---:|---:|---:|---:|---:|", lines)


def main(argv: list[str]) -> int:
    decoding = _load(argv, "bench.json")
    grounding = _load(argv, "grounding.json")
    if decoding:
        print(decoding_table(decoding), end="\n\n")
        print(lookahead_table(decoding), end="\n\n")
    if grounding:
        print(grounding_table(grounding))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
