"""The evaluation harness: methods side by side on the same split, same users, same ranking rules.

``run_evaluation`` writes, under an output folder:

- ``users/<method>.jsonl``: one line per user as it finishes; a killed run resumes from there;
- ``results.json``: ``{"dataset", "n_users", "split", "k", "methods": {name: metrics}}``;
- ``report.md``: the methods side by side, and the plots ``ndcg_at_k.png`` and ``popularity.png``.

Each method is a class of ``methods.py`` (fit, tune on validation, evaluate, describe); this
module runs them in turn over the same rows and writes what they found.

Every method is measured by one protocol (``protocol.py``): the same exclusions per row (its
history and their title-mates), the same tie order, a rank credited only from the method's own
top-k list (checked for every row), metrics only at cut-offs up to k. Scored methods (pop, markov,
itemknn, sasrec-bce, sasrec-ce) rank the full catalog; prompt-based methods (genrec, genrec-free)
see the last ``max_history`` items of the history in their prompt.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..atomic import atomic_file, atomic_write_text
from ..catalog import Catalog
from ..data.datasets import Dataset
from ..data.cold import GROUPS, cold_items, count_groups, group_of, seen_items, without_items
from ..data.splits import sample_examples, split_dataset
from ..errors import DataError
from ..ranking.metrics import UserResult, popularity_percentiles, summarize
from ..ranking.protocol import PROTOCOL_TEXT, Protocol, check_credit, cutoffs
from ..ranking.rows import evaluate_genrec, evaluate_scored, genrec_ndcg
from .config import ALIASES, METHODS, SCORED, EvalConfig, config_defaults, method_order
from .context import RunContext
from .methods import method_for
from .report import write_report
from .results_io import append_results, load_results, read_done
from .significance import paired_comparison

__all__ = [
    "EvalConfig", "METHODS", "ALIASES", "SCORED", "run_evaluation", "evaluate_scored", "evaluate_genrec", "genrec_ndcg",
    "load_results",
]  # fmt: skip

_CONFIG_FILE = "run_config.json"
#: fewer validation rows than this in the group a run tunes on (``--tune-on``), and the choices
#: made on them are noise (D3's 30 new-item rows: eval/notes/2026-12-07-new-items-more-rows.md)
FEW_TUNING_ROWS = 100

logger = logging.getLogger(__name__)


def _compare_with_best_baseline(summaries: dict[str, dict[str, Any]], results: dict[str, list[UserResult]]) -> None:
    """Each genrec method paired against the run's best scored baseline by NDCG@10: whether a
    lead in the table is more than noise (``vs_best_baseline`` in its summary)."""
    baselines = [n for n in summaries if not n.startswith("genrec") and "NDCG@10" in summaries[n]]
    if not baselines:
        return
    best = max(baselines, key=lambda n: summaries[n]["NDCG@10"])
    for name, summary in summaries.items():
        if name.startswith("genrec") and results[name]:
            summary["vs_best_baseline"] = paired_comparison(results[name], results[best], names=(name, best)).to_dict()


def _add_groups(
    summaries: dict[str, dict[str, Any]], results: dict[str, list[UserResult]], group_of_row: dict[int, str], k: int
) -> None:
    """Each method's metrics on the rows whose target is new and on the others (``groups``), each
    genrec method paired against the best baseline of that group."""
    for group in GROUPS:
        mine = {name: [r for r in rs if group_of_row.get(r.row) == group] for name, rs in results.items()}
        if not any(mine.values()):
            continue
        grouped = {name: {key: value for key, value in summarize(rs, catalog_size=1, popularity_pct={}, ks=cutoffs(k)).items()
                          if key == "n_users" or key.split("@")[0] in ("HR", "NDCG", "MRR")}
                   for name, rs in mine.items() if rs}  # fmt: skip
        _compare_with_best_baseline(grouped, mine)
        for name, summary in grouped.items():
            summaries[name].setdefault("groups", {})[group] = summary


def _new_items_info(split: Any, seen: frozenset[str], examples: list, *, tuning: Any, config: EvalConfig) -> dict[str, Any]:
    info = {
        "rule": "a row is new when its target occurs in no training sequence; its history keeps any new items",
        "cold_items_seeded": split.info.get("cold_items", 0), "cold_fraction": config.cold_items, "only": config.only,
        "test_rows": count_groups(examples, seen), "valid_rows": count_groups(split.valid, seen),
        "tuning_rows": len(tuning.valid),
    }  # fmt: skip
    if config.tune_cold:
        info["tune_cold"] = {"fraction": config.tune_cold, "items_made_new": tuning.info.get("cold_items", 0),
                             "rule": "chosen with these known items new as well, then fitted again on the whole training part"}  # fmt: skip
    return info


def _warn_few_tuning_rows(tuning: Any, config: EvalConfig) -> None:
    n = len(tuning.valid)
    if config.tune_on != "all" and n < FEW_TUNING_ROWS:
        more = "; --tune-cold (or seeded new items, --cold-items) adds more" if config.tune_on == "new" else ""
        logger.warning("only %d validation rows with a %s target to tune on: choices made on so few are noisy%s", n, config.tune_on, more)


def _prepare_out_dir(out_dir: Path, config: EvalConfig, overwrite: bool) -> None:
    (out_dir / "users").mkdir(parents=True, exist_ok=True)
    path = out_dir / _CONFIG_FILE
    wanted = json.loads(json.dumps(asdict(config)))  # as it reads back (tuples become lists)
    if path.exists() and not overwrite:
        previous = json.loads(path.read_text(encoding="utf-8"))
        # methods may be added to a folder; everything that decides the numbers must match
        # (a setting added since the folder was written counts as its default)
        differs = _differing(previous, wanted, ignore=("methods",))
        if differs:
            raise DataError(
                f"{out_dir} holds a run with other settings ({', '.join(sorted(differs))}); "
                f"use another --out, or --overwrite to start over"
            )
        wanted["methods"] = sorted(set(previous.get("methods", [])) | set(config.methods), key=method_order)
    elif overwrite:
        for stale in (out_dir / "users").glob("*.jsonl"):
            stale.unlink()
        for stale in (*out_dir.glob("*.pt"), *out_dir.glob("tuning/*.json"), *out_dir.glob("tuning/*.partial.jsonl"),
                      *out_dir.glob("tuning/*.npz"), *out_dir.glob("item_*.npz")):
            stale.unlink()
    atomic_write_text(path, json.dumps(wanted, indent=2))


def _differing(previous: dict[str, Any], wanted: dict[str, Any], ignore: tuple[str, ...]) -> set[str]:
    """The settings that decide the numbers and differ (a setting added since ``previous`` was
    written counts as its default there)."""
    defaults = config_defaults(previous)
    return {k for k in wanted if k not in ignore and previous.get(k, defaults.get(k)) != wanted[k]}


def _check_reuse(source: Path, config: EvalConfig) -> None:
    """``source``'s fitted SASRecs and validation tuning apply to this run: they depend on the
    split, the seed and the tuning settings, never on which test rows are evaluated (``users``,
    ``only``), so every other setting must match."""
    path = source / _CONFIG_FILE
    if not path.exists():
        raise DataError(f"--reuse {source}: no run there (no {_CONFIG_FILE})")
    previous = json.loads(path.read_text(encoding="utf-8"))
    differs = _differing(previous, json.loads(json.dumps(asdict(config))), ignore=("methods", "users", "only"))
    if differs:
        raise DataError(f"--reuse {source}: that run has other settings ({', '.join(sorted(differs))}), so its fits and tuning do not apply")


def _reuse(source: Path, out_dir: Path) -> None:
    """Copy ``source``'s fitted SASRecs (``*.pt``), validation tuning (``tuning/``) and the model's
    item vectors (``item_vectors.npz``: the same model over the same catalog) into ``out_dir``
    where it has none of its own (``_check_reuse`` said they apply)."""
    for kept in (*source.glob("*.pt"), *source.glob("tuning/*"), *source.glob("item_vectors.npz")):
        target = out_dir / kept.relative_to(source)
        if kept.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(target, suffix=kept.suffix) as tmp:
                shutil.copyfile(kept, tmp)


def run_evaluation(
    dataset: Dataset,
    config: EvalConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    overwrite: bool = False,
    recommender_factory: Callable[[Catalog], Any] | None = None,
    workers: int = 1,
    ray_address: str | None = None,
    reuse: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate ``config.methods`` on ``dataset``; write and return the results.

    ``recommender_factory(catalog)`` builds the Recommender for the genrec methods (default:
    ``Recommender(catalog, model=config.model, dtype=config.dtype)``). ``workers`` > 1 (or ``ray_address``) decodes
    the genrec methods on a pool of Ray actors that each load ``config.model`` (the factory, if
    any, serves this process only): the same batches, so the same metrics. ``reuse``: another
    run's folder whose fitted SASRecs and validation tuning this run takes instead of computing
    them again; every setting but the methods and the test rows evaluated must match.
    """
    config.check()
    out_dir = Path(out_dir)
    if reuse is not None:
        _check_reuse(Path(reuse), config)  # before anything is written: a refused run leaves no folder behind
    _prepare_out_dir(out_dir, config, overwrite)
    if reuse is not None:
        _reuse(Path(reuse), out_dir)
    catalog = dataset.catalog
    split = split_dataset(dataset, tie_break=config.tie_break, seed=config.seed, holdout=config.holdout)
    split = without_items(split, cold_items(catalog, config.cold_items, config.seed))
    seen = seen_items(split)  # a row is new when no training sequence holds its target
    candidates = split.test if config.only == "all" else [e for e in split.test if group_of(e, seen) == config.only]
    examples = sample_examples(candidates, config.users, config.seed)
    pop_pct = popularity_percentiles(split.popularity(), catalog.ids)
    protocol = Protocol.for_run(catalog, config.k, config.seed)
    ctx = RunContext(
        catalog, split, config, protocol, out_dir, progress, workers=workers, ray_address=ray_address,
        recommender_factory=recommender_factory,
    )  # fmt: skip
    _warn_few_tuning_rows(ctx.tuning_split(), config)
    rows = list(enumerate(examples))
    summaries: dict[str, dict[str, Any]] = {}
    all_results: dict[str, list[UserResult]] = {}
    for name in config.methods:
        method = method_for(name)
        path = out_dir / "users" / f"{name}.jsonl"
        done = {r.row: r for r in read_done(path)}
        pending = [(row, e) for row, e in rows if row not in done]
        new: list[UserResult] = []

        def store(results: list[UserResult], path: Path = path, new: list[UserResult] = new) -> None:
            append_results(path, results)
            new.extend(results)

        method.fit(ctx)
        tuned = method.tune(ctx)
        if pending:
            method.evaluate(ctx, pending, tuned, store)
        by_row = {**done, **{r.row: r for r in new}}
        results = [by_row[row] for row, _ in rows if row in by_row]
        check_credit(name, results, config.k)
        all_results[name] = results
        # each user's latency is its share of its batch's wall time: their sum is the run's
        # decoding time, resumed runs included (fitting a baseline is reported apart)
        summaries[name] = {
            **summarize(results, catalog_size=len(catalog), popularity_pct=pop_pct, ks=cutoffs(config.k)),
            **method.describe(ctx, tuned),
        }
    _compare_with_best_baseline(summaries, all_results)
    _add_groups(summaries, all_results, {row: group_of(e, seen) for row, e in rows}, config.k)
    results_doc = {
        "dataset": config.dataset,
        "n_users": len(examples),
        "n_users_available": len(split.test),
        "n_items": len(catalog),
        "k": config.k,
        "split": {**split.info, "users_sampled": config.users, "sample_seed": config.seed,
                  "max_history_in_prompt": config.max_history, "history_grid": list(config.histories()),
                  "beams": max(config.num_beams, config.k), "ranking": PROTOCOL_TEXT,
                  "targets_in_history": sum(protocol.target_excluded(e.history, e.target) for e in examples),
                  "cutoffs": cutoffs(config.k), "new_items": _new_items_info(split, seen, examples, tuning=ctx.tuning_split(), config=config)},
        "methods": summaries,
    }  # fmt: skip
    atomic_write_text(out_dir / "results.json", json.dumps(results_doc, indent=2))
    write_report(results_doc, all_results, pop_pct, [e.target for e in examples], out_dir)
    return results_doc
