"""The evaluation harness: methods side by side on the same split, same users, same ranking rules.

``run_evaluation`` writes, under an output folder:

- ``users/<method>.jsonl``: one line per user as it finishes; a killed run resumes from there;
- ``results.json``: ``{"dataset", "n_users", "split", "k", "methods": {name: metrics}}``;
- ``report.md``: the methods side by side, and the plots ``ndcg_at_k.png`` and ``popularity.png``.

Scored methods (pop, markov, sasrec) rank the full catalog minus the user's history, ties broken
by one fixed random order of the items. Prompt-based methods (genrec, genrec-free) see the last
``max_history`` items of the history in their prompt; everything in the history is excluded.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_file, atomic_write_text
from ..catalog import Catalog
from ..errors import DataError
from .baselines import Markov, Popularity, ScoredMethod
from .datasets import Dataset, Example
from .metrics import KS, UserResult, full_rank, ndcg, popularity_percentiles, rank_in_list, summarize, top_k
from .report import write_report
from .splits import Split, sample_examples, split_dataset

__all__ = ["EvalConfig", "METHODS", "run_evaluation", "evaluate_scored", "evaluate_genrec"]

METHODS = ("pop", "markov", "sasrec", "genrec", "genrec-free")
_CONFIG_FILE = "run_config.json"


@dataclass
class EvalConfig:
    """Everything that decides a run's numbers; a resumed run must match it exactly."""

    dataset: str
    methods: list[str]
    k: int = 20
    users: int | None = None
    seed: int = 0
    tie_break: str = "file_order"
    max_history: int = 20
    model: str | None = None
    template: str = "next_item"
    batch_size: int = 8
    sasrec_epochs: int = 200
    data: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise DataError(f"unknown method(s) {', '.join(unknown)} (have: {', '.join(METHODS)})")
        if not self.methods:
            raise DataError("no methods to evaluate")
        if self.k < max(KS[:-1]) or self.k < 1:
            raise DataError(f"k must be at least 10 (metrics go up to @{min(self.k, 20)}), got {self.k}")


# ---------------------------------------------------------------------- per-user results on disk
def _read_done(path: Path) -> list[UserResult]:
    """Results already written; a half-written last line (a kill mid-write) is cut off."""
    if not path.exists():
        return []
    done: list[UserResult] = []
    good_bytes = 0
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break
            try:
                done.append(UserResult.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError, KeyError):
                break
            good_bytes += len(line)
    if good_bytes != path.stat().st_size:
        with open(path, "r+b") as fh:
            fh.truncate(good_bytes)
    return done


