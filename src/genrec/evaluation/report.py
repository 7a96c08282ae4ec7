"""Evaluation reports: the methods side by side as a Markdown table, and plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_file, atomic_write_text
from .fusion import describe_tuning
from ..ranking.metrics import UserResult, ndcg
from .significance import PairedComparison

__all__ = ["results_table", "write_report"]


# ---------------------------------------------------------------------- report
_TABLE_COLUMNS = [
    ("HR@1", "HR@1", "{:.4f}"),
    ("HR@5", "HR@5", "{:.4f}"),
    ("HR@10", "HR@10", "{:.4f}"),
    ("HR@20", "HR@20", "{:.4f}"),
    ("NDCG@5", "NDCG@5", "{:.4f}"),
    ("NDCG@10", "NDCG@10", "{:.4f}"),
    ("NDCG@20", "NDCG@20", "{:.4f}"),
    ("MRR@10", "MRR@10", "{:.4f}"),
    ("invalid", "invalid_rate", "{:.3f}"),
    ("dup", "duplicate_rate", "{:.3f}"),
    ("hist. repeat", "history_repeat_rate", "{:.3f}"),
    ("cov@10", "coverage@10", "{:.3f}"),
    ("pop. pct@10", "popularity_pct@10", "{:.1f}"),
    ("p50 s/user", "latency_p50_s", "{:.4f}"),
    ("p95 s/user", "latency_p95_s", "{:.4f}"),
    ("users/s", "users_per_s", "{:.1f}"),
]


def results_table(results_doc: dict[str, Any]) -> str:
    """The methods side by side as a Markdown table."""
    methods = results_doc["methods"]
    # only the columns some method has: metrics exist at cut-offs up to k only
    columns = [c for c in _TABLE_COLUMNS if any(c[1] in m for m in methods.values())]
    head = "| method | users | " + " | ".join(c[0] for c in columns) + " |"
    rule = "|---|---:|" + "---:|" * len(columns)
    rows = [head, rule]
    for name, m in methods.items():
        cells = [fmt.format(m[key]) if key in m else "" for _, key, fmt in columns]
        rows.append(f"| {name} | {m.get('n_users', 0)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_report(
    results_doc: dict[str, Any],
    results: dict[str, list[UserResult]],
    pop_pct: dict[str, float],
    targets: Sequence[str],
    out_dir: Path,
) -> None:
    split = results_doc["split"]
    lines = [
        f"# Evaluation on {results_doc['dataset']}",
        "",
        f"- Protocol: {split.get('protocol')}; timestamp ties ordered by rule `{split.get('tie_break', 'n/a')}`.",
        f"- Ranking: {split['ranking']}. Sampled negatives (say, 100 per user) would inflate HR and NDCG "
        f"several-fold; nothing here samples them.",
        f"- Users: {results_doc['n_users']} of {results_doc['n_users_available']}"
        + (f" (sampled with seed {split['sample_seed']})" if split.get("users_sampled") else " (all)")
        + f"; catalog: {results_doc['n_items']} items.",
        f"- Rows whose target is inside their own history (a repeat): {split.get('targets_in_history', 0)}; "
        f"they count as a miss for every method. Metrics at cut-offs {split.get('cutoffs')} (at most k={results_doc['k']}).",
        f"- Prompt-based methods see {_history_shown(split)}{_beams(split)}; scored baselines "
        f"see the whole history (SASRec up to its max_len positions).",
        "",
        results_table(results_doc),
        "",
    ]
    for name, m in results_doc["methods"].items():
        grid = "grid" in m.get("tuned", {})  # a genrec method's validation grid: one line per setting
        notes = [f"{k}: {m[k]}" for k in ("alias_of", "model", "mode", "fit_s", "tuned") if k in m and not (k == "tuned" and grid)]
        if notes:
            lines.append(f"- {name}: " + "; ".join(str(n) for n in notes))
        if grid:
            first, *rest = describe_tuning(m["tuned"]).splitlines()
            lines += [f"- {name}: {first}", *(f"  - {r.strip()}" for r in rest)]
    new = split.get("new_items")
    if new and any(m.get("groups") for m in results_doc["methods"].values()):
        lines += ["", f"New items ({new['rule']}; seeded: {new['cold_items_seeded']}): test rows {new['test_rows']}, "
                  f"validation rows {new['valid_rows']}{_tuning_text(new)}.", "", "| method | group | rows | HR@10 | NDCG@10 | vs best baseline |",
                  "|---|---|---:|---:|---:|---|"]  # fmt: skip
        for name, m in results_doc["methods"].items():
            for group, g in m.get("groups", {}).items():
                vs = _comparison(g["vs_best_baseline"]).describe() if "vs_best_baseline" in g else ""
                lines.append(f"| {name} | {group} | {g['n_users']} | {g.get('HR@10', 0):.4f} | {g.get('NDCG@10', 0):.4f} | {vs} |")
    paired = [m["vs_best_baseline"] for m in results_doc["methods"].values() if "vs_best_baseline" in m]
    if paired:
        lines += ["", "Paired against the best baseline (bootstrap interval, sign-flip p-value):", ""]
        lines += [f"- {_comparison(c).describe()}" for c in paired]
    lines += ["", "![NDCG@K](ndcg_at_k.png)", "", "![popularity of recommended items](popularity.png)", ""]
    atomic_write_text(out_dir / "report.md", "\n".join(lines))
    _plots(results, pop_pct, targets, out_dir, results_doc["k"])


def _history_shown(split: dict[str, Any]) -> str:
    grid = split.get("history_grid") or [split["max_history_in_prompt"]]
    if len(grid) == 1:
        return f"the last {grid[0]} history items"
    return f"the last N history items, N tuned on validation from {', '.join(map(str, grid))} (each method's tuned max_history)"


def _beams(split: dict[str, Any]) -> str:
    return f" and decode with {split['beams']} beams" if "beams" in split else ""  # older results.json: not recorded


def _comparison(data: dict[str, Any]) -> PairedComparison:
    return PairedComparison(**{k: v for k, v in data.items() if k in PairedComparison.__dataclass_fields__})


def _plots(results: dict[str, list[UserResult]], pop_pct: dict[str, float], targets: Sequence[str], out_dir: Path, k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = list(range(1, k + 1))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, rs in results.items():
        if rs:
            ax.plot(ks, [float(np.mean([ndcg(r.rank, kk) for r in rs])) for kk in ks], marker="o", markersize=3, label=name)
    ax.set_xlabel("K")
    ax.set_ylabel("NDCG@K")
    ax.set_title("NDCG@K, full-catalog ranking")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, out_dir / "ndcg_at_k.png")
    plt.close(fig)

    bins = np.linspace(0, 100, 11)
    centers = (bins[:-1] + bins[1:]) / 2
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(centers, np.full(10, 0.1), linestyle=":", color="gray", label="catalog (uniform by construction)")
    target_pct = [pop_pct[t] for t in targets if t in pop_pct]
    if target_pct:
        ax.plot(centers, np.histogram(target_pct, bins=bins)[0] / len(target_pct), color="black", linestyle="--", label="test targets")
    for name, rs in results.items():
        pct = [pop_pct[i] for r in rs for i in r.items[:10] if i in pop_pct]
        if pct:
            ax.plot(centers, np.histogram(pct, bins=bins)[0] / len(pct), marker="o", markersize=3, label=name)
    ax.set_xlabel("item popularity percentile in the catalog (training interactions)")
    ax.set_ylabel("share of top-10 recommendations")
    ax.set_title("How popular are the recommended items?")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, out_dir / "popularity.png")
    plt.close(fig)


def _save_figure(fig: Any, path: Path) -> None:
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)


def _tuning_text(new: dict) -> str:
    cold = new.get("tune_cold")
    if not cold:
        return ""
    return (f"; settings chosen on {new.get('tuning_rows')} rows with {cold['items_made_new']} more known items made new "
            f"(--tune-cold {cold['fraction']}), then fitted again on the whole training part")