def _append(path: Path, results: Sequence[UserResult]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        for r in results:
            fh.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


# ---------------------------------------------------------------------- methods
def evaluate_scored(
    method: ScoredMethod,
    examples: Sequence[Example],
    *,
    k: int,
    tie_order: np.ndarray,
    on_batch: Callable[[list[UserResult]], None],
    batch_size: int = 256,
    progress: bool = True,
) -> None:
    """Rank the full catalog (minus history) for each example with ``method``'s scores."""
    from tqdm.auto import tqdm

    n_items = len(method.catalog)
    bar = tqdm(total=len(examples), desc=method.name, unit="user", disable=not progress)
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        t0 = time.perf_counter()
        scores = method.score([e.history for e in batch])
        results = []
        for row, example in enumerate(batch):
            excluded = np.zeros(n_items, dtype=bool)
            excluded[[method.index[i] for i in example.history if i in method.index]] = True
            best = top_k(scores[row], excluded, tie_order, k)
            items = [method.catalog.ids[i] for i in best]
            rank = full_rank(scores[row], method.index[example.target], excluded, tie_order)
            results.append(_result(example, items, rank, n_outputs=len(items)))
        per_user = (time.perf_counter() - t0) / len(batch)
        for r in results:
            r.latency_s = per_user
        on_batch(results)
        bar.update(len(batch))
    bar.close()


def _result(example: Example, items: list[str], rank: int | None, **counts: Any) -> UserResult:
    history = set(example.history)
    return UserResult(
        user_id=example.user_id,
        target=example.target,
        items=items,
        rank=rank,
        n_outputs=counts.pop("n_outputs"),
        n_duplicates=counts.pop("n_duplicates", len(items) - len(set(items))),
        n_history_repeats=counts.pop("n_history_repeats", sum(i in history for i in items)),
        **counts,
    )


def evaluate_genrec(
    rec: Any,
    examples: Sequence[Example],
    *,
    k: int,
    constrained: bool,
    max_history: int,
    template: str,
    batch_size: int,
    on_batch: Callable[[list[UserResult]], None],
    progress: bool = True,
    name: str = "genrec",
) -> None:
    """Prompt the model with the last ``max_history`` items; exclude the whole history."""
    from tqdm.auto import tqdm

    catalog = rec.catalog
    bar = tqdm(total=len(examples), desc=name, unit="user", disable=not progress)
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        t0 = time.perf_counter()
        outs = rec.recommend_batch(
            [list(e.history[-max_history:]) if max_history else [] for e in batch],
            k,
            excludes=[list(e.history) for e in batch],
            constrained=constrained,
            template=template,
            batch_size=batch_size,
        )
        per_user = (time.perf_counter() - t0) / len(batch)
        results = []
        for example, recs in zip(batch, outs):
            items = [r.item_id for r in recs]
            if constrained:
                counts = {"n_outputs": len(items), "n_invalid": sum(i not in catalog for i in items)}
            else:
                distinct_titles = len({r.title for r in recs})
                n_out = len(recs.outputs)
                counts = {
                    "n_outputs": n_out,
                    "n_invalid": len(recs.ungrounded),
                    "n_history_repeats": len(recs.history_repeats),
                    "n_duplicates": max(n_out - len(recs.ungrounded) - len(recs.history_repeats) - distinct_titles, 0),
                }
            result = _result(example, items, rank_in_list(example.target, items), **counts)
            result.latency_s = per_user
            result.extra = {"history_dropped": recs.history_dropped}
            results.append(result)
        on_batch(results)
        bar.update(len(batch))
    bar.close()


# ---------------------------------------------------------------------- the run
def _tie_order(n_items: int, seed: int) -> np.ndarray:
    order = np.empty(n_items, dtype=np.int64)
    order[np.random.default_rng(seed).permutation(n_items)] = np.arange(n_items)
    return order


def _prepare_out_dir(out_dir: Path, config: EvalConfig, overwrite: bool) -> None:
    (out_dir / "users").mkdir(parents=True, exist_ok=True)
    path = out_dir / _CONFIG_FILE
    wanted = asdict(config)
    if path.exists() and not overwrite:
        previous = json.loads(path.read_text(encoding="utf-8"))
        # methods may be added to a folder; everything that decides the numbers must match
        differs = {k for k in wanted if k != "methods" and previous.get(k) != wanted[k]}
        if differs:
            raise DataError(
                f"{out_dir} holds a run with other settings ({', '.join(sorted(differs))}); "
                f"use another --out, or --overwrite to start over"
            )
        wanted["methods"] = sorted(set(previous.get("methods", [])) | set(config.methods), key=METHODS.index)
    elif overwrite:
        for stale in (out_dir / "users").glob("*.jsonl"):
            stale.unlink()
        (out_dir / "sasrec.pt").unlink(missing_ok=True)
    atomic_write_text(path, json.dumps(wanted, indent=2))


def _fit_sasrec(catalog: Catalog, split: Split, config: EvalConfig, out_dir: Path, progress: bool):
    import torch

    from .sasrec import SASRec, SASRecConfig

    method = SASRec(catalog, SASRecConfig(seed=config.seed, max_epochs=config.sasrec_epochs), progress=progress)
    saved = out_dir / "sasrec.pt"
    if saved.exists():
        method.load_state(torch.load(saved, weights_only=False))
        return method
    method.fit(split)
    with atomic_file(saved, suffix=".pt") as tmp:
        torch.save(method.state(), tmp)
    return method


def run_evaluation(
    dataset: Dataset,
    config: EvalConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    overwrite: bool = False,
    recommender_factory: Callable[[Catalog], Any] | None = None,
) -> dict[str, Any]:
    """Evaluate ``config.methods`` on ``dataset``; write and return the results.

    ``recommender_factory(catalog)`` builds the Recommender for the genrec methods (default:
    ``Recommender(catalog, model=config.model)``).
    """
    config.check()
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, config, overwrite)
    split = split_dataset(dataset, tie_break=config.tie_break, seed=config.seed)
    examples = sample_examples(split.test, config.users, config.seed)
    catalog = dataset.catalog
    popularity = split.popularity()
    pop_pct = popularity_percentiles(popularity, catalog.ids)
    tie_order = _tie_order(len(catalog), config.seed)
    summaries: dict[str, dict[str, Any]] = {}
    all_results: dict[str, list[UserResult]] = {}
    rec = None
    for name in config.methods:
        path = out_dir / "users" / f"{name}.jsonl"
        done = _read_done(path)
        done_users = {r.user_id for r in done}
        pending = [e for e in examples if e.user_id not in done_users]
        new: list[UserResult] = []

        def store(results: list[UserResult], path: Path = path, new: list[UserResult] = new) -> None:
            _append(path, results)
            new.extend(results)

        fit_s = None
        if pending:
            if name in ("pop", "markov", "sasrec"):
                t0 = time.perf_counter()
                if name == "sasrec":
                    method = _fit_sasrec(catalog, split, config, out_dir, progress)
                else:
                    method = (Popularity if name == "pop" else Markov)(catalog)
                    method.fit(split)
                fit_s = time.perf_counter() - t0
                evaluate_scored(method, pending, k=config.k, tie_order=tie_order, on_batch=store, progress=progress)
            else:
                if rec is None:
                    if recommender_factory is not None:
                        rec = recommender_factory(catalog)
                    else:
                        from ..recommender import Recommender

                        rec = Recommender(catalog, model=config.model)
                evaluate_genrec(
                    rec, pending, k=config.k, constrained=name == "genrec", max_history=config.max_history,
                    template=config.template, batch_size=config.batch_size, on_batch=store, progress=progress, name=name,
                )  # fmt: skip
        results = done + new
        by_user = {r.user_id: r for r in results}
        results = [by_user[e.user_id] for e in examples if e.user_id in by_user]
        all_results[name] = results
        # each user's latency is its share of its batch's wall time: their sum is the run's
        # decoding time, resumed runs included (fitting a baseline is reported apart)
        summary = summarize(results, catalog_size=len(catalog), popularity_pct=pop_pct)
        if fit_s is not None:
            summary["fit_s"] = round(fit_s, 2)
        if name.startswith("genrec"):
            summary["model"] = config.model or "SmolLM2-135M-Instruct (default, zero-shot)"
            summary["mode"] = "constrained beam search" if name == "genrec" else "free generation + grounding"
        if name == "sasrec" and (out_dir / "sasrec.pt").exists():
            import torch

            state = torch.load(out_dir / "sasrec.pt", weights_only=False)
            summary["best_epoch"] = state["best_epoch"]
            summary["best_valid_NDCG@10"] = state["best_valid_ndcg"]
        summaries[name] = summary
    results_doc = {
        "dataset": config.dataset,
        "n_users": len(examples),
        "n_users_available": len(split.test),
        "n_items": len(catalog),
        "k": config.k,
        "split": {**split.info, "users_sampled": config.users, "sample_seed": config.seed,
                  "max_history_in_prompt": config.max_history,
                  "ranking": "full catalog minus the user's history; no sampled negatives; "
                             "score ties broken by a fixed random item order"},
        "methods": summaries,
    }  # fmt: skip
    atomic_write_text(out_dir / "results.json", json.dumps(results_doc, indent=2))
    write_report(results_doc, all_results, pop_pct, [e.target for e in examples], out_dir)
    return results_doc
